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
from typing import Dict, List, Optional, Tuple

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


def build_user_examples(
    dataset: Dataset, feedback: FeedbackConfig = FeedbackConfig(), config: ExampleConfig = ExampleConfig()
) -> UserBranchData:
    resolved = feedback_labels(dataset.interactions, feedback).labels
    tracks = dataset.tracks[["track_id", "album_id", "artist_id"]].reset_index(drop=True)
    meta = tracks.set_index("track_id")
    liked = resolved[resolved["label"] == 1].sort_values(["user_id", "timestamp", "track_id"], kind="stable")
    disliked = resolved[resolved["label"] == 0].groupby("user_id")["track_id"].apply(np.asarray).to_dict()
    users = dataset.users.set_index("user_id")
    numeric, categorical = _demographic_kinds(dataset.users)

    train_rows, test_rows, new_user_rows, latest_rows = [], [], [], []
    holdout_start: Dict[str, int] = {}
    excluded = {"no liked tracks": int((~users.index.isin(liked["user_id"])).sum()), "too few liked tracks for a test split": 0}
    rng = np.random.default_rng(config.seed)
    candidates = np.sort(liked["user_id"].unique())
    new_users = set(rng.choice(candidates, size=int(round(config.new_user_share * len(candidates))), replace=False))
    for user_id, group in liked.groupby("user_id", sort=True):
        sequence = group["track_id"].to_numpy()
        dislikes = disliked.get(user_id, np.asarray([], dtype=object))
        n_train = len(sequence) - config.holdout_last
        if n_train < config.min_train_positives:
            excluded["too few liked tracks for a test split"] += 1
            n_train = len(sequence)  # all of it trains; no test targets
        is_new = user_id in new_users and n_train < len(sequence)
        if n_train < len(sequence):
            holdout_start[user_id] = HOLD_OUT_ALL if is_new else int(group["timestamp"].iloc[n_train])
        for t in range(0 if is_new else n_train):
            negative = dislikes[rng.integers(len(dislikes))] if len(dislikes) else PAD
            train_rows.append((user_id, sequence[max(0, t - config.history_length) : t], sequence[t], negative, t, False))
        for t in range(n_train, len(sequence)):
            (new_user_rows if is_new else test_rows).append(
                (user_id, sequence[max(0, n_train - config.history_length) : n_train], sequence[t], PAD, t, is_new)
            )
        latest_rows.append((user_id, sequence[-config.history_length :], PAD, PAD, len(sequence), is_new))

    def assemble(rows) -> UserExamples:
        return _assemble(rows, meta, users, numeric + categorical, config.history_length)

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


def history_examples(dataset: Dataset, liked: pd.DataFrame, user_ids, history_length: int = ExampleConfig.history_length) -> UserExamples:
    """One query row per user of `user_ids`: their last `history_length` liked tracks among the
    given (user_id, track_id, timestamp) rows in time order (possibly none), plus demographics.

    The audio branch embeds users with this from its *training* split only, so
    a user's UE never contains the liked tracks it is tested on.
    """
    users = dataset.users.set_index("user_id")
    numeric, categorical = _demographic_kinds(dataset.users)
    meta = dataset.tracks.set_index("track_id")[["album_id", "artist_id"]]
    ordered = liked.sort_values(["user_id", "timestamp", "track_id"], kind="stable")
    histories = {user: group["track_id"].to_numpy()[-history_length:] for user, group in ordered.groupby("user_id")}
    rows = [(user, histories.get(user, ()), PAD, PAD, len(histories.get(user, ())), False) for user in sorted(set(user_ids))]
    return _assemble(rows, meta, users, numeric + categorical, history_length)


def _demographic_kinds(users: pd.DataFrame) -> Tuple[List[str], List[str]]:
    """Numeric columns (age, by the contract) are normalised; all others are categorical."""
    names = [c for c in users.columns if c != "user_id"]
    numeric = [c for c in names if pd.api.types.is_numeric_dtype(users[c])]
    return numeric, [c for c in names if c not in numeric]


def _assemble(rows, meta: pd.DataFrame, users: pd.DataFrame, demographics: List[str], length: int) -> UserExamples:
    n = len(rows)
    columns: Dict[str, np.ndarray] = {"user_id": np.asarray([r[0] for r in rows], dtype=object)}
    histories = np.full((n, length), PAD, dtype=object)
    for i, row in enumerate(rows):
        history = row[1]
        if len(history):
            histories[i, : len(history)] = history
    columns["history_track_ids"] = histories
    columns["history_album_ids"] = _lookup(meta["album_id"], histories)
    columns["history_artist_ids"] = _lookup(meta["artist_id"], histories)
    labels = np.asarray([r[2] for r in rows], dtype=object)
    columns["track_id"] = labels
    columns["album_id"] = _lookup(meta["album_id"], labels)
    columns["artist_id"] = _lookup(meta["artist_id"], labels)
    columns["disliked_track_id"] = np.asarray([r[3] for r in rows], dtype=object)
    columns["position"] = np.asarray([r[4] for r in rows], dtype=np.int64)
    columns["new_user"] = np.asarray([r[5] for r in rows], dtype=np.int64)
    columns.update(demographic_columns(users.reindex(columns["user_id"]), demographics))
    return UserExamples(columns)


def demographic_columns(frame: pd.DataFrame, names) -> Dict[str, np.ndarray]:
    """Numeric demographics as float32 (NaN when missing), the others as strings ('' when missing)."""
    columns = {}
    for name in names:
        values = frame[name]
        if pd.api.types.is_numeric_dtype(values):
            columns[name] = values.astype("Float64").to_numpy(dtype=np.float32, na_value=np.nan)
        else:
            columns[name] = values.fillna("").astype(str).to_numpy(dtype=object)
    return columns


def _lookup(mapping: pd.Series, ids: np.ndarray) -> np.ndarray:
    flat = ids.reshape(-1)
    values = mapping.reindex(flat).fillna(PAD).to_numpy(dtype=object)
    values[flat == PAD] = PAD
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
