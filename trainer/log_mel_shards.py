"""Log-mels larger than memory: the audio branch trains and embeds in blocks of TFRecord shards.

The in-memory `LogMelStore` holds every track's log-mel (about 330 KB per
30 s), so 24 GB holds some 70k tracks. Past a configured budget
(`AudioBranchConfig.log_mel_memory_mb`) the trainer keeps only an index of the
shards (track ids, frames, which file) and reads the log-mels in blocks:

- Each pass over the data shuffles the shard files and groups them into blocks
  whose padded float16 log-mels fit the budget; one block at a time is loaded.
- Training samples the liked training pairs of the block's tracks with the
  in-memory path's own tf.data pipeline (`triplet_dataset`): random crops,
  negatives among the user's disliked tracks in the block, resampled every pass.
- Blocks are written into one reused buffer (`BlockBuffer`), so memory stays
  flat however many blocks a pass has.
- Track AEs (evaluation, early stopping, refinement, export) need no block: each
  track's segments are cropped from its own record as the records stream by
  (`LogMelShards.segments`), into one table indexed like the in-memory store.

Why blocks of whole shards, not random access or in-batch negatives: TFRecord
has no random access (and ArrayRecord is not on this stack), and in-batch
negatives would replace the paper's disliked-track negatives by random ones.
Blocks keep the objective; what changes is that a user's negatives come from
the dislikes that share a block with the liked track, so blocks should hold
many shards (write features with many small shards at scale). Users with no
disliked track in a block form no triplets in that block; each block's log
line says how many.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import Callable, Iterable, List, Optional, Union

import numpy as np
import pandas as pd
import tensorflow as tf

import musicrec
from musicrec import storage
from musicrec.audio import front_ends
from musicrec.audio.records import encode_example, parse_example, parse_index
from musicrec.trainer.audio_input import FLOOR_DB, LogMelCatalogue, LogMelStore

BYTES_PER_VALUE = 2  # float16

LogMels = Union[LogMelStore, "LogMelShards"]


@dataclasses.dataclass
class LogMelShards(LogMelCatalogue):
    """The index of log-mel shards: every track's id and frames (rows in sorted id order, as in
    `LogMelStore`), the file holding it, and the memory budget of one loaded block."""

    files: List[str] = None
    file_of_track: np.ndarray = None  # int32 [tracks]: index into files
    n_mels: int = 0
    budget_bytes: int = 0

    @classmethod
    def scan(cls, files: List[str], budget_bytes: int, front_end: str = "log_mel") -> "LogMelShards":
        """Reads every record's id and shape (not its log-mel) once: memory grows with the number
        of tracks, never with their audio."""
        ids, lengths, file_of, n_mels = [], [], [], 0
        for index, file in enumerate(files):
            for batch in tf.data.TFRecordDataset(file).batch(4096).map(parse_index):
                ids.extend(t.decode() for t in batch["track_id"].numpy())
                lengths.append(batch["num_frames"].numpy())
                file_of.append(np.full(len(batch["track_id"]), index, np.int32))
                n_mels = int(batch["n_mels"].numpy().max())
        if not ids:
            raise ValueError(f"no log-mel records in {len(files)} files")
        order = np.argsort(ids)
        return cls(np.asarray(ids, dtype=object)[order], np.concatenate(lengths).astype(np.int32)[order],
                   front_end=front_end, files=list(files), file_of_track=np.concatenate(file_of)[order], n_mels=n_mels,
                   budget_bytes=budget_bytes)

    def block_bytes(self, files: Iterable[int]) -> int:
        """Memory of the files' log-mels in the block buffer: each track padded to the index's
        longest, so every block fits the one buffer that `BlockBuffer` allocates."""
        tracks = self._file_sizes
        return int(tracks[list(files)].sum()) * self.row_bytes

    @property
    def longest(self) -> int:
        """The index's longest track's frames: every row of a loaded block is padded to it."""
        return int(self.lengths.max(initial=0))

    @property
    def row_bytes(self) -> int:
        """One track's row in a loaded block."""
        return self.longest * self.n_mels * BYTES_PER_VALUE

    @functools.cached_property
    def _file_sizes(self) -> np.ndarray:
        """Per file, its number of tracks."""
        return np.bincount(self.file_of_track, minlength=len(self.files))

    def blocks(self, rng: Optional[np.random.Generator] = None) -> List[List[int]]:
        """The files grouped into blocks that fit the budget, in shuffled order with `rng`."""
        order = rng.permutation(len(self.files)) if rng is not None else np.arange(len(self.files))
        blocks, current = [], []
        for file in order:
            if self.block_bytes([file]) > self.budget_bytes:
                raise ValueError(
                    f"the log-mel shard {self.files[file]} alone needs {self.block_bytes([file]) / 2**20:.0f} MB, "
                    f"more than the log-mel memory budget of {self.budget_bytes / 2**20:.0f} MB: raise "
                    "log_mel_memory_mb, or write the features in more, smaller shards")
            if current and self.block_bytes(current + [file]) > self.budget_bytes:
                blocks.append(current)
                current = []
            current.append(int(file))
        return blocks + [current]

    @functools.cached_property
    def training_buffer(self) -> "BlockBuffer":
        """The buffer the training input loads its blocks into, one block after another."""
        return BlockBuffer(self)

    def segments(self, track_rows, context_frames: int) -> tf.data.Dataset:
        """(index row, crop [context_frames, dim]) of each back-to-back context-length segment of
        the first 30 s of the tracks at `track_rows` (the front end says how segments meet, as
        `audio_input.track_segments`), read record by record in file order: a track's AE needs
        only its own log-mel, so no block is loaded for it."""
        rows = np.unique(np.asarray(track_rows, np.int64))
        if not len(rows):
            raise ValueError("no tracks to read segments of")
        row_of = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(self.track_ids[rows].astype(str), rows), default_value=-1)
        front = front_ends.front_end(self.front_end)
        stride = front.segment_stride(context_frames)

        def track_segments(record):
            frames = tf.shape(record["log_mel"])[0]
            # Padded as the in-memory store pads: a track shorter than the context is cropped
            # into its floor-level padding.
            log_mel = tf.pad(record["log_mel"], [[0, tf.maximum(context_frames - frames, 0)], [0, 0]],
                             constant_values=FLOOR_DB)
            offsets = tf.range(front.segment_counts(frames, context_frames)) * stride
            crops = tf.gather(log_mel, offsets[:, None] + tf.range(context_frames))
            return tf.fill(tf.shape(offsets), row_of.lookup(record["track_id"])), crops

        files = [self.files[i] for i in np.unique(self.file_of_track[rows])]
        return (tf.data.TFRecordDataset(files).map(parse_example)
                .filter(lambda record: row_of.lookup(record["track_id"]) >= 0)
                .map(track_segments).unbatch())


class BlockBuffer:
    """Where blocks of shards are loaded: one float16 tf.Variable [the most tracks a block holds,
    the longest track's frames, mels], allocated at the first block, each next block written over it.

    Why one reused variable, not a new array per block: a block loaded as a numpy array, then
    captured by tf.data as a constant, was held three times (the array, TensorFlow's copy,
    and the copy tf.data serialises into its graph), and blocks let go were not returned to
    the system: 5k tracks under a 1 GB budget peaked at 6 GB, and a new variable per block
    grew with the number of blocks. `Cropper` reads the variable through resource gathers,
    which copy only the frames they crop; records are written into their rows a batch at a time.
    """

    def __init__(self, shards: LogMelShards):
        self._shards = shards
        self._variable: Optional[tf.Variable] = None

    def load(self, block: List[int], records_at_once: int = 32) -> LogMelStore:
        """The block's tracks as a store over the buffer: its rows in sorted id order, as the
        index's; rows past the block's tracks hold an earlier block's and are never read."""
        shards = self._shards
        members = np.flatnonzero(np.isin(shards.file_of_track, block))  # index rows, so sorted by id
        longest = shards.longest
        if self._variable is None:
            with tf.init_scope():  # eager, even when first asked for inside a traced function
                capacity = min(max(shards.budget_bytes // shards.row_bytes, 1), len(shards.track_ids))
                self._variable = tf.Variable(tf.fill([capacity, longest, shards.n_mels], tf.constant(FLOOR_DB, tf.float16)),
                                             trainable=False, name="log_mel_block")
        position = {track: i for i, track in enumerate(shards.track_ids[members])}

        def padded(record):
            frames = tf.shape(record["log_mel"])[0]
            log_mel = tf.pad(tf.cast(record["log_mel"], tf.float16), [[0, longest - frames], [0, 0]],
                             constant_values=FLOOR_DB)
            return record["track_id"], log_mel

        records = tf.data.TFRecordDataset([shards.files[i] for i in block]).map(parse_example).map(padded)
        for track_ids, log_mels in records.batch(records_at_once):
            rows = [position[t.decode()] for t in track_ids.numpy()]
            self._variable.scatter_update(tf.IndexedSlices(log_mels, tf.constant(rows, tf.int64)))
        return LogMelStore(shards.track_ids[members], shards.lengths[members], front_end=shards.front_end,
                           log_mels=self._variable)


def write_shards(store: LogMelStore, folder, count: int) -> List[str]:
    """Writes the store's log-mels as `count` TFRecord shards (tracks dealt round-robin, as Beam
    spreads records), in the feature component's format: re-shards features into smaller files."""
    prefix = front_ends.front_end(store.front_end).shard_prefix
    files = [storage.join(folder, f"{prefix}-{i:05d}-of-{count:05d}.tfrecord") for i in range(count)]
    writers = [tf.io.TFRecordWriter(f) for f in files]
    for row, track in enumerate(store.track_ids):
        writers[row % count].write(encode_example(track, store.log_mels[row, : store.lengths[row]]))
    for writer in writers:
        writer.close()
    return files


def feature_files(features_dir, front_end_name: str = "log_mel") -> str:
    """The pattern of a feature folder's shards of one front end's frames."""
    return storage.join(features_dir, front_ends.front_end(front_end_name).shard_prefix + "-*")


def open_log_mels(file_patterns: Iterable[str], memory_mb: float, front_end: str = "log_mel") -> LogMels:
    """All log-mels (or the front end's frames) in memory when their shards fit `memory_mb` (the
    fast path), else the shards' index, read in blocks of at most `memory_mb`."""
    files = sorted(f for pattern in file_patterns for f in tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no log-mel TFRecords match {list(file_patterns)}")
    budget = int(memory_mb * 2**20)
    # A shard's size is its float16 payload plus a few bytes per record: the in-memory store
    # needs about that much (plus padding), so the sizes decide without reading the data.
    if sum(tf.io.gfile.stat(f).length for f in files) <= budget:
        return LogMelStore.from_tfrecords(files, front_end)
    shards = LogMelShards.scan(files, budget, front_end)
    logging.info("%s log-mels: %d tracks in %d shards exceed %.0f MB; reading them in %d blocks",
                 musicrec.LOG_TAG, len(shards.track_ids), len(files), memory_mb, len(shards.blocks()))
    return shards


def block_dataset(shards: LogMelShards, train: pd.DataFrame,
                  make_dataset: Callable[[pd.DataFrame, LogMelStore, int], tf.data.Dataset], seed: int) -> tf.data.Dataset:
    """The training batches of every block in turn, passes repeated forever, as one tf.data.Dataset.

    `make_dataset(block pairs, block store, draw seed)` is the in-memory path's pipeline over
    one block (one pass over its pairs; empty when the block forms no example), its random
    draws seeded by the draw seed, which differs from block to block and pass to pass. Batch
    `rows` come back as rows of the whole shard index. One block is held at a time."""
    blocks = _loaded_blocks(shards, train, make_dataset, np.random.default_rng(seed))
    pending = [next(blocks)]  # built first for its element spec, every block's
    element_spec = pending[0][0].element_spec

    def batches():
        produced = 0
        while True:
            dataset, to_shard_rows, ends_pass = pending.pop() if pending else next(blocks)
            for batch in dataset:
                if "rows" in batch:
                    batch["rows"] = tf.gather(to_shard_rows, batch["rows"])
                produced += 1
                yield batch
            del dataset  # let the block go before the next one loads
            if ends_pass and not produced:
                raise ValueError("no block of log-mels forms a training example (each user's liked and disliked "
                                 "tracks fall in different blocks): raise log_mel_memory_mb")
            produced = 0 if ends_pass else produced

    return tf.data.Dataset.from_generator(batches, output_signature=element_spec).prefetch(2)


def _loaded_blocks(shards: LogMelShards, train: pd.DataFrame, make_dataset, rng: np.random.Generator):
    """(block dataset, block row -> shard row, whether it is a pass's last block), pass after pass."""
    while True:
        blocks = shards.blocks(rng)
        for number, block in enumerate(blocks):
            started = time.monotonic()
            store = shards.training_buffer.load(block)
            pairs = train[train["track_id"].isin(set(store.track_ids))]
            logging.info("%s audio branch: block %d/%d, %d tracks and %d training pairs, loaded in %.1f s",
                         musicrec.LOG_TAG, number + 1, len(blocks), len(store.track_ids), len(pairs),
                         time.monotonic() - started)
            dataset = make_dataset(pairs, store, int(rng.integers(2**20)))
            to_shard_rows = tf.constant(shards.rows(store.track_ids), tf.int64)
            del store, pairs  # the dataset reads the buffer until the next block overwrites it
            yield dataset, to_shard_rows, number == len(blocks) - 1
            del dataset
