"""What the listening-data ingestion component writes, as plain functions.

From a loaded dataset (any adapter's output: `musicrec.data.loading.Dataset`)
and the set of tracks with usable audio, it builds three example sets, each
written as a TFX Examples artifact (`Split-<name>/` folders of GZIP
tf.Example TFRecords):

  interactions  one example per event, joined with the user's demographics and
                the track's album/artist/genre; split as the user branch is:
                `eval` holds each user's events from their hold-out on (all of
                a new user's), `train` the rest. TFDV checks
                these (StatisticsGen, SchemaGen, ExampleValidator) and Transform
                learns the id vocabularies and demographic statistics from them.
  user_examples the user branch's (history, demographics) -> next liked track
                examples (`musicrec.data.user_examples`): `train`, and `eval`
                with the held-out targets of seen and of new users.
  audio_pairs   liked/disliked (user, track) pairs of the audio branch
                (`musicrec.data.audio_pairs`) with TFMA's slice features
                (gender, age_bucket, country, popularity_bucket, genre): splits
                `train`, `eval` (validation), `test`; plus `user_queries`, one
                row per user with their liked tracks *outside* the eval and test
                pairs, from which the audio Trainer computes the UEs it trains
                and is evaluated against (so no UE contains a track it is
                evaluated on).

Every exclusion is counted (`IngestedData.counts`); the component records the
counts in MLMD custom properties and in `ingestion_report.json`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Dict, Iterable, Mapping

import numpy as np
import pandas as pd

from musicrec.data import tf_examples
from musicrec.data.audio_pairs import AudioPairs, SplitConfig, build_audio_pairs, user_queries
from musicrec.data.contract import FeedbackConfig, count_by_kind
from musicrec.data.loading import Dataset
from musicrec.data.user_examples import ExampleConfig, build_user_examples, demographic_columns

Columns = Dict[str, np.ndarray]
EXAMPLES_FILE = "data_tfrecord-00000-of-00001.gz"
REPORT_FILE = "ingestion_report.json"
AGE_BUCKETS = ((0, "<18"), (18, "18-24"), (25, "25-34"), (35, "35-44"), (45, "45-54"), (55, "55-64"), (65, "65+"))
UNKNOWN = "unknown"
# Popularity buckets by the track's rank in liked training pairs: the top 20%
# of tracks are the head, the next 30% the torso, the rest the tail.
POPULARITY_BUCKETS = ((0.2, "head"), (0.5, "torso"), (1.0, "tail"))


@dataclasses.dataclass(frozen=True)
class IngestionConfig:
    feedback: FeedbackConfig = FeedbackConfig()
    examples: ExampleConfig = ExampleConfig()
    split: SplitConfig = SplitConfig()

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "IngestionConfig":
        raw = json.loads(text)
        return cls(
            feedback=FeedbackConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw["feedback"].items()}),
            examples=ExampleConfig(**raw["examples"]),
            split=SplitConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw["split"].items()}),
        )


@dataclasses.dataclass
class IngestedData:
    interactions: Dict[str, Columns]
    user_examples: Dict[str, Columns]
    audio_pairs: Dict[str, Columns]
    counts: Dict[str, int]


def ingest(dataset: Dataset, usable_tracks: Iterable[str], config: IngestionConfig = IngestionConfig()) -> IngestedData:
    counts = _dataset_counts(dataset)
    user_data = build_user_examples(dataset, config.feedback, config.examples)
    counts.update({f"user_branch_excluded_users.{_key(k)}": v for k, v in user_data.excluded_users.items()})
    pairs = build_audio_pairs(dataset.interactions, dataset.users["user_id"], usable_tracks, config.feedback, config.split)
    counts.update({f"audio_pairs_excluded.{_key(k)}": v for k, v in pairs.excluded.items()})
    evaluation = _concat(user_data.test.columns, user_data.new_users.columns)
    user_examples = {"train": user_data.train.columns, "eval": evaluation}
    users, tracks = _user_context(dataset), _track_context(dataset)
    audio_pairs = _audio_pair_splits(dataset, users, tracks, pairs, config)
    interactions = _interaction_splits(dataset, users, tracks, user_data.holdout_start)
    for name, splits in (("interactions", interactions), ("user_examples", user_examples), ("audio_pairs", audio_pairs)):
        for split, columns in splits.items():
            counts[f"{name}.{split}"] = len(next(iter(columns.values()))) if columns else 0
    return IngestedData(interactions, user_examples, audio_pairs, counts)


def write_examples(uri, splits: Mapping[str, Columns]) -> None:
    """Writes each split to `<uri>/Split-<name>/`, the layout of TFX Examples artifacts."""
    for split, columns in splits.items():
        folder = pathlib.Path(uri) / f"Split-{split}"
        folder.mkdir(parents=True, exist_ok=True)
        tf_examples.write_tf_examples(columns, folder / EXAMPLES_FILE)


def _key(reason: str) -> str:
    """An MLMD-friendly property name for a human-readable reason."""
    return "_".join("".join(c if c.isalnum() else " " for c in reason.lower()).split())


def _dataset_counts(dataset: Dataset) -> Dict[str, int]:
    """Sizes of the loaded tables and every loader report by fault kind (the contract's names,
    the same that `musicrec validate-data` counts), so a run's record agrees with the validation."""
    return {
        "users": len(dataset.users),
        "tracks": len(dataset.tracks),
        "interactions": len(dataset.interactions),
        "malformed_rows": len(dataset.malformed),
        **{f"malformed_rows.{kind}": n for kind, n in count_by_kind(r.kind for r in dataset.malformed).items()},
        **{f"changed_values.{kind}": n for kind, n in count_by_kind(r.kind for r in dataset.changed_values).items()},
        "unknown_user_rows": int(dataset.unknown_user_rows),
        "unknown_track_rows": int(dataset.unknown_track_rows),
    }


def _concat(*parts: Columns) -> Columns:
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _user_context(dataset: Dataset) -> pd.DataFrame:
    """Per user: every demographic column as given, plus age_bucket."""
    users = dataset.users.set_index("user_id").copy()
    if "age" in users and pd.api.types.is_numeric_dtype(users["age"]):
        bounds = [b for b, _ in AGE_BUCKETS] + [np.inf]
        users["age_bucket"] = pd.cut(users["age"], bounds, right=False, labels=[n for _, n in AGE_BUCKETS]).astype(object)
    else:
        users["age_bucket"] = UNKNOWN
    users["age_bucket"] = users["age_bucket"].fillna(UNKNOWN)
    return users


def _track_context(dataset: Dataset) -> pd.DataFrame:
    tracks = dataset.tracks.set_index("track_id")[["album_id", "artist_id"]].copy()
    genre = dataset.tracks.set_index("track_id").get("genre")
    tracks["genre"] = genre.replace("", UNKNOWN).fillna(UNKNOWN) if genre is not None else UNKNOWN
    return tracks


def _interaction_splits(dataset: Dataset, users: pd.DataFrame, tracks: pd.DataFrame,
                        holdout_start: Dict[str, int]) -> Dict[str, Columns]:
    """`eval`: each user's events from their hold-out on, so Transform, which analyses `train`,
    learns its vocabularies from what the user branch trains on and nothing it is tested on."""
    log = dataset.interactions.sort_values(["timestamp", "user_id", "track_id"], kind="stable").reset_index(drop=True)
    joined = log.join(tracks, on="track_id").join(users[dataset.demographic_columns], on="user_id")
    columns = {
        **{name: joined[name].astype(str).to_numpy(dtype=object) for name in ("user_id", "track_id", "album_id", "artist_id", "genre", "event")},
        "timestamp": joined["timestamp"].to_numpy(dtype=np.int64),
        **demographic_columns(joined, dataset.demographic_columns),
    }
    start = log["user_id"].map(holdout_start).fillna(np.inf).to_numpy()
    is_eval = log["timestamp"].to_numpy() >= start
    return {"train": {k: v[~is_eval] for k, v in columns.items()}, "eval": {k: v[is_eval] for k, v in columns.items()}}


def _popularity_buckets(train_pairs: pd.DataFrame, track_ids: pd.Index) -> pd.Series:
    likes = train_pairs[train_pairs["label"] == 1]["track_id"].value_counts().reindex(track_ids, fill_value=0)
    rank = likes.rank(ascending=False, method="first") / max(len(likes), 1)
    bucket = pd.Series(POPULARITY_BUCKETS[-1][1], index=likes.index, dtype=object)
    for share, name in reversed(POPULARITY_BUCKETS):
        bucket[rank <= share] = name
    return bucket


def _audio_pair_splits(dataset: Dataset, users: pd.DataFrame, tracks: pd.DataFrame, pairs: AudioPairs,
                       config: IngestionConfig) -> Dict[str, Columns]:
    tracks = tracks.assign(popularity_bucket=_popularity_buckets(pairs.split("train"), tracks.index))
    frame = pairs.pairs.join(tracks[["genre", "popularity_bucket"]], on="track_id")
    slices = [c for c in ("gender", "age_bucket", "country") if c in users]
    frame = frame.join(users[slices], on="user_id")
    for name in slices:
        frame[name] = frame[name].fillna(UNKNOWN).astype(str).replace("", UNKNOWN)
    keep = ["user_id", "track_id", "label", *slices, "popularity_bucket", "genre"]
    names = {"train": "train", "validation": "eval", "test": "test"}
    splits = {names[s]: tf_examples.columns_from_frame(frame.loc[frame["split"] == s, keep]) for s in names}
    splits["user_queries"] = user_queries(dataset, pairs, config.feedback, config.examples.history_length).columns
    return splits
