"""The data contract: what a dataset folder in the "plain layout" holds.

A dataset is a folder with three tables (CSV, or Parquet with the same name and
columns) and the audio files they point to:

  users.csv         user_id, age, gender, country, [any further demographics]
  tracks.csv        track_id, artist_id, album_id, audio_path, [genre], [release_date]
  interactions.csv  user_id, track_id, timestamp, event

This module only *describes* the contract (columns, value kinds, event
vocabulary, which events count as liked or disliked). Reading lives in
`musicrec.data.loading`, checking in `musicrec.data.validation`.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

EVENT_TYPES: Tuple[str, ...] = ("play", "complete", "skip", "like", "dislike", "playlist_add")

# Value kinds a column may hold; `loading` knows how to parse and check each.
ID = "id"  # non-empty string
INT = "int"  # integer, may be blank when the column is optional
STRING = "string"  # free text, may be blank
TIMESTAMP = "timestamp"  # ISO-8601 or unix seconds
DATE = "date"  # ISO-8601 date or datetime, may be blank
EVENT = "event"  # non-empty; EVENT_TYPES are interpreted, others kept and counted as unknown
PATH = "path"  # non-empty path relative to the dataset folder


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    kind: str
    # A required column must be present in the file and non-blank in every row.
    required: bool = True


@dataclasses.dataclass(frozen=True)
class TableSpec:
    name: str
    columns: Tuple[Column, ...]
    # Column whose values must be unique (the table's primary key), if any.
    key: Optional[str] = None
    # Whether columns beyond `columns` are kept (extra demographics).
    extra_columns_allowed: bool = False

    @property
    def required_columns(self) -> Tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    def column(self, name: str) -> Optional[Column]:
        return next((c for c in self.columns if c.name == name), None)


USERS = TableSpec(
    name="users",
    key="user_id",
    columns=(
        Column("user_id", ID),
        Column("age", INT, required=False),
        Column("gender", STRING, required=False),
        Column("country", STRING, required=False),
    ),
    extra_columns_allowed=True,
)
# Demographic columns every model expects; a dataset without one still loads
# (the validation summary says which are absent).
STANDARD_DEMOGRAPHICS: Tuple[str, ...] = ("age", "gender", "country")

TRACKS = TableSpec(
    name="tracks",
    key="track_id",
    columns=(
        Column("track_id", ID),
        Column("artist_id", ID),
        Column("album_id", ID),
        Column("audio_path", PATH),
        Column("genre", STRING, required=False),
        Column("release_date", DATE, required=False),
    ),
)

INTERACTIONS = TableSpec(
    name="interactions",
    columns=(
        Column("user_id", ID),
        Column("track_id", ID),
        Column("timestamp", TIMESTAMP),
        Column("event", EVENT),
    ),
)

TABLES: Tuple[TableSpec, ...] = (USERS, TRACKS, INTERACTIONS)


@dataclasses.dataclass(frozen=True)
class FeedbackConfig:
    """Which events mean "liked" and "disliked", and how many a user needs.

    A (user, track) pair can carry several events (played, then skipped, then
    liked). Its label is decided by the latest *explicit* event if there is
    one, otherwise by the latest implicit one; pairs whose events disagree are
    counted in the validation report as resolved conflicts.
    """

    liked_events: Tuple[str, ...] = ("like", "playlist_add", "complete")
    disliked_events: Tuple[str, ...] = ("dislike", "skip")
    explicit_events: Tuple[str, ...] = ("like", "playlist_add", "dislike")
    # The paper's protocol: users with fewer liked or disliked tracks are
    # excluded from the audio branch (and counted).
    min_liked: int = 10
    min_disliked: int = 10

    def __post_init__(self):
        for name in ("liked_events", "disliked_events", "explicit_events"):
            unknown = set(getattr(self, name)) - set(EVENT_TYPES)
            if unknown:
                raise ValueError(f"{name} has unknown event types {sorted(unknown)}; known: {EVENT_TYPES}")
        both = set(self.liked_events) & set(self.disliked_events)
        if both:
            raise ValueError(f"events {sorted(both)} are configured as both liked and disliked")

    @property
    def feedback_events(self) -> Tuple[str, ...]:
        return self.liked_events + self.disliked_events
