"""Track-level embeddings, liked/disliked evaluation and calibration of the audio branch.

`track_embeddings` gives each track's AE as the mean of the AEs of the
non-overlapping context-length segments of its first 30 s;
`evaluate_liked_disliked` scores every (user, track) pair of a split by
cos(user vector, AE) and reports AUC, plus precision at a decision threshold
chosen on the validation split (the one that maximises accuracy there; the
threshold is stated in the report); `fit_calibration` maps the cosine to
P(liked) for the exported scorer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import pandas as pd
import tensorflow as tf
import tf_keras as keras
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_score, roc_auc_score

from musicrec.data.audio_pairs import AudioPairs
from musicrec.trainer.audio_data import usable_pairs
from musicrec.trainer.audio_input import Cropper, LogMelCatalogue, track_segments
from musicrec.trainer.log_mel_shards import LogMels, LogMelShards
from musicrec.trainer.pair_metrics import pair_auc
from musicrec.trainer.similarity import cosine

if TYPE_CHECKING:  # a type only: training imports this module
    from musicrec.trainer.audio_training import TrainedAudioBranch


def track_embeddings(encoder: keras.Model, store: LogMels, context_frames: int, batch_size: int = 256,
                     track_rows: Optional[np.ndarray] = None) -> np.ndarray:
    """[tracks, d]: mean AE over the non-overlapping context-length segments of each track's first 30 s.
    With `track_rows`, only those store rows are embedded (the others stay zero). Sharded
    log-mels are read record by record (a track's AE needs only its own log-mel), into the
    same rows."""
    if isinstance(store, LogMelShards):
        segments = store.segments(np.arange(len(store.track_ids)) if track_rows is None else track_rows, context_frames)
        return _mean_segment_aes(encoder, segments.batch(batch_size).prefetch(1), len(store.track_ids))
    rows, offsets = track_segments(store, context_frames)
    if track_rows is not None:
        wanted = np.isin(rows, track_rows)
        rows, offsets = rows[wanted], offsets[wanted]
    cropper = Cropper(store, context_frames)
    segments = tf.data.Dataset.from_tensor_slices((rows, offsets)).batch(batch_size)
    return _mean_segment_aes(encoder, segments.map(lambda r, o: (r, cropper.at(r, o))), len(store.track_ids))


def _mean_segment_aes(encoder: keras.Model, batches: tf.data.Dataset, tracks: int) -> np.ndarray:
    """Per track row, the mean AE of its segments in `batches` of (track rows, crops); zero for a
    row with none."""
    sums, counts = None, np.zeros(tracks, np.int64)
    for rows, crops in batches:
        rows, segment_aes = rows.numpy(), np.asarray(encoder(crops, training=False))
        if sums is None:  # the AE width from the first batch: `encoder` may be a SavedModel's signature
            sums = np.zeros((tracks, segment_aes.shape[-1]), np.float64)
        np.add.at(sums, rows, segment_aes)
        counts += np.bincount(rows, minlength=tracks)
    if sums is None:
        raise ValueError("no track segments to embed")
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


def pair_scores(pairs: pd.DataFrame, user_vectors: np.ndarray, user_index: Dict[str, int], track_ae: np.ndarray,
                store: LogMelCatalogue) -> np.ndarray:
    """cos(user vector, track AE) of every pair."""
    users = user_vectors[pairs["user_id"].map(user_index).to_numpy()]
    return cosine(users, track_ae[store.rows(pairs["track_id"])]).numpy()


def evaluate_liked_disliked(trained: "TrainedAudioBranch", pairs: AudioPairs, store: LogMels,
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


def fit_calibration(scores: np.ndarray, labels: np.ndarray):
    """Platt scaling: (slope, intercept) of P(liked | cosine), fitted on validation pairs."""
    model = LogisticRegression(C=1e4).fit(scores.reshape(-1, 1), labels)
    return float(model.coef_[0, 0]), float(model.intercept_[0])
