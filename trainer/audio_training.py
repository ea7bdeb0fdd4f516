"""Training of the audio branch: `train_audio_branch` fits one configured variant.

Progress is logged per epoch in segments/s; with early stopping, the
validation AUC (`ValidationAUC`) is checked after every epoch and the best
epoch's weights are restored.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Dict, Optional

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import pandas as pd
import tensorflow as tf
import tf_keras as keras
from sklearn.metrics import roc_auc_score

from musicrec.data.audio_pairs import AudioPairs
from musicrec.trainer.audio_branch import AudioBranchConfig, SiameseAudioModel, build_optimizer
from musicrec.trainer.audio_data import UserVectors, track_classes, usable_pairs
from musicrec.trainer.audio_evaluation import pair_scores, track_embeddings
from musicrec.trainer.audio_input import Augmentation, Cropper, LogMelStore, binary_dataset, training_examples, triplet_dataset
from musicrec.trainer.log_mel_shards import LogMels, LogMelShards, block_dataset
from musicrec.trainer.user_refinement import Refinement, choose_refinement, pair_arrays


@dataclasses.dataclass
class TrainedAudioBranch:
    model: SiameseAudioModel
    config: AudioBranchConfig
    users: UserVectors
    history: Dict[str, list]  # per epoch: loss, and val_auc when early stopping watched it
    segments_per_second: float
    skipped_users: int
    epochs_trained: int = 0
    best_epoch: Optional[int] = None  # 1-based epoch whose weights were kept (early stopping), else None
    refinement: Optional[Refinement] = None  # per-user refinement (config.refine_users)

    def training_summary(self) -> dict:
        """What the reports list: the epochs run and chosen, the validation AUC per epoch, and the
        user refinement chosen."""
        return {"epochs_trained": self.epochs_trained, "best_epoch": self.best_epoch,
                "max_epochs": self.config.epochs, "validation_auc_by_epoch": self.history.get("val_auc", []),
                "user_refinement": self.refinement.summary() if self.refinement else None}

    def user_vectors(self) -> np.ndarray:
        """The vectors the model scores against: the (adapted) UEs, or the learned id embeddings (DCUE),
        refined per user when the configuration asks for it."""
        return self.refinement.vectors if self.refinement else self.model.user_table()


class _Progress(keras.callbacks.Callback):
    """One line per epoch with the loss and the training rate in segments/s."""

    def __init__(self, segments_per_step: int):
        super().__init__()
        self._segments_per_step = segments_per_step
        self.rates = []

    def on_epoch_begin(self, epoch, logs=None):
        self._started, self._steps = time.monotonic(), 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.monotonic() - self._started
        rate = self._steps * self._segments_per_step / max(seconds, 1e-9)
        self.rates.append(rate)
        logging.info(
            "%s audio branch epoch %d: loss %.4f, %d steps, %.0f segments/s",
            musicrec.LOG_TAG, epoch + 1, (logs or {}).get("loss", float("nan")), self._steps, rate,
        )


def train_audio_branch(pairs: AudioPairs, store: LogMels, users: UserVectors, config: AudioBranchConfig,
                       verbose: int = 0) -> TrainedAudioBranch:
    """`store`: the log-mels in memory, or their shards' index (`log_mel_shards.open_log_mels`
    chooses), read block by block."""
    keras.utils.set_random_seed(config.seed)
    train = usable_pairs(pairs.split("train"), users, store, config.context_frames)
    examples = training_examples(train, users.index(), store)  # over the whole catalogue: counts, steps
    augment = Augmentation(config.augment_gain_db, config.augment_tilt_db) if config.augment else None
    binary = config.loss == "binary"
    count = len(examples.binary_rows) if binary else len(examples.user_rows)
    segments_per_step = config.batch_size * (1 if binary else 1 + config.negatives)
    if count == 0:
        raise ValueError("no training examples: no user has both liked and disliked training tracks with audio")
    if examples.skipped_users and not binary:
        logging.warning("%s audio branch: %d users have liked but no disliked training tracks; their liked tracks "
                        "form no triplets", musicrec.LOG_TAG, examples.skipped_users)

    def make_dataset(block_pairs: pd.DataFrame, block: LogMelStore, draw_seed: Optional[int] = None) -> tf.data.Dataset:
        block_examples = training_examples(block_pairs, users.index(), block)
        if draw_seed is not None and block_examples.skipped_users and not binary:  # a block of the shards
            logging.info("%s audio branch: %d users of this block have no disliked track in it; their liked tracks "
                         "here form no triplets", musicrec.LOG_TAG, block_examples.skipped_users)
        cropper = Cropper(block, config.context_frames)
        seed = config.seed if draw_seed is None else draw_seed
        if binary:
            return binary_dataset(block_examples, cropper, config.batch_size, seed, augment, draw_seed=draw_seed)
        return triplet_dataset(block_examples, cropper, config.negatives, config.batch_size, seed, augment,
                               liked_mask=config.needs_liked_mask, draw_seed=draw_seed)

    if isinstance(store, LogMelShards):
        dataset = block_dataset(store, train, make_dataset, config.seed)
    else:
        dataset = make_dataset(train, store).repeat()
    per_epoch = -(-count // config.batch_size)  # the last batch may be partial
    steps = config.steps_per_epoch or per_epoch
    model = SiameseAudioModel(config, users.vectors, track_classes(train, store) if config.class_weight else None)
    if config.class_weight and model.class_head is None:
        logging.warning("%s audio branch: no training pair has a known genre; trained without the genre head",
                        musicrec.LOG_TAG)
    model.compile(optimizer=build_optimizer(config, total_steps=steps * config.epochs))
    progress = _Progress(segments_per_step)
    callbacks = [progress]
    if config.early_stopping_patience:
        validation = usable_pairs(pairs.split("validation"), users, store, 1)
        # Keras's EarlyStopping restores the best epoch's weights; it reads the val_auc that
        # ValidationAUC (listed first, so it runs first) adds to each epoch's logs.
        stopping = keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=config.early_stopping_patience,
                                                 restore_best_weights=True)
        callbacks += [ValidationAUC(validation, users, store, config.context_frames), stopping]
    history = model.fit(dataset, epochs=config.epochs, steps_per_epoch=steps, callbacks=callbacks, verbose=verbose)
    val_auc = history.history.get("val_auc")
    return TrainedAudioBranch(
        model=model, config=config, users=users, history=history.history,
        segments_per_second=float(np.median(progress.rates)) if progress.rates else 0.0,
        skipped_users=examples.skipped_users, epochs_trained=len(history.history.get("loss", [])),
        best_epoch=int(np.argmax(val_auc)) + 1 if val_auc else None,
        refinement=refine(model, train, pairs.split("validation"), users, store) if config.refine_users else None,
    )


def refine(model: SiameseAudioModel, train: pd.DataFrame, validation: pd.DataFrame, users: UserVectors,
           store: LogMels) -> Refinement:
    """The per-user refinement of the trained model's user vectors (trainer/user_refinement.py),
    from the AEs of the training and validation tracks only."""
    validation = usable_pairs(validation, users, store, 1)
    frames = pd.concat([train, validation])
    rows = np.unique(store.rows(frames["track_id"]))
    track_ae = track_embeddings(model.encoder, store, model.config.context_frames, track_rows=rows)
    index = users.index()
    arrays = [pair_arrays(f, index, track_ae, store.rows(f["track_id"])) for f in (train, validation)]
    return choose_refinement(model.user_table(), *arrays)


class ValidationAUC(keras.callbacks.Callback):
    """Adds `val_auc`, the liked/disliked AUC of cos(user vector, track AE) on the validation
    pairs, to every epoch's logs. Only the validation tracks are embedded."""

    def __init__(self, validation: pd.DataFrame, users: UserVectors, store: LogMels, context_frames: int):
        super().__init__()
        if validation.empty or validation["label"].nunique() < 2:
            raise ValueError("early stopping needs validation pairs with both liked and disliked labels")
        self.validation, self.users, self.store, self.context_frames = validation, users, store, context_frames
        self.track_rows = np.unique(store.rows(validation["track_id"]))

    def on_epoch_end(self, epoch, logs=None):
        track_ae = track_embeddings(self.model.encoder, self.store, self.context_frames, track_rows=self.track_rows)
        vectors = self.model.user_table()
        scores = pair_scores(self.validation, vectors, self.users.index(), track_ae, self.store)
        auc = float(roc_auc_score(self.validation["label"], scores))
        if logs is not None:
            logs["val_auc"] = auc
        logging.info("%s audio branch epoch %d: validation AUC %.4f", musicrec.LOG_TAG, epoch + 1, auc)


