"""The data contract: what a dataset folder in the "plain layout" holds.

A dataset is a folder with three tables (CSV, or Parquet with the same name and
columns) and the audio files they point to:

  users.csv         user_id, age, gender, country, [any further demographics]
  tracks.csv        track_id, artist_id, album_id, audio_path, [genre], [release_date]
  interactions.csv  user_id, track_id, timestamp, event

Every row of a table ends up in exactly one place, so that rows read = rows
loaded + rows reported (`musicrec validate-data` prints this sum per table):

* loaded, possibly with a value changed (reported in `Dataset.changed_values`,
  with file and line): an optional value that breaks its column's rule (an
  age that is not an integer, "NaN", or outside 0..120; a release date that
  is not a date) is set to missing and the row kept, so one bad demographic
  never costs a user their history; an event that differs from a known type
  only in letter case ("Like") is lower-cased and counted;
* not loaded, reported with file, line and a fault kind (`Dataset.malformed`):
  see `ROW_FAULTS`. Rows that repeat an earlier row's key (users: user_id,
  tracks: track_id, interactions: the whole event, after parsing, so an ISO
  time and the same time in unix seconds match, as do "Like" and "like") are
  duplicates: the first is kept. An unknown event type ("teleport") is a
  malformed row, not drift: it never reaches the models or TFDV;
* interactions naming a user or track absent from the other tables (counted
  as unknown user, or else as unknown track, with examples).

A CSV line is a physical line (split at "\n"; the header is line 1): bytes
that are not UTF-8 cost exactly the row that holds them. A quoted value may
span lines only in an extra column (one the contract does not name); a quote
that runs across lines anywhere else is an unbalanced quote: its first line is
reported and reading resumes on the next line, so it cannot swallow the rows
after it. Parquet rows are numbered from 1; a binary column is read as UTF-8
text, and a row with a value that does not decode, or with a NUL, is
undecodable. Values are stripped of surrounding whitespace; an empty CSV line
is not a row.

Timestamps are ISO-8601 times or unix *seconds* between 1970-01-01 and
2100-01-01 (`TIMESTAMP_RANGE`). A number beyond that range which would be in
it divided by 1000 is refused per row as "looks like milliseconds" (never
converted: a silently rescaled clock is worse than a refused row); infinities,
NaN and other out-of-range times are refused per row too.

Audio paths must resolve (symbolic links followed) inside the dataset folder
or a folder an adapter declares in `Dataset.audio_roots`; any other path is
quarantined as "outside_dataset" and never opened.

This module only *describes* the contract (columns, value kinds, event
vocabulary, fault kinds, which events count as liked or disliked). Reading
lives in `musicrec.data.loading`, checking in `musicrec.data.validation`.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Dict, Iterable, Optional, Tuple

EVENT_TYPES: Tuple[str, ...] = ("play", "complete", "skip", "like", "dislike", "playlist_add")

# Value kinds a column may hold; `loading` knows how to parse and check each.
ID = "id"  # non-empty string
INT = "int"  # integer, may be blank when the column is optional
STRING = "string"  # free text, may be blank
TIMESTAMP = "timestamp"  # ISO-8601 or unix seconds, within the column's valid_range
DATE = "date"  # ISO-8601 date or datetime, may be blank
EVENT = "event"  # one of EVENT_TYPES, letter case aside
PATH = "path"  # non-empty path relative to the dataset folder

# 1970-01-01T00:00:00Z to 2100-01-01T00:00:00Z in unix seconds, and ages in years (inclusive).
TIMESTAMP_RANGE = (0, 4_102_444_800)
AGE_RANGE = (0, 120)

# Fault kinds: how a row or value that breaks the contract is counted. The
# validation summary counts each; `MalformedRow.kind` / `ChangedValue.kind` hold them.
ROW_FAULTS: Dict[str, str] = {  # the row is not loaded
    "undecodable": "the line (Parquet: a value) holds bytes that are not UTF-8 text (an invalid sequence, or a NUL byte)",
    "unparsable_csv": "the csv module cannot parse the record (a bare carriage return, a quote that runs across lines)",
    "field_count": "more or fewer fields than the header",
    "blank_required": "a required value is blank",
    "duplicate": "repeats the key of an earlier row (interactions: the whole event); the first is kept",
    "timestamp_unparsable": "the timestamp is neither ISO-8601 nor a number",
    "timestamp_not_finite": "the timestamp is infinite or NaN",
    "timestamp_out_of_range": "the timestamp is before 1970 or after 2100 (TIMESTAMP_RANGE)",
    "timestamp_milliseconds": "the timestamp looks like unix milliseconds (in range once divided by 1000)",
    "event_unknown": "the event is not one of EVENT_TYPES",
    "malformed": "an adapter's row it could not convert (adapters that name no kind)",
}
VALUE_FAULTS: Dict[str, str] = {  # the row is loaded with the value set to missing
    "age_not_integer": "the age is not an integer (text, a fraction, NaN)",
    "age_out_of_range": "the age is outside AGE_RANGE",
    "release_date_unparsable": "the release date is not an ISO-8601 date",
}
NORMALISED_VALUES: Dict[str, str] = {  # the row is loaded with the value normalised
    "event_case_normalised": "the event differs from a known type only in letter case; lower-cased",
}
UNKNOWN_IDS: Dict[str, str] = {  # the interaction is not loaded; counted with examples
    "unknown_user": "names a user absent from the users table",
    "unknown_track": "names a known user but a track absent from the tracks table",
}


def count_by_kind(kinds: Iterable[str]) -> Dict[str, int]:
    """Fault kind -> how many reports have it, sorted by kind: what every report prints and records."""
    return {kind: int(n) for kind, n in sorted(collections.Counter(kinds).items())}


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    kind: str
    # A required column must be present in the file and non-blank in every row.
    required: bool = True
    # Inclusive bounds of a numeric value (timestamps: unix seconds).
    valid_range: Optional[Tuple[int, int]] = None


@dataclasses.dataclass(frozen=True)
class TableSpec:
    name: str
    columns: Tuple[Column, ...]
    # Columns whose values together must be unique (a later repeat is a
    # duplicate row); the table's primary key, or every column of an event log.
    key: Tuple[str, ...] = ()
    # Whether columns beyond `columns` are kept (extra demographics).
    extra_columns_allowed: bool = False

    @property
    def required_columns(self) -> Tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    def column(self, name: str) -> Optional[Column]:
        return next((c for c in self.columns if c.name == name), None)


USERS = TableSpec(
    name="users",
    key=("user_id",),
    columns=(
        Column("user_id", ID),
        Column("age", INT, required=False, valid_range=AGE_RANGE),
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
    key=("track_id",),
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
    key=("user_id", "track_id", "timestamp", "event"),
    columns=(
        Column("user_id", ID),
        Column("track_id", ID),
        Column("timestamp", TIMESTAMP, valid_range=TIMESTAMP_RANGE),
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

    def is_eligible(self, liked, disliked):
        """Whether a user with this many liked and disliked tracks takes part in the audio branch
        (counts, or arrays of them)."""
        return (liked >= self.min_liked) & (disliked >= self.min_disliked)
