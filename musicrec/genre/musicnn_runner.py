"""The musicnn baseline (`MSD_musicnn`, `max_pool` layer) as an `Extractor`, run in a worker process.

One worker (`musicnn_worker`) per extraction streams over the whole track
list; it is a separate process only because musicnn switches TensorFlow to
graph mode process-wide (see the worker's docstring), not to parallelise:
feature extraction at scale belongs to Beam. The track vector is the mean of
the `max_pool` vectors of the track's non-overlapping 3 s patches of its
first 30 s. (The paper takes the max_pool layer without saying how patches
are pooled; the reference code it cites classifies patches and votes, which
cannot be concatenated with a track-level AE.)
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import tempfile
from typing import Iterator, List, Tuple

import musicrec  # noqa: F401  (project convention)
import numpy as np

from musicrec.genre import musicnn_worker
from musicrec.genre.features import Result, audio_error

MAX_POOL_DIMS = 753  # MSD_musicnn's max_pool layer


class MusicnnError(RuntimeError):
    """The musicnn worker failed (not an audio problem: a broken install or a crash)."""


class MusicnnFeatures:
    def __init__(self, model: str = musicnn_worker.MODEL, layer: str = musicnn_worker.LAYER):
        self.model, self.layer = model, layer
        self.name = f"musicnn {model} {layer}"
        self.cache_id = (f"musicnn-{model}-{layer}-{musicnn_worker.INPUT_SECONDS:g}s-first{musicnn_worker.MAX_SECONDS:g}s"
                         "-patchmean")

    def extract(self, tracks: List[Tuple[str, str]]) -> Iterator[Tuple[str, Result]]:
        with tempfile.TemporaryDirectory(prefix="musicnn-") as scratch:
            scratch = pathlib.Path(scratch)
            outs = [scratch / f"{i}.npy" for i in range(len(tracks))]
            jobs = scratch / "jobs.jsonl"
            jobs.write_text("".join(json.dumps({"path": p, "out": str(o)}) + "\n" for (_, p), o in zip(tracks, outs)))
            log = scratch / "worker.log"
            with open(log, "w") as stderr:
                worker = subprocess.Popen(
                    [sys.executable, "-m", musicnn_worker.__name__, str(jobs), "--model", self.model, "--layer", self.layer],
                    stdout=subprocess.PIPE, stderr=stderr, text=True,
                )
                try:
                    yield from self._read(worker, tracks, outs)
                finally:
                    if worker.poll() is None:
                        worker.kill()  # the consumer stopped early: the worker is ours to end
                    worker.wait()
            if worker.returncode != 0:
                tail = log.read_text()[-2000:]
                raise MusicnnError(f"the musicnn worker exited with status {worker.returncode} (musicnn is installed "
                                   f"without its dependencies, see requirements/nodeps.txt):\n{tail}")

    def _read(self, worker, tracks, outs) -> Iterator[Tuple[str, Result]]:
        for line in worker.stdout:
            if not line.startswith(musicnn_worker.PREFIX):
                continue  # a library's own print, not a result
            message = json.loads(line[len(musicnn_worker.PREFIX):])
            track_id, path = tracks[message["index"]]
            if message["status"] == "ok":
                patches = np.load(outs[message["index"]])
                yield track_id, patches.mean(axis=0)
            else:
                yield track_id, audio_error(message["status"], path, message["detail"])
