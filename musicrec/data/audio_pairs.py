"""Liked / disliked (user, track) pairs for the audio branch, and their splits.

Every pair is labelled from the interaction log (FeedbackConfig) and kept only
when its user has a user embedding and its track has audio features; users
with fewer than the minimum liked or disliked tracks are excluded. Each kind
of exclusion is counted. Three split protocols:

  per_user     the paper's sub-dataset: 60/20/20 of each user's liked tracks
               and, separately, of each user's disliked tracks;
  users        the paper's big dataset: users disjoint across splits;
  cold_tracks  beyond the paper, the case the product exists for: tracks
               disjoint across splits, so test tracks were never heard in training.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, Tuple

import numpy as np
import pandas as pd

from musicrec.data import tf_examples
from musicrec.data.contract import FeedbackConfig
from musicrec.data.feedback import feedback_labels
from musicrec.data.user_examples import ExampleConfig, UserExamples, history_examples

SPLITS = ("train", "validation", "test")
PROTOCOLS = ("per_user", "users", "cold_tracks")


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    protocol: str = "per_user"
    fractions: Tuple[float, float, float] = (0.6, 0.2, 0.2)
    seed: int = 0

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown split protocol {self.protocol!r}; choose one of {PROTOCOLS}")
        if abs(sum(self.fractions) - 1.0) > 1e-6 or min(self.fractions) < 0:
            raise ValueError(f"split fractions must be non-negative and sum to 1, got {self.fractions}")


@dataclasses.dataclass
class AudioPairs:
    pairs: pd.DataFrame  # user_id, track_id, label (1 liked, 0 disliked), timestamp, split
    excluded: Dict[str, int]  # what was left out, and how many

    def split(self, name: str) -> pd.DataFrame:
        return self.pairs[self.pairs["split"] == name].reset_index(drop=True)

    def summary(self) -> dict:
        counts = self.pairs.groupby(["split", "label"]).size().unstack(fill_value=0)
        return {
            "pairs": {s: {"liked": int(counts.loc[s].get(1, 0)), "disliked": int(counts.loc[s].get(0, 0))} for s in counts.index},
            "users": {s: int(self.pairs.loc[self.pairs["split"] == s, "user_id"].nunique()) for s in SPLITS},
            "tracks": {s: int(self.pairs.loc[self.pairs["split"] == s, "track_id"].nunique()) for s in SPLITS},
            "excluded": self.excluded,
        }


# Why pairs and users are left out of the audio branch (AudioPairs.excluded).
NO_USABLE_AUDIO = "pairs whose track has no usable audio"
NO_USER_EMBEDDING = "users without a user embedding"


def below_minimum(feedback: FeedbackConfig) -> str:
    return f"users below {feedback.min_liked} liked / {feedback.min_disliked} disliked tracks with audio"


def build_audio_pairs(
    interactions: pd.DataFrame,
    users_with_embedding: Iterable[str],
    tracks_with_audio: Iterable[str],
    feedback: FeedbackConfig = FeedbackConfig(),
    split: SplitConfig = SplitConfig(),
) -> AudioPairs:
    labels = feedback_labels(interactions, feedback).labels[["user_id", "track_id", "label", "timestamp"]]
    excluded: Dict[str, int] = {}
    with_audio = labels["track_id"].isin(set(tracks_with_audio))
    excluded[NO_USABLE_AUDIO] = int((~with_audio).sum())
    labels = labels[with_audio]
    with_ue = labels["user_id"].isin(set(users_with_embedding))
    excluded[NO_USER_EMBEDDING] = int(labels.loc[~with_ue, "user_id"].nunique())
    labels = labels[with_ue]
    counts = labels.groupby(["user_id", "label"]).size().unstack(fill_value=0).reindex(columns=[0, 1], fill_value=0)
    eligible = counts.index[feedback.is_eligible(counts[1], counts[0])]
    excluded[below_minimum(feedback)] = int(len(counts) - len(eligible))
    labels = labels[labels["user_id"].isin(eligible)].sort_values(["user_id", "track_id"]).reset_index(drop=True)
    if labels.empty:
        raise no_pairs_left(excluded)
    rng = np.random.default_rng(split.seed)
    labels["split"] = _SPLITTERS[split.protocol](labels, split.fractions, rng)
    return AudioPairs(pairs=labels, excluded=excluded)


def no_pairs_left(excluded: Dict[str, int]) -> ValueError:
    return ValueError(f"no (user, track) pairs left for the audio branch; excluded: {excluded}")


def assign_splits(n: int, fractions, rng: np.random.Generator) -> np.ndarray:
    """Split names for n shuffled items in the given proportions (rounded, every item assigned).

    Every protocol draws from one random sequence (SplitConfig.seed): `per_user`
    once per (user, label) group of pairs, in (user_id, label) order, each group's
    pairs in track order; `users` and `cold_tracks` once, for the sorted user or
    track ids. The ingestion job replays the sequence key by key, so it splits
    exactly as `build_audio_pairs` does.
    """
    bounds = np.round(np.cumsum(fractions) * n).astype(int)
    names = np.empty(n, dtype=object)
    start = 0
    for name, stop in zip(SPLITS, bounds):
        names[start:stop] = name
        start = stop
    return names[rng.permutation(n)]


def _per_user(labels: pd.DataFrame, fractions, rng) -> np.ndarray:
    out = np.empty(len(labels), dtype=object)
    for _, index in labels.groupby(["user_id", "label"]).indices.items():
        out[index] = assign_splits(len(index), fractions, rng)
    return out


def _by_key(key: str):
    def split(labels: pd.DataFrame, fractions, rng) -> np.ndarray:
        keys = np.sort(labels[key].unique())
        assignment = dict(zip(keys, assign_splits(len(keys), fractions, rng)))
        return labels[key].map(assignment).to_numpy()

    return split


_SPLITTERS = {"per_user": _per_user, "users": _by_key("user_id"), "cold_tracks": _by_key("track_id")}


def user_queries(dataset, pairs: AudioPairs, feedback: FeedbackConfig = FeedbackConfig(),
                 history_length: int = ExampleConfig.history_length) -> UserExamples:
    """One user-tower query per audio-branch user: their liked tracks outside their validation
    and test pairs, plus demographics. The audio branch embeds users from these, so no UE
    contains a track it is evaluated on. (Under the `users` protocol, evaluated users thus
    get a UE from demographics alone: cold users.)"""
    evaluated = pairs.pairs.loc[pairs.pairs["split"] != "train", ["user_id", "track_id"]]
    liked = feedback_labels(dataset.interactions, feedback).labels.query("label == 1")
    liked = liked.merge(evaluated, how="left", indicator=True).query("_merge == 'left_only'")
    return history_examples(dataset, liked, pairs.pairs["user_id"], history_length)


def write_pair_examples(pairs: pd.DataFrame, path) -> int:
    """Pair rows (user_id, track_id, label and any further columns) as a GZIP TFRecord of tf.Examples."""
    return tf_examples.write_tf_examples(tf_examples.columns_from_frame(pairs.drop(columns=["split"], errors="ignore")), path)


def read_pair_examples(file_patterns) -> pd.DataFrame:
    """Reads pair examples written by `write_pair_examples` (or the ingestion component)."""
    return pd.DataFrame(tf_examples.read_tf_examples(file_patterns))
