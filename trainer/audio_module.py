"""Training, track-level embeddings and liked/disliked evaluation of the audio branch.

`train_audio_branch` fits one variant; `track_embeddings` gives each track's
AE as the mean of the AEs of the non-overlapping context-length segments of
its first 30 s; `evaluate_liked_disliked` scores every (user, track) pair of a
split by cos(user vector, AE) and reports AUC, plus precision at a decision
threshold chosen on the validation split (the one that maximises accuracy
there; the threshold is stated in the report).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import time
from typing import Dict

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import pandas as pd
import tensorflow as tf
import tf_keras as keras
from sklearn.metrics import precision_score, roc_auc_score

from musicrec.data.audio_pairs import AudioPairs, SplitConfig, build_audio_pairs, read_pair_examples
from musicrec.data.contract import FeedbackConfig
from musicrec.data.feedback import feedback_labels
from musicrec.data.user_examples import UserExamples, history_examples
from trainer.audio_branch import AudioBranchConfig, SiameseAudioModel, paper_optimizer
from trainer.audio_input import Cropper, LogMelStore, binary_dataset, track_segments, training_examples, triplet_dataset
from trainer.user_export import EMBED_USER_SIGNATURE, read_embeddings


@dataclasses.dataclass
class UserVectors:
    """The user-branch UE table: user ids and their 40-d embeddings."""

    user_ids: np.ndarray
    vectors: np.ndarray

    def index(self) -> Dict[str, int]:
        return {u: i for i, u in enumerate(self.user_ids)}

    @classmethod
    def from_user_tower(cls, user_tower_dir, queries: UserExamples, batch_size: int = 512) -> "UserVectors":
        """Embeds `queries` (history_examples rows) with an exported user tower SavedModel."""
        embed = tf.saved_model.load(str(user_tower_dir)).signatures[EMBED_USER_SIGNATURE]
        inputs = {}
        for name, spec in embed.structured_input_signature[1].items():
            values = queries.columns[name]
            inputs[name] = values.astype(str) if spec.dtype == tf.string else values.astype(np.float32)
        vectors = [
            embed(**batch)["user_embedding"].numpy()
            for batch in tf.data.Dataset.from_tensor_slices(inputs).batch(batch_size)
        ]
        return cls(queries.columns["user_id"].astype(str), np.concatenate(vectors, axis=0))

    @classmethod
    def from_parquet(cls, path) -> "UserVectors":
        """Reads the user branch's `user_embeddings.parquet`."""
        table = read_embeddings(path, "user_id")
        return cls(table["user_id"].to_numpy(), np.stack(table["embedding"].to_numpy()))


@dataclasses.dataclass
class TrainedAudioBranch:
    model: SiameseAudioModel
    config: AudioBranchConfig
    users: UserVectors
    history: Dict[str, list]
    segments_per_second: float
    skipped_users: int

    def user_vectors(self) -> np.ndarray:
        """The vectors the model scores against: frozen UEs, or the learned id embeddings (DCUE)."""
        return self.model.user_vectors.embeddings.numpy()


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


def train_audio_branch(pairs: AudioPairs, store: LogMelStore, users: UserVectors, config: AudioBranchConfig,
                       verbose: int = 0) -> TrainedAudioBranch:
    keras.utils.set_random_seed(config.seed)
    train = usable_pairs(pairs.split("train"), users, store, config.context_frames)
    examples = training_examples(train, users.index(), store)
    cropper = Cropper(store, config.context_frames)
    if config.loss == "binary":
        count, segments_per_step = len(examples.binary_rows), config.batch_size
        dataset = binary_dataset(examples, cropper, config.batch_size, config.seed)
    else:
        count, segments_per_step = len(examples.user_rows), config.batch_size * (1 + config.negatives)
        dataset = triplet_dataset(examples, cropper, config.negatives, config.batch_size, config.seed)
    if count == 0:
        raise ValueError("no training examples: no user has both liked and disliked training tracks with audio")
    if examples.skipped_users and config.loss != "binary":
        logging.warning("%s audio branch: %d users have liked but no disliked training tracks; their liked tracks "
                        "form no triplets", musicrec.LOG_TAG, examples.skipped_users)
    per_epoch = -(-count // config.batch_size)  # the last batch may be partial
    steps = config.steps_per_epoch or per_epoch
    model = SiameseAudioModel(config, users.vectors)
    model.compile(optimizer=paper_optimizer(config))
    progress = _Progress(segments_per_step)
    history = model.fit(dataset.repeat(), epochs=config.epochs, steps_per_epoch=steps, callbacks=[progress], verbose=verbose)
    return TrainedAudioBranch(
        model=model, config=config, users=users, history=history.history,
        segments_per_second=float(np.median(progress.rates)) if progress.rates else 0.0,
        skipped_users=examples.skipped_users,
    )


def prepare_audio_branch(dataset, store: LogMelStore, user_tower_dir, context_frames: int,
                         feedback: FeedbackConfig = FeedbackConfig(), split: SplitConfig = SplitConfig()):
    """Splits the liked/disliked pairs and embeds every user with the user tower from their
    liked tracks outside the validation and test pairs, so no UE contains a track it is
    evaluated on. (Under the `users` protocol, evaluated users thus get a UE from
    demographics alone: cold users.) Returns (AudioPairs, UserVectors)."""
    pairs = build_audio_pairs(dataset.interactions, dataset.users["user_id"], store.usable(context_frames), feedback, split)
    evaluated = pairs.pairs[pairs.pairs["split"] != "train"][["user_id", "track_id"]]
    liked = feedback_labels(dataset.interactions, feedback).labels.query("label == 1")
    liked = liked.merge(evaluated, how="left", indicator=True).query("_merge == 'left_only'")
    queries = history_examples(dataset, liked, pairs.pairs["user_id"])
    return pairs, UserVectors.from_user_tower(user_tower_dir, queries)


def usable_pairs(pairs: pd.DataFrame, users: UserVectors, store: LogMelStore, context_frames: int) -> pd.DataFrame:
    """Pairs whose user has a vector and whose track has a full crop of audio; drops are logged with counts."""
    known_user = pairs["user_id"].isin(set(users.user_ids))
    long_enough = pairs["track_id"].isin(set(store.usable(context_frames)))
    for count, reason in (((~known_user).sum(), "users without a user embedding"),
                          ((known_user & ~long_enough).sum(), f"tracks without {context_frames} frames of log-mel")):
        if count:
            logging.warning("%s audio branch: left out %d pairs: %s", musicrec.LOG_TAG, count, reason)
    return pairs[known_user & long_enough].reset_index(drop=True)


def track_embeddings(encoder: keras.Model, store: LogMelStore, context_frames: int, batch_size: int = 256) -> np.ndarray:
    """[tracks, d]: mean AE over the non-overlapping context-length segments of each track's first 30 s."""
    rows, offsets = track_segments(store, context_frames)
    cropper = Cropper(store, context_frames)
    batches = tf.data.Dataset.from_tensor_slices((rows, offsets)).batch(batch_size).map(cropper.at)
    segment_ae = np.concatenate([encoder(crops, training=False).numpy() for crops in batches], axis=0)
    sums = np.zeros((len(store.track_ids), segment_ae.shape[1]), np.float64)
    np.add.at(sums, rows, segment_ae)
    return (sums / np.bincount(rows, minlength=len(store.track_ids))[:, None]).astype(np.float32)


def pair_scores(pairs: pd.DataFrame, user_vectors: np.ndarray, user_index: Dict[str, int], track_ae: np.ndarray,
                store: LogMelStore) -> np.ndarray:
    users = user_vectors[pairs["user_id"].map(user_index).to_numpy()]
    tracks = track_ae[store.rows(pairs["track_id"])]
    users = users / np.maximum(np.linalg.norm(users, axis=1, keepdims=True), 1e-12)
    tracks = tracks / np.maximum(np.linalg.norm(tracks, axis=1, keepdims=True), 1e-12)
    return np.sum(users * tracks, axis=1)


def evaluate_liked_disliked(trained: TrainedAudioBranch, pairs: AudioPairs, store: LogMelStore,
                            test_split: str = "test") -> Dict[str, float]:
    track_ae = track_embeddings(trained.model.encoder, store, trained.config.context_frames)
    vectors, index = trained.user_vectors(), trained.users.index()
    splits = {s: usable_pairs(pairs.split(s), trained.users, store, 1) for s in ("validation", test_split)}
    scores = {s: pair_scores(frame, vectors, index, track_ae, store) for s, frame in splits.items()}
    labels = {s: frame["label"].to_numpy() for s, frame in splits.items()}
    threshold = accuracy_threshold(scores["validation"], labels["validation"])
    predicted = scores[test_split] >= threshold
    return {
        "auc": float(roc_auc_score(labels[test_split], scores[test_split])),
        "precision": float(precision_score(labels[test_split], predicted, zero_division=0)),
        "threshold": float(threshold),
        "validation_auc": float(roc_auc_score(labels["validation"], scores["validation"])),
        "test_pairs": int(len(labels[test_split])),
    }


def accuracy_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The cosine threshold that classifies the validation pairs most accurately."""
    order = np.argsort(-scores)
    sorted_scores, sorted_labels = scores[order], labels[order]
    # Predict liked for the top k: correct = liked among top k + disliked below k.
    liked_above = np.concatenate([[0], np.cumsum(sorted_labels)])
    disliked_below = np.concatenate([[0], np.cumsum((1 - sorted_labels)[::-1])])[::-1]
    best = int(np.argmax(liked_above + disliked_below))
    if best == 0:
        return float(sorted_scores[0] + 1e-6)
    if best == len(scores):
        return float(sorted_scores[-1])
    return float((sorted_scores[best - 1] + sorted_scores[best]) / 2)


AUDIO_ENCODER_DIR = "audio_encoder"
EMBED_LOG_MEL_SIGNATURE = "embed_log_mel"
REPORT_FILE = "audio_branch_report.json"


def export_audio_encoder(trained: TrainedAudioBranch, out_dir) -> pathlib.Path:
    """SavedModel `audio_encoder/`, signature `embed_log_mel`: log-mel [batch, frames, 128] -> AE [batch, 40].

    Serving (the audio_embedder of the serving issue) puts decoding and the
    log-mel front end in front of this graph.
    """
    path = pathlib.Path(out_dir) / AUDIO_ENCODER_DIR
    encoder = trained.model.encoder
    embed = tf.function(
        lambda log_mel: {"audio_embedding": encoder(log_mel, training=False)},
        input_signature=[tf.TensorSpec([None, None, encoder.input_shape[-1]], tf.float32, name="log_mel")],
    )
    module = tf.Module()
    module.encoder = encoder
    tf.saved_model.save(module, str(path), signatures={EMBED_LOG_MEL_SIGNATURE: embed, "serving_default": embed})
    return path


def run_fn(fn_args) -> None:
    """TFX Trainer entry point of the audio branch.

    train_files / eval_files: (user_id, track_id, label) pair examples of the
    training and validation splits. custom_config: `log_mel_pattern` (the
    audio feature component's TFRecords), `user_embeddings` (the user
    branch's UE parquet) and optional `audio_branch` (AudioBranchConfig
    fields, e.g. {"loss": "hinge", "negatives": 4}).
    """
    custom = fn_args.custom_config or {}
    config = AudioBranchConfig(**custom.get("audio_branch", {}))
    store = LogMelStore.from_tfrecords([custom["log_mel_pattern"]])
    users = UserVectors.from_parquet(custom["user_embeddings"])
    frames = pd.concat([
        read_pair_examples(fn_args.train_files).assign(split="train"),
        read_pair_examples(fn_args.eval_files).assign(split="validation"),
    ], ignore_index=True)
    pairs = AudioPairs(pairs=frames, excluded={})
    trained = train_audio_branch(pairs, store, users, config, verbose=2)
    # The threshold is chosen on the same validation pairs here; the pipeline's
    # evaluator measures the held-out test split.
    metrics = evaluate_liked_disliked(trained, pairs, store, test_split="validation")
    report_dir = pathlib.Path(fn_args.model_run_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / REPORT_FILE).write_text(json.dumps({"config": dataclasses.asdict(config), "validation": metrics}, indent=2) + "\n")
    export_audio_encoder(trained, fn_args.serving_model_dir)
