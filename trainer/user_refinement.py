"""Per-user refinement of the vectors AEs are scored against, from each user's own training pairs.

The user branch places a user from their history and demographics; the audio
branch then scores a track by cos(user vector, AE). Where listening data is
sparse the UE is a blurred estimate of what the user likes in audio, yet
the same user's liked and disliked training tracks, once embedded, say it
directly. Refinement moves each user's vector in AE space toward them:

    w_u = argmin_w  ||X_u w - t_u||^2 + alpha ||w - ue_u||^2

X_u: the user's training tracks' unit AEs; t_u: +target for liked, -target
for disliked; ue_u: the unit UE, the prior a user without enough pairs
(new users) keeps. It is a ridge regression with the UE as prior mean:
scikit-learn's Ridge shrinks toward zero, so it is fitted on the residual
t_u - X_u ue_u and the UE added back.

The strength (alpha, target) is chosen per run on the validation pairs, from
a grid that includes no refinement at all, so the data decides whether and
how much the user's own pairs count. The refined vectors replace the UEs
wherever the model is scored or served (`TrainedAudioBranch.user_vectors`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Dict, Sequence, Tuple

import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge
from sklearn.metrics import roc_auc_score

import musicrec

NONE = "none"  # the grid's entry that keeps the UEs as they are


@dataclasses.dataclass(frozen=True)
class RefinementConfig:
    alphas: Tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0)
    targets: Tuple[float, ...] = (0.3, 0.6)  # the score a liked (+) / disliked (-) training track should get
    min_pairs: int = 2  # users with fewer training pairs keep their UE


@dataclasses.dataclass
class Refinement:
    """The chosen refinement and the validation AUC of every grid entry ("none" included)."""

    vectors: np.ndarray
    chosen: str  # "alpha/target" or "none"
    validation_auc: Dict[str, float]
    refined: np.ndarray  # bool per user: moved from the UE (enough training pairs, and a refinement chosen)

    @property
    def refined_users(self) -> int:
        return int(self.refined.sum())

    def summary(self) -> dict:
        return {"chosen": self.chosen, "refined_users": self.refined_users, "validation_auc": self.validation_auc}


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def refine_user_vectors(user_vectors: np.ndarray, user_rows: np.ndarray, track_ae: np.ndarray, labels: np.ndarray,
                        alpha: float, target: float, min_pairs: int = 2) -> np.ndarray:
    """Each user's unit vector moved toward their training pairs (module docstring).

    user_rows / labels: one row per training pair (the user's row in `user_vectors`, liked 1 or 0);
    track_ae: the pair's track AE, aligned with them. Users without pairs keep their unit vector.
    """
    prior = unit(user_vectors)
    refined = prior.copy()
    x, t = unit(track_ae), np.where(labels == 1, target, -target)
    order = np.argsort(user_rows, kind="stable")
    users, starts = np.unique(user_rows[order], return_index=True)
    for user, rows in zip(users, np.split(order, starts[1:])):
        if len(rows) < min_pairs:
            continue
        residual = t[rows] - x[rows] @ prior[user]
        refined[user] = prior[user] + Ridge(alpha=alpha, fit_intercept=False).fit(x[rows], residual).coef_
    return refined


def choose_refinement(user_vectors: np.ndarray, train: Tuple[np.ndarray, np.ndarray, np.ndarray],
                      validation: Tuple[np.ndarray, np.ndarray, np.ndarray],
                      config: RefinementConfig = RefinementConfig()) -> Refinement:
    """Fits every grid entry on `train` and keeps the one with the best validation AUC.

    train / validation: (user rows, track AEs, labels), one entry per pair.
    """
    val_users, val_ae, val_labels = validation
    if len(np.unique(val_labels)) < 2:
        raise ValueError("refinement needs validation pairs with both liked and disliked labels")

    def auc(vectors):
        return float(roc_auc_score(val_labels, np.sum(unit(vectors)[val_users] * unit(val_ae), axis=1)))

    candidates = {NONE: unit(user_vectors)}
    for alpha in config.alphas:
        for target in config.targets:
            candidates[f"{alpha:g}/{target:g}"] = refine_user_vectors(user_vectors, *train, alpha, target, config.min_pairs)
    scores = {name: auc(vectors) for name, vectors in candidates.items()}
    chosen = max(scores, key=lambda name: (scores[name], name == NONE))  # a tie keeps the UEs
    refined = (np.bincount(train[0], minlength=len(user_vectors)) >= config.min_pairs) & (chosen != NONE)
    logging.info("%s user refinement: %s (validation AUC %.4f; without %.4f), %d users refined", musicrec.LOG_TAG,
                 chosen, scores[chosen], scores[NONE], refined.sum())
    return Refinement(candidates[chosen], chosen, scores, refined)


def pair_arrays(pairs: pd.DataFrame, user_index: Dict[str, int], track_ae: np.ndarray,
                track_rows: Sequence[int]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user rows, track AEs, labels) of `pairs`; `track_rows`: each pair's row in `track_ae`."""
    return (pairs["user_id"].map(user_index).to_numpy(), track_ae[np.asarray(track_rows)],
            pairs["label"].to_numpy())

