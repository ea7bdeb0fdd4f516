"""Liked / disliked labels per (user, track) from the interaction log."""

from __future__ import annotations

import dataclasses

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
        ok = (counts["liked"] >= config.min_liked) & (counts["disliked"] >= config.min_disliked)
        return counts.index[ok]


def feedback_labels(interactions: pd.DataFrame, config: FeedbackConfig = FeedbackConfig()) -> Feedback:
    """Resolves each (user, track) pair's events to one label.

    The latest explicit event (like, playlist_add, dislike by default) decides;
    with no explicit event, the latest implicit one (complete, skip) does.
    """
    events = interactions[interactions["event"].isin(config.feedback_events)].copy()
    events["label"] = events["event"].isin(config.liked_events).astype("int8")
    events["explicit"] = events["event"].isin(config.explicit_events)
    # Stable sort so equal timestamps keep file order; the last row of each
    # pair is then the deciding event.
    events = events.sort_values(["user_id", "track_id", "explicit", "timestamp"], kind="stable")
    pair = ["user_id", "track_id"]
    conflicts = int((events.groupby(pair)["label"].nunique() > 1).sum())
    labels = events.groupby(pair, sort=True).tail(1)[pair + ["label", "timestamp", "event"]]
    return Feedback(labels=labels.reset_index(drop=True), conflicts=conflicts)
