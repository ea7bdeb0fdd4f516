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

import dataclasses
import math
from typing import Dict, Optional, Sequence, Union

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


@dataclasses.dataclass(frozen=True)
class FactorizedScores:
    """Scores that are dot products of query and candidate vectors (every model here scores so),
    computed a block of rows at a time: the [users, catalogue] matrix is never held whole (at the
    paper's 1.9M users x 1.1M tracks it would be 8 TB). An exact top-k over the catalogue, as the
    exported BruteForce index does it, only without ranking past the largest K."""

    queries: np.ndarray  # [users, d]
    candidates: np.ndarray  # [tracks, d]

    def rows(self, rows: np.ndarray) -> np.ndarray:
        return self.queries[rows] @ self.candidates.T


def ranking_metrics(scores: Union[np.ndarray, FactorizedScores], track_ids: np.ndarray, data: UserBranchData,
                    targets: Optional[UserExamples] = None, ks: Sequence[int] = KS,
                    shares: Sequence[float] = CATALOGUE_SHARES, max_users: Optional[int] = None, seed: int = 0,
                    rows_per_block: int = 256) -> Dict[str, float]:
    """`scores`: [users, tracks] (dense, or `FactorizedScores`), users in the order of `queries(targets)`;
    targets default to data.test.

    Hit rate and recall at each of `ks`; recall at each share of the catalogue (`recall@1%`),
    with the K it took (`k@1%`). `max_users`: evaluate a uniform sample of that many users
    (seeded), as at scale; memory is `rows_per_block` score rows, whatever the number of users.
    """
    targets = data.test if targets is None else targets
    test = pd.DataFrame({"user_id": targets.columns["user_id"], "track_id": targets.columns["track_id"].astype(str)})
    users = test["user_id"].drop_duplicates().to_numpy()
    if len(users) == 0:
        raise ValueError("no held-out targets to evaluate (every user has too few liked tracks)")
    user_row = {u: i for i, u in enumerate(users)}
    if max_users is not None and len(users) > max_users:
        sampled = set(np.random.default_rng(seed).choice(users, size=max_users, replace=False))
        test = test[test["user_id"].isin(sampled)].reset_index(drop=True)
    position = {t: i for i, t in enumerate(track_ids)}
    target_rank = _target_ranks(scores, test, user_row, position, data.known_liked(targets), rows_per_block)

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
    metrics["test_users"] = int(test["user_id"].nunique())
    metrics["catalogue"] = int(len(track_ids))
    return metrics


def _target_ranks(scores, test: pd.DataFrame, user_row: Dict[str, int], position: Dict[str, int],
                  seen: Dict[str, set], rows_per_block: int) -> np.ndarray:
    """0-based rank of each target in its user's ranking of the catalogue, the user's earlier liked
    tracks left out; ties go to the track listed first (a stable sort's order). A target outside
    the catalogue ranks last."""
    ranks = np.full(len(test), np.iinfo(np.int64).max)
    known = np.asarray([t in position for t in test["track_id"]], dtype=bool)
    for block in np.array_split(np.flatnonzero(known), max(1, -(-known.sum() // rows_per_block))):
        if not len(block):
            continue
        block_users = test["user_id"].to_numpy()[block]
        rows = np.asarray([user_row[u] for u in block_users])
        block_scores = (scores.rows(rows) if isinstance(scores, FactorizedScores) else scores[rows]).astype(np.float64)
        for i, user in enumerate(block_users):
            excluded = [position[t] for t in seen.get(user, ()) if t in position]
            block_scores[i, excluded] = -np.inf
        columns = np.asarray([position[t] for t in test["track_id"].to_numpy()[block]])
        own = block_scores[np.arange(len(block)), columns][:, None]
        earlier = np.arange(block_scores.shape[1])[None, :] < columns[:, None]
        ranks[block] = (block_scores > own).sum(axis=1) + ((block_scores == own) & earlier).sum(axis=1)
    return ranks


def queries(targets: UserExamples) -> UserExamples:
    """One query per user of `targets` (their history before the hold-out), in first-appearance order."""
    first_rows = pd.Series(targets.columns["user_id"]).drop_duplicates().index.to_numpy()
    return targets.take(first_rows)
