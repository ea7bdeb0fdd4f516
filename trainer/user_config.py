"""Hyperparameters of the user branch (`UserBranchConfig`), in one place: the model, the loss
and the training loop read their options from it, and TFX's Trainer builds it from
`custom_config["user_branch"]`."""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

EMBEDDING_DIM = 40
QUERIES = ("history", "user_id", "hybrid")


@dataclasses.dataclass(frozen=True)
class UserBranchConfig:
    """Hyperparameters of the user branch, in one place."""

    embedding_dim: int = EMBEDDING_DIM
    hidden_units: Tuple[int, ...] = (128, 64)
    demographic_embedding_dim: int = 8
    leaky_relu_alpha: float = 0.2
    # "history": history + demographics (the paper); "user_id": the MF baseline; "hybrid":
    # a user-id embedding beside history and demographics, for users seen in training.
    query: str = "history"
    # Hybrid only: in training, each example's user id is replaced by the out-of-vocabulary id
    # with this probability (id dropout, as DropoutNet drops preference inputs), so the tower
    # also learns to embed users without an id: new users, whose id is OOV at serving time.
    user_id_dropout: float = 0.5
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
    # Rank a seeded sample of this many users in the ranking metrics (early stopping and the
    # report), as at scale; None ranks every user. The catalogue is always ranked whole.
    ranking_max_users: Optional[int] = None
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
        if self.query not in QUERIES:
            raise ValueError(f"query must be one of {', '.join(map(repr, QUERIES))}, not {self.query!r}")
        if not 0.0 <= self.user_id_dropout <= 1.0:
            raise ValueError(f"user_id_dropout is a probability, not {self.user_id_dropout}")

    @property
    def uses_user_id(self) -> bool:
        return self.query in ("user_id", "hybrid")

    @property
    def uses_history(self) -> bool:
        """History + demographics: the towers that embed new users."""
        return self.query in ("history", "hybrid")
