"""Benchmark: the weekly release job against the same work done one file at a time.

500 new tracks (30 s, 22050 Hz WAV, synthetic tones: throughput does not depend on the music)
against a user base of the bench size (20,000 users, as `generate-demo --size bench` has; clustered
synthetic 40-d UEs), top 1000 users per track, inboxes of 20. The model is an untrained encoder exported
with the serving code (time does not depend on the weights), pushed as version 1. Side by side:

  release job            `run_release`: the release pipeline (AudioFeatures decode + log-mel, Beam
                         batch inference, inboxes, report) and the publish step, end to end; and its
                         ReleaseInference step alone (log-mels in, lists out)
  recommend-users loop   the serving client in one process (`recommend_users`, the models loaded
                         once), one file after another: what a script around the single-track
                         path does, without the inboxes
  recommend-users CLI    `musicrec recommend-users FILE --top 1000 --json`, one process per file (on a
                         sample of files: each start loads TensorFlow and the models)

It prints new tracks per minute and users scored per second (tracks x users / seconds) for each,
and writes them to reports/benchmarks/release.json.

    python benchmarks/release.py [--tracks 500] [--users 20000] [--cli-sample 8] [--quick]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

# Run as a script, this file's folder comes first on sys.path; look packages up from the root.
_HERE = pathlib.Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if pathlib.Path(p or ".").resolve() != _HERE]

import musicrec  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS)
import numpy as np  # noqa: E402
import soundfile  # noqa: E402

SAMPLE_RATE, SECONDS = 22050, 30.0
TOP_USERS, INBOX = 1000, 20


def synthetic_release(folder: pathlib.Path, tracks: int, seed: int = 0) -> pathlib.Path:
    """tracks.csv and one WAV per track: a few random tones and noise, 30 s, mono 22050 Hz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SAMPLE_RATE * SECONDS)) / SAMPLE_RATE
    rows = ["track_id,artist_id,album_id,audio_path,genre"]
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    for i in range(tracks):
        tones = sum(np.sin(2 * np.pi * f * t + p) for f, p in zip(rng.uniform(80, 2000, 4), rng.uniform(0, 6, 4)))
        audio = (0.05 * tones + 0.02 * rng.standard_normal(len(t))).astype(np.float32)
        soundfile.write(str(folder / "audio" / f"n{i:05d}.wav"), audio, SAMPLE_RATE, subtype="PCM_16")
        rows.append(f"n{i:05d},ar{i % 97:03d},al{i % 211:03d},audio/n{i:05d}.wav,g{i % 8}")
    (folder / "tracks.csv").write_text("\n".join(rows) + "\n")
    return folder


def push_untrained_model(serving: pathlib.Path, users: int) -> pathlib.Path:
    """Version 1 of audio_embedder and cold_start_recommender under `serving`, from an untrained
    encoder and clustered synthetic UEs; returns the recommender's version folder."""
    import tensorflow as tf

    from musicrec.serving import graphs
    from musicrec.serving.export import AudioEmbedder, ColdStartRecommender, save_model, write_model_info
    from musicrec.serving.scann_index import clustered_vectors
    from musicrec.trainer.audio_branch import AudioBranchConfig
    from musicrec.trainer.audio_data import UserVectors
    from musicrec.trainer.audio_export import export_untrained_encoder

    config = AudioBranchConfig()
    tf.random.set_seed(0)  # the same untrained weights every run
    encoder = tf.saved_model.load(str(export_untrained_encoder(serving.parent / "encoder", config)))
    user_ids = np.array([f"u{i:07d}" for i in range(users)])
    recommender = ColdStartRecommender(encoder, config.context_frames,
                                       UserVectors(user_ids, clustered_vectors(users, seed=1)), max_k=TOP_USERS)
    version_dir = serving / graphs.RECOMMENDER / "1"
    save_model(recommender, version_dir)
    write_model_info(version_dir, recommender)
    save_model(AudioEmbedder(encoder, config.context_frames), serving / graphs.AUDIO_EMBEDDER / "1")
    return version_dir


def users_table(folder: pathlib.Path, users: int) -> pathlib.Path:
    rng = np.random.default_rng(2)
    genders, countries = np.array(["female", "male"]), np.array(["US", "BR", "DE", "IN", "JP", "SE"])
    rows = [f"u{i:07d},{rng.integers(16, 70)},{rng.choice(genders)},{rng.choice(countries)}" for i in range(users)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "users.csv").write_text("user_id,age,gender,country\n" + "\n".join(rows) + "\n")
    return folder


def bench_release(work: pathlib.Path, release_dir: pathlib.Path, serving: pathlib.Path, users: int) -> dict:
    from musicrec.pipeline.config import PipelineConfig
    from musicrec.pipeline.release import ReleaseConfig, run_release

    training = PipelineConfig(dataset_dir=str(users_table(work / "service", users)), run_dir=str(work / "run"),
                              serving_base_path=str(serving))
    started = time.monotonic()
    result = run_release(training, ReleaseConfig(tracks_dir=str(release_dir), name="bench", top_users=TOP_USERS,
                                                 inbox_size=INBOX, model_version=1, enable_cache=False))
    seconds = time.monotonic() - started
    summary = result["summary"]
    return {"tracks": summary["tracks_ranked"], "seconds": seconds, "inference_seconds": summary["seconds"]}


def bench_loop(release_dir: pathlib.Path, serving: pathlib.Path, tracks: int) -> dict:
    from musicrec.serving.client import connect, recommend_users

    client = connect(None, serving)
    files = sorted((release_dir / "audio").glob("*.wav"))[:tracks]
    started = time.monotonic()
    for file in files:
        recommend_users(client, file, TOP_USERS)
    return {"tracks": len(files), "seconds": time.monotonic() - started}


def bench_cli(release_dir: pathlib.Path, serving: pathlib.Path, sample: int) -> dict:
    files = sorted((release_dir / "audio").glob("*.wav"))[:sample]
    started = time.monotonic()
    for file in files:
        subprocess.run([sys.executable, "-m", "musicrec.cli", "recommend-users", str(file), "--models", str(serving),
                        "--top", str(TOP_USERS), "--json"], check=True, capture_output=True)
    return {"tracks": len(files), "seconds": time.monotonic() - started}


def rates(row: dict, users: int) -> dict:
    return {**row, "tracks_per_minute": 60 * row["tracks"] / row["seconds"],
            "users_scored_per_second": row["tracks"] * users / row["seconds"]}


def report(rows: dict, users: int) -> str:
    lines = [f"Release throughput: top {TOP_USERS} of {users:,} users per new track, inboxes of {INBOX}",
             f"{'method':<24} {'tracks':>7} {'seconds':>9} {'tracks/min':>11} {'users scored/s':>15}"]
    for name, row in rows.items():
        lines.append(f"{name:<24} {row['tracks']:>7} {row['seconds']:>9.1f} {row['tracks_per_minute']:>11.1f} "
                     f"{row['users_scored_per_second']:>15,.0f}")
    base = rows["recommend-users loop"]["tracks_per_minute"]
    lines.append(f"release job: {rows['release job']['tracks_per_minute'] / base:.2f}x the in-process loop, "
                 f"{rows['release job']['tracks_per_minute'] / rows['recommend-users CLI']['tracks_per_minute']:.1f}x "
                 "the CLI per file (the job also builds the inboxes and the report)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracks", type=int, default=500)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--cli-sample", type=int, default=8, help="files run through the CLI, one process each")
    parser.add_argument("--quick", action="store_true", help="60 tracks, 2 CLI files (a smoke run)")
    parser.add_argument("--out", default="reports/benchmarks/release.json")
    args = parser.parse_args()
    if args.quick:
        args.tracks, args.cli_sample = 60, 2
    from musicrec.cli import configure_logging

    configure_logging()
    with tempfile.TemporaryDirectory(prefix="release_bench_") as folder:
        work = pathlib.Path(folder)
        release_dir = synthetic_release(work / "release", args.tracks)
        serving = work / "serving"
        push_untrained_model(serving, args.users)
        rows = {"release job": bench_release(work, release_dir, serving, args.users),
                "recommend-users loop": bench_loop(release_dir, serving, args.tracks),
                "recommend-users CLI": bench_cli(release_dir, serving, args.cli_sample)}
    job = rows["release job"]
    rows["  its inference step"] = {"tracks": job["tracks"], "seconds": job.pop("inference_seconds")}
    rows = {name: rates(row, args.users) for name, row in rows.items()}
    text = report(rows, args.users)
    print(text)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "users": args.users, "top_users": TOP_USERS,
                               "rows": rows, "report": text}, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
