"""The user branch's model (as `tfrs.models`): a TFRS two-tower model whose query tower
output is the user embedding (UE).

Query tower (the paper's Fig. 1, after YouTubeDNN): 40-d lookup embeddings of
the history's tracks, albums and artists, each group averaged over the
non-padding positions; demographic embeddings (categorical) and normalised
values (numeric) concatenated; dense leaky-ReLU layers; a final linear layer
whose 40-d output, plus the candidate tower's projection of the averaged
history (a skip connection: the centroid of the liked tracks in candidate
space), is the UE. Candidate tower: the track's 40-d embedding combined
(linearly) with its album's and artist's. The history and the candidates share
the id embedding tables, as in YouTubeDNN, which matters on small catalogues.

The loss is `user_loss.retrieval_loss`. The same builder with `query="user_id"`
is the plain matrix-factorisation baseline (a lookup embedding per user id, as
DCUE uses), and with `query="hybrid"` the query tower also takes a user-id
embedding beside history and demographics (added to the UE), replaced by the OOV
row with probability `user_id_dropout` in training so that new users (an OOV id)
still embed from history and demographics.
"""

from __future__ import annotations

from typing import Dict, Tuple

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

from musicrec.data.user_examples import HISTORY_FEATURES, PAD, UserExamples
from musicrec.trainer.user_config import UserBranchConfig
from musicrec.trainer.user_layers import IdEmbedding, MaskedMean, Vocabularies, static_map
from musicrec.trainer.user_loss import retrieval_loss


class _Tower(keras.Model):
    """A tower over the item id tables (`item_embeddings`: track, album, artist) and their
    linear combination into candidate space (`combine_items`), both shared by the two towers."""

    def __init__(self, name: str, vocab: Vocabularies, config: UserBranchConfig, item_embeddings: Dict[str, IdEmbedding],
                 combine_items: keras.layers.Layer):
        super().__init__(name=name)
        self._vocab, self._config = vocab, config
        self._items, self._combine_items = item_embeddings, combine_items

    def get_config(self):
        # Built from vocabularies (data), not from a config: exports are SavedModel graphs.
        return {"name": self.name}


class QueryTower(_Tower):
    """History + demographics -> UE (or user id -> embedding for the MF baseline; or, hybrid,
    a user-id embedding beside history and demographics, the id dropped out in training)."""

    def __init__(self, vocab: Vocabularies, config: UserBranchConfig, item_embeddings: Dict[str, IdEmbedding],
                 combine_items: keras.layers.Layer):
        super().__init__("query_tower", vocab, config, item_embeddings, combine_items)
        if config.uses_user_id:
            dropout = config.user_id_dropout if config.uses_history else 0.0
            self._user_embedding = IdEmbedding(vocab.users, config.embedding_dim, "user", oov_dropout=dropout)
        if not config.uses_history:
            return
        self._mean = MaskedMean()
        self._categorical = {
            name: IdEmbedding(values, config.demographic_embedding_dim, f"demographic_{name}")
            for name, values in vocab.categorical.items()
        }
        self._hidden = [
            keras.layers.Dense(units, activation=keras.layers.LeakyReLU(config.leaky_relu_alpha), name=f"hidden_{i}")
            for i, units in enumerate(config.hidden_units)
        ]
        self._output = keras.layers.Dense(config.embedding_dim, name="user_embedding")

    def pooled_history(self, features) -> tf.Tensor:
        """[batch, 3 * dim]: the averaged track, album and artist embeddings of the history.

        Padding and ids never seen in training are left out of the averages
        (their rows were never trained), so an unknown track adds nothing.
        """
        return tf.concat([
            self._mean(self._items[kind](features[feature]), self._items[kind].known(features[feature]))
            for feature, kind in zip(HISTORY_FEATURES, ("track", "album", "artist"))
        ], axis=-1)

    def call(self, features, training=None):
        if not self._config.uses_history:
            return self._user_embedding(features["user_id"])
        history = self.pooled_history(features)
        parts = [history]
        for name, (mean, std) in self._vocab.numeric.items():
            value = tf.cast(features[name], tf.float32)
            missing = tf.math.is_nan(value)
            normalised = tf.where(missing, 0.0, (value - mean) / std)
            parts.append(tf.stack([normalised, tf.cast(missing, tf.float32)], axis=-1))
        for name, embedding in self._categorical.items():
            values = features[name]
            parts.append(embedding(values) * tf.cast(embedding.known(values), tf.float32)[..., None])  # unknown -> zeros
        x = tf.concat(parts, axis=-1)
        for layer in self._hidden:
            x = layer(x)
        user_embedding = self._output(x)
        if self._config.history_skip:
            # The candidate tower is linear in the item embeddings, so (with shared item
            # tables) this is the mean of the history tracks' candidate embeddings, at the
            # cost of one projection rather than one per history item.
            user_embedding += self._combine_items(history)
        if self._config.uses_user_id:
            # Hybrid: the id's embedding is added in UE space, as MF's user vector is (on the
            # demo world, recall@10 for seen users 0.355 and 0.369 in two runs, vs 0.344 with
            # the id as an MLP input instead). Never masked: an unknown (new) user's id looks
            # up the OOV row, which id dropout trained to stand for a user known by history
            # and demographics alone.
            user_embedding += self._user_embedding(features["user_id"], training=training)
        return user_embedding


class CandidateTower(_Tower):
    """Track id -> 40-d candidate embedding from the track, its album and its artist."""

    def __init__(self, vocab: Vocabularies, config: UserBranchConfig, item_embeddings: Dict[str, IdEmbedding],
                 combine_items: keras.layers.Layer):
        super().__init__("candidate_tower", vocab, config, item_embeddings, combine_items)
        self._album_of = static_map(vocab.track_album)
        self._artist_of = static_map(vocab.track_artist)

    def call(self, track_ids):
        parts = [
            self._items["track"](track_ids),
            self._items["album"](self._album_of.lookup(track_ids)),
            self._items["artist"](self._artist_of.lookup(track_ids)),
        ]
        return self._combine_items(tf.concat(parts, axis=-1))


class TwoTowerModel(tfrs.Model):
    def __init__(self, vocab: Vocabularies, config: UserBranchConfig, label_probability: Dict[str, float]):
        super().__init__()
        def item_embeddings(prefix: str) -> Dict[str, IdEmbedding]:
            return {
                kind: IdEmbedding(values, config.embedding_dim, f"{prefix}{kind}_ids")
                for kind, values in (("track", vocab.tracks), ("album", vocab.albums), ("artist", vocab.artists))
            }

        items = self._items = item_embeddings("")
        combine = keras.layers.Dense(config.embedding_dim, name="candidate_embedding")
        self.query_tower = QueryTower(vocab, config, items if config.share_item_embeddings else item_embeddings("history_"), combine)
        self.candidate_tower = CandidateTower(vocab, config, items, combine)
        self._config = config
        tracks = list(label_probability)
        self._probability = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tracks or ["\x00"], tf.constant([float(label_probability[t]) for t in tracks] or [1.0], tf.float32)
            ),
            default_value=1.0 / max(len(tracks), 1),
        )
        self.task = tfrs.tasks.Retrieval(remove_accidental_hits=config.remove_accidental_hits)

    def compute_loss(self, features, training=False):
        positive_ids = features["track_id"]
        negative_ids = None
        if self._config.dislikes_as_negatives:
            # A disliked track outside the vocabulary has no trained embedding: treat it as absent.
            negatives = features["disliked_track_id"]
            negative_ids = tf.where(self._items["track"].known(negatives), negatives, PAD)
        return retrieval_loss(
            self.task,
            self.query_tower(features, training=training),
            self.candidate_tower(positive_ids),
            positive_ids,
            self._probability.lookup(positive_ids) if self._config.logq_correction else None,
            None if negative_ids is None else self.candidate_tower(negative_ids),
            negative_ids,
        )


def embed_queries(model: TwoTowerModel, examples: UserExamples, vocab: Vocabularies, config: UserBranchConfig,
                  batch_size: int = 1024) -> np.ndarray:
    features = query_features(examples, vocab, config)
    dataset = tf.data.Dataset.from_tensor_slices(features).batch(batch_size)
    return np.concatenate([model.query_tower(batch).numpy() for batch in dataset], axis=0)


def embed_catalogue(model: TwoTowerModel, vocab: Vocabularies) -> Tuple[np.ndarray, np.ndarray]:
    """(track ids, candidate embeddings) of every track in the vocabulary."""
    ids = np.asarray(vocab.tracks, dtype=object)
    return ids, model.candidate_tower(tf.constant(ids.astype(str))).numpy()


def query_features(examples: UserExamples, vocab: Vocabularies, config: UserBranchConfig) -> Dict[str, np.ndarray]:
    names = ["user_id"] if config.uses_user_id else []
    if config.uses_history:
        names += list(HISTORY_FEATURES) + list(vocab.numeric) + list(vocab.categorical)
    return {name: _as_tensor_input(examples.columns[name]) for name in names}


def _as_tensor_input(values: np.ndarray) -> np.ndarray:
    return values.astype(str) if values.dtype == object else values
