"""The user branch's training loop: `train_user_branch` fits the two-tower model
(`user_towers.TwoTowerModel`) with early stopping on the validation labels' recall over the
catalogue, then refits on every example for the chosen number of epochs."""

from __future__ import annotations

import dataclasses
import logging
from typing import Dict, Optional, Tuple

import musicrec  # (importing it first sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import pandas as pd
import tensorflow as tf
import tf_keras as keras

from musicrec.data.user_examples import UserBranchData, UserExamples
from musicrec.trainer.ranking import FactorizedScores, queries, ranking_metrics
from musicrec.trainer.user_config import UserBranchConfig
from musicrec.trainer.user_layers import Vocabularies
from musicrec.trainer.user_towers import TwoTowerModel, embed_catalogue, embed_queries, query_features


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
        scores = FactorizedScores(embed_queries(model, self._queries, self._vocab, self._config), candidates)
        metrics = ranking_metrics(scores, track_ids, self._data, self._validation, ks=(self._config.early_stopping_k,),
                                  shares=(), max_users=self._config.ranking_max_users, seed=self._config.seed)
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
