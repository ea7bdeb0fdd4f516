"""The user branch's report: hit rate and recall at K (`trainer.ranking`) of the
two-tower model beside the popularity and user-id MF baselines, on the same
catalogue (the training vocabulary) and the same held-out targets."""

from __future__ import annotations

import dataclasses
import logging
from typing import Dict, Optional

import musicrec
import numpy as np
import pandas as pd

from musicrec.data.user_examples import UserBranchData, UserExamples
from musicrec.trainer.ranking import queries, ranking_metrics
from musicrec.trainer.user_config import UserBranchConfig
from musicrec.trainer.user_layers import Vocabularies
from musicrec.trainer.user_training import TrainedUserBranch, train_user_branch


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


TWO_TOWER = "two-tower (history + demographics)"
MF = "matrix factorisation (user id)"


@dataclasses.dataclass
class UserBranchReport:
    metrics: Dict[str, Dict[str, float]]  # model name -> metrics (users seen in training)
    new_user_metrics: Dict[str, Dict[str, float]] = dataclasses.field(default_factory=dict)  # users never seen
    epochs: Dict[str, int] = dataclasses.field(default_factory=dict)  # trained model name -> epochs trained

    def table(self) -> str:
        text = _table(self.metrics, "users seen in training")
        if self.epochs:
            text += "\nEpochs trained (each model's own, by validation recall when early stopping is on): " + ", ".join(
                f"{name} {epochs}" for name, epochs in self.epochs.items())
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
            TWO_TOWER: model_metrics(trained, data),
            MF: model_metrics(mf, data),
            "popularity": popularity_metrics(data, track_ids),
        },
        epochs={TWO_TOWER: trained.best_epoch, MF: mf.best_epoch},
    )
    if data.new_users is not None and len(data.new_users):
        report.new_user_metrics = {
            TWO_TOWER: model_metrics(trained, data, data.new_users),
            "popularity": popularity_metrics(data, track_ids, data.new_users),
        }
    return trained, report
