"""Metrics of liked/disliked (user, track) pairs: the audio branch's and every baseline's.

The pooled AUC ranks every test pair against every other, so it also rewards
getting users' overall like rates right; the per-user AUC asks only what the
cold-start question asks (given a user, is the liked track ranked above the
disliked one) and is averaged over users with both labels. Reports show both.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score


@dataclasses.dataclass(frozen=True)
class PairAUC:
    """Liked/disliked AUC of scores on a set of (user, track, label) pairs."""

    pooled: float  # one AUC over every pair
    per_user: float  # mean over users with both a liked and a disliked pair
    users: int  # users in that mean
    pairs: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def pair_auc(pairs: pd.DataFrame, scores: np.ndarray) -> PairAUC:
    """Pooled and per-user AUC of `scores` aligned with the rows of `pairs` (user_id, label)."""
    labels = pairs["label"].to_numpy()
    frame = pd.DataFrame({"user_id": pairs["user_id"].to_numpy(), "label": labels, "score": np.asarray(scores)})
    per_user = [roc_auc_score(g["label"], g["score"]) for _, g in frame.groupby("user_id") if g["label"].nunique() == 2]
    pooled = roc_auc_score(labels, scores) if len(np.unique(labels)) == 2 else float("nan")
    return PairAUC(float(pooled), float(np.mean(per_user)) if per_user else float("nan"), len(per_user), len(frame))
