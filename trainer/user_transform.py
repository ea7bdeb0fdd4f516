"""TFX Transform of the user branch: id vocabularies and demographic statistics.

Transform analyses the `train` split of the ingested interactions (one
example per event, joined with demographics and track metadata) and learns:

  vocabularies  track_id, album_id, artist_id, user_id: the ids with at least
                one liked event (FeedbackConfig.liked_events, passed in
                `custom_config`); every categorical demographic: all values;
  statistics    mean and standard deviation of every numeric demographic
                (missing values, NaN, left out).

The user-branch Trainer builds its id lookups and normalisation from these
(`vocabularies_from_transform`), and the lookup tables and constants are part
of every graph it exports, so training and serving share them.
"""

from __future__ import annotations

from typing import Dict, Sequence

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf
import tensorflow_transform as tft

from musicrec.data.user_examples import PAD, UserBranchData
from musicrec.trainer.user_layers import Vocabularies

# Columns of the interaction examples that are not demographics.
NON_DEMOGRAPHIC = ("user_id", "track_id", "album_id", "artist_id", "genre", "event", "timestamp")
LIKED_IDS = ("track_id", "album_id", "artist_id", "user_id")


def _dense(feature) -> tf.Tensor:
    """[batch] values of a single-valued feature, dense or sparse (missing -> default)."""
    if isinstance(feature, tf.SparseTensor):
        default = "" if feature.dtype == tf.string else float("nan")
        feature = tf.sparse.to_dense(tf.sparse.reset_shape(feature, [feature.dense_shape[0], 1]), default_value=default)
    return tf.reshape(feature, [-1])


def preprocessing_fn(inputs: Dict[str, tf.Tensor], custom_config: Dict) -> Dict[str, tf.Tensor]:
    liked_events = tf.constant(list(custom_config["liked_events"]))
    event = _dense(inputs["event"])
    liked = tf.reduce_any(tf.equal(event[:, None], liked_events[None, :]), axis=1)
    outputs = {}
    for name in LIKED_IDS:
        ids = _dense(inputs[name])
        # Only ids with at least one liked event enter the vocabulary (others become '',
        # which `vocabulary()` drops).
        vocabulary = tft.vocabulary(tf.where(liked, ids, ""), vocab_filename=name)
        outputs[f"{name}_index"] = tft.apply_vocabulary(ids, vocabulary)
    for name in sorted(set(inputs) - set(NON_DEMOGRAPHIC)):
        values = _dense(inputs[name])
        if values.dtype == tf.string:
            outputs[f"{name}_index"] = tft.compute_and_apply_vocabulary(values, vocab_filename=name)
        else:
            values = tf.cast(values, tf.float32)
            present = tf.boolean_mask(values, ~tf.math.is_nan(values))
            mean, variance = tft.mean(present), tft.var(present)
            std = tf.where(variance > 0, tf.sqrt(variance), 1.0)
            outputs[f"{name}_z"] = (values - mean) / std
    return outputs


def vocabulary(tft_output: tft.TFTransformOutput, name: str) -> Sequence[str]:
    return tuple(sorted(v.decode() for v in tft_output.vocabulary_by_name(name) if v))


def numeric_statistics(tft_output: tft.TFTransformOutput, names: Sequence[str]) -> Dict[str, tuple]:
    """(mean, std) of each numeric demographic, read back from the transform graph: the
    z-score is linear, so z(0) = -mean/std and z(1) - z(0) = 1/std."""
    spec = tft_output.raw_feature_spec()
    raw = {}
    for name in names:
        shape = [2] + list(getattr(spec[name], "shape", []) or [])
        raw[name] = tf.reshape(tf.constant([0.0, 1.0]), shape)
    transformed = tft_output.transform_raw_features(raw)
    stats = {}
    for name in names:
        z0, z1 = (float(v) for v in tf.reshape(transformed[f"{name}_z"], [-1]).numpy())
        std = 1.0 / (z1 - z0)
        stats[name] = (-z0 * std, std)
    return stats


def vocabularies_from_transform(tft_output: tft.TFTransformOutput, data: UserBranchData) -> Vocabularies:
    """The user branch's Vocabularies from the Transform output (track -> album/artist maps
    from the training examples, as `Vocabularies.from_examples` takes them)."""
    tracks = vocabulary(tft_output, "track_id")
    meta = data.tracks.set_index("track_id").reindex(list(tracks))
    return Vocabularies(
        tracks=tracks,
        albums=vocabulary(tft_output, "album_id"),
        artists=vocabulary(tft_output, "artist_id"),
        users=vocabulary(tft_output, "user_id"),
        categorical={name: vocabulary(tft_output, name) for name in data.categorical_demographics},
        numeric=numeric_statistics(tft_output, data.numeric_demographics),
        track_album=dict(zip(meta.index, meta["album_id"].fillna(PAD))),
        track_artist=dict(zip(meta.index, meta["artist_id"].fillna(PAD))),
    )
