"""Hit rate and recall at K for the user branch, beside the popularity and MF baselines.

All three rank the same catalogue (the training vocabulary) for the same
held-out targets, with each user's training history removed from their
ranking. Hit rate@K: the share of test users with at least one of their
held-out targets in their top K. Recall@K: per user, the share of their
held-out targets in the top K, averaged over users.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Dict, Optional, Sequence

import musicrec
import numpy as np
import pandas as pd

from musicrec.data.user_examples import UserBranchData, UserExamples
from trainer.user_branch import TrainedUserBranch, UserBranchConfig, Vocabularies, train_user_branch

KS = (10, 50, 200)


def ranking_metrics(scores: np.ndarray, track_ids: np.ndarray, data: UserBranchData, targets: Optional[UserExamples] = None,
                    ks: Sequence[int] = KS) -> Dict[str, float]:
    """`scores`: [users, tracks], users in the order of `queries(targets)`; targets default to data.test."""
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
    metrics = {}
    for k in ks:
        hit = pd.Series(target_rank < k).groupby(test["user_id"].to_numpy())
        metrics[f"hit_rate@{k}"] = float(hit.any().mean())
        metrics[f"recall@{k}"] = float(hit.mean().mean())
    metrics["test_targets"] = int(len(test))
    metrics["test_users"] = int(len(users))
    metrics["catalogue"] = int(len(track_ids))
    return metrics


def queries(targets: UserExamples) -> UserExamples:
    """One query per user of `targets` (their history before the hold-out), in first-appearance order."""
    first_rows = pd.Series(targets.columns["user_id"]).drop_duplicates().index.to_numpy()
    return targets.take(first_rows)


def model_metrics(trained: TrainedUserBranch, data: UserBranchData, targets: Optional[UserExamples] = None) -> Dict[str, float]:
    targets = data.test if targets is None else targets
    track_ids, candidates = trained.candidate_embeddings()
    return ranking_metrics(trained.user_embeddings(queries(targets)) @ candidates.T, track_ids, data, targets)


def popularity_metrics(data: UserBranchData, track_ids: np.ndarray, targets: Optional[UserExamples] = None) -> Dict[str, float]:
    targets = data.test if targets is None else targets
    counts = pd.Series(data.train.columns["track_id"].astype(str)).value_counts()
    popularity = counts.reindex(track_ids).fillna(0).to_numpy(dtype=np.float64)
    users = pd.unique(targets.columns["user_id"])
    return ranking_metrics(np.tile(popularity, (len(users), 1)), track_ids, data, targets)


@dataclasses.dataclass
class UserBranchReport:
    metrics: Dict[str, Dict[str, float]]  # model name -> metrics (users seen in training)
    new_user_metrics: Dict[str, Dict[str, float]] = dataclasses.field(default_factory=dict)  # users never seen

    def table(self) -> str:
        text = _table(self.metrics, "users seen in training")
        if self.new_user_metrics:
            text += "\n\nNew users (never in training; a user-id model cannot embed them):\n" + _table(self.new_user_metrics, "new users")
        return text


def _table(metrics: Dict[str, Dict[str, float]], who: str) -> str:
    keys = [k for k in next(iter(metrics.values())) if "@" in k]
    lines = ["| model | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for name, values in metrics.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[k]:.3f}" for k in keys) + " |")
    any_metrics = next(iter(metrics.values()))
    lines.append(
        f"\n{any_metrics['test_targets']} held-out targets of {any_metrics['test_users']} {who}; "
        f"catalogue of {any_metrics['catalogue']} tracks; each user's earlier liked tracks excluded from their ranking."
    )
    return "\n".join(lines)


def evaluate_user_branch(data: UserBranchData, config: UserBranchConfig = UserBranchConfig(), verbose: int = 0,
                         vocab: Optional[Vocabularies] = None):
    """Trains the two-tower model and the MF baseline (with the given vocabularies, or ones
    learned from `data.train`); returns (trained model, report)."""
    logging.info("%s user branch: training the two-tower model on %d examples", musicrec.LOG_TAG, len(data.train))
    trained = train_user_branch(data, config, verbose=verbose, vocab=vocab)
    logging.info("%s user branch: training the user-id matrix-factorisation baseline", musicrec.LOG_TAG)
    mf = train_user_branch(data, dataclasses.replace(config, query="user_id"), verbose=verbose, vocab=vocab)
    track_ids, _ = trained.candidate_embeddings()
    report = UserBranchReport(
        metrics={
            "two-tower (history + demographics)": model_metrics(trained, data),
            "matrix factorisation (user id)": model_metrics(mf, data),
            "popularity": popularity_metrics(data, track_ids),
        },
    )
    if data.new_users is not None and len(data.new_users):
        report.new_user_metrics = {
            "two-tower (history + demographics)": model_metrics(trained, data, data.new_users),
            "popularity": popularity_metrics(data, track_ids, data.new_users),
        }
    return trained, report
