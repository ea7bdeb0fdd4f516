"""The user branch: a TFRS two-tower model whose query tower output is the user embedding (UE).

Query tower (the paper's Fig. 1, after YouTubeDNN): 40-d lookup embeddings of
the history's tracks, albums and artists, each group averaged over the
non-padding positions; demographic embeddings (categorical) and normalised
values (numeric) concatenated; dense leaky-ReLU layers; a final linear layer
whose 40-d output, plus the candidate tower's projection of the averaged
history (a skip connection: the centroid of the liked tracks in candidate
space), is the UE. Candidate tower: the track's 40-d embedding combined
(linearly) with its album's and artist's. The history and the candidates share
the id embedding tables, as in YouTubeDNN, which matters on small catalogues.

Loss: `tfrs.tasks.Retrieval`, softmax cross-entropy of each positive against
the other in-batch positives (log-Q corrected for their popularity, accidental
hits removed) and, optionally, every example's own disliked track as an extra
hard negative.

The same builder with `query="user_id"` is the plain matrix-factorisation
baseline (a lookup embedding per user id, as DCUE uses).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Dict, Optional, Sequence, Tuple

import musicrec  # (importing it first sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

from musicrec.data.user_examples import HISTORY_FEATURES, PAD, UserBranchData, UserExamples
from musicrec.trainer.ranking import queries, ranking_metrics

EMBEDDING_DIM = 40


@dataclasses.dataclass(frozen=True)
class UserBranchConfig:
    """Hyperparameters of the user branch, in one place."""

    embedding_dim: int = EMBEDDING_DIM
    hidden_units: Tuple[int, ...] = (128, 64)
    demographic_embedding_dim: int = 8
    leaky_relu_alpha: float = 0.2
    # "history": history + demographics (the paper); "user_id": the MF baseline.
    query: str = "history"
    batch_size: int = 256
    # The most epochs; with early stopping training usually ends sooner.
    epochs: int = 40
    learning_rate: float = 0.003
    # Early stopping: each user's last training label (users with at least
    # `min_examples_for_validation` of them) is held back; training stops once
    # their recall@`early_stopping_k` over the catalogue has not improved for
    # this many epochs and keeps the best epoch's weights. 0: train every epoch
    # on every example.
    early_stopping_patience: int = 5
    early_stopping_k: int = 10
    min_examples_for_validation: int = 3
    refit_on_all_examples: bool = True
    # UE = MLP(history, demographics) + the candidate tower's projection of the averaged
    # history: the user starts at the centroid of what they liked, in candidate space
    # (item-to-item similarity), and the MLP learns the correction. Worth +0.02-0.04
    # recall@10 on two simulated worlds.
    history_skip: bool = True
    # History and candidates look ids up in the same tables (YouTubeDNN) or in separate ones.
    share_item_embeddings: bool = True
    dislikes_as_negatives: bool = True
    logq_correction: bool = True
    remove_accidental_hits: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.query not in ("history", "user_id"):
            raise ValueError(f"query must be 'history' or 'user_id', not {self.query!r}")


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


class IdEmbedding(keras.layers.Layer):
    """String ids -> embeddings. '' is padding (index 0); ids outside the vocabulary
    share one out-of-vocabulary row (index 1), which `known` lets callers mask."""

    def __init__(self, vocabulary: Sequence[str], dim: int, name: str):
        super().__init__(name=name)
        self.lookup = keras.layers.StringLookup(vocabulary=list(vocabulary), mask_token=PAD, num_oov_indices=1, name=f"{name}_lookup")
        self.embedding = keras.layers.Embedding(len(vocabulary) + 2, dim, name=f"{name}_embedding")

    def call(self, ids):
        return self.embedding(self.lookup(ids))

    def known(self, ids) -> tf.Tensor:
        """True where the id is in the vocabulary (not padding, not OOV)."""
        return self.lookup(ids) > 1


class MaskedMean(keras.layers.Layer):
    """Average of embeddings over the positions where `mask` is true (zeros when none is)."""

    def call(self, embeddings, mask):
        weights = tf.cast(mask, embeddings.dtype)[..., None]
        total = tf.reduce_sum(embeddings * weights, axis=-2)
        return total / tf.maximum(tf.reduce_sum(weights, axis=-2), 1.0)


class QueryTower(keras.Model):
    """History + demographics -> UE (or user id -> embedding for the MF baseline)."""

    def get_config(self):
        # Built from vocabularies (data), not from a config: exports are SavedModel graphs.
        return {"name": self.name}

    def __init__(self, vocab: Vocabularies, config: UserBranchConfig, item_embeddings: Dict[str, keras.Model],
                 combine_items: keras.layers.Layer):
        super().__init__(name="query_tower")
        self._combine_items = combine_items
        self._config = config
        self._vocab = vocab
        if config.query == "user_id":
            self._user_embedding = IdEmbedding(vocab.users, config.embedding_dim, "user")
            return
        self._items = item_embeddings
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

    def call(self, features):
        if self._config.query == "user_id":
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
        return user_embedding


class CandidateTower(keras.Model):
    """Track id -> 40-d candidate embedding from the track, its album and its artist."""

    def get_config(self):
        # Built from vocabularies (data), not from a config: exports are SavedModel graphs.
        return {"name": self.name}

    def __init__(self, vocab: Vocabularies, config: UserBranchConfig, item_embeddings: Dict[str, keras.Model],
                 combine_items: keras.layers.Layer):
        super().__init__(name="candidate_tower")
        self._items = item_embeddings
        self._combine = combine_items
        self._album_of = _static_map(vocab.track_album)
        self._artist_of = _static_map(vocab.track_artist)

    def call(self, track_ids):
        parts = [
            self._items["track"](track_ids),
            self._items["album"](self._album_of.lookup(track_ids)),
            self._items["artist"](self._artist_of.lookup(track_ids)),
        ]
        return self._combine(tf.concat(parts, axis=-1))


def _static_map(mapping: Dict[str, str]) -> tf.lookup.StaticHashTable:
    keys = list(mapping) or ["\x00"]
    values = [mapping[k] for k in mapping] or [PAD]
    return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), default_value=PAD)


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
            self.query_tower(features),
            self.candidate_tower(positive_ids),
            positive_ids,
            self._probability.lookup(positive_ids) if self._config.logq_correction else None,
            None if negative_ids is None else self.candidate_tower(negative_ids),
            negative_ids,
        )


def retrieval_loss(task, queries, positives, positive_ids, positive_probability=None, negatives=None, negative_ids=None):
    """Softmax cross-entropy of each query's positive against the batch's other
    positives and (optionally) every example's hard negative.

    Logits are dot products; positives are log-Q corrected by their sampling
    probability when given (hard negatives were not drawn by popularity, so
    they get p = 1, no correction); accidental hits (a candidate with the
    query's positive id) and absent hard negatives (id '') are masked out.
    """
    candidates, candidate_ids, probability, score_mask = positives, positive_ids, positive_probability, None
    if negatives is not None:
        candidates = tf.concat([positives, negatives], axis=0)
        candidate_ids = tf.concat([positive_ids, negative_ids], axis=0)
        if probability is not None:
            probability = tf.concat([probability, tf.ones_like(probability)], axis=0)
        present = tf.concat([tf.ones_like(negative_ids, tf.bool), tf.not_equal(negative_ids, PAD)], axis=0)
        score_mask = tf.tile(present[None, :], [tf.shape(queries)[0], 1])
    return task(
        queries,
        candidates,
        candidate_sampling_probability=probability,
        candidate_ids=candidate_ids,
        compute_metrics=False,
        score_mask=score_mask,
    )


@dataclasses.dataclass
class TrainedUserBranch:
    model: TwoTowerModel
    vocab: Vocabularies
    config: UserBranchConfig
    history: Dict[str, list]

    @property
    def best_epoch(self) -> int:
        """1-based epoch whose weights the model has: the best validation recall, or the last."""
        recall = self.history.get(f"val_recall@{self.config.early_stopping_k}")
        return int(np.argmax(recall)) + 1 if recall else len(self.history["loss"])

    def user_embeddings(self, examples: UserExamples) -> np.ndarray:
        return embed_queries(self.model, examples, self.vocab, self.config)

    def candidate_embeddings(self) -> Tuple[np.ndarray, np.ndarray]:
        return embed_catalogue(self.model, self.vocab)


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
    names = ["user_id"] if config.query == "user_id" else list(HISTORY_FEATURES) + list(vocab.numeric) + list(vocab.categorical)
    return {name: _as_tensor_input(examples.columns[name]) for name in names}


def _as_tensor_input(values: np.ndarray) -> np.ndarray:
    return values.astype(str) if values.dtype == object else values


def train_user_branch(data: UserBranchData, config: UserBranchConfig = UserBranchConfig(), verbose: int = 2,
                      vocab: Optional[Vocabularies] = None) -> TrainedUserBranch:
    """Trains the two-tower model on `data.train`; returns the model and its vocabularies
    (`vocab`, e.g. from the pipeline's Transform, or learned from `data.train`).

    With early stopping, a first run on the examples outside the validation
    labels picks the number of epochs, and the model is then retrained on
    every example for that many epochs (with `refit_on_all_examples`), so no
    user's most recent training label is lost to validation.
    """
    if len(data.train) == 0:
        raise ValueError("no training examples: no user has liked tracks")
    vocab = vocab or Vocabularies.from_examples(data)
    train, validation = split_validation(data.train, config)
    if validation is None:
        return _fit(data.train, vocab, config, config.epochs, verbose)
    recall = ValidationRecall(dataclasses.replace(data, train=train), validation, vocab, config)
    stopping = keras.callbacks.EarlyStopping(monitor=recall.name, mode="max", patience=config.early_stopping_patience,
                                             restore_best_weights=True)
    selected = _fit(train, vocab, config, config.epochs, verbose, callbacks=[recall, stopping])
    if not config.refit_on_all_examples:
        return selected
    logging.info("%s user branch: retraining on all %d examples for the best %d epochs (%s %.3f)", musicrec.LOG_TAG,
                 len(data.train), selected.best_epoch, recall.name, max(selected.history[recall.name]))
    refit = _fit(data.train, vocab, config, selected.best_epoch, verbose)
    return dataclasses.replace(refit, history={**selected.history, "refit_loss": refit.history["loss"]})


def _fit(examples: UserExamples, vocab: Vocabularies, config: UserBranchConfig, epochs: int,
         verbose: int, callbacks=()) -> TrainedUserBranch:
    keras.utils.set_random_seed(config.seed)
    labels, counts = np.unique(examples.columns["track_id"].astype(str), return_counts=True)
    model = TwoTowerModel(vocab, config, dict(zip(labels, counts / counts.sum())))
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    history = model.fit(_training_dataset(examples, vocab, config), epochs=epochs, verbose=verbose,
                        callbacks=list(callbacks))
    return TrainedUserBranch(model=model, vocab=vocab, config=config, history=history.history)


class ValidationRecall(keras.callbacks.Callback):
    """Adds the validation labels' recall@k over the whole catalogue to each epoch's logs.

    The report's own metric, computed the report's way (`trainer.ranking`),
    so early stopping follows what is reported; the in-batch softmax loss on
    a small validation set does not (its few negatives are other users'
    labels; on the tiny test data it bottomed out at epoch 2 while the
    held-out ranking went on improving to epoch 15).
    """

    def __init__(self, data: UserBranchData, validation: UserExamples, vocab: Vocabularies, config: UserBranchConfig):
        super().__init__()
        self._data, self._validation, self._vocab, self._config = data, validation, vocab, config
        self._queries = queries(validation)
        self.name = f"val_recall@{config.early_stopping_k}"

    def evaluate(self, model: TwoTowerModel) -> float:
        track_ids, candidates = embed_catalogue(model, self._vocab)
        scores = embed_queries(model, self._queries, self._vocab, self._config) @ candidates.T
        metrics = ranking_metrics(scores, track_ids, self._data, self._validation, ks=(self._config.early_stopping_k,))
        return metrics[f"recall@{self._config.early_stopping_k}"]

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs[self.name] = self.evaluate(self.model)


def split_validation(examples: UserExamples, config: UserBranchConfig) -> Tuple[UserExamples, Optional[UserExamples]]:
    """(training, validation): the validation rows are the last label (by `position`) of
    each user with at least `min_examples_for_validation` labels; None when early stopping
    is off or no user qualifies."""
    if not config.early_stopping_patience:
        return examples, None
    frame = pd.DataFrame({"user_id": examples.columns["user_id"].astype(str), "position": examples.columns["position"]})
    per_user = frame.groupby("user_id")["position"]
    last = (frame["position"] == per_user.transform("max")) & (per_user.transform("size") >= config.min_examples_for_validation)
    if not last.any():
        return examples, None
    return examples.take(~last.to_numpy()), examples.take(last.to_numpy())


def _training_dataset(examples: UserExamples, vocab: Vocabularies, config: UserBranchConfig) -> tf.data.Dataset:
    """Shuffled batches of query features + the label `track_id` + the hard negative `disliked_track_id`."""
    features = query_features(examples, vocab, config)
    features["track_id"] = examples.columns["track_id"].astype(str)
    features["disliked_track_id"] = examples.columns["disliked_track_id"].astype(str)
    return (
        tf.data.Dataset.from_tensor_slices(features)
        .shuffle(len(examples), seed=config.seed, reshuffle_each_iteration=True)
        .batch(config.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
