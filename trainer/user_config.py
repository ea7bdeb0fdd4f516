"""Hyperparameters of the user branch (`UserBranchConfig`), in one place: the model, the loss
and the training loop read their options from it, and TFX's Trainer builds it from
`custom_config["user_branch"]`."""

from __future__ import annotations

import dataclasses
from typing import Tuple

EMBEDDING_DIM = 40


@dataclasses.dataclass(frozen=True)
class UserBranchConfig:
    """Hyperparameters of the user branch, in one place."""

    embedding_dim: int = EMBEDDING_DIM
    hidden_units: Tuple[int, ...] = (128, 64)
    demographic_embedding_dim: int = 8
    leaky_relu_alpha: float = 0.2
    # "history": history + demographics (the paper); "user_id": the MF baseline.
    query: str = "history"
    batch_size: int = 256
    # The most epochs; with early stopping training usually ends sooner.
    epochs: int = 40
    learning_rate: float = 0.003
    # Early stopping: each user's last training label (users with at least
    # `min_examples_for_validation` of them) is held back; training stops once
    # their recall@`early_stopping_k` over the catalogue has not improved for
    # this many epochs and keeps the best epoch's weights. 0: train every epoch
    # on every example.
    early_stopping_patience: int = 5
    early_stopping_k: int = 10
    min_examples_for_validation: int = 3
    refit_on_all_examples: bool = True
    # UE = MLP(history, demographics) + the candidate tower's projection of the averaged
    # history: the user starts at the centroid of what they liked, in candidate space
    # (item-to-item similarity), and the MLP learns the correction. Worth +0.02-0.04
    # recall@10 on two simulated worlds.
    history_skip: bool = True
    # History and candidates look ids up in the same tables (YouTubeDNN) or in separate ones.
    share_item_embeddings: bool = True
    dislikes_as_negatives: bool = True
    logq_correction: bool = True
    remove_accidental_hits: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.query not in ("history", "user_id"):
            raise ValueError(f"query must be 'history' or 'user_id', not {self.query!r}")
