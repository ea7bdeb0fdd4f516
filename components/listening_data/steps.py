"""The ingestion job's steps: per track, per user, and the few that see every key.

Per key, in parallel:

  `JoinTrack`     per track: the track row (its repeats reported as duplicates)
                  joined to its events and to whether it has usable audio;
  `ResolveUser`   per user: the user row and their events (repeats reported),
                  events naming an unknown user or track counted, each (user,
                  track) pair's label resolved (`feedback.resolve_feedback`),
                  the user's audio-branch pairs when they have enough;
  `UserExamples`  per user: the user-branch examples (`user_examples.user_rows`)
                  and the user's events split at their hold-out;
  pair splits, pair examples (per track, with its popularity bucket) and
  user queries (per user, their liked tracks outside the evaluated pairs).

Over every key, on one worker, from one small summary per user or track (never
the events): the random draws the in-memory library makes in one sequence
(new users and hard negatives: `replay_user_draws`; the `per_user` split:
`replay_pair_splits`; the `users` and `cold_tracks` splits: `key_splits`),
replayed in key order so that each key gets the generator state it would have
reached, and the popularity ranking of tracks (`popularity_buckets`). So the
job writes exactly the examples `build_user_examples` and `build_audio_pairs`
give in memory.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np

from musicrec.components.listening_data.tables import CHANGED, COUNTS, MALFORMED, Demographics, TableRow, first_of_each_key
from musicrec.data import contract, tf_examples
from musicrec.data.audio_pairs import (
    NO_USABLE_AUDIO, NO_USER_EMBEDDING, SplitConfig, assign_splits, below_minimum,
)
from musicrec.data.contract import FeedbackConfig
from musicrec.data.feedback import resolve_feedback
from musicrec.data.user_examples import (
    NO_LIKED_TRACKS, TOO_FEW_LIKED_TRACKS, ExampleConfig, ExampleLookups, assemble_examples, choose_new_users,
    encode_demographic, history_row, skip_user_draws, user_rows,
)
from musicrec.names import EVAL, TEST, TRAIN, UNKNOWN, USER_QUERIES

AGE_BUCKETS = ((0, "<18"), (18, "18-24"), (25, "25-34"), (35, "35-44"), (45, "45-54"), (55, "55-64"), (65, "65+"))
# Popularity buckets by the track's rank in liked training pairs: the top 20%
# of tracks are the head, the next 30% the torso, the rest the tail.
POPULARITY_BUCKETS = ((0.2, "head"), (0.5, "torso"), (1.0, "tail"))
SLICES = ("gender", "age_bucket", "country")  # TFMA's user slices, those the users table has
# The audio pairs' split names, and the audio_pairs artifact's split each is written to.
PAIR_SPLITS = {"train": TRAIN, "validation": EVAL, "test": TEST}

# Tagged outputs, beside tables.MALFORMED, CHANGED and COUNTS.
TRACK_LINES = "track_lines"  # (track_id, line): every loaded track in table order
LIKED = "liked"  # (user_id, liked, disliked): users with a liked track, for the user-branch draws
PAIRS = "pairs"  # (user_id, UserPairs): users in the audio branch
QUERIES = "queries"  # (user_id, UserQuery): the same users


def property_name(reason: str) -> str:
    """An MLMD-friendly property name for a human-readable reason."""
    return "_".join("".join(c if c.isalnum() else " " for c in reason.lower()).split())


def user_branch_excluded(reason: str) -> str:
    return f"user_branch_excluded_users.{property_name(reason)}"


def audio_pairs_excluded(reason: str) -> str:
    return f"audio_pairs_excluded.{property_name(reason)}"


@dataclasses.dataclass(frozen=True)
class JobSettings:
    feedback: FeedbackConfig
    examples: ExampleConfig
    split: SplitConfig
    files: Dict[str, str]  # table name -> the file name reports name
    deduplicated: bool  # the rows come without repeats (else the steps report them)
    demographics: Demographics

    @property
    def slices(self) -> Tuple[str, ...]:
        return tuple(name for name in SLICES if name in self.demographics.names + ("age_bucket",))


# ---------------------------------------------------------------------------------------------
# Per track

@dataclasses.dataclass(frozen=True)
class Track:
    track_id: Any
    album_id: Any
    artist_id: Any
    genre: str  # "unknown" when blank or absent
    has_audio: bool


@dataclasses.dataclass(frozen=True)
class Event:
    """An interaction row, with its track (None when the tracks table does not name it)."""

    track_id: Any
    timestamp: int
    event: str
    line: int
    key_text: str
    changed: tuple
    track: Optional[Track]

    def key(self) -> Tuple:  # the duplicate key within a user
        return self.track_id, self.timestamp, self.event


class JoinTrack(beam.DoFn):
    """(track_id, {tracks, events, audio}) -> (user_id, Event) per event; TRACK_LINES, reports, counts."""

    def process(self, element, settings: JobSettings):
        track_id, grouped = element
        rows = list(grouped["tracks"])
        if not settings.deduplicated:
            rows, repeats = first_of_each_key(rows, lambda row: row.values["track_id"], settings.files["tracks"], contract.TRACKS)
            yield from _tagged(MALFORMED, repeats)
        track = None
        if rows:
            values = rows[0].values
            genre = values.get("genre")
            track = Track(track_id, values["album_id"], values["artist_id"],
                          UNKNOWN if _missing(genre) or genre == "" else genre, bool(list(grouped["audio"])))
            yield beam.pvalue.TaggedOutput(COUNTS, ("tracks", len(rows)))
            yield beam.pvalue.TaggedOutput(TRACK_LINES, (track_id, rows[0].line))
            yield from _tagged(CHANGED, (c for row in rows for c in row.changed))
        for row in grouped["events"]:
            values = row.values
            yield values["user_id"], Event(track_id, values["timestamp"], values["event"], row.line, row.key_text, row.changed, track)


# ---------------------------------------------------------------------------------------------
# Per user

@dataclasses.dataclass(frozen=True)
class Label:
    track_id: Any
    label: int  # 1 liked, 0 disliked
    timestamp: int  # of the deciding event


@dataclasses.dataclass(frozen=True)
class User:
    """A loaded user: their events of known tracks in file order, their labels by track, and what
    their examples are joined with (their tracks' albums and artists, their demographics)."""

    user_id: Any
    demographics: Dict[str, Any]
    events: Tuple[Event, ...]
    labels: Tuple[Label, ...]
    lookups: ExampleLookups

    def liked(self) -> List[Tuple[int, Any]]:
        """(timestamp, track_id) of the liked tracks, in time order (track order within a second)."""
        return sorted((label.timestamp, label.track_id) for label in self.labels if label.label == 1)


@dataclasses.dataclass(frozen=True)
class UserPairs:
    """A user of the audio branch: their (track_id, label) pairs with audio, in track order, their
    slice values and the genres of those tracks."""

    user_id: Any
    pairs: Tuple[Tuple[Any, int], ...]
    slices: Tuple[str, ...]
    genres: Dict[Any, str]


@dataclasses.dataclass(frozen=True)
class UserQuery:
    """What an audio-branch user's query is made of: their liked tracks (User.liked) and lookups."""

    liked: Tuple[Tuple[int, Any], ...]
    lookups: ExampleLookups


class ResolveUser(beam.DoFn):
    """(user_id, {users, events}) -> (user_id, User) for a known user; LIKED and PAIRS summaries;
    repeats and changed values reported; unknown ids and exclusions counted."""

    def process(self, element, settings: JobSettings):
        user_id, grouped = element
        rows, events = list(grouped["users"]), list(grouped["events"])
        if not settings.deduplicated:
            rows, user_repeats = first_of_each_key(rows, lambda row: row.values["user_id"], settings.files["users"], contract.USERS)
            events, event_repeats = first_of_each_key(events, Event.key, settings.files["interactions"], contract.INTERACTIONS)
            yield from _tagged(MALFORMED, user_repeats + event_repeats)
        yield from _tagged(CHANGED, (c for row in rows + events for c in row.changed))
        if not rows:
            yield _count("unknown_user_rows", len(events))
            return
        known = sorted((event for event in events if event.track is not None), key=lambda event: event.line)
        yield _count("unknown_track_rows", len(events) - len(known))
        yield _count("users", len(rows))
        yield _count("interactions", len(known))
        user = _user(user_id, rows[0], known, settings)
        liked = sum(label.label for label in user.labels)
        disliked = len(user.labels) - liked
        yield _count("eligible_users", int(settings.feedback.is_eligible(liked, disliked)))
        if liked:
            yield beam.pvalue.TaggedOutput(LIKED, (user_id, liked, disliked))
        yield from _audio_pairs_of(user, settings)
        yield user_id, user


def _user(user_id, row: TableRow, events: Sequence[Event], settings: JobSettings) -> User:
    decided, _ = resolve_feedback(((event.track_id, event.timestamp, event.event) for event in events), settings.feedback)
    labels = tuple(Label(track, label, events[position].timestamp) for track, (position, label) in sorted(decided.items()))
    demographics = {name: row.values.get(name) for name in settings.demographics.names}
    tracks = {event.track_id: event.track for event in events}
    lookups = ExampleLookups(
        albums={t: track.album_id for t, track in tracks.items()}, artists={t: track.artist_id for t, track in tracks.items()},
        demographics={user_id: demographics}, numeric=settings.demographics.numeric,
        categorical=settings.demographics.categorical,
    )
    return User(user_id, demographics, tuple(events), labels, lookups)


def _audio_pairs_of(user: User, settings: JobSettings) -> Iterator:
    """The user's pairs whose track has usable audio, when they have enough of each label."""
    tracks = {event.track_id: event.track for event in user.events}
    with_audio = [label for label in user.labels if tracks[label.track_id].has_audio]
    yield _count(audio_pairs_excluded(NO_USABLE_AUDIO), len(user.labels) - len(with_audio))
    yield _count(audio_pairs_excluded(NO_USER_EMBEDDING), 0)  # every loaded user is embedded
    if not with_audio:
        return
    liked = sum(label.label for label in with_audio)
    if not settings.feedback.is_eligible(liked, len(with_audio) - liked):
        yield _count(audio_pairs_excluded(below_minimum(settings.feedback)), 1)
        return
    pairs = UserPairs(
        user.user_id, tuple((label.track_id, label.label) for label in with_audio), _slice_values(user, settings),
        {label.track_id: tracks[label.track_id].genre for label in with_audio},
    )
    yield beam.pvalue.TaggedOutput(PAIRS, (user.user_id, pairs))
    yield beam.pvalue.TaggedOutput(QUERIES, (user.user_id, UserQuery(tuple(user.liked()), user.lookups)))


def _slice_values(user: User, settings: JobSettings) -> Tuple[str, ...]:
    values = {**user.demographics, "age_bucket": age_bucket(user.demographics.get("age"))
              if "age" in settings.demographics.numeric else UNKNOWN}
    return tuple(UNKNOWN if _missing(values[name]) or str(values[name]) == "" else str(values[name]) for name in settings.slices)


def age_bucket(age) -> str:
    """The age group of an age in years ("unknown" when missing or negative)."""
    if _missing(age) or not 0 <= age < math.inf:
        return UNKNOWN
    return [name for start, name in AGE_BUCKETS if age >= start][-1]


@dataclasses.dataclass(frozen=True)
class Draw:
    """Where a user's draws start in the user-branch sequence, and whether they are a new user."""

    state: dict
    chosen_as_new: bool


def replay_user_draws(summaries: Iterable[Tuple[Any, int, int]], config: ExampleConfig) -> Iterator[Tuple[Any, Draw]]:
    """Over every user with a liked track ((user_id, liked, disliked)): each user's Draw, from the
    sequence `build_user_examples` draws from, in user order."""
    summaries = sorted(summaries)
    rng = np.random.default_rng(config.seed)
    new_users = choose_new_users(rng, np.asarray([user for user, _, _ in summaries], dtype=object), config)
    for user_id, liked, disliked in summaries:
        draw = Draw(rng.bit_generator.state, user_id in new_users)
        skip_user_draws(rng, liked, disliked, draw.chosen_as_new, config)
        yield user_id, draw


def _generator(state: dict) -> np.random.Generator:
    bits = np.random.PCG64()
    bits.state = state
    return np.random.Generator(bits)


class UserExamples(beam.DoFn):
    """(user_id, {user, draw}) -> (destination, serialized tf.Example): the user's user-branch
    examples and their events, split at their hold-out."""

    def process(self, element, settings: JobSettings):
        user_id, grouped = element
        user, draw = next(iter(grouped["user"])), next(iter(grouped["draw"]), None)
        holdout_start = None
        if draw is None:
            yield _count(user_branch_excluded(NO_LIKED_TRACKS), 1)
        else:
            liked = user.liked()
            dislikes = np.asarray(sorted(label.track_id for label in user.labels if label.label == 0), dtype=object)
            rows = user_rows(user_id, np.asarray([track for _, track in liked], dtype=object),
                             np.asarray([time for time, _ in liked], dtype=np.int64), dislikes, draw.chosen_as_new,
                             _generator(draw.state), settings.examples)
            yield _count(user_branch_excluded(TOO_FEW_LIKED_TRACKS), int(rows.plan.too_few))
            holdout_start = rows.holdout_start
            for split, split_rows in ((TRAIN, rows.train), (EVAL, rows.held_out)):
                columns = assemble_examples(split_rows, user.lookups, settings.examples.history_length).columns
                yield from _serialized("user_examples", split, columns)
        start = math.inf if holdout_start is None else holdout_start
        for split, held_out in ((TRAIN, False), (EVAL, True)):
            events = [event for event in user.events if (event.timestamp >= start) == held_out]
            yield from _serialized("interactions", split, _interaction_columns(user, events, settings))


def _interaction_columns(user: User, events: Sequence[Event], settings: JobSettings) -> Dict[str, np.ndarray]:
    """One example per event: ids, track metadata, event, time and the user's demographics."""
    n = len(events)
    text = {
        "user_id": [user.user_id] * n, "track_id": [e.track_id for e in events], "album_id": [e.track.album_id for e in events],
        "artist_id": [e.track.artist_id for e in events], "genre": [e.track.genre for e in events],
        "event": [e.event for e in events],
    }
    return {
        **{name: np.asarray([str(v) for v in values], dtype=object) for name, values in text.items()},
        "timestamp": np.asarray([e.timestamp for e in events], dtype=np.int64),
        **{name: encode_demographic([user.demographics[name]] * n, name in settings.demographics.numeric)
           for name in settings.demographics.names},
    }


# ---------------------------------------------------------------------------------------------
# Audio pairs

@dataclasses.dataclass(frozen=True)
class Pair:
    user_id: Any
    track_id: Any
    label: int
    split: Optional[str]  # train, validation or test
    slices: Tuple[str, ...]
    genre: str


def replay_pair_splits(summaries: Iterable[Tuple[Any, int, int]], split: SplitConfig) -> Iterator[Tuple[Any, Dict[int, dict]]]:
    """`per_user`: over every audio-branch user ((user_id, disliked, liked) pairs), the generator
    state each of their (user, label) groups starts from in the sequence `build_audio_pairs`
    splits with: groups in (user_id, label) order, one draw each."""
    rng = np.random.default_rng(split.seed)
    for user_id, *sizes in sorted(summaries):
        states = {}
        for label, size in enumerate(sizes):
            if size:
                states[label] = rng.bit_generator.state
                assign_splits(size, split.fractions, rng)
        yield user_id, states


def key_splits(keys: Iterable, split: SplitConfig) -> Iterator[Tuple[Any, str]]:
    """`users`, `cold_tracks`: the split of each user (or track), one draw over the sorted ids."""
    keys = sorted(set(keys))
    return zip(keys, assign_splits(len(keys), split.fractions, np.random.default_rng(split.seed)))


def pairs_of(user_pairs: UserPairs, splits: Optional[Sequence[str]] = None) -> Iterator[Pair]:
    """The user's pairs, in the given splits (None: not split yet)."""
    for (track_id, label), split in zip(user_pairs.pairs, splits or [None] * len(user_pairs.pairs)):
        yield Pair(user_pairs.user_id, track_id, label, split, user_pairs.slices, user_pairs.genres[track_id])


def split_per_user(element, split: SplitConfig) -> Iterator[Pair]:
    """(user_id, {pairs, states}) -> the user's pairs, each (user, label) group split from its state."""
    _, grouped = element
    user_pairs, states = next(iter(grouped["pairs"])), next(iter(grouped["states"]))
    names: Dict[int, Iterator[str]] = {
        label: iter(assign_splits(sum(1 for _, l in user_pairs.pairs if l == label), split.fractions, _generator(state)))
        for label, state in states.items()
    }
    yield from pairs_of(user_pairs, [next(names[label]) for _, label in user_pairs.pairs])


def split_by_key(element) -> Iterator[Pair]:
    """(key, {pairs, split}) -> the pairs of a user or track, in its split."""
    _, grouped = element
    name = next(iter(grouped["split"]))
    for pair in grouped["pairs"]:
        yield dataclasses.replace(pair, split=name)


def popularity_buckets(tracks: Iterable[Tuple[Any, int, int]]) -> Iterator[Tuple[Any, str]]:
    """Over every track ((track_id, line, liked training pairs)): its popularity bucket by its rank
    in liked training pairs, ties in table order."""
    ranked = sorted(tracks, key=lambda track: (-track[2], track[1]))
    n = max(len(ranked), 1)
    for rank, (track_id, _, _) in enumerate(ranked, start=1):
        yield track_id, next(name for share, name in POPULARITY_BUCKETS if rank / n <= share)


def pair_examples(element, settings: JobSettings) -> Iterator[Tuple[str, bytes]]:
    """(track_id, {pairs, bucket}) -> the track's pair examples, by split."""
    _, grouped = element
    bucket = next(iter(grouped["bucket"]))
    by_split: Dict[str, List[Pair]] = {}
    for pair in grouped["pairs"]:
        by_split.setdefault(pair.split, []).append(pair)
    for split, pairs in by_split.items():
        columns = {
            "user_id": np.asarray([str(p.user_id) for p in pairs], dtype=object),
            "track_id": np.asarray([str(p.track_id) for p in pairs], dtype=object),
            "label": np.asarray([p.label for p in pairs], dtype=np.int64),
            **{name: np.asarray([p.slices[i] for p in pairs], dtype=object) for i, name in enumerate(settings.slices)},
            "popularity_bucket": np.asarray([bucket] * len(pairs), dtype=object),
            "genre": np.asarray([str(p.genre) for p in pairs], dtype=object),
        }
        yield from _serialized("audio_pairs", PAIR_SPLITS[split], columns)


def user_query_example(element, settings: JobSettings) -> Iterator[Tuple[str, bytes]]:
    """(user_id, {query, evaluated}) -> the user's query: their last liked tracks outside their
    validation and test pairs."""
    user_id, grouped = element
    query = next(iter(grouped["query"]))
    evaluated = set(grouped["evaluated"])
    liked = np.asarray([track for _, track in query.liked if track not in evaluated], dtype=object)
    row = history_row(user_id, liked, settings.examples.history_length)
    yield from _serialized("audio_pairs", USER_QUERIES, assemble_examples([row], query.lookups, settings.examples.history_length).columns)


# ---------------------------------------------------------------------------------------------

def _serialized(artifact: str, split: str, columns: Dict[str, np.ndarray]) -> Iterator[Tuple[str, bytes]]:
    destination = f"{artifact}/{split}"
    for record in tf_examples.serialize_rows(columns):
        yield destination, record


def _count(name: str, n: int):
    return beam.pvalue.TaggedOutput(COUNTS, (name, n))


def _tagged(tag: str, values: Iterable) -> Iterator:
    for value in values:
        yield beam.pvalue.TaggedOutput(tag, value)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
