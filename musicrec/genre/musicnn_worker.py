"""musicnn feature worker: run as its own process (`python -m musicrec.genre.musicnn_worker`), never imported by TF2 code.

musicnn is a TF1 graph: importing it calls
`tf.compat.v1.disable_eager_execution()` for the whole process, which would
break every eager TF2/Keras computation beside it. `musicnn_runner` therefore
starts this worker once per extraction and streams the track list through it.

Input: a JSON-lines jobs file, one {"path", "out"} per track. For each job the
worker writes `out` (.npy, float32 [patches, 753]: the `max_pool` layer of
every non-overlapping 3 s patch) and prints one line on stdout, `PREFIX` and JSON:
{"index", "status": "ok", "patches"} or {"index", "status": <AudioError
status>, "detail"} for audio that cannot be used.

Why not `musicnn.extractor.extractor`: it rebuilds the graph and restores the
weights for every file, runs one patch per session call, and reads the file
with librosa, so our decode errors (missing / unreadable / empty / silent /
too short) would not be distinguished. Here the graph is built once, all of a
track's patches run in one call, audio is decoded by `musicrec.audio.decode`,
and `spectrogram_patches` mirrors musicnn's `batch_data` front end on the
decoded samples (a test checks them against `batch_data`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import musicrec  # noqa: F401  (project convention; also quietens TensorFlow's C++ logs)
import numpy as np

from musicrec.audio.decode import AudioError, load_audio

MODEL = "MSD_musicnn"
LAYER = "max_pool"
INPUT_SECONDS = 3.0  # the length musicnn was trained on; patches do not overlap
MAX_SECONDS = 30.0  # the first 30 s, as for the AE


def spectrogram_patches(audio: np.ndarray, input_seconds: float = INPUT_SECONDS) -> np.ndarray:
    """musicnn's input from 16 kHz mono samples: [patches, frames, 96], as `musicnn.extractor.batch_data` makes it."""
    import librosa
    from musicnn import configuration as config

    mel = librosa.feature.melspectrogram(
        y=audio, sr=config.SR, hop_length=config.FFT_HOP, n_fft=config.FFT_SIZE, n_mels=config.N_MELS
    ).T
    log_mel = np.log10(10000 * mel.astype(np.float16) + 1)  # float16 first, as musicnn does
    frames = patch_frames(input_seconds)
    starts = range(0, log_mel.shape[0] - frames + 1, frames)
    return np.stack([log_mel[s : s + frames] for s in starts]).astype(np.float32)


def patch_frames(input_seconds: float = INPUT_SECONDS) -> int:
    import librosa
    from musicnn import configuration as config

    return int(librosa.time_to_frames(input_seconds, sr=config.SR, n_fft=config.FFT_SIZE, hop_length=config.FFT_HOP)) + 1


class MusicnnModel:
    """The pretrained graph, built and restored once; `layer(patches)` -> [patches, units]."""

    def __init__(self, model: str = MODEL, layer: str = LAYER, input_seconds: float = INPUT_SECONDS):
        import musicnn
        import tensorflow as tf
        from musicnn import configuration as config
        from musicnn import models

        tf.compat.v1.disable_eager_execution()
        labels = config.MSD_LABELS if model.startswith("MSD") else config.MTT_LABELS
        graph = tf.Graph()
        with graph.as_default(), tf.name_scope("model"):  # the scope the checkpoint's names carry
            self._x = tf.compat.v1.placeholder(tf.float32, [None, patch_frames(input_seconds), config.N_MELS])
            self._is_training = tf.compat.v1.placeholder(tf.bool)
            outputs = models.define_model(self._x, self._is_training, model, len(labels))
            names = ["logits", "timbral", "temporal", "cnn1", "cnn2", "cnn3", "mean_pool", "max_pool", "penultimate"]
            self._layer = dict(zip(names, outputs))[layer]
            saver = tf.compat.v1.train.Saver()
        self._session = tf.compat.v1.Session(graph=graph)
        saver.restore(self._session, os.path.join(os.path.dirname(musicnn.__file__), model) + "/")

    def layer(self, patches: np.ndarray) -> np.ndarray:
        return self._session.run(self._layer, {self._x: patches, self._is_training: False})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", help="JSON-lines file of {path, out}")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--layer", default=LAYER)
    args = parser.parse_args(argv)
    from musicnn import configuration as config

    model = MusicnnModel(args.model, args.layer)
    with open(args.jobs) as jobs:
        for index, line in enumerate(jobs):
            job = json.loads(line)
            try:
                audio = load_audio(job["path"], config.SR, max_seconds=MAX_SECONDS, min_seconds=INPUT_SECONDS)
            except AudioError as error:
                _emit({"index": index, "status": error.status, "detail": error.detail})
                continue
            features = model.layer(spectrogram_patches(audio)).astype(np.float32)
            np.save(job["out"], features)
            _emit({"index": index, "status": "ok", "patches": int(features.shape[0])})
    return 0


# Protocol lines start with this, so anything a library prints to stdout cannot be mistaken for one.
PREFIX = "@musicnn "


def _emit(message: dict) -> None:
    sys.stdout.write(PREFIX + json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
