"""Custom TFX drivers that fingerprint the dataset folder at run time, before the cache lookup.

AudioFeatures and ListeningDataGen take a dataset folder as a parameter (like
ExampleGen's `input_base`), so TFX's cache key would not change when the data
in it does. ExampleGen solves this with a driver that fingerprints its input
files when the component is about to run; these drivers do the same for our
readers (ExampleGen's own driver cannot be reused: it fingerprints split
patterns, not a dataset layout with an audio tree). Computing it here rather
than when the pipeline is built means `musicrec compile` never reads the data.

The local runner and Kubeflow V1 run custom drivers before the cache lookup
(tfx.orchestration.portable.launcher); Kubeflow V2 / Vertex AI Pipelines run
none but ExampleGen's, so there the cache key holds the dataset URI and the
code only: give each data version its own URI (e.g. gs://bucket/data/2026-11-30/)
or turn the cache off for a run on changed data (docs/pipeline.md).
"""

from __future__ import annotations

from tfx.dsl.components.base import base_driver
from tfx.orchestration.portable import base_driver as portable_base_driver
from tfx.orchestration.portable import data_types
from tfx.proto.orchestration import driver_output_pb2

from musicrec.data.fingerprint import AUDIO_SCOPE, TABLES_SCOPE, dataset_fingerprint

# The exec properties the drivers read (the components' parameters) and the one they fill.
DATASET_DIR, DATASET_ADAPTER, DATASET_FINGERPRINT = "dataset_dir", "dataset_adapter", "dataset_fingerprint"


class DatasetFingerprintDriver(base_driver.BaseDriver, portable_base_driver.BaseDriver):
    """Sets the `dataset_fingerprint` exec property from the files of `SCOPE` in `dataset_dir`.

    Subclasses both driver bases as ExampleGen's driver does: TFX checks a
    component's DRIVER_CLASS against the legacy one, and the portable launcher
    calls `run`.
    """

    SCOPE = TABLES_SCOPE

    def __init__(self, mlmd_connection):
        base_driver.BaseDriver.__init__(self, mlmd_connection)
        portable_base_driver.BaseDriver.__init__(self, mlmd_connection)

    def run(self, execution_info: data_types.ExecutionInfo) -> driver_output_pb2.DriverOutput:
        properties = execution_info.exec_properties
        output = driver_output_pb2.DriverOutput()
        output.exec_properties[DATASET_FINGERPRINT].string_value = dataset_fingerprint(
            properties[DATASET_DIR], properties[DATASET_ADAPTER], self.SCOPE)
        return output


class TablesFingerprintDriver(DatasetFingerprintDriver):
    """For ListeningDataGen: the dataset's tables."""

    SCOPE = TABLES_SCOPE


class AudioFingerprintDriver(DatasetFingerprintDriver):
    """For AudioFeatures: the tracks table and the audio tree, so new interactions do not rerun it."""

    SCOPE = AUDIO_SCOPE
