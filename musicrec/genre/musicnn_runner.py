"""The musicnn baseline (`MSD_musicnn`, `max_pool` layer) as an `Extractor`: musicnn's own code in a
worker process (`MusicnnFeatures`), or the package's port of it in process (`MusicnnPortFeatures`).

One worker (`musicnn_worker`) per extraction streams over the whole track
list; it is a separate process only because musicnn switches TensorFlow to
graph mode process-wide (see the worker's docstring), not to parallelise:
feature extraction at scale belongs to Beam. The track vector is the mean of
the `max_pool` vectors of the track's non-overlapping 3 s patches of its
first 30 s. (The paper takes the max_pool layer without saying how patches
are pooled; the reference code it cites classifies patches and votes, which
cannot be concatenated with a track-level AE.)

`MusicnnPortFeatures` gives the same vectors (cosine >= 0.9999998 per patch,
tests/test_musicnn_port.py) from `musicrec.audio.musicnn`, the port the
musicnn front end's feature component and serving graphs run: no worker
process, no TF1 graph, so the practitioner baselines use it.
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

from musicrec.audio import musicnn
from musicrec.audio.decode import AudioError, load_audio
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


class MusicnnPortFeatures:
    """`MusicnnFeatures`' track vectors from the in-process port (`musicrec.audio.musicnn`): the
    mean `max_pool` vector of the whole 3 s patches of each track's first 30 s, decoded at the
    port's input rate. Audio too short for one patch is quarantined as too short."""

    name = f"musicnn {musicnn.MODEL} {musicnn_worker.LAYER} (in-process port)"
    cache_id = (f"musicnn-{musicnn.MODEL}-{musicnn_worker.LAYER}-{musicnn_worker.INPUT_SECONDS:g}s"
                f"-first{musicnn.MAX_SECONDS:g}s-patchmean-port")

    def extract(self, tracks: List[Tuple[str, str]]) -> Iterator[Tuple[str, Result]]:
        shortest = musicnn.shortest_input(1) / musicnn.INPUT_RATE
        for track_id, path in tracks:
            try:
                audio = load_audio(path, musicnn.INPUT_RATE, max_seconds=musicnn.MAX_SECONDS, min_seconds=shortest)
            except AudioError as error:
                yield track_id, error
                continue
            yield track_id, musicnn.patch_features(audio).mean(axis=0)
