"""Input pipeline of the audio branch: precomputed log-mels in memory, random crops streamed by tf.data.

Log-mels are computed once per track by the feature component and loaded here
into one float16 tensor; every epoch draws new random crops of the context
duration from each track's first 30 s and new disliked tracks for each liked
one, all inside the tf.data graph, so nothing is recomputed per epoch and the
input pipeline keeps up with the model. Optionally (`Augmentation`) every crop
gets a random gain and EQ tilt, also inside the graph.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import tensorflow as tf

from musicrec.audio import front_ends
from musicrec.audio.logmel import DEFAULT
from musicrec.audio.records import parse_example

FLOOR_DB = 10 * math.log10(DEFAULT.amin)  # -100 dB: digital silence, and the padding past a track's end


@dataclasses.dataclass
class LogMelCatalogue:
    """Which tracks have log-mels, and how many frames each: row i is the i-th track id in sorted
    order. In-memory (`LogMelStore`) and sharded (`log_mel_shards.LogMelShards`) log-mels both
    index their tracks this way, so pairs, classes and AE tables use the same rows either way."""

    track_ids: np.ndarray
    lengths: np.ndarray  # int32 [tracks]: frames actually present
    # Whose frames these are (`musicrec.audio.front_ends`): log-mel frames, or musicnn patch features.
    front_end: str = "log_mel"

    def rows(self, track_ids) -> np.ndarray:
        index = pd.Index(self.track_ids)
        rows = index.get_indexer(np.asarray(track_ids, dtype=object))
        if (rows < 0).any():
            missing = np.asarray(track_ids, dtype=object)[rows < 0][:3]
            raise KeyError(f"no log-mel features for tracks {list(missing)}")
        return rows

    def usable(self, context_frames: int) -> np.ndarray:
        """Track ids long enough for one crop of the context duration."""
        return self.track_ids[self.lengths >= context_frames]


@dataclasses.dataclass
class LogMelStore(LogMelCatalogue):
    """Every track's log-mel, padded to the longest, as one [tracks, frames, mels] float16 array."""

    # float16 [tracks, max_frames, n_mels]; or a loaded block's `tf.Variable` (trainer/log_mel_shards.py:
    # BlockBuffer), whose rows past this store's tracks belong to no track and are never read.
    log_mels: Union[np.ndarray, tf.Variable] = None

    @classmethod
    def from_arrays(cls, track_ids: Sequence[str], arrays: Sequence[np.ndarray], front_end: str = "log_mel") -> "LogMelStore":
        if not len(arrays):
            raise ValueError("no log-mel features to load")
        frames = max(a.shape[0] for a in arrays)
        stacked = np.full((len(arrays), frames, arrays[0].shape[1]), np.float16(FLOOR_DB), dtype=np.float16)
        for i, array in enumerate(arrays):
            stacked[i, : array.shape[0]] = array
        return cls(np.asarray(track_ids, dtype=object), np.asarray([a.shape[0] for a in arrays], np.int32),
                   front_end=front_end, log_mels=stacked)

    @classmethod
    def from_tfrecords(cls, file_patterns: Iterable[str], front_end: str = "log_mel") -> "LogMelStore":
        files = [f for pattern in file_patterns for f in tf.io.gfile.glob(pattern)]
        if not files:
            raise FileNotFoundError(f"no log-mel TFRecords match {list(file_patterns)}")
        ids, arrays = [], []
        for record in tf.data.TFRecordDataset(files).map(parse_example):
            ids.append(record["track_id"].numpy().decode())
            arrays.append(record["log_mel"].numpy().astype(np.float16))
        order = np.argsort(ids)
        return cls.from_arrays([ids[i] for i in order], [arrays[i] for i in order], front_end)


class Cropper:
    """Random crops of `context_frames` from stored log-mels, in TensorFlow ops."""

    def __init__(self, store: LogMelStore, context_frames: int):
        self.context_frames = context_frames
        # A variable is read by resource gathers (no copy of it); an array becomes a constant.
        self._log_mels = store.log_mels if isinstance(store.log_mels, tf.Variable) else tf.constant(store.log_mels)
        self._lengths = tf.constant(store.lengths)

    def random(self, rows: tf.Tensor, seed: Optional[int] = None) -> tf.Tensor:
        """rows: int [...] -> float32 [..., context_frames, mels], each crop inside the track's frames.
        `seed`: the op seed of the offsets' draw (see `OpSeeds`)."""
        rows = tf.cast(rows, tf.int32)
        room = tf.maximum(tf.gather(self._lengths, rows) - self.context_frames + 1, 1)
        offsets = tf.cast(tf.floor(tf.random.uniform(tf.shape(rows), seed=seed) * tf.cast(room, tf.float32)), tf.int32)
        return self.at(rows, offsets)

    def at(self, rows: tf.Tensor, offsets: tf.Tensor) -> tf.Tensor:
        rows, offsets = tf.cast(rows, tf.int32), tf.cast(offsets, tf.int32)
        frames = offsets[..., None] + tf.range(self.context_frames)
        rows = tf.broadcast_to(rows[..., None], tf.shape(frames))
        return tf.cast(tf.gather_nd(self._log_mels, tf.stack([rows, frames], axis=-1)), tf.float32)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Random level and spectral tilt per crop, in dB on its log-mel: what a different master,
    mix or playback chain changes. Each crop draws a gain in +/-`gain_db` and a tilt in
    +/-`tilt_db` (the change from the lowest to the highest mel bin, linear over the bins).
    Silence stays silence: floor values are kept, others do not fall below the floor."""

    gain_db: float
    tilt_db: float

    def __call__(self, crops: tf.Tensor, seeds: Optional["OpSeeds"] = None) -> tf.Tensor:
        """crops: float32 [..., frames, mels] -> same shape."""
        seeds = seeds or OpSeeds(None)
        crop_shape = tf.shape(crops)[:-2]
        gain = tf.random.uniform(crop_shape, -self.gain_db, self.gain_db, seed=seeds.next())[..., None, None]
        tilt = tf.random.uniform(crop_shape, -self.tilt_db, self.tilt_db, seed=seeds.next())[..., None, None]
        ramp = tf.linspace(-0.5, 0.5, tf.shape(crops)[-1])  # lowest mel bin to highest
        shifted = tf.maximum(crops + gain + tilt * ramp, FLOOR_DB)
        return tf.where(crops > FLOOR_DB, shifted, crops)


class OpSeeds:
    """Distinct op seeds for the random ops of one input pipeline, from one pipeline seed.

    Under a global seed (keras.utils.set_random_seed), a newly built dataset restarts its
    random ops' streams: two pipelines built alike draw the same crops and negatives. The
    block-streaming input builds one pipeline per block, so each gets its own seed, and each
    op its own seed from it (two ops with one seed would draw alike). None: TensorFlow's own
    op seeds, as the in-memory pipeline has always drawn."""

    def __init__(self, seed: Optional[int]):
        self._seed, self._count = seed, 0

    def next(self) -> Optional[int]:
        self._count += 1
        return None if self._seed is None else self._seed * 64 + self._count


@dataclasses.dataclass
class TrainingExamples:
    """Index form of the training pairs: what the tf.data pipeline samples from."""

    user_rows: np.ndarray  # [liked pairs] user index into the user-vector table
    liked_rows: np.ndarray  # [liked pairs] store row of the liked track
    disliked_rows: tf.RaggedTensor  # [users, None] store rows of each user's disliked train tracks
    binary_rows: np.ndarray  # [all pairs] store row (Basic-Binary: one track per example)
    binary_users: np.ndarray
    binary_labels: np.ndarray
    skipped_users: int  # users with liked but no disliked training tracks (cannot form triplets)
    liked_keys: np.ndarray  # int64: user index * track_count + store row of every liked training pair
    track_count: int

    def liked_lookup(self) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
        """(users [B], store rows [C]) -> bool [B, C]: the user liked that track in training (a hash
        table lookup inside the tf.data graph)."""
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(self.liked_keys, np.ones_like(self.liked_keys)), default_value=0)

        def liked_by(users, rows):
            keys = tf.cast(users, tf.int64)[:, None] * self.track_count + tf.cast(rows, tf.int64)[None, :]
            return table.lookup(keys) > 0

        return liked_by


def training_examples(pairs: pd.DataFrame, user_index: Dict[str, int], store: LogMelCatalogue) -> TrainingExamples:
    rows = store.rows(pairs["track_id"])
    users = pairs["user_id"].map(user_index).to_numpy()
    labels = pairs["label"].to_numpy()
    liked, disliked = labels == 1, labels == 0
    # Each user's disliked rows in pair order (a stable sort by user), as one ragged tensor.
    order = np.argsort(users[disliked], kind="stable")
    disliked_rows = tf.RaggedTensor.from_value_rowids(rows[disliked][order].astype(np.int32),
                                                      users[disliked][order].astype(np.int64), nrows=len(user_index))
    has_negative = np.bincount(users[disliked], minlength=len(user_index))[users] > 0
    keep = liked & has_negative
    return TrainingExamples(
        user_rows=users[keep].astype(np.int32),
        liked_rows=rows[keep].astype(np.int32),
        disliked_rows=disliked_rows,
        binary_rows=rows.astype(np.int32),
        binary_users=users.astype(np.int32),
        binary_labels=labels.astype(np.float32),
        skipped_users=int(len(np.unique(users[liked & ~has_negative]))),
        liked_keys=np.unique(users[liked].astype(np.int64) * len(store.track_ids) + rows[liked]),
        track_count=len(store.track_ids),
    )


def triplet_dataset(examples: TrainingExamples, cropper: Cropper, negatives: int, batch_size: int, seed: int,
                    augment: Optional[Augmentation] = None, liked_mask: bool = False,
                    draw_seed: Optional[int] = None) -> tf.data.Dataset:
    """(user, liked crop, `negatives` disliked crops of the same user), reshuffled and resampled every epoch.

    Sampling and cropping run once per batch, vectorised, rather than once per
    example: on a small machine every input cycle is taken from the training step.
    `liked_mask` adds `liked_by` [B, B * (1 + negatives)]: whether each
    example's user liked each track of the batch in training (tracks in
    example order: liked, then disliked), for losses that use other examples' tracks.
    """
    disliked = examples.disliked_rows
    liked_by = examples.liked_lookup() if liked_mask else None
    augment = augment or (lambda crops, seeds=None: crops)

    def sample_and_crop(users, liked):
        seeds = OpSeeds(draw_seed)
        options = tf.gather(disliked, users)  # ragged [batch, None]
        counts = tf.cast(options.row_lengths(), tf.float32)
        draws = tf.random.uniform([tf.shape(users)[0], negatives], seed=seeds.next())
        picks = tf.cast(tf.floor(draws * counts[:, None]), tf.int64)
        negative_rows = tf.gather(options.values, options.row_starts()[:, None] + picks)
        rows = tf.concat([tf.cast(liked, tf.int64)[:, None], tf.cast(negative_rows, tf.int64)], axis=1)
        batch = {"user": users, "liked": augment(cropper.random(liked, seeds.next()), seeds),
                 "disliked": augment(cropper.random(negative_rows, seeds.next()), seeds),
                 "rows": rows}  # the stored tracks of the crops: liked, then disliked
        if liked_by is not None:
            batch["liked_by"] = liked_by(users, tf.reshape(rows, [-1]))
        return batch

    return (
        tf.data.Dataset.from_tensor_slices((examples.user_rows, examples.liked_rows))
        .shuffle(max(len(examples.user_rows), 1), seed=seed, reshuffle_each_iteration=True)  # none: no batch
        .batch(batch_size)
        .map(sample_and_crop, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def binary_dataset(examples: TrainingExamples, cropper: Cropper, batch_size: int, seed: int,
                   augment: Optional[Augmentation] = None, draw_seed: Optional[int] = None) -> tf.data.Dataset:
    """(user, one crop, liked label) over every training pair (Basic-Binary)."""
    augment = augment or (lambda crops, seeds=None: crops)

    def crop(user, row, label):
        seeds = OpSeeds(draw_seed)
        return {"user": user, "track": augment(cropper.random(row, seeds.next()), seeds), "label": label}

    return (
        tf.data.Dataset.from_tensor_slices((examples.binary_users, examples.binary_rows, examples.binary_labels))
        .shuffle(max(len(examples.binary_rows), 1), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .map(crop, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def track_segments(store: LogMelStore, context_frames: int) -> Tuple[np.ndarray, np.ndarray]:
    """(track row, offset) of every back-to-back segment of every track's first 30 s (the store's
    front end says how segments meet)."""
    segments = front_ends.front_end(store.front_end)
    rows, offsets = [], []
    for row, length in enumerate(store.lengths):
        starts = segments.segment_offsets(int(length), context_frames)
        rows.append(np.full(len(starts), row, np.int32))
        offsets.append(starts)
    return np.concatenate(rows), np.concatenate(offsets)
