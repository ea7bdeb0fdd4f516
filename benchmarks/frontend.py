"""Benchmark: decode + log-mel throughput per core, side by side with the references.

Measured in one run, one thread each (tracks/s per core), on 30 s clips of
generated music in every container we accept (wav, flac, ogg, mp3) at 44.1 kHz
stereo and 22.05 kHz mono:

  decode:          ours (soundfile + soxr)  vs  tensorflow-io  vs  librosa.load
  log-mel alone:   ours (tf.signal)         vs  librosa melspectrogram + power_to_db
  decode+log-mel:  ours                     vs  librosa
  musicnn features (the musicnn front ends' patch features, musicrec/audio/musicnn.py:
                   MSD_musicnn alone, MSD + MTT, and MSD + MTT max and mean pools, the
                   default's), beside our log-mel: what a run on those front ends adds per track

Prints a table with the ratios and writes them as JSON (--out). Targets from
the foundation issue: log-mel alone at least 4x librosa, decode + log-mel at
least 2x.

    python benchmarks/frontend.py --out reports/benchmarks/frontend.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

# One thread everywhere, so the figures are per core; set before numpy/TF load.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import musicrec  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS)
import numpy as np  # noqa: E402
import soundfile  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

from musicrec.audio import musicnn  # noqa: E402
from musicrec.audio.decode import load_audio  # noqa: E402
from musicrec.audio.logmel import DEFAULT, log_mel_spectrogram  # noqa: E402
from musicrec.simulation.arrangement import build_arrangement  # noqa: E402
from musicrec.simulation.genres import GENRES  # noqa: E402
from musicrec.simulation.render import render  # noqa: E402

SECONDS = 30.0
VARIANTS = [  # (extension, container, subtype, rate, stereo)
    ("wav", "WAV", "PCM_16", 22050, False),
    ("flac", "FLAC", "PCM_16", 44100, True),
    ("ogg", "OGG", "VORBIS", 44100, True),
    ("mp3", "MP3", "MPEG_LAYER_III", 44100, True),
    ("ogg", "OGG", "VORBIS", 22050, False),
    ("mp3", "MP3", "MPEG_LAYER_III", 22050, False),
]


def make_clips(folder: pathlib.Path, count: int) -> list:
    paths = []
    for i in range(count):
        ext, container, subtype, rate, stereo = VARIANTS[i % len(VARIANTS)]
        genre = GENRES[i % len(GENRES)]
        rng = np.random.default_rng(i)
        audio = render(build_arrangement(genre, genre.style_center, rng, SECONDS + 1), rate, SECONDS + 1, stereo=stereo)
        path = folder / f"clip{i:02d}.{ext}"
        soundfile.write(str(path), audio, rate, format=container, subtype=subtype)
        paths.append(path)
    return paths


def seconds_per_track(fn, inputs, repeats: int) -> float:
    fn(inputs[0])  # warm-up: tracing, caches, JIT
    best = []
    for _ in range(repeats):
        started = time.perf_counter()
        for x in inputs:
            fn(x)
        best.append((time.perf_counter() - started) / len(inputs))
    return min(best)  # least-disturbed repeat


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="reports/benchmarks/frontend.json")
    args = parser.parse_args(argv)

    import librosa
    import tensorflow_io as tfio
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    ours_log_mel = tf.function(lambda w: log_mel_spectrogram(w), input_signature=[tf.TensorSpec([None], tf.float32)])

    def ours_decode(path):
        return load_audio(path, max_seconds=SECONDS)

    def tfio_decode(path):
        audio = tfio.audio.AudioIOTensor(str(path))
        rate = int(audio.rate.numpy())
        samples = audio[: int(SECONDS * rate)]
        samples = tf.cast(samples, tf.float32) / 32768.0 if samples.dtype == tf.int16 else samples
        mono = tf.reduce_mean(samples, axis=1, keepdims=True)
        return tfio.audio.resample(mono, rate, DEFAULT.sample_rate).numpy()[:, 0]

    def librosa_decode(path):
        return librosa.load(path, sr=DEFAULT.sample_rate, mono=True, duration=SECONDS)[0]

    def librosa_log_mel(y):
        mel = librosa.feature.melspectrogram(y=y, sr=DEFAULT.sample_rate, n_fft=2048, hop_length=512, n_mels=128)
        return librosa.power_to_db(mel)

    def ours_log_mel_np(y):
        return ours_log_mel(y).numpy()

    with tempfile.TemporaryDirectory() as tmp:
        print(f"rendering {args.clips} clips of {SECONDS:.0f} s ...", flush=True)
        paths = make_clips(pathlib.Path(tmp), args.clips)
        decoded = [ours_decode(p) for p in paths]
        timings = {
            "decode_ours_soundfile_soxr": seconds_per_track(ours_decode, paths, args.repeats),
            "decode_tensorflow_io": seconds_per_track(tfio_decode, paths, args.repeats),
            "decode_librosa": seconds_per_track(librosa_decode, paths, args.repeats),
            "log_mel_ours": seconds_per_track(ours_log_mel_np, decoded, args.repeats),
            "log_mel_librosa": seconds_per_track(librosa_log_mel, decoded, args.repeats),
            "decode_log_mel_ours": seconds_per_track(lambda p: ours_log_mel_np(ours_decode(p)), paths, args.repeats),
            "decode_log_mel_librosa": seconds_per_track(lambda p: librosa_log_mel(librosa_decode(p)), paths, args.repeats),
            "musicnn_features_ours": seconds_per_track(musicnn.patch_features, decoded, 1),
            "musicnn_msd_mtt_features_ours": seconds_per_track(lambda w: musicnn.patch_features(w, musicnn.MODELS), decoded, 1),
            "musicnn_msd_mtt_max_mean_features_ours": seconds_per_track(
                lambda w: musicnn.patch_features(w, musicnn.MODELS, musicnn.POOLS), decoded, 1),
        }
        # Decoding costs the same in both (librosa.load is soundfile + soxr too),
        # so the end-to-end ratio depends on the container: show it per variant.
        per_format = {}
        for ext, _, _, rate, stereo in VARIANTS:
            subset = [p for p in paths if p.suffix == f".{ext}" and soundfile.info(str(p)).samplerate == rate]
            if not subset:
                continue
            ours = seconds_per_track(lambda p: ours_log_mel_np(ours_decode(p)), subset, args.repeats)
            reference = seconds_per_track(lambda p: librosa_log_mel(librosa_decode(p)), subset, args.repeats)
            per_format[f"{ext}_{rate}_{'stereo' if stereo else 'mono'}"] = {
                "ours_ms": 1000 * ours, "librosa_ms": 1000 * reference, "ratio": reference / ours
            }
    ratios = {
        "log_mel_vs_librosa": timings["log_mel_librosa"] / timings["log_mel_ours"],
        "decode_log_mel_vs_librosa": timings["decode_log_mel_librosa"] / timings["decode_log_mel_ours"],
        "decode_soundfile_vs_tensorflow_io": timings["decode_tensorflow_io"] / timings["decode_ours_soundfile_soxr"],
        "musicnn_features_vs_log_mel": timings["musicnn_features_ours"] / timings["log_mel_ours"],
        "musicnn_msd_mtt_features_vs_log_mel": timings["musicnn_msd_mtt_features_ours"] / timings["log_mel_ours"],
        "musicnn_msd_mtt_max_mean_features_vs_log_mel": timings["musicnn_msd_mtt_max_mean_features_ours"] / timings["log_mel_ours"],
    }
    report = {
        "clip_seconds": SECONDS,
        "clips": args.clips,
        "threads": 1,
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "ms_per_track": {k: 1000 * v for k, v in timings.items()},
        "tracks_per_second_per_core": {k: 1 / v for k, v in timings.items()},
        "ratios": ratios,
        "decode_log_mel_per_format": per_format,
        "targets": {"log_mel_vs_librosa": 4.0, "decode_log_mel_vs_librosa": 2.0},
    }
    print(f"\n{'stage':34s} {'ms/track':>9s} {'tracks/s/core':>14s}")
    for name, seconds in timings.items():
        print(f"{name:34s} {1000 * seconds:9.2f} {1 / seconds:14.1f}")
    print(f"\n{'decode + log-mel by format':34s} {'ours ms':>9s} {'librosa ms':>11s} {'ratio':>6s}")
    for name, row in per_format.items():
        print(f"{name:34s} {row['ours_ms']:9.2f} {row['librosa_ms']:11.2f} {row['ratio']:5.2f}x")
    print()
    for name, value in ratios.items():
        target = report["targets"].get(name)
        verdict = "" if target is None else f"  (target {target:.0f}x: {'met' if value >= target else 'NOT met'})"
        print(f"{name:34s} {value:6.2f}x{verdict}")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {out}")
    return report


if __name__ == "__main__":
    main()
