"""Ground truth of a generated dataset and the oracle AUC measured against it.

The oracle answers: on a given set of (user, track, liked/disliked) pairs,
what AUC does the best possible audio-only scorer reach? Outcomes were drawn
from the full preference plus noise, and the non-audio parts (artist loyalty,
popularity, noise) are independent of the audio, so within one user the best
audio-only ranking is by the audio-derivable utility A(u, t). Scores are
standardised per user over the pairs given, so user-level offsets, which an
audio model (a cosine in [-1, 1]) cannot express either, do not leak in.
Model AUCs in later stages are reported beside this number.

`preference_auc` is the ceiling beside it: the same AUC from the whole
noise-free preference (audio part, artist loyalty, popularity), the best any
model can do knowing exactly who the user is and which track it is. A model
scoring cos(UE, AE) can land between the two, because the UE carries the
user's artists and an artist's tracks sound alike: artist loyalty is not in
the audio by construction, but the artist partly is.
"""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from musicrec import storage
from musicrec.simulation import world as world_lib

GROUND_TRUTH_DIR = "ground_truth"


@dataclasses.dataclass
class GroundTruth:
    users: pd.DataFrame  # user_id, taste_*, pref_*
    tracks: pd.DataFrame  # track_id, genre, popularity, style_*
    faults: pd.DataFrame  # track_id, fault
    params: dict
    artist_affinity: pd.DataFrame  # users x artists

    @classmethod
    def load(cls, dataset_dir) -> "GroundTruth":
        root = storage.path(dataset_dir) / GROUND_TRUTH_DIR
        if not root.is_dir():
            raise FileNotFoundError(
                f"{root} not found: the oracle exists only for datasets made by `musicrec generate-demo`"
            )
        return cls(
            users=pd.read_csv(io.StringIO((root / "users.csv").read_text()), dtype={"user_id": str}),
            tracks=pd.read_csv(io.StringIO((root / "tracks.csv").read_text()), dtype={"track_id": str}),
            faults=pd.read_csv(io.StringIO((root / "faults.csv").read_text()), dtype={"track_id": str}),
            params=json.loads((root / "params.json").read_text()),
            artist_affinity=_affinity_table(storage.local_or_bytes(root / "artist_affinity.npz")),
        )

    def audio_utility(self, user_ids, track_ids) -> np.ndarray:
        """A(u, t) for aligned sequences of user and track ids."""
        user_ids, track_ids = np.asarray(user_ids), np.asarray(track_ids)
        users = self.users.set_index("user_id")
        tracks = self.tracks.set_index("track_id")
        _check_known("user", user_ids, users.index)
        _check_known("track", track_ids, tracks.index)
        unique_users, u_idx = np.unique(user_ids, return_inverse=True)
        unique_tracks, t_idx = np.unique(track_ids, return_inverse=True)
        matrix = world_lib.audio_utility(
            users.loc[unique_users].reset_index(), tracks.loc[unique_tracks].reset_index()
        )
        return matrix[u_idx, t_idx]


    def preference(self, user_ids, track_ids) -> np.ndarray:
        """The full noise-free preference U(u, t): audio part + artist loyalty + popularity."""
        user_ids, track_ids = np.asarray(user_ids), np.asarray(track_ids)
        tracks = self.tracks.set_index("track_id")
        weights = self.params["weights"]
        log_pop = np.log(tracks["popularity"])
        pop_z = ((log_pop - log_pop.mean()) / log_pop.std()).loc[track_ids].to_numpy()
        affinity = self.artist_affinity.to_numpy()[
            self.artist_affinity.index.get_indexer(user_ids),
            self.artist_affinity.columns.get_indexer(tracks.loc[track_ids, "artist_id"]),
        ]
        return self.audio_utility(user_ids, track_ids) + weights["artist_loyalty"] * affinity + weights["popularity"] * pop_z


def _affinity_table(path) -> pd.DataFrame:
    with np.load(path) as stored:
        return pd.DataFrame(stored["affinity"], index=stored["user_ids"], columns=stored["artist_ids"])


def _check_known(kind: str, ids: np.ndarray, known: pd.Index) -> None:
    unknown = pd.Index(np.unique(ids)).difference(known)
    if len(unknown):
        raise KeyError(f"{len(unknown)} {kind} id(s) not in the ground truth, e.g. {list(unknown[:3])}")


def per_user_standardised(scores: np.ndarray, user_ids) -> np.ndarray:
    frame = pd.DataFrame({"user": np.asarray(user_ids), "score": scores})
    grouped = frame.groupby("user")["score"]
    std = grouped.transform("std").fillna(0.0).replace(0.0, 1.0)
    return ((frame["score"] - grouped.transform("mean")) / std).to_numpy()


def oracle_auc(ground_truth: GroundTruth, pairs: pd.DataFrame) -> float:
    """Best audio-only AUC on `pairs` (columns user_id, track_id, label with 1 = liked)."""
    if pairs.empty or pairs["label"].nunique() < 2:
        raise ValueError("the oracle AUC needs pairs with both liked and disliked labels")
    utility = ground_truth.audio_utility(pairs["user_id"], pairs["track_id"])
    return float(roc_auc_score(pairs["label"], per_user_standardised(utility, pairs["user_id"])))


def preference_auc(ground_truth: GroundTruth, pairs: pd.DataFrame) -> float:
    """The ceiling: AUC of the full noise-free preference on `pairs`, standardised per user."""
    if pairs.empty or pairs["label"].nunique() < 2:
        raise ValueError("the preference AUC needs pairs with both liked and disliked labels")
    preference = ground_truth.preference(pairs["user_id"], pairs["track_id"])
    return float(roc_auc_score(pairs["label"], per_user_standardised(preference, pairs["user_id"])))
