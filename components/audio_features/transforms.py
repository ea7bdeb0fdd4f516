"""Beam transforms of the audio feature component: decode, log-mel, quarantine.

`ExtractLogMel` turns a dataset's audio files (`decode.AudioFile`, from
`Dataset.audio_files()`) into serialized tf.Examples (`musicrec.audio.records`)
and routes unusable audio to a quarantine output, one record per file with its
status, counted by Beam metrics. A file that resolves outside the dataset's
folders is quarantined as "outside_dataset" without being opened. It runs on any
Beam runner: DirectRunner locally (`--direct_num_workers=2
--direct_running_mode=multi_processing` uses both cores), Dataflow, Flink or
Spark by pipeline options; the TFX component of the pipeline wraps the same
transform.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import time
from typing import Dict, Iterable, List, Optional, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from etils import epath

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from musicrec import storage
from musicrec.audio import decode
from musicrec.audio.front_ends import FRONT_ENDS, LOG_MEL_FRONT_END, front_end, track_frames_of
from musicrec.audio.logmel import DEFAULT, LogMelConfig

METRICS_NAMESPACE = "musicrec.audio_features"
QUARANTINE = "quarantine"
INDEX = "index"
FEATURES_PREFIX = "log_mel"
QUARANTINE_FILE = "quarantine.jsonl"
# One JSON line per extracted track: track_id, frames. Lets downstream steps
# know which tracks have enough audio without reading the log-mels.
INDEX_FILE = "index.jsonl"
# Tracks per log-mel shard (30 s of float16 log-mel is about 330 KB, so about 160 MB a shard):
# the trainer reads features past its memory budget in blocks of whole shards
# (trainer/log_mel_shards.py), so shards must be small beside the budget and many.
TRACKS_PER_SHARD = 500


class _ExtractLogMelFn(beam.DoFn):
    def __init__(self, config: LogMelConfig, min_seconds: float, progress_every_s: float = 10.0,
                 extra_front_ends: Sequence[str] = ()):
        self._config = config
        self._min_seconds = min_seconds
        self._extra_front_ends = tuple(extra_front_ends)
        self._progress_every_s = progress_every_s
        self._counters = {status: beam.metrics.Metrics.counter(METRICS_NAMESPACE, status) for status in ("ok",) + decode.AUDIO_STATUSES}

    def setup(self):
        import tensorflow as tf

        from musicrec.audio.logmel import log_mel_spectrogram

        config = self._config
        # One traced graph per worker; a variable-length signature so every
        # track length reuses it.
        self._log_mel = tf.function(
            lambda waveform: log_mel_spectrogram(waveform, config),
            input_signature=[tf.TensorSpec([None], tf.float32)],
        )
        # Other front ends' frames from the same decoded waveform (e.g. musicnn's patch features,
        # for an audio branch that reads them): traced graphs built once per worker.
        self._extra_frames = track_frames_of(self._extra_front_ends)
        self._done = 0
        self._started = self._last_report = time.monotonic()

    def process(self, track: decode.AudioFile):
        from musicrec.audio.records import encode_example

        track_id, path = track
        try:
            waveform = track.load(
                sample_rate=self._config.sample_rate, max_seconds=self._config.max_seconds, min_seconds=self._min_seconds
            )
        except decode.AudioError as error:
            self._counters[error.status].inc()
            yield beam.pvalue.TaggedOutput(
                QUARANTINE, {"track_id": track_id, "path": path, "status": error.status, "detail": error.detail}
            )
            return
        log_mel = self._log_mel(waveform).numpy()
        extra = self._extra_frames(waveform)
        self._counters["ok"].inc()
        self._report_progress()
        yield beam.pvalue.TaggedOutput(INDEX, {"track_id": track_id, "frames": int(log_mel.shape[0]),
                                               **{f"{name}_frames": int(f.shape[0]) for name, f in extra.items()}})
        yield encode_example(track_id, log_mel)
        for name, frames in extra.items():
            yield beam.pvalue.TaggedOutput(name, encode_example(track_id, frames))

    def _report_progress(self):
        self._done += 1
        now = time.monotonic()
        if now - self._last_report >= self._progress_every_s:
            self._last_report = now
            rate = self._done / (now - self._started)
            logging.info(musicrec.LOG_TAG + " audio features: %d tracks extracted by this worker (%.1f tracks/s)", self._done, rate)


class ExtractLogMel(beam.PTransform):
    """decode.AudioFile -> serialized tf.Example; quarantine and index records on the side.

    Returns a DoOutputsTuple with the main output (serialized examples),
    `QUARANTINE` (dicts: track_id, path, status, detail), `INDEX` (dicts:
    track_id, frames, and `<front end>_frames` per extra front end) and one
    output per extra front end (`extra_front_ends`, e.g. "musicnn"): the same
    records holding that front end's frames.
    """

    def __init__(self, config: LogMelConfig = DEFAULT, min_seconds: float = 3.0, extra_front_ends: Sequence[str] = ()):
        super().__init__()
        self._config = config
        self._min_seconds = min_seconds
        self.extra_front_ends = tuple(name for name in extra_front_ends if name != LOG_MEL_FRONT_END.name)

    def expand(self, tracks):
        fn = _ExtractLogMelFn(self._config, self._min_seconds, extra_front_ends=self.extra_front_ends)
        return tracks | beam.ParDo(fn).with_outputs(QUARANTINE, INDEX, *self.extra_front_ends, main="features")


@dataclasses.dataclass
class FeatureReport:
    output_dir: str
    counts: Dict[str, int]
    quarantined: List[dict]
    seconds: float

    @property
    def extracted(self) -> int:
        return self.counts.get("ok", 0)

    def format(self) -> str:
        rate = self.extracted / self.seconds if self.seconds else 0.0
        lines = [
            f"Audio features in {self.output_dir}: {self.extracted} tracks extracted in {self.seconds:.1f} s "
            f"({rate:.1f} tracks/s); quarantined: "
            + ", ".join(f"{status} {self.counts.get(status, 0)}" for status in decode.AUDIO_STATUSES)
        ]
        for record in self.quarantined[:10]:
            lines.append(f"    {record['track_id']} [{record['status']}] {record['detail']}")
        return "\n".join(lines)


def write_features(pipeline: beam.Pipeline, tracks: Sequence[decode.AudioFile], output_dir,
                   config: LogMelConfig = DEFAULT, min_seconds: float = 3.0, extra_front_ends: Sequence[str] = ()) -> None:
    """Adds the extraction to `pipeline`: log-mel TFRecords (and each extra front end's, as
    `<shard prefix>-*`), the quarantine list and the index under `output_dir`. The standalone job
    below and the pipeline's component both use it."""
    output_dir = storage.path(output_dir)
    extraction = ExtractLogMel(config, min_seconds, extra_front_ends)
    outputs = pipeline | "Tracks" >> beam.Create(list(tracks)) | "ExtractLogMel" >> extraction
    shards = -(-len(tracks) // TRACKS_PER_SHARD)
    _ = outputs.features | "WriteFeatures" >> beam.io.WriteToTFRecord(
        str(output_dir / FEATURES_PREFIX), file_name_suffix=".tfrecord", num_shards=shards
    )
    for name in extraction.extra_front_ends:
        _ = outputs[name] | f"Write{name.title()}Features" >> beam.io.WriteToTFRecord(
            str(output_dir / front_end(name).shard_prefix), file_name_suffix=".tfrecord", num_shards=shards)
    for tag, name in ((QUARANTINE, QUARANTINE_FILE), (INDEX, INDEX_FILE)):
        _ = (
            outputs[tag]
            | f"{tag}ToJson" >> beam.Map(lambda record: json.dumps(record, sort_keys=True))
            | f"Write{tag.title()}" >> beam.io.WriteToText(str(output_dir / name), shard_name_template="")
        )


def read_jsonl(path) -> List[dict]:
    path = storage.path(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def read_index(output_dir) -> Dict[str, int]:
    """track_id -> number of log-mel frames, for every extracted track."""
    return {record["track_id"]: record["frames"] for record in read_jsonl(storage.path(output_dir) / INDEX_FILE)}


def read_feature_report(output_dir, seconds: float) -> FeatureReport:
    """Counts from the written files (the same on every Beam runner)."""
    quarantined = sorted(read_jsonl(storage.path(output_dir) / QUARANTINE_FILE), key=lambda r: r["track_id"])
    counts = {"ok": len(read_index(output_dir)), **collections.Counter(r["status"] for r in quarantined)}
    return FeatureReport(str(output_dir), counts, quarantined, seconds)


def clear_outputs(output_dir) -> epath.Path:
    output_dir = storage.path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    features = [f for front in FRONT_ENDS.values() for f in output_dir.glob(front.shard_prefix + "-*")]
    for stale in features + [output_dir / QUARANTINE_FILE, output_dir / INDEX_FILE]:
        stale.unlink(missing_ok=True)  # shard counts vary between runs
    return output_dir


def extract_features(
    tracks: Iterable[decode.AudioFile],
    output_dir,
    config: LogMelConfig = DEFAULT,
    min_seconds: float = 3.0,
    beam_args: Optional[Sequence[str]] = None,
    extra_front_ends: Sequence[str] = (),
) -> FeatureReport:
    """Runs ExtractLogMel as a standalone Beam pipeline; writes TFRecords, quarantine list and index."""
    output_dir = clear_outputs(output_dir)
    tracks = list(tracks)
    if not tracks:
        raise ValueError("no tracks to extract features from")
    started = time.monotonic()
    pipeline = beam.Pipeline(options=PipelineOptions(list(beam_args or [])))
    write_features(pipeline, tracks, output_dir, config, min_seconds, extra_front_ends)
    pipeline.run().wait_until_finish()
    return read_feature_report(output_dir, time.monotonic() - started)
