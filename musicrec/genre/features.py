"""Per-track features for genre classification, cached, streamed with progress, with a counted quarantine.

`extract_cached` is the one loop both extractors share: it looks every track
up in a `FeatureCache`, hands the rest to an extractor that yields results
as it goes, caches each result (a feature vector, or the audio error that made
the track unusable, so a rerun neither recomputes nor re-decodes anything),
prints progress lines with counts and rates, and returns the vectors with the
quarantine. Extractors:

- `AudioEncoderFeatures`: the track-level AE of a trained audio encoder
  SavedModel (signature `embed_log_mel`): the mean AE over the back-to-back
  context-length segments of the first 30 s, computed by the audio branch's
  own `track_embeddings`;
- `musicnn_runner.MusicnnFeatures`: the musicnn baseline, in its own process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import time
from typing import Dict, Iterable, Iterator, List, Optional, Protocol, Tuple, Union

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import pandas as pd
import tensorflow as tf
from etils import epath

from musicrec import storage
from musicrec.audio.decode import AUDIO_STATUSES, AudioError, MissingAudioError

# What an extractor yields per track: its vector, or the audio error that made it unusable.
Result = Union[np.ndarray, AudioError]


class Extractor(Protocol):
    name: str  # shown in progress lines and reports
    cache_id: str  # changes whenever the features would change (model, layer, settings)

    def extract(self, tracks: List[Tuple[str, str]]) -> Iterator[Tuple[str, Result]]:
        """(track_id, path) pairs -> (track_id, result), streamed as computed."""


@dataclasses.dataclass
class TrackFeatures:
    """One extractor's features: a row per usable track, and the quarantine."""

    name: str
    track_ids: List[str]
    vectors: np.ndarray  # float32 [usable tracks, dims]
    quarantine: pd.DataFrame  # track_id, path, status, detail
    cached: int
    computed: int
    seconds: float

    def counts(self) -> Dict[str, int]:
        statuses = self.quarantine["status"].value_counts()
        return {"ok": len(self.track_ids), **{s: int(statuses.get(s, 0)) for s in AUDIO_STATUSES}}

    def format(self) -> str:
        counts = self.counts()
        rate = self.computed / self.seconds if self.seconds else 0.0
        line = (f"{self.name}: {counts['ok']} tracks ({self.cached} from the cache, {self.computed} computed in "
                f"{self.seconds:.1f} s, {rate:.1f} tracks/s), {self.vectors.shape[1] if self.vectors.ndim == 2 else 0} dims; "
                "quarantined: " + ", ".join(f"{s} {counts[s]}" for s in AUDIO_STATUSES))
        examples = [f"    {r.track_id} [{r.status}] {r.detail}" for r in self.quarantine.head(5).itertuples()]
        return "\n".join([line] + examples)

    def matrix(self, track_ids: Iterable[str]) -> np.ndarray:
        index = {t: i for i, t in enumerate(self.track_ids)}
        return self.vectors[[index[t] for t in track_ids]]


class FeatureCache:
    """One .npz per (audio file, extractor): `<root>/<extractor>/<key[:2]>/<key>.npz`. The root and
    the audio files may be local or in a bucket (`musicrec.storage`).

    The key hashes the file's absolute path, modification time and size with
    the extractor's `cache_id`, so an edited file or a different model never
    reads stale features. Unusable audio is cached with its error status.
    """

    def __init__(self, root, cache_id: str):
        self.root = storage.path(root) / _slug(cache_id)
        self.cache_id = cache_id

    def _file(self, path: str) -> Optional[epath.Path]:
        try:
            stat = tf.io.gfile.stat(str(storage.path(path)))  # local or in a bucket
        except tf.errors.NotFoundError:
            return None  # missing files are not cached: they may appear before the next run
        key = hashlib.sha1(f"{storage.absolute(path)}|{stat.mtime_nsec}|{stat.length}|{self.cache_id}".encode()).hexdigest()
        return self.root / key[:2] / f"{key}.npz"

    def load(self, path: str) -> Optional[Result]:
        file = self._file(path)
        if file is None or not file.is_file():
            return None
        with np.load(storage.local_or_bytes(file)) as stored:
            if "vector" in stored:
                return stored["vector"]
            return audio_error(str(stored["status"]), path, str(stored["detail"]))

    def store(self, path: str, result: Result) -> None:
        file = self._file(path)
        if file is None:
            return
        file.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        if isinstance(result, AudioError):
            np.savez(buffer, status=result.status, detail=result.detail)
        else:
            np.savez(buffer, vector=np.asarray(result, np.float32))
        # Written aside, then renamed (atomic on local disks): an interrupted run leaves no half file.
        temporary = file.with_suffix(".tmp.npz")
        temporary.write_bytes(buffer.getvalue())
        temporary.replace(file)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:80]


def audio_error(status: str, path: str, detail: str) -> AudioError:
    from musicrec.audio import decode

    kind = next((e for e in decode.AUDIO_ERRORS if e.status == status), AudioError)
    return kind(path, detail)


class Progress:
    """Progress lines every `every_s` seconds: done/total, cached, quarantined, rate, time left."""

    def __init__(self, name: str, total: int, known: Dict[str, Result], cached: int, every_s: float = 10.0):
        """known: the results found before extracting (cache hits and missing files)."""
        self.name, self.total, self.cached, self.every_s = name, total, cached, every_s
        self.known = len(known)
        self.computed = 0
        self.quarantined = sum(isinstance(r, AudioError) for r in known.values())
        self.started = self._last = time.monotonic()
        self._first = None  # the rate counts from the first result: loading a model is not per-track work

    def step(self, quarantined: bool) -> None:
        if self._first is None:
            self._first = time.monotonic()
        self.computed += 1
        self.quarantined += int(quarantined)
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self.log(now)

    def log(self, now: Optional[float] = None) -> None:
        elapsed = (now or time.monotonic()) - (self._first or self.started)
        rate = (self.computed - 1) / elapsed if self.computed > 1 and elapsed > 0 else 0.0
        left = self.total - self.known - self.computed
        eta = f", ~{left / rate / 60:.1f} min left" if rate > 0 and left else ""
        logging.info("%s %s: %d/%d tracks (%d cached, %d quarantined), %.1f tracks/s%s", musicrec.LOG_TAG, self.name,
                     self.known + self.computed, self.total, self.cached, self.quarantined, rate, eta)


def extract_cached(tracks: pd.DataFrame, extractor: Extractor, cache_root, every_s: float = 10.0) -> TrackFeatures:
    """Features of every (track_id, path) row of `tracks`, from the cache where present."""
    cache = FeatureCache(cache_root, extractor.cache_id)
    paths = dict(zip(tracks["track_id"], tracks["path"]))
    results: Dict[str, Result] = {}
    todo, hits = [], 0
    for track_id, path in paths.items():
        if not storage.path(path).exists():  # found here: no extractor (or worker start) needed for it
            results[track_id] = MissingAudioError(path, "file not found")
        elif (cached := cache.load(path)) is not None:
            results[track_id], hits = cached, hits + 1
        else:
            todo.append((track_id, path))
    progress = Progress(extractor.name, len(paths), results, hits, every_s)
    if todo:
        progress.log()
        for track_id, result in extractor.extract(todo):
            cache.store(paths[track_id], result)
            results[track_id] = result
            progress.step(isinstance(result, AudioError))
        progress.log()
    if len(results) != len(paths):
        raise RuntimeError(f"{extractor.name}: no result for {len(paths) - len(results)} tracks")
    return _collect(extractor.name, tracks, results, progress)


def _collect(name: str, tracks: pd.DataFrame, results: Dict[str, Result], progress: Progress) -> TrackFeatures:
    usable = [t for t in tracks["track_id"] if not isinstance(results[t], AudioError)]
    errors = [(t, p, results[t].status, results[t].detail) for t, p in zip(tracks["track_id"], tracks["path"])
              if isinstance(results[t], AudioError)]
    vectors = np.stack([results[t] for t in usable]).astype(np.float32) if usable else np.zeros((0, 0), np.float32)
    return TrackFeatures(
        name=name, track_ids=usable, vectors=vectors,
        quarantine=pd.DataFrame(errors, columns=["track_id", "path", "status", "detail"]),
        cached=progress.cached, computed=progress.computed, seconds=time.monotonic() - progress.started,
    )


def describe(features: TrackFeatures) -> dict:
    """JSON-ready summary for the report."""
    return {
        "tracks": len(features.track_ids), "dims": int(features.vectors.shape[1]) if features.vectors.size else 0,
        "cached": features.cached, "computed": features.computed, "seconds": round(features.seconds, 2),
        "quarantine": features.counts(), "quarantined_tracks": json.loads(features.quarantine.to_json(orient="records")),
    }
