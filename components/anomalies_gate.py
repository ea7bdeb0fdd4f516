"""AnomaliesGate: stops the run when ExampleValidator found anomalies, printing TFDV's report.

TFX's ExampleValidator records anomalies (and a per-split `blessed` custom
property) but nothing downstream consumes them, so a run would train on data
that broke its schema. This gate sits between validation and Transform.
"""

# No `from __future__ import annotations`: TFX reads the function's annotations as types.
import logging

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.dsl.component.experimental.annotations import InputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils
from tfx.types.standard_artifacts import ExampleAnomalies

import musicrec
from musicrec import storage

SCHEMA_DIFF_FILE = "SchemaDiff.pb"


class DataAnomaliesError(ValueError):
    """The examples do not match the schema; the message is TFDV's report."""


def format_anomalies(anomalies: ExampleAnomalies) -> str:
    """One line per anomalous feature and split, as TFDV describes it; '' when there is none."""
    lines = []
    for split in artifact_utils.decode_split_names(anomalies.split_names):
        path = storage.path(artifact_utils.get_split_uri([anomalies], split)) / SCHEMA_DIFF_FILE
        report = anomalies_pb2.Anomalies.FromString(path.read_bytes())
        for feature, info in sorted(report.anomaly_info.items()):
            lines.append(f"  [{split}] {feature}: {info.short_description} — {info.description}")
        if report.HasField("dataset_anomaly_info"):
            info = report.dataset_anomaly_info
            lines.append(f"  [{split}] (dataset): {info.short_description} — {info.description}")
    return "\n".join(lines)


@component
def AnomaliesGate(anomalies: InputArtifact[ExampleAnomalies]) -> None:
    report = format_anomalies(anomalies)
    if report:
        raise DataAnomaliesError(
            "the interaction examples do not match the schema (TFDV anomalies below); fix the data, or update "
            f"the pinned schema if the change is intended. Full report: {anomalies.uri}\n{report}"
        )
    logging.info("%s data validation: no anomalies", musicrec.LOG_TAG)
