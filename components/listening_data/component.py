"""The listening-data ingestion component (ExampleGen-style): dataset folder -> three Examples artifacts.

It runs the ingestion Beam job of `ingest.py` on the pipeline's Beam runner
(DirectRunner locally, Dataflow at scale, by the pipeline's Beam args). The
dataset folder is a parameter, like ExampleGen's `input_base`; its driver
fingerprints the tables at run time (`dataset_fingerprint.py`), and with the
code's fingerprint that is in the cache key, so the cache reruns ingestion
exactly when the tables or the code changed. It takes the audio feature component's output to
know which tracks have usable audio (pairs of the others are excluded and counted).
What it writes is described in `ingest.py`.
"""

# No `from __future__ import annotations`: TFX reads the function's annotations as types.
import logging
import time

import apache_beam as beam
from tfx.dsl.component.experimental.annotations import BeamComponentParameter, InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils
from tfx.types.standard_artifacts import Examples

import musicrec
from musicrec import storage
from musicrec.components.dataset_fingerprint import TablesFingerprintDriver
from musicrec.components.artifacts import LogMelFeatures
from musicrec.components.audio_features.transforms import INDEX_FILE
from musicrec.components.listening_data.ingest import (
    ARTIFACT_SPLITS, AudioIndex, IngestionConfig, run_ingestion, table_source,
)
from musicrec.trainer.audio_branch import AudioBranchConfig


@component(use_beam=True)
def ListeningDataGen(
    dataset_dir: Parameter[str],
    dataset_adapter: Parameter[str],
    code_fingerprint: Parameter[str],
    ingestion_config: Parameter[str],
    context_seconds: Parameter[float],
    log_mel_features: InputArtifact[LogMelFeatures],
    interactions: OutputArtifact[Examples],
    user_examples: OutputArtifact[Examples],
    audio_pairs: OutputArtifact[Examples],
    beam_pipeline: BeamComponentParameter[beam.Pipeline] = None,
    dataset_fingerprint: Parameter[str] = "",
) -> None:
    """Writes the interactions, user-branch examples and audio pairs (stops on unusable data with
    the reasons); every rejected row is reported beside the interactions and every exclusion
    counted in the artifacts' custom properties and in `ingestion_report.json`."""
    del code_fingerprint, dataset_fingerprint  # only in the cache key (the second set by the driver at run time)
    config = IngestionConfig.from_json(ingestion_config)
    started = time.monotonic()
    source = table_source(dataset_dir, dataset_adapter)
    context_frames = AudioBranchConfig(context_seconds=context_seconds).context_frames
    usable = AudioIndex(storage.join(log_mel_features.uri, INDEX_FILE), context_frames)
    artifacts = {"interactions": interactions, "user_examples": user_examples, "audio_pairs": audio_pairs}
    report = run_ingestion(beam_pipeline, source, usable, config, {name: a.uri for name, a in artifacts.items()})
    for name, artifact in artifacts.items():
        artifact.split_names = artifact_utils.encode_split_names(list(ARTIFACT_SPLITS[name]))
        for key, value in report.counts.items():
            artifact.set_int_custom_property(key, value)
    seconds = time.monotonic() - started
    events = report.rows_read("interactions")
    logging.info("%s %s", musicrec.LOG_TAG, report.format(source.files))
    logging.info("%s ingestion: %d interaction rows in %.1f s (%.0f rows/s)", musicrec.LOG_TAG, events, seconds,
                 events / max(seconds, 1e-9))


# Set after the decorator, which builds the component class: the run-time dataset fingerprint.
ListeningDataGen.DRIVER_CLASS = TablesFingerprintDriver
