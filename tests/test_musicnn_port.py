"""The in-process musicnn port (musicrec.audio.musicnn) against the original musicnn in its worker, on rendered music.

The reference is `musicrec.genre.musicnn_worker` itself, run once as its own
process (musicnn is TF1 and disables eager execution) on three rendered
tracks: one past the 30 s cap at 44.1 kHz stereo, one at the project's 22050
Hz, and a short one in a lossy format at 32 kHz. The port gets what the Beam
transform and the serving client hold: the first 30 s decoded at 22050 Hz.
"""

import musicrec  # noqa: F401

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import tensorflow as tf

from musicrec.audio import musicnn
from musicrec.audio.decode import load_audio
from musicrec.genre import musicnn_worker
from musicrec.simulation.arrangement import build_arrangement
from musicrec.simulation.genres import GENRES_BY_NAME, STYLE_DIMENSIONS
from musicrec.simulation.render import render

# (genre, seconds, native rate, stereo, file): 10, 4 and 2 whole 3 s patches in the first 30 s.
TRACKS = [
    ("rock", 33.0, 44100, True, "rock.flac"),
    ("jazz", 12.0, 22050, False, "jazz.wav"),
    ("folk", 7.0, 32000, False, "folk.ogg"),
]
PATCHES = [10, 4, 2]


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("musicnn_port")
    paths = []
    for index, (genre, seconds, rate, stereo, name) in enumerate(TRACKS):
        rng = np.random.default_rng([7, index])
        midi = build_arrangement(GENRES_BY_NAME[genre], rng.uniform(0.3, 0.8, len(STYLE_DIMENSIONS)), rng, seconds)
        soundfile.write(str(folder / name), render(midi, rate, seconds, stereo=stereo), rate)
        paths.append(str(folder / name))
    return paths


class _Worker:
    """`musicnn_worker` run on the files as its own process, as MusicnnFeatures runs it."""

    def __init__(self, files, scratch, layer: str = musicnn_worker.LAYER):
        self.outs = [str(scratch / f"{i}.npy") for i in range(len(files))]
        jobs = scratch / "jobs.jsonl"
        jobs.write_text("".join(json.dumps({"path": p, "out": o}) + "\n" for p, o in zip(files, self.outs)))
        self.stdout, self.stderr = open(scratch / "stdout", "w+"), open(scratch / "stderr", "w+")
        self.process = subprocess.Popen([sys.executable, "-m", musicnn_worker.__name__, str(jobs), "--layer", layer],
                                        stdout=self.stdout, stderr=self.stderr, text=True)
        self._features = None

    def features(self):
        """The original musicnn's layer (max_pool unless told) per patch, [patches, 753] per file."""
        if self._features is None:
            if self.process.wait(timeout=300) != 0:
                self.stderr.seek(0)
                tail = self.stderr.read()[-2000:]
                pytest.fail(f"the musicnn worker exited with status {self.process.returncode}:\n{tail}")
            self.stdout.seek(0)
            messages = [json.loads(line[len(musicnn_worker.PREFIX):]) for line in self.stdout
                        if line.startswith(musicnn_worker.PREFIX)]
            assert [m["status"] for m in messages] == ["ok"] * len(self.outs), messages
            self._features = [np.load(out) for out in self.outs]
        return self._features

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stdout.close()
        self.stderr.close()


@pytest.fixture(scope="module", autouse=True)
def worker(audio_files, tmp_path_factory):
    """Started before the first test: the worker takes ~25 s to start, which the tests of the
    port alone (first in this file) overlap; the comparisons with it come last."""
    running = _Worker(audio_files, tmp_path_factory.mktemp("musicnn_worker"))
    yield running
    running.close()


@pytest.fixture(scope="module", autouse=True)
def mean_pool_worker(audio_files, tmp_path_factory):
    """The same for musicnn's mean_pool layer, started beside the first."""
    running = _Worker(audio_files, tmp_path_factory.mktemp("musicnn_worker_mean"), layer="mean_pool")
    yield running
    running.close()


@pytest.fixture(scope="module")
def waveforms(audio_files):
    """What the Beam transform and the serving client hold: the first 30 s at 22050 Hz."""
    return [load_audio(path, musicnn.INPUT_RATE, max_seconds=musicnn.MAX_SECONDS) for path in audio_files]


@pytest.fixture(scope="module")
def port_features(waveforms):
    return [musicnn.patch_features(w) for w in waveforms]


@pytest.fixture(scope="module")
def extractor():
    return musicnn.MusicnnPatchFeatures(patch_batch=6)  # 6: several network calls per batch below


def test_a_padded_batch_gives_each_track_alone(extractor, waveforms, port_features):
    """Rows of different lengths, noise as padding, a row past 30 s and one too short: each row as if alone."""
    noise = np.random.default_rng(0).uniform(-1, 1, size=(4, 33 * musicnn.INPUT_RATE)).astype(np.float32)
    short = waveforms[2][: int(2.9 * musicnn.INPUT_RATE)]  # under one patch (2.98 s at 16 kHz)
    rows = [np.concatenate([waveforms[0], noise[0, : 3 * musicnn.INPUT_RATE]]), waveforms[1], waveforms[2], short]
    batch = noise.copy()
    for row, samples in zip(batch, rows):
        row[: len(samples)] = samples
    features, counts = extractor(batch, np.array([len(r) for r in rows], np.int64))
    features = features.numpy()
    assert counts.dtype == tf.int32 and counts.numpy().tolist() == PATCHES + [0]
    assert features.shape == (4, max(PATCHES), musicnn.FEATURE_DIM)
    for row, (count, alone) in enumerate(zip(PATCHES, port_features)):
        # The row past 30 s is cut to its first 30 s, so it equals the first track alone.
        assert alone.dtype == np.float32 and alone.shape == (count, musicnn.FEATURE_DIM)
        np.testing.assert_allclose(features[row, :count], alone, rtol=1e-5, atol=1e-4 * np.abs(alone).max())
        assert not features[row, count:].any()
    assert not features[3].any()
    assert musicnn.patch_features(short).shape == (0, musicnn.FEATURE_DIM)


def test_both_models_share_the_patches_and_concatenate_in_order(waveforms, port_features):
    """The MSD + MTT features of a patch: MSD_musicnn's vector, then MTT_musicnn's (same architecture,
    its own checkpoint, so other values)."""
    both = musicnn.patch_features(waveforms[0], musicnn.MODELS)
    mtt = musicnn.patch_features(waveforms[0], ("MTT_musicnn",))
    assert both.shape == (PATCHES[0], 2 * musicnn.FEATURE_DIM)
    np.testing.assert_allclose(both[:, :musicnn.FEATURE_DIM], port_features[0], rtol=1e-5, atol=1e-4 * np.abs(port_features[0]).max())
    np.testing.assert_allclose(both[:, musicnn.FEATURE_DIM:], mtt, rtol=1e-5, atol=1e-4 * np.abs(mtt).max())
    assert np.abs(mtt - port_features[0]).max() > 1.0  # another network's features
    with pytest.raises(ValueError, match="unknown musicnn model 'MSD_vgg'"):
        musicnn.checkpoint_prefix("MSD_vgg")


def test_saved_model_round_trip_uses_core_ops_only(extractor, waveforms, port_features, tmp_path):
    class Exported(tf.Module):
        def __init__(self):
            super().__init__()
            self.musicnn = extractor

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.int32)])
        def serve(self, waveform, num_samples):
            features, counts = self.musicnn(waveform, num_samples)
            return {"features": features, "counts": counts}

    exported = Exported()
    assert len(exported.variables) == 52 and not exported.musicnn.trainable_variables  # musicnn's, frozen
    tf.saved_model.save(exported, str(tmp_path / "musicnn"), signatures={"serving_default": exported.serve})
    serve = tf.saved_model.load(str(tmp_path / "musicnn")).signatures["serving_default"]

    folk = waveforms[2]
    batch = np.zeros((2, len(folk)), np.float32)
    batch[0] = folk
    batch[1, :1000] = folk[:1000]
    outputs = serve(waveform=tf.constant(batch), num_samples=tf.constant([len(folk), 1000]))
    assert outputs["counts"].numpy().tolist() == [PATCHES[2], 0]
    np.testing.assert_allclose(outputs["features"].numpy()[0], port_features[2], rtol=1e-5, atol=1e-4)
    assert not outputs["features"].numpy()[1].any()

    # No py_function and no tensorflow-io: every op is one of core TensorFlow's, which the stock
    # TF Serving binary has.
    graph = serve.graph.as_graph_def()
    ops = {node.op for node in graph.node} | {node.op for f in graph.library.function for node in f.node_def}
    assert not {op for op in ops if "PyFunc" in op or op not in dir(tf.raw_ops)}, sorted(ops)


def test_front_end_and_network_match_the_original_on_the_same_input(audio_files, worker, mean_pool_worker):
    """On the worker's own 16 kHz samples our log-mel equals its patches; on its patches our network equals it."""
    audio_16k = load_audio(audio_files[1], musicnn.SAMPLE_RATE, max_seconds=musicnn_worker.MAX_SECONDS)
    theirs = musicnn_worker.spectrogram_patches(audio_16k)  # imports musicnn's configuration only: eager stays on
    assert tf.executing_eagerly()
    log_mel = musicnn.musicnn_log_mel(audio_16k[None])[0]
    assert log_mel.shape == (1 + len(audio_16k) // 256, 96)
    ours = tf.signal.frame(log_mel, musicnn.PATCH_FRAMES, musicnn.PATCH_FRAMES, axis=0).numpy()
    assert ours.shape == theirs.shape
    # At most a float16 rounding step apart (log10(1 + 1e4 x) moves by < 4.9e-4 / ln 10 per step).
    assert np.abs(ours - theirs).max() < 1e-3

    network = musicnn.build_pooled_network(pools=musicnn.POOLS)  # max_pool, then mean_pool
    assert not network.trainable_weights
    features = network(theirs, training=True).numpy()  # frozen: batch norm keeps its moving statistics
    for pooled, reference in zip(np.split(features, 2, axis=1), (worker.features()[1], mean_pool_worker.features()[1])):
        assert np.abs(pooled - reference).max() <= 1e-4 * np.abs(reference).max()
    with pytest.raises(ValueError, match="pools must be some of"):
        musicnn.build_pooled_network(pools=("min_pool",))


def _cosine_and_relative_error(ours: np.ndarray, theirs: np.ndarray):
    """Per patch: cosine similarity and ||ours - theirs|| / ||theirs||."""
    cosine = (ours * theirs).sum(axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    return cosine, np.linalg.norm(ours - theirs, axis=1) / np.linalg.norm(theirs, axis=1)


def test_port_matches_the_original_worker_per_patch(port_features, worker):
    assert [f.shape for f in worker.features()] == [(n, musicnn.FEATURE_DIM) for n in PATCHES]
    for (genre, *_), ours, theirs in zip(TRACKS, port_features, worker.features()):
        assert ours.shape == theirs.shape, genre
        cosine, error = _cosine_and_relative_error(ours, theirs)
        # Not elementwise-exact: musicnn rounds its mel power to float16 (a step of 5e-4
        # relative), and the worker resamples from the native rate once, the port from 22050 Hz.
        assert cosine.min() >= 0.9999 and error.max() <= 2e-3, (genre, cosine.min(), error.max())
