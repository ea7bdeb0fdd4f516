"""The user branch's report: hit rate and recall at K and at 1% and 5% of the catalogue
(`trainer.ranking`) of the two-tower model beside the popularity and user-id MF baselines
(and, for the hybrid tower, the same tower without the id), on the same catalogue (the
training vocabulary) and the same held-out targets, for users seen in training and, apart,
for new users (whom only the towers with history + demographics can embed)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Dict, Optional

import musicrec
import numpy as np
import pandas as pd

from musicrec.data.user_examples import UserBranchData, UserExamples
from musicrec.trainer.ranking import CATALOGUE_SHARES, FactorizedScores, queries, ranking_metrics, share_label
from musicrec.trainer.user_config import UserBranchConfig
from musicrec.trainer.user_layers import Vocabularies
from musicrec.trainer.user_training import TrainedUserBranch, train_user_branch


def model_metrics(trained: TrainedUserBranch, data: UserBranchData, targets: Optional[UserExamples] = None) -> Dict[str, float]:
    targets = data.test if targets is None else targets
    track_ids, candidates = trained.candidate_embeddings()
    scores = FactorizedScores(trained.user_embeddings(queries(targets)), candidates)
    config = trained.config
    return ranking_metrics(scores, track_ids, data, targets, max_users=config.ranking_max_users, seed=config.seed)


def popularity_metrics(data: UserBranchData, track_ids: np.ndarray, targets: Optional[UserExamples] = None,
                       config: UserBranchConfig = UserBranchConfig()) -> Dict[str, float]:
    targets = data.test if targets is None else targets
    counts = pd.Series(data.train.columns["track_id"].astype(str)).value_counts()
    popularity = counts.reindex(track_ids).fillna(0).to_numpy(dtype=np.float64)
    users = pd.unique(targets.columns["user_id"])
    scores = FactorizedScores(np.ones((len(users), 1)), popularity[:, None])  # every user ranks by popularity
    return ranking_metrics(scores, track_ids, data, targets, max_users=config.ranking_max_users, seed=config.seed)


TWO_TOWER = "two-tower (history + demographics)"
HYBRID = "hybrid two-tower (user id + history + demographics)"
MF = "matrix factorisation (user id)"
POPULARITY = "popularity"
MODEL_NAMES = {"history": TWO_TOWER, "hybrid": HYBRID, "user_id": MF}  # UserBranchConfig.query -> report name


@dataclasses.dataclass
class UserBranchReport:
    metrics: Dict[str, Dict[str, float]]  # model name -> metrics (users seen in training)
    new_user_metrics: Dict[str, Dict[str, float]] = dataclasses.field(default_factory=dict)  # users never seen
    epochs: Dict[str, int] = dataclasses.field(default_factory=dict)  # trained model name -> epochs trained

    @property
    def checks(self) -> Dict[str, bool]:
        """Whether each model that embeds new users beats popularity on them, at each share of the catalogue."""
        popularity = self.new_user_metrics.get(POPULARITY, {})
        return {
            f"{name} beats popularity on new users at recall@{share_label(share)}":
                values[f"recall@{share_label(share)}"] > popularity[f"recall@{share_label(share)}"]
            for name, values in self.new_user_metrics.items() if name != POPULARITY
            for share in CATALOGUE_SHARES
        }

    def table(self) -> str:
        text = _table(self.metrics, "users seen in training")
        if self.epochs:
            text += "\nEpochs trained (each model's own, by validation recall when early stopping is on): " + ", ".join(
                f"{name} {epochs}" for name, epochs in self.epochs.items())
        if self.new_user_metrics:
            text += "\n\nNew users (never in training; a user-id model cannot embed them):\n" + _table(self.new_user_metrics, "new users")
            text += "".join(f"\n- {check}: {'yes' if passed else 'no'}" for check, passed in self.checks.items())
        return text


def _table(metrics: Dict[str, Dict[str, float]], who: str) -> str:
    any_metrics = next(iter(metrics.values()))
    keys = [k for k in any_metrics if k.startswith(("hit_rate@", "recall@"))]
    lines = ["| model | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for name, values in metrics.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[k]:.3f}" for k in keys) + " |")
    shares = " and ".join(f"{share_label(s)} K = {any_metrics[f'k@{share_label(s)}']}" for s in CATALOGUE_SHARES)
    lines.append(
        f"\n{any_metrics['test_targets']} held-out targets of {any_metrics['test_users']} {who}; "
        f"catalogue of {any_metrics['catalogue']} tracks (recall at a share of it: {shares}); "
        "each user's earlier liked tracks excluded from their ranking."
    )
    return "\n".join(lines)


def evaluate_user_branch(data: UserBranchData, config: UserBranchConfig = UserBranchConfig(), verbose: int = 0,
                         vocab: Optional[Vocabularies] = None):
    """Trains the configured two-tower model, the same tower without the user id when the configured
    one is the hybrid, and the MF baseline (with the given vocabularies, or ones learned from
    `data.train`); returns (the configured model, report)."""
    configs = {config.query: config}
    for query in ("history", "user_id"):
        configs.setdefault(query, dataclasses.replace(config, query=query))
    trained = {}
    for query, model_config in configs.items():
        logging.info("%s user branch: training %s on %d examples", musicrec.LOG_TAG, MODEL_NAMES[query], len(data.train))
        trained[MODEL_NAMES[query]] = train_user_branch(data, model_config, verbose=verbose, vocab=vocab)
    track_ids, _ = trained[MODEL_NAMES[config.query]].candidate_embeddings()
    report = UserBranchReport(
        metrics={**{name: model_metrics(model, data) for name, model in trained.items()},
                 POPULARITY: popularity_metrics(data, track_ids, config=config)},
        epochs={name: model.best_epoch for name, model in trained.items()},
    )
    if data.new_users is not None and len(data.new_users):
        report.new_user_metrics = {
            **{name: model_metrics(model, data, data.new_users) for name, model in trained.items() if model.config.uses_history},
            POPULARITY: popularity_metrics(data, track_ids, data.new_users, config),
        }
    return trained[MODEL_NAMES[config.query]], report
