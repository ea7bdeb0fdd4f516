"""Hit rate and recall at K for the user branch, beside the popularity and MF baselines.

All three rank the same catalogue (the training vocabulary) for the same
held-out targets, with each user's training history removed from their
ranking. Hit rate@K: the share of test users with at least one of their
held-out targets in their top K. Recall@K: per user, the share of their
held-out targets in the top K, averaged over users.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Sequence

import numpy as np
import pandas as pd

from musicrec.data.user_examples import UserBranchData
from trainer.user_branch import TrainedUserBranch, UserBranchConfig, train_user_branch

KS = (10, 50, 200)


def ranking_metrics(scores: np.ndarray, track_ids: np.ndarray, data: UserBranchData, ks: Sequence[int] = KS) -> Dict[str, float]:
    """`scores`: [test users, tracks], users in the order of `test_queries(data)`."""
    test = pd.DataFrame({"user_id": data.test.columns["user_id"], "track_id": data.test.columns["track_id"].astype(str)})
    users = test["user_id"].drop_duplicates().to_numpy()
    if len(users) == 0:
        raise ValueError("no held-out targets to evaluate (every user has too few liked tracks)")
    position = {t: i for i, t in enumerate(track_ids)}
    seen = data.seen_in_training()
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
    metrics = {}
    for k in ks:
        hit = pd.Series(target_rank < k).groupby(test["user_id"].to_numpy())
        metrics[f"hit_rate@{k}"] = float(hit.any().mean())
        metrics[f"recall@{k}"] = float(hit.mean().mean())
    metrics["test_targets"] = int(len(test))
    metrics["test_users"] = int(len(users))
    metrics["catalogue"] = int(len(track_ids))
    return metrics


def test_queries(data: UserBranchData):
    """One query per test user (their training history), in first-appearance order of data.test."""
    first_rows = pd.Series(data.test.columns["user_id"]).drop_duplicates().index.to_numpy()
    return data.test.take(first_rows)


def model_metrics(trained: TrainedUserBranch, data: UserBranchData) -> Dict[str, float]:
    track_ids, candidates = trained.candidate_embeddings()
    return ranking_metrics(trained.user_embeddings(test_queries(data)) @ candidates.T, track_ids, data)


def popularity_metrics(data: UserBranchData, track_ids: np.ndarray) -> Dict[str, float]:
    counts = pd.Series(data.train.columns["track_id"].astype(str)).value_counts()
    popularity = counts.reindex(track_ids).fillna(0).to_numpy(dtype=np.float64)
    users = pd.unique(data.test.columns["user_id"])
    return ranking_metrics(np.tile(popularity, (len(users), 1)), track_ids, data)


@dataclasses.dataclass
class UserBranchReport:
    metrics: Dict[str, Dict[str, float]]  # model name -> metrics

    def table(self) -> str:
        keys = [k for k in next(iter(self.metrics.values())) if "@" in k]
        header = "| model | " + " | ".join(keys) + " |"
        lines = [header, "|" + "---|" * (len(keys) + 1)]
        for name, values in self.metrics.items():
            lines.append(f"| {name} | " + " | ".join(f"{values[k]:.3f}" for k in keys) + " |")
        any_metrics = next(iter(self.metrics.values()))
        lines.append(
            f"\n{any_metrics['test_targets']} held-out targets of {any_metrics['test_users']} users; "
            f"catalogue of {any_metrics['catalogue']} tracks; each user's training history excluded from their ranking."
        )
        return "\n".join(lines)


def evaluate_user_branch(data: UserBranchData, config: UserBranchConfig = UserBranchConfig(), verbose: int = 0):
    """Trains the two-tower model and the MF baseline; returns (trained model, report)."""
    trained = train_user_branch(data, config, verbose=verbose)
    mf = train_user_branch(data, dataclasses.replace(config, query="user_id"), verbose=verbose)
    track_ids, _ = trained.candidate_embeddings()
    report = UserBranchReport(
        metrics={
            "two-tower (history + demographics)": model_metrics(trained, data),
            "matrix factorisation (user id)": model_metrics(mf, data),
            "popularity": popularity_metrics(data, track_ids),
        }
    )
    return trained, report
