"""The on-disk format of precomputed log-mel features: one tf.Example per track.

Written by the audio feature component, read by the audio-branch trainer; both
go through this module so the format has one definition.

  track_id   bytes
  log_mel    bytes: float16 [num_frames, n_mels], row-major (half the size of
             float32; the rounding, under 0.06 dB at the levels music reaches,
             is far below what the model can resolve)
  num_frames int64
  n_mels     int64
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

FEATURE_SPEC = {
    "track_id": tf.io.FixedLenFeature([], tf.string),
    "log_mel": tf.io.FixedLenFeature([], tf.string),
    "num_frames": tf.io.FixedLenFeature([], tf.int64),
    "n_mels": tf.io.FixedLenFeature([], tf.int64),
}


def encode_example(track_id: str, log_mel: np.ndarray) -> bytes:
    frames, mels = log_mel.shape

    def _bytes(value: bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def _int(value: int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    example = tf.train.Example(
        features=tf.train.Features(
            feature={
                "track_id": _bytes(track_id.encode("utf-8")),
                "log_mel": _bytes(np.ascontiguousarray(log_mel, dtype=np.float16).tobytes()),
                "num_frames": _int(frames),
                "n_mels": _int(mels),
            }
        )
    )
    return example.SerializeToString()


def parse_example(serialized: tf.Tensor) -> dict:
    """tf.data-friendly parser: {'track_id': string, 'log_mel': float32 [frames, n_mels]}."""
    parsed = tf.io.parse_single_example(serialized, FEATURE_SPEC)
    log_mel = tf.io.decode_raw(parsed["log_mel"], tf.float16)
    log_mel = tf.reshape(tf.cast(log_mel, tf.float32), tf.stack([parsed["num_frames"], parsed["n_mels"]]))
    return {"track_id": parsed["track_id"], "log_mel": log_mel}


def parse_index(serialized: tf.Tensor) -> dict:
    """The record's track id and shape without decoding its log-mel: for indexing shards."""
    return tf.io.parse_example(serialized, {k: FEATURE_SPEC[k] for k in ("track_id", "num_frames", "n_mels")})


def decode_example(serialized: bytes):
    """(track_id, float16 log-mel [frames, n_mels]) of one record, in numpy: for Beam workers,
    which read records one by one and need no TensorFlow graph for it."""
    features = tf.train.Example.FromString(serialized).features.feature
    frames, mels = features["num_frames"].int64_list.value[0], features["n_mels"].int64_list.value[0]
    log_mel = np.frombuffer(features["log_mel"].bytes_list.value[0], np.float16).reshape(frames, mels)
    return features["track_id"].bytes_list.value[0].decode("utf-8"), log_mel
