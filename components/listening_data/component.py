"""The listening-data ingestion component (ExampleGen-style): dataset folder -> three Examples artifacts.

The dataset folder is a parameter, like ExampleGen's `input_base`; its
fingerprint (tables and code) is a parameter too, so the cache reruns ingestion exactly when the
tables or the code changed. It takes the audio feature component's output to know which
tracks have usable audio (pairs of the others are excluded and counted).
What it writes is described in `ingest.py`.
"""

# No `from __future__ import annotations`: TFX reads the function's annotations as types.
import json
import logging
import pathlib
import time

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils
from tfx.types.standard_artifacts import Examples

import musicrec
from musicrec.components.artifacts import LogMelFeatures
from musicrec.components.audio_features.transforms import read_index
from musicrec.components.listening_data.ingest import REPORT_FILE, IngestionConfig, ingest, write_examples
from musicrec.data.adapters import load_with_adapter
from musicrec.data.validation import validate_dataset
from musicrec.trainer.audio_branch import AudioBranchConfig


@component
def ListeningDataGen(
    dataset_dir: Parameter[str],
    dataset_adapter: Parameter[str],
    dataset_fingerprint: Parameter[str],
    ingestion_config: Parameter[str],
    context_seconds: Parameter[float],
    log_mel_features: InputArtifact[LogMelFeatures],
    interactions: OutputArtifact[Examples],
    user_examples: OutputArtifact[Examples],
    audio_pairs: OutputArtifact[Examples],
) -> None:
    """Validates the dataset (stops on unusable data with the reasons), then writes the
    interactions, user-branch examples and audio pairs; every exclusion is counted in the
    artifacts' custom properties and in `ingestion_report.json`."""
    del dataset_fingerprint  # only in the cache key
    config = IngestionConfig.from_json(ingestion_config)
    started = time.monotonic()
    dataset = load_with_adapter(dataset_dir, dataset_adapter)
    report = validate_dataset(dataset, config.feedback, check_audio=False)
    logging.info("%s %s", musicrec.LOG_TAG, report.format())
    if not report.usable:
        raise ValueError("the dataset cannot be used: " + "; ".join(report.fatal))
    frames = read_index(log_mel_features.uri)
    context_frames = AudioBranchConfig(context_seconds=context_seconds).context_frames
    usable = [track for track, n in frames.items() if n >= context_frames]
    data = ingest(dataset, usable, config)
    for artifact, splits in ((interactions, data.interactions), (user_examples, data.user_examples), (audio_pairs, data.audio_pairs)):
        write_examples(artifact.uri, splits)
        artifact.split_names = artifact_utils.encode_split_names(list(splits))
        for key, value in data.counts.items():
            artifact.set_int_custom_property(key, value)
        (pathlib.Path(artifact.uri) / REPORT_FILE).write_text(json.dumps(data.counts, indent=2) + "\n")
    seconds = time.monotonic() - started
    logging.info(
        "%s ingestion: %d interactions -> %s in %.1f s (%.0f events/s)", musicrec.LOG_TAG, len(dataset.interactions),
        ", ".join(f"{k} {v}" for k, v in data.counts.items() if "." in k), seconds, len(dataset.interactions) / max(seconds, 1e-9),
    )
