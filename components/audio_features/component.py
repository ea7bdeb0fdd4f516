"""The audio feature component: the Beam transform of `transforms.py` as a TFX component.

Beam runs it: DirectRunner locally (`--direct_num_workers=N
--direct_running_mode=multi_processing` uses N cores), Dataflow, Flink or
Spark through the pipeline's Beam args. The dataset folder is a parameter,
like ExampleGen's `input_base`; its driver fingerprints the tracks table and
the audio files (sizes and modification times) at run time
(`dataset_fingerprint.py`), and with the code's fingerprint that is in the
cache key, so the cache reruns this component exactly when the audio or the
code changed.
"""

# No `from __future__ import annotations`: TFX reads the function's annotations as types.
import logging
import time

import apache_beam as beam
from etils import epath
from tfx.dsl.component.experimental.annotations import BeamComponentParameter, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component

import musicrec
from musicrec import storage
from musicrec.components.dataset_fingerprint import AudioFingerprintDriver
from musicrec.components.artifacts import AudioQuarantine, LogMelFeatures
from musicrec.components.audio_features import transforms
from musicrec.audio import decode
from musicrec.data.adapters import load_with_adapter

REPORT_FILE = "report.md"


@component(use_beam=True)
def AudioFeatures(
    dataset_dir: Parameter[str],
    dataset_adapter: Parameter[str],
    code_fingerprint: Parameter[str],
    min_seconds: Parameter[float],
    features: OutputArtifact[LogMelFeatures],
    quarantine: OutputArtifact[AudioQuarantine],
    beam_pipeline: BeamComponentParameter[beam.Pipeline] = None,
    dataset_fingerprint: Parameter[str] = "",
    extra_front_ends: Parameter[str] = "",
) -> None:
    """Decodes every track's audio, resamples to 22050 Hz mono, and writes the log-mel of its
    first 30 s; audio that is missing, unreadable, silent or shorter than `min_seconds` is
    quarantined with its status (the report lists each file). `extra_front_ends`: comma-separated
    other front ends (`musicrec.audio.front_ends`, e.g. "musicnn") whose frames are written too,
    as `<shard prefix>-*` beside the log-mels, for an audio branch that reads them."""
    del code_fingerprint, dataset_fingerprint  # only in the cache key (the second set by the driver at run time)
    tracks = load_with_adapter(dataset_dir, dataset_adapter).audio_files()
    if not tracks:
        raise ValueError(f"the dataset in {dataset_dir} lists no tracks")
    logging.info("%s audio features: extracting log-mels of %d tracks", musicrec.LOG_TAG, len(tracks))
    started = time.monotonic()
    with beam_pipeline as pipeline:
        transforms.write_features(pipeline, tracks, features.uri, min_seconds=min_seconds,
                                  extra_front_ends=[name for name in extra_front_ends.split(",") if name])
    report = transforms.read_feature_report(features.uri, time.monotonic() - started)
    _move_quarantine(storage.path(features.uri), storage.path(quarantine.uri))
    (storage.path(quarantine.uri) / REPORT_FILE).write_text(report.format() + "\n")
    for artifact in (features, quarantine):
        artifact.set_int_custom_property("extracted", report.extracted)
        for status in decode.AUDIO_STATUSES:
            artifact.set_int_custom_property(status, report.counts.get(status, 0))
    logging.info("%s %s", musicrec.LOG_TAG, report.format())
    if report.extracted == 0:
        raise ValueError(f"no track has usable audio; see {quarantine.uri}")


# Set after the decorator, which builds the component class: the run-time dataset fingerprint.
AudioFeatures.DRIVER_CLASS = AudioFingerprintDriver


def _move_quarantine(features_dir: epath.Path, quarantine_dir: epath.Path) -> None:
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    (features_dir / transforms.QUARANTINE_FILE).replace(quarantine_dir / transforms.QUARANTINE_FILE)
