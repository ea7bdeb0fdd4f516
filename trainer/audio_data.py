"""What the audio branch trains and is evaluated on: the UE table and the pairs it can use.

`prepare_audio_branch` splits the liked/disliked pairs and embeds every user
with the user tower; `usable_pairs` keeps the pairs whose user has a vector
and whose track has enough log-mel for a crop, and logs what it leaves out.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Dict

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import pandas as pd
import tensorflow as tf

from musicrec.data.audio_pairs import SplitConfig, build_audio_pairs, user_queries
from musicrec.data.contract import FeedbackConfig
from musicrec.data.user_examples import UserExamples
from musicrec.names import EMBED_USER_SIGNATURE, GENRE, UNKNOWN
from musicrec.trainer.audio_input import LogMelCatalogue
from musicrec.trainer.user_export import read_embeddings


@dataclasses.dataclass
class UserVectors:
    """The user-branch UE table: user ids and their 40-d embeddings."""

    user_ids: np.ndarray
    vectors: np.ndarray

    def index(self) -> Dict[str, int]:
        return {u: i for i, u in enumerate(self.user_ids)}

    @classmethod
    def from_user_tower(cls, user_tower_dir, queries: UserExamples, batch_size: int = 512) -> "UserVectors":
        """Embeds `queries` (history_examples rows) with an exported user tower SavedModel."""
        embed = tf.saved_model.load(str(user_tower_dir)).signatures[EMBED_USER_SIGNATURE]
        inputs = {}
        for name, spec in embed.structured_input_signature[1].items():
            values = queries.columns[name]
            inputs[name] = values.astype(str) if spec.dtype == tf.string else values.astype(np.float32)
        vectors = [
            embed(**batch)["user_embedding"].numpy()
            for batch in tf.data.Dataset.from_tensor_slices(inputs).batch(batch_size)
        ]
        return cls(queries.columns["user_id"].astype(str), np.concatenate(vectors, axis=0))

    @classmethod
    def from_parquet(cls, path) -> "UserVectors":
        """Reads the user branch's `user_embeddings.parquet`."""
        table = read_embeddings(path, "user_id")
        return cls(table["user_id"].to_numpy(), np.stack(table["embedding"].to_numpy()))


def prepare_audio_branch(dataset, store: LogMelCatalogue, user_tower_dir, context_frames: int,
                         feedback: FeedbackConfig = FeedbackConfig(), split: SplitConfig = SplitConfig()):
    """Splits the liked/disliked pairs and embeds every user with the user tower from their
    liked tracks outside the validation and test pairs (`audio_pairs.user_queries`).
    The pairs carry each track's genre, as the ingestion's pair examples do.
    Returns (AudioPairs, UserVectors)."""
    pairs = build_audio_pairs(dataset.interactions, dataset.users["user_id"], store.usable(context_frames), feedback, split)
    genres = dataset.tracks.set_index("track_id")[GENRE] if GENRE in dataset.tracks else pd.Series(dtype=object)
    pairs.pairs[GENRE] = pairs.pairs["track_id"].map(genres).fillna(UNKNOWN).replace("", UNKNOWN)
    return pairs, UserVectors.from_user_tower(user_tower_dir, user_queries(dataset, pairs, feedback))


def track_classes(train: pd.DataFrame, store: LogMelCatalogue) -> np.ndarray:
    """Each stored track's genre index among the training pairs' genres; -1 for a track outside
    the training pairs or of unknown genre (the genre head never sees it)."""
    classes = np.full(len(store.track_ids), -1, np.int32)
    if GENRE not in train:
        return classes
    genre_of = train[train[GENRE] != UNKNOWN].drop_duplicates("track_id").set_index("track_id")[GENRE]
    codes = {genre: i for i, genre in enumerate(sorted(genre_of.unique()))}
    classes[store.rows(genre_of.index)] = genre_of.map(codes).to_numpy()
    return classes


def usable_pairs(pairs: pd.DataFrame, users: UserVectors, store: LogMelCatalogue, context_frames: int) -> pd.DataFrame:
    """Pairs whose user has a vector and whose track has a full crop of audio; drops are logged with counts."""
    known_user = pairs["user_id"].isin(set(users.user_ids))
    long_enough = pairs["track_id"].isin(set(store.usable(context_frames)))
    for count, reason in (((~known_user).sum(), "users without a user embedding"),
                          ((known_user & ~long_enough).sum(), f"tracks without {context_frames} frames of log-mel")):
        if count:
            logging.warning("%s audio branch: left out %d pairs: %s", musicrec.LOG_TAG, count, reason)
    return pairs[known_user & long_enough].reset_index(drop=True)
