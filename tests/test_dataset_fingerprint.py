"""The dataset is fingerprinted at run time by the readers' drivers, never when the pipeline is built:
the cache follows the data, and `musicrec compile` works where the data cannot be read."""

import dataclasses
import json
import os
import pathlib
import shutil

import pytest
from tfx import v1 as tfx
from tfx.dsl.compiler import compiler
from tfx.orchestration import metadata
from tfx.orchestration.portable import data_types
from tfx.proto.orchestration import executable_spec_pb2, pipeline_pb2

from musicrec.components.dataset_fingerprint import AudioFingerprintDriver, TablesFingerprintDriver
from musicrec.pipeline.config import PipelineConfig, code_fingerprint
from musicrec.pipeline.pipeline import create_pipeline, dataset_readers
from musicrec.pipeline.runner import compile_kubeflow
from musicrec.pipeline.runs import find_run

BUCKET = "gs://musicrec-test-unreadable"  # no such bucket, and no network here: reading it would fail


def _driver_fingerprint(driver_class, dataset: pathlib.Path) -> str:
    info = data_types.ExecutionInfo(exec_properties={"dataset_dir": str(dataset), "dataset_adapter": "plain"})
    output = driver_class(metadata.Metadata(metadata.sqlite_metadata_connection_config(":memory:"))).run(info)
    return output.exec_properties["dataset_fingerprint"].string_value


def _touch(path: pathlib.Path, content: bytes = None) -> None:
    """Rewrites a file (same bytes unless given) with a later modification time."""
    path.write_bytes(path.read_bytes() if content is None else content)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000_000))


@pytest.fixture
def small_dataset(tmp_path) -> pathlib.Path:
    root = tmp_path / "data"
    (root / "audio" / "rock").mkdir(parents=True)
    (root / "tracks.csv").write_text("track_id,audio_path\nt1,audio/rock/t1.wav\n")
    (root / "users.csv").write_text("user_id\nu1\n")
    (root / "interactions.csv").write_text("user_id,track_id,event\nu1,t1,like\n")
    (root / "README.txt").write_text("not a table")
    (root / "audio" / "rock" / "t1.wav").write_bytes(b"RIFF....WAVE")
    return root


def test_drivers_fingerprint_their_own_scope_of_the_folder(small_dataset):
    tables, audio = (_driver_fingerprint(d, small_dataset) for d in (TablesFingerprintDriver, AudioFingerprintDriver))
    assert len(tables) == len(audio) == 16 and tables != audio
    assert _driver_fingerprint(TablesFingerprintDriver, small_dataset) == tables  # deterministic

    _touch(small_dataset / "interactions.csv")  # new interactions: ingestion reruns, audio features do not
    assert _driver_fingerprint(TablesFingerprintDriver, small_dataset) != tables
    assert _driver_fingerprint(AudioFingerprintDriver, small_dataset) == audio
    tables = _driver_fingerprint(TablesFingerprintDriver, small_dataset)

    _touch(small_dataset / "README.txt")  # not a table, not audio
    assert (_driver_fingerprint(TablesFingerprintDriver, small_dataset), _driver_fingerprint(AudioFingerprintDriver, small_dataset)) == (tables, audio)

    (small_dataset / "audio" / "rock" / "t2.wav").write_bytes(b"RIFF....WAVE")  # a new file in the audio tree
    assert _driver_fingerprint(AudioFingerprintDriver, small_dataset) != audio
    assert _driver_fingerprint(TablesFingerprintDriver, small_dataset) == tables


def test_the_local_runner_runs_the_drivers_so_the_cache_follows_the_data(tiny_dataset, tmp_path):
    dataset = tmp_path / "data"
    shutil.copytree(tiny_dataset, dataset)
    config = PipelineConfig(dataset_dir=str(dataset), run_dir=str(tmp_path / "run"), audio_beam_args=[])
    features, ingestion = dataset_readers(config, code_fingerprint())
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="readers", pipeline_root=str(config.pipeline_root), components=[features, ingestion],
        enable_cache=True, metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(config.metadata_path)), beam_pipeline_args=list(config.beam_args))

    def run() -> dict:
        tfx.orchestration.LocalDagRunner().run(pipeline)
        return find_run(config.run_dir).states()

    assert run() == {"AudioFeatures": "COMPLETE", "ListeningDataGen": "COMPLETE"}
    assert run() == {"AudioFeatures": "CACHED", "ListeningDataGen": "CACHED"}
    _touch(dataset / "interactions.csv")
    assert run() == {"AudioFeatures": "CACHED", "ListeningDataGen": "COMPLETE"}
    first, second = sorted((dataset / "audio").rglob("*.mp3"))[:2]
    _touch(first, second.read_bytes())
    assert run() == {"AudioFeatures": "COMPLETE", "ListeningDataGen": "COMPLETE"}


def test_compile_reads_no_data_and_keeps_bucket_uris(tmp_path):
    config = dataclasses.replace(
        PipelineConfig(), dataset_dir=f"{BUCKET}/data/2026-11-30", serving_base_path=f"{BUCKET}/serving",
        remote_pipeline_root=f"{BUCKET}/root", run_dir=str(tmp_path / "run"), image="registry.example/musicrec:1")
    spec = json.loads(compile_kubeflow(config, tmp_path / "pipeline.json").read_text())
    tasks = spec.get("pipelineSpec", spec)["root"]["dag"]["tasks"]

    def parameter(task: str, name: str):
        found = tasks[task]["inputs"]["parameters"].get(name)
        return found and found["runtimeValue"]["constantValue"]["stringValue"]

    for reader in ("AudioFeatures", "ListeningDataGen", "PractitionerBaselines"):
        assert parameter(reader, "dataset_dir") == config.dataset_dir
    assert parameter("ServingPusher", "serving_base_path") == config.serving_base_path
    # Kubeflow V2 runs no custom driver: the data's identity there is its URI (and the code).
    assert parameter("AudioFeatures", "dataset_fingerprint") is None
    assert parameter("AudioFeatures", "code_fingerprint") == code_fingerprint()
    assert not (tmp_path / "run").exists()

    # The local runner's compiled pipeline names each reader's driver.
    ir = compiler.Compiler().compile(create_pipeline(config))
    deployment = pipeline_pb2.IntermediateDeploymentConfig()
    ir.deployment_config.Unpack(deployment)
    drivers = {}
    for node, packed in deployment.custom_driver_specs.items():
        spec = executable_spec_pb2.PythonClassExecutableSpec()
        packed.Unpack(spec)
        drivers[node] = spec.class_path
    assert drivers == {"AudioFeatures": "musicrec.components.dataset_fingerprint.AudioFingerprintDriver",
                       "ListeningDataGen": "musicrec.components.dataset_fingerprint.TablesFingerprintDriver"}
