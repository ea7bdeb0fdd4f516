"""Beam transforms of the release job: embed new tracks, pick each track's users, build inboxes.

  log-mel records ─ RankUsers ─┬─ track_embeddings/  track_id, audio_embedding
   (AudioFeatures)             ├─ track_users/       track_id, rank, user_id, score
                               └─ Inboxes ─ user_inbox/  user_id, rank, track_id, artist_id, score

`RankUsers` scores with the pushed `cold_start_recommender` itself: the track
AE is the serving graph's mean over back-to-back segments
(`graphs.TrackEmbedding.from_log_mel`, on the log-mels AudioFeatures wrote with
the training front end), and the users come from its
`recommend_users_for_embedding` signature (exact top-k over the served UE
table), or from a ScaNN index over the same table when one is configured. So a
batch list and a TF Serving request rank the same users.

A user's inbox is made of the new tracks that picked the user (the user is in
the track's top `top_users`), best score first, at most `artist_cap` tracks of
one artist, at most `inbox_size` tracks. Users no track picked get no inbox
(the report counts them). The baselines of the offline check
(`pipeline/release_check.py`) go through the same `Inboxes` transform.

Every output is a Parquet folder (one file per Beam shard); read it with
`pandas.read_parquet(folder)`.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import time
from typing import Dict, Iterable, List, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa

import musicrec
from musicrec import storage
from musicrec.audio import front_ends
from musicrec.names import EMBED_LOG_MEL_SIGNATURE, MODEL_INFO_FILE

METRICS_NAMESPACE = "musicrec.release"
TRACKS_RANKED, USERS_REACHED = "tracks_ranked", "users_reached"  # Beam counters
TRACK_EMBEDDINGS = "track_embeddings"
TRACK_USERS = "track_users"
USER_INBOX = "user_inbox"
TRACK_USERS_SCHEMA = pa.schema([("track_id", pa.string()), ("rank", pa.int32()), ("user_id", pa.string()),
                                ("score", pa.float32())])
INBOX_SCHEMA = pa.schema([("user_id", pa.string()), ("rank", pa.int32()), ("track_id", pa.string()),
                          ("artist_id", pa.string()), ("score", pa.float32())])
EMBEDDINGS_SCHEMA = pa.schema([("track_id", pa.string()), ("audio_embedding", pa.list_(pa.float32()))])
# Tracks embedded and ranked per model call: the encoder sees batch * 10 segments of 3 s.
BATCH_TRACKS = 32


@dataclasses.dataclass(frozen=True)
class ListsConfig:
    top_users: int = 1000  # users picked per new track
    inbox_size: int = 20  # the most new tracks in one user's inbox
    artist_cap: int = 2  # the most tracks of one artist in one inbox

    def __post_init__(self):
        for name in ("top_users", "inbox_size", "artist_cap"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)}")


class PushedRecommender:
    """One pushed `cold_start_recommender` version, loaded for batch use: its encoder and user table."""

    def __init__(self, version_dir, scann_index: str = ""):
        import tensorflow as tf

        from musicrec.serving import graphs

        self.version_dir = storage.path(version_dir)
        info_file = self.version_dir / MODEL_INFO_FILE
        if not info_file.exists():
            raise ValueError(f"{self.version_dir} has no {MODEL_INFO_FILE}: it was pushed by an older musicrec; "
                             "push the model again (musicrec run, or export-serving)")
        info = json.loads(info_file.read_text())
        self.front_end = info.get("front_end", "log_mel")  # pushed before front ends had names: log-mel
        model = tf.saved_model.load(str(self.version_dir))
        self.track = graphs.TrackEmbedding(model.encoder.signatures[EMBED_LOG_MEL_SIGNATURE], info["context_frames"],
                                           front_ends.front_end(self.front_end))
        self._recommend = model.signatures[graphs.RECOMMEND_EMBEDDING]
        self.max_k, self.num_users = int(info["max_k"]), int(info["users"])
        self.user_ids = model.index.user_ids.numpy().astype(str)
        self.scann = None
        if scann_index:
            from musicrec.serving.scann_index import ScannUserIndex

            self.scann = ScannUserIndex.load(scann_index)
            if not np.array_equal(np.sort(self.scann.user_ids), np.sort(self.user_ids)):
                raise ValueError(f"the ScaNN index {scann_index} holds another user table than {self.version_dir} "
                                 "(build it from this version: musicrec build-scann-index)")

    @property
    def ranking(self) -> str:
        return "scann" if self.scann else "exact"

    def check(self, config: ListsConfig) -> None:
        if not self.scann and config.top_users > self.max_k:
            raise ValueError(f"top_users {config.top_users} is more than the pushed recommender returns per request "
                             f"(max_k {self.max_k}); ask for fewer, or export with a larger --max-k")

    def embed(self, log_mels: Sequence[np.ndarray]) -> np.ndarray:
        """[frames_i, dim] stored frames of the model's front end (log-mels, or musicnn's patch
        features) -> [n, d] track AEs, as the serving graph computes them."""
        import tensorflow as tf

        frames = np.array([len(m) for m in log_mels], np.int32)
        padded = np.zeros((len(log_mels), frames.max(), log_mels[0].shape[1]), np.float32)
        for row, log_mel in enumerate(log_mels):
            padded[row, : len(log_mel)] = log_mel
        counts = self.track.segment_counts_of_frames(tf.constant(frames))
        return self.track.from_log_mel(tf.constant(padded), counts).numpy()

    def top_users(self, embeddings: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """[n, d] AEs -> (user ids, cosines) [n, min(k, users)], best first."""
        import tensorflow as tf

        if self.scann:
            rows, scores = self.scann.search(embeddings, k)
            return self.scann.user_ids[rows], scores
        found = self._recommend(audio_embedding=tf.constant(embeddings, tf.float32),
                                k=tf.fill([len(embeddings)], int(k)))
        width = int(found["count"].numpy().max())
        return found["user_ids"].numpy()[:, :width].astype(str), found["scores"].numpy()[:, :width]


class _RankUsersFn(beam.DoFn):
    """Batches of log-mel records -> one dict per track: track_id, audio_embedding, user_ids, scores."""

    def __init__(self, version_dir: str, scann_index: str, top_users: int, progress_every_s: float = 10.0):
        self._version_dir = version_dir
        self._scann_index = scann_index
        self._top_users = top_users
        self._progress_every_s = progress_every_s
        self._ranked = beam.metrics.Metrics.counter(METRICS_NAMESPACE, TRACKS_RANKED)

    def setup(self):
        self._model = PushedRecommender(self._version_dir, self._scann_index)
        self._done = 0
        self._started = self._last_report = time.monotonic()

    def process(self, records: List[bytes]):
        from musicrec.audio.records import decode_example

        decoded = [decode_example(record) for record in records]
        embeddings = self._model.embed([log_mel.astype(np.float32) for _, log_mel in decoded])
        user_ids, scores = self._model.top_users(embeddings, self._top_users)
        for (track_id, _), embedding, users, track_scores in zip(decoded, embeddings, user_ids, scores):
            yield {"track_id": track_id, "audio_embedding": embedding.tolist(), "user_ids": users.tolist(),
                   "scores": track_scores.tolist()}
        self._ranked.inc(len(decoded))
        self._report_progress(len(decoded))

    def _report_progress(self, tracks: int):
        self._done += tracks
        now = time.monotonic()
        if now - self._last_report >= self._progress_every_s:
            self._last_report = now
            elapsed = now - self._started
            logging.info("%s release: %d tracks ranked by this worker (%.1f tracks/s, %.0f users scored/s)",
                         musicrec.LOG_TAG, self._done, self._done / elapsed, self._done * self._model.num_users / elapsed)


class RankUsers(beam.PTransform):
    """Serialized log-mel records -> ranked tracks (dicts: track_id, audio_embedding, user_ids, scores)."""

    def __init__(self, version_dir: str, top_users: int, scann_index: str = ""):
        super().__init__()
        self._fn = _RankUsersFn(str(version_dir), scann_index, top_users)

    def expand(self, records):
        return (records
                | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=BATCH_TRACKS)
                | "EmbedAndRank" >> beam.ParDo(self._fn))


def pick_inbox(candidates: Iterable[Tuple[float, str, str]], config: ListsConfig) -> List[Tuple[str, str, float]]:
    """(score, track_id, artist_id) candidates of one user -> the inbox [(track_id, artist_id, score)]:
    best score first (ties by track id), at most `artist_cap` tracks per artist, `inbox_size` in all."""
    inbox, per_artist = [], collections.Counter()
    for score, track_id, artist_id in sorted(candidates, key=lambda c: (-c[0], c[1])):
        if per_artist[artist_id] < config.artist_cap:
            per_artist[artist_id] += 1
            inbox.append((track_id, artist_id, score))
            if len(inbox) == config.inbox_size:
                break
    return inbox


class Inboxes(beam.PTransform):
    """Ranked tracks (dicts with track_id, user_ids, scores) -> inbox rows (user_id, rank, track_id,
    artist_id, score); `artists`: track_id -> artist_id of the new tracks."""

    def __init__(self, artists: Dict[str, str], config: ListsConfig):
        super().__init__()
        self._artists = artists
        self._config = config

    def expand(self, ranked):
        artists, config = self._artists, self._config
        return (ranked
                | "ByUser" >> beam.FlatMap(lambda track: [
                    (user, (float(score), track["track_id"], artists[track["track_id"]]))
                    for user, score in zip(track["user_ids"], track["scores"])])
                | "GroupByUser" >> beam.GroupByKey()
                | "PickInbox" >> beam.FlatMap(_inbox_rows, config))


def _inbox_rows(user_candidates, config: ListsConfig) -> List[dict]:
    user, candidates = user_candidates
    inbox = pick_inbox(candidates, config)
    if inbox:
        beam.metrics.Metrics.counter(METRICS_NAMESPACE, USERS_REACHED).inc()
    return [{"user_id": user, "rank": rank, "track_id": track, "artist_id": artist, "score": score}
            for rank, (track, artist, score) in enumerate(inbox, 1)]


def counted(result, name: str) -> int:
    """A counter of a finished release pipeline (`TRACKS_RANKED`, `USERS_REACHED`), from the runner's
    metrics: the job's totals without reading its outputs back into one process."""
    found = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name(name))
    return int(sum(c.committed for c in found["counters"]))


def track_user_rows(track: dict) -> List[dict]:
    return [{"track_id": track["track_id"], "rank": rank, "user_id": user, "score": float(score)}
            for rank, (user, score) in enumerate(zip(track["user_ids"], track["scores"]), 1)]


def write_lists(ranked, artists: Dict[str, str], config: ListsConfig, output_dir, embeddings: bool = True) -> None:
    """Adds the Parquet outputs of ranked tracks under `output_dir`: track_users/, user_inbox/ and
    (with `embeddings`) track_embeddings/."""
    output_dir = storage.path(output_dir)

    def write(rows, name: str, schema: pa.Schema):
        return rows | f"Write_{name}" >> beam.io.WriteToParquet(
            str(output_dir / name / "part"), schema, file_name_suffix=".parquet")

    if embeddings:
        write(ranked | "EmbeddingRows" >> beam.Map(
            lambda track: {"track_id": track["track_id"], "audio_embedding": track["audio_embedding"]}),
            TRACK_EMBEDDINGS, EMBEDDINGS_SCHEMA)
    write(ranked | "TrackUserRows" >> beam.FlatMap(track_user_rows), TRACK_USERS, TRACK_USERS_SCHEMA)
    write(ranked | "Inboxes" >> Inboxes(artists, config), USER_INBOX, INBOX_SCHEMA)


def read_output(output_dir, name: str):
    """One Parquet output of the release job as a pandas DataFrame (empty, with its columns, when no
    rows were written)."""
    import pandas as pd

    schema = {TRACK_EMBEDDINGS: EMBEDDINGS_SCHEMA, TRACK_USERS: TRACK_USERS_SCHEMA, USER_INBOX: INBOX_SCHEMA}[name]
    files = sorted(storage.path(output_dir).glob(f"{name}/*.parquet"))
    frames = [storage.read_parquet(f) for f in files]
    frames = [f for f in frames if len(f)]
    if not frames:
        return schema.empty_table().to_pandas()
    sort = ["track_id", "rank"] if name == TRACK_USERS else ["user_id", "rank"] if name == USER_INBOX else ["track_id"]
    return pd.concat(frames, ignore_index=True).sort_values(sort, ignore_index=True)
