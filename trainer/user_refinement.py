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
it is solved in closed form for every user at once (`_RidgeStatistics`).

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
from sklearn.metrics import roc_auc_score

import musicrec

NONE = "none"  # the grid's entry that keeps the UEs as they are
PAIRS_PER_BLOCK = 4096  # memory of the Gram accumulation: 4096 x d x d floats


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
    return _RidgeStatistics(user_vectors, user_rows, track_ae, labels, min_pairs).solve(alpha, target)


class _RidgeStatistics:
    """Per-user sufficient statistics of the ridge problem, so every (alpha, target) of the grid is
    one batched d x d solve per user: w = ue + (X'X + alpha I)^-1 X'(t - X ue), with X't = target
    (X'1_liked - X'1_disliked). Written by hand rather than one scikit-learn Ridge fit per user and
    grid entry: at millions of users those fits are what would take the time, and the closed form
    is the same solution (tests/test_user_refinement.py checks it). Memory: d x d floats per user
    (13 KB at d = 40); users are independent, so a service with millions of them refines them in
    blocks or in parallel."""

    def __init__(self, user_vectors, user_rows, track_ae, labels, min_pairs):
        self.prior = unit(np.asarray(user_vectors, np.float64))
        users, dim = self.prior.shape
        x = unit(np.asarray(track_ae, np.float64))
        sign = np.where(np.asarray(labels) == 1, 1.0, -1.0)
        self.gram = np.zeros((users, dim, dim))
        for block in range(0, len(x), PAIRS_PER_BLOCK):  # outer products of a block of pairs at a time
            rows, xs = user_rows[block:block + PAIRS_PER_BLOCK], x[block:block + PAIRS_PER_BLOCK]
            np.add.at(self.gram, rows, xs[:, :, None] * xs[:, None, :])
        self.signed_sum = np.zeros((users, dim))
        np.add.at(self.signed_sum, user_rows, sign[:, None] * x)
        self.moved = np.bincount(user_rows, minlength=users) >= min_pairs

    def solve(self, alpha: float, target: float) -> np.ndarray:
        gram, prior = self.gram[self.moved], self.prior[self.moved]
        rhs = target * self.signed_sum[self.moved] - np.einsum("uij,uj->ui", gram, prior)
        step = np.linalg.solve(gram + alpha * np.eye(gram.shape[1]), rhs[:, :, None])[:, :, 0]
        refined = self.prior.copy()
        refined[self.moved] = prior + step
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

    statistics = _RidgeStatistics(user_vectors, *train, config.min_pairs)
    candidates = {NONE: unit(user_vectors)}
    for alpha in config.alphas:
        for target in config.targets:
            candidates[f"{alpha:g}/{target:g}"] = statistics.solve(alpha, target)
    scores = {name: auc(vectors) for name, vectors in candidates.items()}
    chosen = max(scores, key=lambda name: (scores[name], name == NONE))  # a tie keeps the UEs
    refined = statistics.moved & (chosen != NONE)
    logging.info("%s user refinement: %s (validation AUC %.4f; without %.4f), %d users refined", musicrec.LOG_TAG,
                 chosen, scores[chosen], scores[NONE], refined.sum())
    return Refinement(candidates[chosen], chosen, scores, refined)


def pair_arrays(pairs: pd.DataFrame, user_index: Dict[str, int], track_ae: np.ndarray,
                track_rows: Sequence[int]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user rows, track AEs, labels) of `pairs`; `track_rows`: each pair's row in `track_ae`."""
    return (pairs["user_id"].map(user_index).to_numpy(), track_ae[np.asarray(track_rows)],
            pairs["label"].to_numpy())

