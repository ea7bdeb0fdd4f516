"""Liked / disliked labels per (user, track) from the interaction log."""

from __future__ import annotations

import dataclasses
from typing import Dict, Hashable, Iterable, Set, Tuple

import numpy as np
import pandas as pd

from musicrec.data.contract import FeedbackConfig


@dataclasses.dataclass
class Feedback:
    """One row per (user, track) with a feedback event: `label` 1 = liked, 0 = disliked.

    `timestamp` is the time of the deciding event. `conflicts` counts pairs whose
    events disagreed (both liked and disliked events), resolved per FeedbackConfig.
    """

    labels: pd.DataFrame
    conflicts: int

    def counts_per_user(self) -> pd.DataFrame:
        """Columns `liked`, `disliked`, indexed by user_id (users with no feedback absent)."""
        counts = self.labels.groupby(["user_id", "label"]).size().unstack(fill_value=0)
        counts = counts.reindex(columns=[1, 0], fill_value=0)
        counts.columns = ["liked", "disliked"]
        return counts

    def eligible_users(self, config: FeedbackConfig) -> pd.Index:
        counts = self.counts_per_user()
        ok = config.is_eligible(counts["liked"], counts["disliked"])
        return counts.index[ok]


def feedback_labels(interactions: pd.DataFrame, config: FeedbackConfig = FeedbackConfig()) -> Feedback:
    """Resolves each (user, track) pair's events to one label (`resolve_feedback`), the interactions
    taken in their order (a loaded table's file order)."""
    pairs = zip(interactions["user_id"], interactions["track_id"])
    decided, conflicts = resolve_feedback(zip(pairs, interactions["timestamp"], interactions["event"]), config)
    order = sorted(decided)  # by user, then track
    labels = interactions.iloc[[decided[pair][0] for pair in order]][["user_id", "track_id", "timestamp", "event"]]
    labels.insert(2, "label", np.asarray([decided[pair][1] for pair in order], dtype=np.int8))
    return Feedback(labels=labels.reset_index(drop=True), conflicts=conflicts)


def resolve_feedback(
    events: Iterable[Tuple[Hashable, int, str]], config: FeedbackConfig = FeedbackConfig()
) -> Tuple[Dict[Hashable, Tuple[int, int]], int]:
    """Resolves each pair's events, given as (pair, timestamp, event) in file order, to one label:
    pair -> (the position in `events` of the deciding event, label 1 liked or 0 disliked), and how
    many pairs' events disagree. Pairs without a feedback event are absent.

    The latest explicit event (like, playlist_add, dislike by default) decides;
    with no explicit event, the latest implicit one (complete, skip) does; of
    events at the same time, the later in the file. The ingestion job calls this
    per user (pairs are tracks), the in-memory `feedback_labels` on a whole table.
    """
    decided: Dict[Hashable, Tuple[Tuple[bool, int], int, int]] = {}  # pair -> (rank, position, label)
    labels_seen: Dict[Hashable, Set[int]] = {}
    for position, (pair, timestamp, event) in enumerate(events):
        if event in config.liked_events:
            label = 1
        elif event in config.disliked_events:
            label = 0
        else:
            continue
        labels_seen.setdefault(pair, set()).add(label)
        rank = (event in config.explicit_events, timestamp)
        if pair not in decided or rank >= decided[pair][0]:
            decided[pair] = (rank, position, label)
    conflicts = sum(len(labels) > 1 for labels in labels_seen.values())
    return {pair: (position, label) for pair, (_, position, label) in decided.items()}, conflicts
