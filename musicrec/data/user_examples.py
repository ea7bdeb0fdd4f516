"""Examples for the user branch: (history before t, demographics) -> the next liked track.

For each user, liked tracks (resolved per FeedbackConfig) are ordered by the
time of their deciding event. The last `holdout_last` of them are the
time-based test targets; every earlier one is a training label, with the up
to `history_length` liked tracks before it (and their albums and artists) as
the history. A user's disliked tracks ride along as hard negatives.

The examples are columnar numpy arrays (`UserExamples`); `to_tf_examples` /
`FEATURE_SPEC` give the tf.Example form the TFX pipeline stores, so the
trainer reads the same thing from either.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import pandas as pd

from musicrec.data import tf_examples
from musicrec.data.contract import FeedbackConfig
from musicrec.data.feedback import feedback_labels
from musicrec.data.loading import Dataset

HISTORY_FEATURES = ("history_track_ids", "history_album_ids", "history_artist_ids")
LABEL_FEATURES = ("track_id", "album_id", "artist_id")
# position: index of the label in the user's liked sequence (time order);
# new_user: 1 for users kept out of training altogether.
BOOKKEEPING_FEATURES = ("position", "new_user")
HOLD_OUT_ALL = np.iinfo(np.int64).min
PAD = ""


@dataclasses.dataclass(frozen=True)
class ExampleConfig:
    history_length: int = 50
    # The last liked tracks of each user are test targets (time-based hold-out).
    holdout_last: int = 3
    # Users need at least this many liked tracks before the hold-out to get a test split.
    min_train_positives: int = 2
    # Share of users kept out of training altogether: "new users", whom a user-id
    # model cannot embed but the history + demographics tower can.
    new_user_share: float = 0.1
    seed: int = 0


@dataclasses.dataclass
class UserExamples:
    """Columns of equal length: user_id, history_* [n, history_length], demographics,
    track_id/album_id/artist_id (the label), disliked_track_id ('' when none)."""

    columns: Dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.columns["user_id"])

    def take(self, index) -> "UserExamples":
        return UserExamples({k: v[index] for k, v in self.columns.items()})


@dataclasses.dataclass
class UserBranchData:
    train: UserExamples
    test: UserExamples  # one row per held-out (user, target); history = all training positives
    # One row per user with every liked track as history: what the UE table is computed from.
    latest: UserExamples
    tracks: pd.DataFrame  # track_id, album_id, artist_id of every track in the catalogue
    numeric_demographics: Tuple[str, ...]
    categorical_demographics: Tuple[str, ...]
    excluded_users: Dict[str, int]  # reason -> count (users left out of train or test)
    # Held-out targets of users never seen in training (history = their earlier liked tracks).
    new_users: Optional[UserExamples] = None
    # Per user, the time from which their events are held out: the first held-out liked
    # track's timestamp, or HOLD_OUT_ALL for new users; users without a hold-out are absent.
    holdout_start: Dict[str, int] = dataclasses.field(default_factory=dict)

    def known_liked(self, targets: UserExamples) -> Dict[str, set]:
        """Per user, the liked tracks before their hold-out, excluded from their test ranking:
        their training labels and the history of their target rows."""
        seen: Dict[str, set] = {}
        for user, track in zip(self.train.columns["user_id"], self.train.columns["track_id"]):
            seen.setdefault(user, set()).add(track)
        for user, history in zip(targets.columns["user_id"], targets.columns["history_track_ids"]):
            seen.setdefault(user, set()).update(history[history != PAD])
        return seen


# Why users are left out of the user branch's train or test split (UserBranchData.excluded_users).
NO_LIKED_TRACKS = "no liked tracks"
TOO_FEW_LIKED_TRACKS = "too few liked tracks for a test split"


def build_user_examples(
    dataset: Dataset, feedback: FeedbackConfig = FeedbackConfig(), config: ExampleConfig = ExampleConfig()
) -> UserBranchData:
    resolved = feedback_labels(dataset.interactions, feedback).labels
    tracks = dataset.tracks[["track_id", "album_id", "artist_id"]].reset_index(drop=True)
    liked = resolved[resolved["label"] == 1].sort_values(["user_id", "timestamp", "track_id"], kind="stable")
    disliked = resolved[resolved["label"] == 0].groupby("user_id")["track_id"].apply(np.asarray).to_dict()
    numeric, categorical = demographic_kinds(dataset.users)

    train_rows, test_rows, new_user_rows, latest_rows = [], [], [], []
    holdout_start: Dict[str, int] = {}
    excluded = {NO_LIKED_TRACKS: int((~dataset.users["user_id"].isin(liked["user_id"])).sum()), TOO_FEW_LIKED_TRACKS: 0}
    rng = np.random.default_rng(config.seed)
    new_users = choose_new_users(rng, np.sort(liked["user_id"].unique()), config)
    for user_id, group in liked.groupby("user_id", sort=True):
        dislikes = disliked.get(user_id, np.asarray([], dtype=object))
        rows = user_rows(user_id, group["track_id"].to_numpy(), group["timestamp"].to_numpy(), dislikes,
                         user_id in new_users, rng, config)
        excluded[TOO_FEW_LIKED_TRACKS] += rows.plan.too_few
        if rows.holdout_start is not None:
            holdout_start[user_id] = rows.holdout_start
        train_rows += rows.train
        (new_user_rows if rows.plan.is_new else test_rows).extend(rows.held_out)
        latest_rows.append(rows.latest)

    lookups = ExampleLookups.of(dataset)

    def assemble(rows) -> UserExamples:
        return assemble_examples(rows, lookups, config.history_length)

    return UserBranchData(
        train=assemble(train_rows),
        test=assemble(test_rows),
        latest=assemble(latest_rows),
        tracks=tracks,
        numeric_demographics=tuple(numeric),
        categorical_demographics=tuple(categorical),
        excluded_users=excluded,
        new_users=assemble(new_user_rows),
        holdout_start=holdout_start,
    )


# The user-branch examples draw from one random sequence: first the new users, then, user by
# user in id order, a hard negative per training example. The ingestion job replays it per user
# (`skip_user_draws`), so it draws exactly the examples `build_user_examples` draws.

def choose_new_users(rng: np.random.Generator, candidates: np.ndarray, config: ExampleConfig) -> set:
    """The users kept out of training, among `candidates` (every user with a liked track, sorted)."""
    return set(rng.choice(candidates, size=int(round(config.new_user_share * len(candidates))), replace=False))


@dataclasses.dataclass(frozen=True)
class UserPlan:
    """How a user's liked tracks are used: the first `n_train` train (all of them when `too_few` are
    left for a test split); a new user (`is_new`) trains on none and is tested on the rest."""

    n_train: int
    is_new: bool
    too_few: bool


def plan_user(n_liked: int, chosen_as_new: bool, config: ExampleConfig) -> UserPlan:
    n_train = n_liked - config.holdout_last
    too_few = n_train < config.min_train_positives
    if too_few:
        n_train = n_liked  # all of it trains; no test targets
    return UserPlan(n_train, chosen_as_new and n_train < n_liked, too_few)


def _negative_draws(rng: np.random.Generator, n_dislikes: int, plan: UserPlan) -> List[int]:
    """Indices among the user's disliked tracks of one hard negative per training example (none without dislikes)."""
    n_examples = 0 if plan.is_new else plan.n_train
    return [int(rng.integers(n_dislikes)) for _ in range(n_examples)] if n_dislikes else []


def skip_user_draws(rng: np.random.Generator, n_liked: int, n_disliked: int, chosen_as_new: bool,
                    config: ExampleConfig) -> None:
    """Advances `rng` past one user's draws, as `user_rows` would draw them."""
    _negative_draws(rng, n_disliked, plan_user(n_liked, chosen_as_new, config))


@dataclasses.dataclass
class UserRows:
    """One user's example rows (user_id, history, label track, disliked track, position, new_user)."""

    plan: UserPlan
    train: List[tuple]
    held_out: List[tuple]  # test targets, or a new user's
    latest: tuple  # every liked track as history: what the user's UE is computed from
    # From this time on, the user's events are held out: the first held-out liked track's
    # timestamp, HOLD_OUT_ALL for a new user, None without a hold-out.
    holdout_start: Optional[int]


def user_rows(user_id, sequence: np.ndarray, timestamps: np.ndarray, dislikes: np.ndarray, chosen_as_new: bool,
              rng: np.random.Generator, config: ExampleConfig) -> UserRows:
    """A user's rows from their liked tracks in time order (`sequence`, with `timestamps`) and their
    disliked tracks (sorted), drawing hard negatives from `rng`."""
    plan = plan_user(len(sequence), chosen_as_new, config)
    n_train, length = plan.n_train, config.history_length
    holdout_start = None
    if n_train < len(sequence):
        holdout_start = HOLD_OUT_ALL if plan.is_new else int(timestamps[n_train])
    negatives = _negative_draws(rng, len(dislikes), plan)
    train = [
        (user_id, sequence[max(0, t - length) : t], sequence[t], dislikes[negatives[t]] if negatives else PAD, t, False)
        for t in range(0 if plan.is_new else n_train)
    ]
    held_out = [
        (user_id, sequence[max(0, n_train - length) : n_train], sequence[t], PAD, t, plan.is_new)
        for t in range(n_train, len(sequence))
    ]
    latest = (user_id, sequence[-length:], PAD, PAD, len(sequence), plan.is_new)
    return UserRows(plan, train, held_out, latest, holdout_start)


def history_examples(dataset: Dataset, liked: pd.DataFrame, user_ids, history_length: int = ExampleConfig.history_length) -> UserExamples:
    """One query row per user of `user_ids`: their last `history_length` liked tracks among the
    given (user_id, track_id, timestamp) rows in time order (possibly none), plus demographics.

    The audio branch embeds users with this from its *training* split only, so
    a user's UE never contains the liked tracks it is tested on.
    """
    ordered = liked.sort_values(["user_id", "timestamp", "track_id"], kind="stable")
    histories = {user: group["track_id"].to_numpy() for user, group in ordered.groupby("user_id")}
    rows = [history_row(user, histories.get(user, ()), history_length) for user in sorted(set(user_ids))]
    return assemble_examples(rows, ExampleLookups.of(dataset), history_length)


def history_row(user_id, liked_in_time_order, history_length: int) -> tuple:
    """A query row: the user's last `history_length` liked tracks, no label."""
    history = liked_in_time_order[-history_length:]
    return (user_id, history, PAD, PAD, len(history), False)


def demographic_kinds(users: pd.DataFrame) -> Tuple[List[str], List[str]]:
    """Numeric columns (age, by the contract) are normalised; all others are categorical."""
    names = [c for c in users.columns if c != "user_id"]
    numeric = [c for c in names if pd.api.types.is_numeric_dtype(users[c])]
    return numeric, [c for c in names if c not in numeric]


@dataclasses.dataclass(frozen=True)
class ExampleLookups:
    """What example rows are joined with: each track's album and artist, and each user's
    demographics (name -> value as loaded) with the names of the numeric ones."""

    albums: Mapping[str, str]
    artists: Mapping[str, str]
    demographics: Mapping[str, Mapping[str, object]]
    numeric: Tuple[str, ...]
    categorical: Tuple[str, ...]

    @classmethod
    def of(cls, dataset: Dataset) -> "ExampleLookups":
        numeric, categorical = demographic_kinds(dataset.users)
        users = dataset.users.set_index("user_id")[numeric + categorical]
        tracks = dataset.tracks
        return cls(
            albums=dict(zip(tracks["track_id"], tracks["album_id"])),
            artists=dict(zip(tracks["track_id"], tracks["artist_id"])),
            demographics={user: dict(zip(users.columns, values)) for user, values in zip(users.index, users.itertuples(index=False))},
            numeric=tuple(numeric),
            categorical=tuple(categorical),
        )


def assemble_examples(rows, lookups: ExampleLookups, length: int) -> UserExamples:
    """Example rows (user_id, history, label, disliked, position, new_user) as columns: histories
    padded to `length`, albums and artists of history and label, numeric then categorical demographics."""
    n = len(rows)
    columns: Dict[str, np.ndarray] = {"user_id": np.asarray([r[0] for r in rows], dtype=object)}
    histories = np.full((n, length), PAD, dtype=object)
    for i, row in enumerate(rows):
        history = row[1]
        if len(history):
            histories[i, : len(history)] = history
    columns["history_track_ids"] = histories
    columns["history_album_ids"] = _lookup(lookups.albums, histories)
    columns["history_artist_ids"] = _lookup(lookups.artists, histories)
    labels = np.asarray([r[2] for r in rows], dtype=object)
    columns["track_id"] = labels
    columns["album_id"] = _lookup(lookups.albums, labels)
    columns["artist_id"] = _lookup(lookups.artists, labels)
    columns["disliked_track_id"] = np.asarray([r[3] for r in rows], dtype=object)
    columns["position"] = np.asarray([r[4] for r in rows], dtype=np.int64)
    columns["new_user"] = np.asarray([r[5] for r in rows], dtype=np.int64)
    for name in lookups.numeric + lookups.categorical:
        values = [lookups.demographics.get(user, {}).get(name) for user in columns["user_id"]]
        columns[name] = encode_demographic(values, numeric=name in lookups.numeric)
    return UserExamples(columns)


def encode_demographic(values, numeric: bool) -> np.ndarray:
    """A demographic column's values as example features: numeric ones as float32 (NaN when
    missing), the others as strings ('' when missing)."""
    if numeric:
        return np.asarray([np.nan if _missing(v) else float(v) for v in values], dtype=np.float32)
    return np.asarray(["" if _missing(v) else str(v) for v in values], dtype=object)


def _missing(value) -> bool:
    if isinstance(value, str):  # most values: decided without pandas
        return False
    return value is None or (np.ndim(value) == 0 and bool(pd.isna(value)))


def _lookup(mapping: Mapping[str, str], ids: np.ndarray) -> np.ndarray:
    """The value of each id (PAD for PAD, for unknown ids and for missing values)."""
    flat = ids.reshape(-1)
    values = np.asarray([PAD if i == PAD else mapping.get(i, PAD) for i in flat], dtype=object)
    for i, value in enumerate(values):
        if _missing(value):
            values[i] = PAD
    return values.reshape(ids.shape)


def write_user_examples(examples: UserExamples, path) -> int:
    """Writes the examples as a GZIP TFRecord of tf.Examples (the TFX convention)."""
    return tf_examples.write_tf_examples(examples.columns, path)


def read_user_examples(file_patterns) -> UserExamples:
    """Reads examples written by `write_user_examples` (or the ingestion component)."""
    return UserExamples(tf_examples.read_tf_examples(file_patterns, list_features=HISTORY_FEATURES))


def branch_data_from_examples(train: UserExamples, evaluation: UserExamples) -> UserBranchData:
    """Rebuilds UserBranchData from stored examples (the TFX Trainer path): the train split,
    and the eval split holding the held-out targets of seen users and of new users.

    Each user's UE input ("latest") is their last training example (by
    `position`, not file order) with its label appended to the history: every
    liked track before the hold-out.
    """
    fixed = set(HISTORY_FEATURES) | set(LABEL_FEATURES) | set(BOOKKEEPING_FEATURES) | {"user_id", "disliked_track_id"}
    demographics = [name for name in train.columns if name not in fixed]
    numeric = tuple(n for n in demographics if train.columns[n].dtype == np.float32)
    categorical = tuple(n for n in demographics if n not in numeric)
    order = np.lexsort((train.columns["position"], train.columns["user_id"].astype(str)))
    users = train.columns["user_id"][order].astype(str)
    last = order[np.r_[users[1:] != users[:-1], True]]
    latest = train.take(last)
    histories = latest.columns
    for history, label in zip(HISTORY_FEATURES, LABEL_FEATURES):
        rolled = np.concatenate([histories[history], histories[label][:, None]], axis=1)
        keep = [row[row != PAD][-histories[history].shape[1]:] for row in rolled]
        padded = np.full(histories[history].shape, PAD, dtype=object)
        for i, row in enumerate(keep):
            padded[i, : len(row)] = row
        histories[history] = padded
    tracks = pd.DataFrame(
        {name: np.concatenate([train.columns[name], train.columns[f"history_{name}s"].reshape(-1)]) for name in LABEL_FEATURES}
    )
    tracks = tracks[tracks["track_id"] != PAD].drop_duplicates("track_id").reset_index(drop=True)
    is_new = evaluation.columns["new_user"] == 1
    return UserBranchData(
        train=train, test=evaluation.take(~is_new), latest=latest, tracks=tracks,
        numeric_demographics=numeric, categorical_demographics=categorical, excluded_users={},
        new_users=evaluation.take(is_new),
    )
