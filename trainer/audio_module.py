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
from typing import Dict, Optional

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import pandas as pd
import tensorflow as tf
import tf_keras as keras
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_score, roc_auc_score

from musicrec.data.audio_pairs import AudioPairs, SplitConfig, build_audio_pairs, read_pair_examples, user_queries
from musicrec.data.contract import FeedbackConfig
from musicrec.data.user_examples import UserExamples, read_user_examples
from musicrec.trainer.audio_branch import AudioBranchConfig, SiameseAudioModel, build_optimizer
from musicrec.trainer.audio_input import Cropper, LogMelStore, binary_dataset, track_segments, training_examples, triplet_dataset
from musicrec.trainer.pair_metrics import pair_auc
from musicrec.trainer.user_export import read_embeddings
from musicrec.names import EMBED_USER_SIGNATURE, USER_TOWER_DIR
from musicrec.names import AUDIO_ENCODER_DIR, EMBED_LOG_MEL_SIGNATURE, MODEL_INFO_FILE, SCORE_EXAMPLES_SIGNATURE


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
    history: Dict[str, list]  # per epoch: loss, and val_auc when early stopping watched it
    segments_per_second: float
    skipped_users: int
    epochs_trained: int = 0
    best_epoch: Optional[int] = None  # 1-based epoch whose weights were kept (early stopping), else None

    def training_summary(self) -> dict:
        """What the reports list: the epochs run and chosen, and the validation AUC per epoch."""
        return {"epochs_trained": self.epochs_trained, "best_epoch": self.best_epoch,
                "max_epochs": self.config.epochs, "validation_auc_by_epoch": self.history.get("val_auc", [])}

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
    history = model.fit(dataset.repeat(), epochs=config.epochs, steps_per_epoch=steps, callbacks=callbacks, verbose=verbose)
    val_auc = history.history.get("val_auc")
    return TrainedAudioBranch(
        model=model, config=config, users=users, history=history.history,
        segments_per_second=float(np.median(progress.rates)) if progress.rates else 0.0,
        skipped_users=examples.skipped_users, epochs_trained=len(history.history.get("loss", [])),
        best_epoch=int(np.argmax(val_auc)) + 1 if val_auc else None,
    )


class ValidationAUC(keras.callbacks.Callback):
    """Adds `val_auc`, the liked/disliked AUC of cos(user vector, track AE) on the validation
    pairs, to every epoch's logs. Only the validation tracks are embedded."""

    def __init__(self, validation: pd.DataFrame, users: UserVectors, store: LogMelStore, context_frames: int):
        super().__init__()
        if validation.empty or validation["label"].nunique() < 2:
            raise ValueError("early stopping needs validation pairs with both liked and disliked labels")
        self.validation, self.users, self.store, self.context_frames = validation, users, store, context_frames
        self.track_rows = np.unique(store.rows(validation["track_id"]))

    def on_epoch_end(self, epoch, logs=None):
        track_ae = track_embeddings(self.model.encoder, self.store, self.context_frames, track_rows=self.track_rows)
        vectors = self.model.user_vectors.embeddings.numpy()
        scores = pair_scores(self.validation, vectors, self.users.index(), track_ae, self.store)
        auc = float(roc_auc_score(self.validation["label"], scores))
        if logs is not None:
            logs["val_auc"] = auc
        logging.info("%s audio branch epoch %d: validation AUC %.4f", musicrec.LOG_TAG, epoch + 1, auc)


def prepare_audio_branch(dataset, store: LogMelStore, user_tower_dir, context_frames: int,
                         feedback: FeedbackConfig = FeedbackConfig(), split: SplitConfig = SplitConfig()):
    """Splits the liked/disliked pairs and embeds every user with the user tower from their
    liked tracks outside the validation and test pairs (`audio_pairs.user_queries`).
    Returns (AudioPairs, UserVectors)."""
    pairs = build_audio_pairs(dataset.interactions, dataset.users["user_id"], store.usable(context_frames), feedback, split)
    return pairs, UserVectors.from_user_tower(user_tower_dir, user_queries(dataset, pairs, feedback))


def usable_pairs(pairs: pd.DataFrame, users: UserVectors, store: LogMelStore, context_frames: int) -> pd.DataFrame:
    """Pairs whose user has a vector and whose track has a full crop of audio; drops are logged with counts."""
    known_user = pairs["user_id"].isin(set(users.user_ids))
    long_enough = pairs["track_id"].isin(set(store.usable(context_frames)))
    for count, reason in (((~known_user).sum(), "users without a user embedding"),
                          ((known_user & ~long_enough).sum(), f"tracks without {context_frames} frames of log-mel")):
        if count:
            logging.warning("%s audio branch: left out %d pairs: %s", musicrec.LOG_TAG, count, reason)
    return pairs[known_user & long_enough].reset_index(drop=True)


def track_embeddings(encoder: keras.Model, store: LogMelStore, context_frames: int, batch_size: int = 256,
                     track_rows: Optional[np.ndarray] = None) -> np.ndarray:
    """[tracks, d]: mean AE over the non-overlapping context-length segments of each track's first 30 s.
    With `track_rows`, only those store rows are embedded (the others stay zero)."""
    rows, offsets = track_segments(store, context_frames)
    if track_rows is not None:
        wanted = np.isin(rows, track_rows)
        rows, offsets = rows[wanted], offsets[wanted]
    cropper = Cropper(store, context_frames)
    batches = tf.data.Dataset.from_tensor_slices((rows, offsets)).batch(batch_size).map(cropper.at)
    segment_ae = np.concatenate([encoder(crops, training=False).numpy() for crops in batches], axis=0)
    sums = np.zeros((len(store.track_ids), segment_ae.shape[1]), np.float64)
    np.add.at(sums, rows, segment_ae)
    counts = np.bincount(rows, minlength=len(store.track_ids))
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


def pair_scores(pairs: pd.DataFrame, user_vectors: np.ndarray, user_index: Dict[str, int], track_ae: np.ndarray,
                store: LogMelStore) -> np.ndarray:
    users = user_vectors[pairs["user_id"].map(user_index).to_numpy()]
    tracks = track_ae[store.rows(pairs["track_id"])]
    users = users / np.maximum(np.linalg.norm(users, axis=1, keepdims=True), 1e-12)
    tracks = tracks / np.maximum(np.linalg.norm(tracks, axis=1, keepdims=True), 1e-12)
    return np.sum(users * tracks, axis=1)


def evaluate_liked_disliked(trained: TrainedAudioBranch, pairs: AudioPairs, store: LogMelStore,
                            test_split: str = "test", track_ae: Optional[np.ndarray] = None) -> Dict[str, float]:
    """`track_ae`: the tracks' AEs when the caller has them already (else computed here)."""
    if track_ae is None:
        track_ae = track_embeddings(trained.model.encoder, store, trained.config.context_frames)
    vectors, index = trained.user_vectors(), trained.users.index()
    splits = {s: usable_pairs(pairs.split(s), trained.users, store, 1) for s in ("validation", test_split)}
    scores = {s: pair_scores(frame, vectors, index, track_ae, store) for s, frame in splits.items()}
    labels = {s: frame["label"].to_numpy() for s, frame in splits.items()}
    threshold = accuracy_threshold(scores["validation"], labels["validation"])
    predicted = scores[test_split] >= threshold
    return {
        "auc": float(roc_auc_score(labels[test_split], scores[test_split])),
        "per_user_auc": pair_auc(splits[test_split], scores[test_split]).per_user,
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


REPORT_FILE = "audio_branch_report.json"
# Written next to the SavedModel's assets: what the pusher and readers need to know.


class PairScorer(tf.Module):
    """Liked probability of (user_id, track_id) pairs given as serialized tf.Examples.

    The UE (or learned user vector) and track AE tables are baked in; the score
    is cos(user, track) through a logistic calibration fitted on the validation
    pairs, so TFMA's calibration and precision/recall at 0.5 mean something.
    Unknown users or tracks score cos = 0 (a zero vector), never an error, and
    the `known` output (0 for such a pair) says which scores are that
    fallback, so a caller scoring other pairs can count and drop them.
    """

    def __init__(self, user_ids, user_vectors, track_ids, track_vectors, slope: float, intercept: float):
        super().__init__(name="pair_scorer")
        self.user_index, self.users = self._table(user_ids, user_vectors, "user")
        self.track_index, self.tracks = self._table(track_ids, track_vectors, "track")
        self.slope, self.intercept = tf.constant(slope, tf.float32), tf.constant(intercept, tf.float32)

    @staticmethod
    def _table(ids, vectors, name):
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        vectors = np.concatenate([vectors, np.zeros((1, vectors.shape[1]))]).astype(np.float32)
        index = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(np.asarray(ids, dtype=str)), tf.range(len(ids), dtype=tf.int64)),
            default_value=len(ids), name=f"{name}_index",
        )
        return index, tf.Variable(vectors, trainable=False, name=f"{name}_vectors")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def score_examples(self, examples):
        spec = {key: tf.io.FixedLenFeature([], tf.string, default_value="") for key in ("user_id", "track_id")}
        parsed = tf.io.parse_example(examples, spec)
        user_rows, track_rows = self.user_index.lookup(parsed["user_id"]), self.track_index.lookup(parsed["track_id"])
        cosine = tf.reduce_sum(tf.gather(self.users, user_rows) * tf.gather(self.tracks, track_rows), axis=-1)
        known = tf.logical_and(user_rows < self.user_index.size(), track_rows < self.track_index.size())
        return {"probability": tf.sigmoid(self.slope * cosine + self.intercept), "cosine": cosine,
                "known": tf.cast(known, tf.int64)}


def fit_calibration(scores: np.ndarray, labels: np.ndarray):
    """Platt scaling: (slope, intercept) of P(liked | cosine), fitted on validation pairs."""
    model = LogisticRegression(C=1e4).fit(scores.reshape(-1, 1), labels)
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def export_audio_model(trained: TrainedAudioBranch, path, scorer: Optional[PairScorer] = None) -> pathlib.Path:
    """SavedModel at `path`: `embed_log_mel` (also `serving_default`): log-mel [batch, frames, 128]
    -> AE [batch, 40]; with a scorer also `score_examples` (the signature TFMA evaluates).

    Serving (the audio_embedder) puts decoding and the log-mel front end in
    front of `embed_log_mel`.
    """
    encoder = trained.model.encoder
    embed = tf.function(
        lambda log_mel: {"audio_embedding": encoder(log_mel, training=False)},
        input_signature=[tf.TensorSpec([None, None, encoder.input_shape[-1]], tf.float32, name="log_mel")],
    )
    module = tf.Module()
    module.encoder = encoder
    signatures = {EMBED_LOG_MEL_SIGNATURE: embed, "serving_default": embed}
    if scorer is not None:
        module.scorer = scorer
        signatures[SCORE_EXAMPLES_SIGNATURE] = scorer.score_examples
    tf.saved_model.save(module, str(path), signatures=signatures)
    return pathlib.Path(path)


def export_audio_encoder(trained: TrainedAudioBranch, out_dir) -> pathlib.Path:
    """The encoder alone, as `<out_dir>/audio_encoder/`."""
    return export_audio_model(trained, pathlib.Path(out_dir) / AUDIO_ENCODER_DIR)


def run_fn(fn_args) -> None:
    """TFX Trainer entry point of the audio branch (run by components.audio_trainer.AudioTrainer).

    train_files / eval_files: the ingestion's audio pair examples (train,
    eval = validation). base_model: the user-branch model, whose user tower
    embeds each user from their `user_queries` row (liked tracks outside the
    evaluated pairs). custom_config: `log_mel_uri` and `user_queries_uri`
    (added by the AudioTrainer executor from its input artifacts) and
    optional `audio_branch` (AudioBranchConfig fields, e.g. {"variant":
    "metric_1vs4", "epochs": 10}).

    Exports one SavedModel: the encoder (`embed_log_mel`) and the calibrated
    pair scorer (`score_examples`) with the UE and track AE tables baked in.
    """
    custom = dict(fn_args.custom_config or {})
    branch = dict(custom.get("audio_branch", {}))
    variant = branch.pop("variant", None)
    config = AudioBranchConfig.variant(variant, **branch) if variant else AudioBranchConfig(**branch)
    store = LogMelStore.from_tfrecords([str(pathlib.Path(custom["log_mel_uri"]) / "log_mel-*")])
    queries = read_user_examples([str(pathlib.Path(custom["user_queries_uri"]) / "*")])
    users = UserVectors.from_user_tower(pathlib.Path(fn_args.base_model) / USER_TOWER_DIR, queries)
    frames = pd.concat([
        read_pair_examples(fn_args.train_files).assign(split="train"),
        read_pair_examples(fn_args.eval_files).assign(split="validation"),
    ], ignore_index=True)
    pairs = AudioPairs(pairs=frames, excluded={})
    trained = train_audio_branch(pairs, store, users, config, verbose=2)
    track_ae = track_embeddings(trained.model.encoder, store, config.context_frames)
    validation = usable_pairs(pairs.split("validation"), trained.users, store, 1)
    cosine = pair_scores(validation, trained.user_vectors(), trained.users.index(), track_ae, store)
    slope, intercept = fit_calibration(cosine, validation["label"].to_numpy())
    scorer = PairScorer(trained.users.user_ids, trained.user_vectors(), store.track_ids, track_ae, slope, intercept)
    model_dir = export_audio_model(trained, fn_args.serving_model_dir, scorer)
    info = {
        "variant": variant, "config": dataclasses.asdict(config), "context_frames": config.context_frames,
        "calibration": {"slope": slope, "intercept": intercept},
        "validation": evaluate_liked_disliked(trained, pairs, store, test_split="validation", track_ae=track_ae),
        "segments_per_second": trained.segments_per_second,
        "training": trained.training_summary(),
    }
    (model_dir / MODEL_INFO_FILE).parent.mkdir(parents=True, exist_ok=True)
    (model_dir / MODEL_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    report_dir = pathlib.Path(fn_args.model_run_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / REPORT_FILE).write_text(json.dumps(info, indent=2) + "\n")
    logging.info("%s audio branch (%s): validation AUC %.3f", musicrec.LOG_TAG, variant or config.loss, info["validation"]["auc"])
