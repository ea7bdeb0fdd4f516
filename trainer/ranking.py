"""Ranking metrics of the user branch: hit rate and recall at K over the whole catalogue.

Every model (two-tower, baselines, and the early-stopping check during
training) is scored with these functions, on the same catalogue, with each
user's earlier liked tracks removed from their ranking. Hit rate@K: the share
of users with at least one of their held-out targets in their top K.
Recall@K: per user, the share of their held-out targets in the top K,
averaged over users. Recall@1% and @5%: recall@K with K that share of the
catalogue (rounded up), comparable across catalogues of any size; a fixed K
saturates on small ones (K = 200 is a third of a 600-track catalogue).
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import numpy as np
import pandas as pd

from musicrec.data.user_examples import UserBranchData, UserExamples

KS = (10, 50, 200)
CATALOGUE_SHARES = (0.01, 0.05)


def share_label(share: float) -> str:
    return f"{share:.0%}"


def share_k(share: float, catalogue: int) -> int:
    """The K of recall at `share` of a catalogue of `catalogue` tracks: at least 1."""
    return max(1, math.ceil(share * catalogue - 1e-9))


def ranking_metrics(scores: np.ndarray, track_ids: np.ndarray, data: UserBranchData, targets: Optional[UserExamples] = None,
                    ks: Sequence[int] = KS, shares: Sequence[float] = CATALOGUE_SHARES) -> Dict[str, float]:
    """`scores`: [users, tracks], users in the order of `queries(targets)`; targets default to data.test.

    Hit rate and recall at each of `ks`; recall at each share of the catalogue (`recall@1%`),
    with the K it took (`k@1%`)."""
    targets = data.test if targets is None else targets
    test = pd.DataFrame({"user_id": targets.columns["user_id"], "track_id": targets.columns["track_id"].astype(str)})
    users = test["user_id"].drop_duplicates().to_numpy()
    if len(users) == 0:
        raise ValueError("no held-out targets to evaluate (every user has too few liked tracks)")
    position = {t: i for i, t in enumerate(track_ids)}
    seen = data.known_liked(targets)
    scores = scores.astype(np.float64).copy()
    for row, user in enumerate(users):
        excluded = [position[t] for t in seen.get(user, ()) if t in position]
        scores[row, excluded] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")
    rank = np.empty_like(order)
    rank[np.arange(len(users))[:, None], order] = np.arange(order.shape[1])[None, :]
    user_row = {u: i for i, u in enumerate(users)}
    target_rank = np.asarray(
        [rank[user_row[u], position[t]] if t in position else np.iinfo(np.int64).max for u, t in zip(test["user_id"], test["track_id"])]
    )
    def hits(k: int):
        return pd.Series(target_rank < k).groupby(test["user_id"].to_numpy())

    metrics = {}
    for k in ks:
        metrics[f"hit_rate@{k}"] = float(hits(k).any().mean())
        metrics[f"recall@{k}"] = float(hits(k).mean().mean())
    for share in shares:
        k = share_k(share, len(track_ids))
        metrics[f"recall@{share_label(share)}"] = float(hits(k).mean().mean())
        metrics[f"k@{share_label(share)}"] = k
    metrics["test_targets"] = int(len(test))
    metrics["test_users"] = int(len(users))
    metrics["catalogue"] = int(len(track_ids))
    return metrics


def queries(targets: UserExamples) -> UserExamples:
    """One query per user of `targets` (their history before the hold-out), in first-appearance order."""
    first_rows = pd.Series(targets.columns["user_id"]).drop_duplicates().index.to_numpy()
    return targets.take(first_rows)
