"""Building blocks of the user branch's towers (as `tfrs.layers`): id vocabularies learned
from the training examples, string-id embeddings with padding and an OOV row, and a masked
average over history positions."""

from __future__ import annotations

import dataclasses
from typing import Dict, Sequence, Tuple

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf
import tf_keras as keras

from musicrec.data.user_examples import PAD, UserBranchData


@dataclasses.dataclass(frozen=True)
class Vocabularies:
    """Id vocabularies and demographic statistics, learned from the training examples only."""

    tracks: Tuple[str, ...]
    albums: Tuple[str, ...]
    artists: Tuple[str, ...]
    users: Tuple[str, ...]
    categorical: Dict[str, Tuple[str, ...]]
    numeric: Dict[str, Tuple[float, float]]  # name -> (mean, std)
    track_album: Dict[str, str]
    track_artist: Dict[str, str]

    @classmethod
    def from_examples(cls, data: UserBranchData) -> "Vocabularies":
        train = data.train.columns

        def ids(*arrays) -> Tuple[str, ...]:
            values = np.unique(np.concatenate([np.asarray(a, dtype=object).reshape(-1) for a in arrays]).astype(str))
            return tuple(v for v in values if v != PAD)

        tracks = ids(train["track_id"], train["history_track_ids"])
        meta = data.tracks.set_index("track_id").reindex(list(tracks))
        numeric = {}
        for name in data.numeric_demographics:
            values = train[name][~np.isnan(train[name])]
            numeric[name] = (float(values.mean()) if len(values) else 0.0, float(values.std()) or 1.0 if len(values) else 1.0)
        return cls(
            tracks=tracks,
            albums=ids(train["album_id"], train["history_album_ids"]),
            artists=ids(train["artist_id"], train["history_artist_ids"]),
            users=ids(train["user_id"]),
            categorical={name: ids(train[name]) for name in data.categorical_demographics},
            numeric=numeric,
            track_album=dict(zip(meta.index, meta["album_id"].fillna(PAD))),
            track_artist=dict(zip(meta.index, meta["artist_id"].fillna(PAD))),
        )


OOV_INDEX = 1


class IdEmbedding(keras.layers.Layer):
    """String ids -> embeddings. '' is padding (index 0); ids outside the vocabulary
    share one out-of-vocabulary row (index 1), which `known` lets callers mask.

    `oov_dropout`: in training, each id is looked up as OOV with this probability, so
    the OOV row learns to stand for any id (what an id never seen in training gets).
    """

    def __init__(self, vocabulary: Sequence[str], dim: int, name: str, oov_dropout: float = 0.0):
        super().__init__(name=name)
        self.lookup = keras.layers.StringLookup(vocabulary=list(vocabulary), mask_token=PAD, num_oov_indices=1, name=f"{name}_lookup")
        self.embedding = keras.layers.Embedding(len(vocabulary) + 2, dim, name=f"{name}_embedding")
        self.oov_dropout = oov_dropout

    def call(self, ids, training=None):
        return self.embedding(self.indices(ids, training))

    def indices(self, ids, training=None) -> tf.Tensor:
        """Row of each id: 0 padding, 1 OOV (or dropped in training), 2.. the vocabulary."""
        indices = self.lookup(ids)
        if training and self.oov_dropout:
            dropped = (tf.random.uniform(tf.shape(indices)) < self.oov_dropout) & (indices > OOV_INDEX)
            indices = tf.where(dropped, tf.constant(OOV_INDEX, indices.dtype), indices)
        return indices

    def known(self, ids) -> tf.Tensor:
        """True where the id is in the vocabulary (not padding, not OOV)."""
        return self.lookup(ids) > OOV_INDEX


class MaskedMean(keras.layers.Layer):
    """Average of embeddings over the positions where `mask` is true (zeros when none is)."""

    def call(self, embeddings, mask):
        weights = tf.cast(mask, embeddings.dtype)[..., None]
        total = tf.reduce_sum(embeddings * weights, axis=-2)
        return total / tf.maximum(tf.reduce_sum(weights, axis=-2), 1.0)


def static_map(mapping: Dict[str, str]) -> tf.lookup.StaticHashTable:
    """A string -> string lookup table (unknown keys -> '', padding)."""
    keys = list(mapping) or ["\x00"]
    values = [mapping[k] for k in mapping] or [PAD]
    return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), default_value=PAD)
