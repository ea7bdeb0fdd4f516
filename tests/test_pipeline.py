"""The TFX pipeline end to end on the tiny dataset: artifacts, TFMA, blessing, push, cache, anomalies, Kubeflow."""

import dataclasses
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
import yaml

from components.anomalies_gate import DataAnomaliesError
from pipeline.config import PipelineConfig
from pipeline.evaluation import find_evaluation, write_report
from pipeline.runner import compile_kubeflow, last_run_states, latest_output, run_local

COMPONENTS = {
    "AudioFeatures", "ListeningDataGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "AnomaliesGate",
    "Transform", "UserTrainer", "AudioTrainer", "BaselineTrainer", "Evaluator", "ServingPusher",
}


def tiny_config(dataset, run_dir, **overrides) -> PipelineConfig:
    """Short training; thresholds every model passes unless a test says otherwise."""
    settings = dict(
        dataset_dir=str(dataset), run_dir=str(run_dir), user_epochs=3, audio_epochs=2, audio_steps_per_epoch=5,
        min_auc=0.0, min_auc_gain=-1.0, audio_beam_args=[],
    )
    return PipelineConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def first_run(tiny_dataset, tmp_path_factory):
    config = tiny_config(tiny_dataset, tmp_path_factory.mktemp("pipeline"))
    outputs = run_local(config)
    return config, outputs, last_run_states(config)


def _mlmd_artifact(config, folder: pathlib.Path):
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata

    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(str(config.metadata_path)))
    return next(a for a in store.get_artifacts() if pathlib.Path(a.uri) == folder)


def test_every_component_runs_and_every_artifact_loads(first_run):
    config, outputs, states = first_run
    assert set(states) == COMPONENTS and set(states.values()) == {"COMPLETE"}

    features = latest_output(config, "AudioFeatures", "features")
    quarantine = (latest_output(config, "AudioFeatures", "quarantine") / "quarantine.jsonl").read_text().splitlines()
    statuses = {json.loads(line)["status"] for line in quarantine}
    assert {"missing", "unreadable", "silent", "too_short"} <= statuses  # the generator's planted faults
    assert len(list(features.glob("log_mel-*"))) >= 1

    pairs = latest_output(config, "ListeningDataGen", "audio_pairs")
    assert {p.name for p in pairs.iterdir() if p.is_dir()} == {"Split-train", "Split-eval", "Split-test", "Split-user_queries"}
    report = json.loads((pairs / "ingestion_report.json").read_text())
    assert report["audio_pairs.test"] > 0 and report["malformed_rows"] >= 1  # the generator plants malformed rows
    recorded = _mlmd_artifact(config, pairs).custom_properties  # the same counts in MLMD
    assert recorded["malformed_rows"].int_value == report["malformed_rows"]
    assert recorded["audio_pairs.test"].int_value == report["audio_pairs.test"]

    assert (latest_output(config, "SchemaGen", "schema") / "schema.pbtxt").exists()
    transform_graph = latest_output(config, "Transform", "transform_graph")
    import tensorflow_transform as tft

    assert len(tft.TFTransformOutput(str(transform_graph)).vocabulary_by_name("track_id")) > 10

    user_model = latest_output(config, "UserTrainer", "model") / "Format-Serving"
    assert "embed_user" in tf.saved_model.load(str(user_model / "user_tower")).signatures
    audio_model = tf.saved_model.load(str(latest_output(config, "AudioTrainer", "model") / "Format-Serving"))
    assert {"embed_log_mel", "score_examples"} <= set(audio_model.signatures)

    evaluation_dir = latest_output(config, "Evaluator", "evaluation")
    result = tfma.load_eval_result(str(evaluation_dir), model_name="candidate")
    sliced = {key[0][0] if key else "Overall" for key, _ in result.slicing_metrics}
    assert {"Overall", "gender", "age_bucket", "country", "popularity_bucket", "genre"} <= sliced


def test_blessed_model_is_pushed_and_serves_embeddings(first_run):
    config, outputs, _ = first_run
    evaluation = find_evaluation(config.run_dir)
    assert evaluation.blessed is True and evaluation.validation_ok
    report = write_report(evaluation, pathlib.Path(config.run_dir) / "evaluation")
    assert (report / "auc_by_slice.png").stat().st_size > 0 and (report / "index.html").exists()

    base = pathlib.Path(outputs["serving"])
    assert (base / "models.config").exists()
    for name in ("audio_embedder", "user_embedder", "cold_start_recommender"):
        versions = [p for p in (base / name).iterdir() if p.name.isdigit()]
        assert len(versions) == 1, name
    audio = tf.saved_model.load(str(next((base / "audio_embedder").iterdir()))).signatures["serving_default"]
    waveform = np.sin(np.arange(22050 * 4) * 2 * np.pi * 440 / 22050).astype(np.float32)[None, :]
    embedding = audio(waveform=waveform, num_samples=tf.constant([waveform.shape[1]]), sample_rate=tf.constant([22050]))
    assert embedding["audio_embedding"].shape == (1, 40) and np.all(np.isfinite(embedding["audio_embedding"]))
    user = tf.saved_model.load(str(next((base / "user_embedder").iterdir()))).signatures["serving_default"]
    inputs = {  # a user with an empty history: demographics alone
        name: tf.fill([1] + spec.shape[1:].as_list(), "" if spec.dtype == tf.string else 30.0)
        for name, spec in user.structured_input_signature[1].items()
    }
    assert next(iter(user(**inputs).values())).shape == (1, 40)


def test_demo_command_reuses_the_cache_and_prints_the_evaluation(first_run, tmp_path):
    config, _, _ = first_run
    settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(settings))
    result = subprocess.run(
        [sys.executable, "-m", "musicrec.cli", "demo", "--config", str(tmp_path / "config.yaml"), "--size", "tiny"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "using the tiny dataset (seed 0) already in" in result.stderr  # not regenerated
    assert "12 reused from the cache" in result.stderr
    assert "| popularity |" in result.stdout and "Overall" in result.stdout and "BLESSED" in result.stdout
    summary = json.loads((pathlib.Path(config.run_dir) / "summary.json").read_text())
    assert 0.7 < summary["oracle_auc"] < 0.97 and 0.0 <= summary["evaluation"]["overall"]["auc"] <= 1.0
    shown = subprocess.run([sys.executable, "-m", "musicrec.cli", "show-eval", config.run_dir, "--out", str(tmp_path / "eval")],
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0 and "popularity_bucket" in shown.stdout and (tmp_path / "eval" / "index.html").exists()


def test_rerun_hits_the_cache_and_blessing_follows_the_thresholds(first_run):
    config, _, _ = first_run
    run_local(config)
    assert set(last_run_states(config).values()) == {"CACHED"}

    strict = dataclasses.replace(config, min_auc=0.99)
    run_local(strict)
    states = last_run_states(strict)
    assert states["Evaluator"] == "COMPLETE" and states["AudioTrainer"] == "CACHED"
    evaluation = find_evaluation(strict.run_dir)
    assert evaluation.overall()["auc"] < 0.99
    assert evaluation.blessed is False and not evaluation.validation_ok
    assert any("auc" in failure for failure in evaluation.failures)
    pushed = latest_output(strict, "ServingPusher", "pushed_model")
    assert not (pushed / "pushed.json").exists()

    # The change threshold against the DCUE baseline blocks blessing on its own.
    demanding = dataclasses.replace(config, min_auc_gain=0.5)
    run_local(demanding)
    evaluation = find_evaluation(demanding.run_dir)
    assert evaluation.blessed is False
    assert evaluation.failures and all("change vs baseline" in failure for failure in evaluation.failures)


def test_an_anomaly_against_the_pinned_schema_stops_the_run(first_run, tmp_path):
    config, _, _ = first_run
    schema = latest_output(config, "SchemaGen", "schema") / "schema.pbtxt"
    changed = tmp_path / "data"
    shutil.copytree(config.dataset_dir, changed)
    with open(changed / "interactions.csv", "a") as log:  # a new event type appears in the log
        log.write("".join(f"u{i:05d},t{i:05d},2024-06-01T00:00:00Z,share\n" for i in range(1, 40)))
    users = pd.read_csv(changed / "users.csv", dtype=str, keep_default_na=False)
    users.drop(columns=["country"]).to_csv(changed / "users.csv", index=False)  # and a column goes missing
    drifted = dataclasses.replace(config, dataset_dir=str(changed), schema_file=str(schema))
    with pytest.raises(Exception) as raised:
        run_local(drifted)
    error = raised.value
    while not isinstance(error, DataAnomaliesError) and error.__cause__ is not None:
        error = error.__cause__
    assert isinstance(error, DataAnomaliesError)
    assert "event" in str(error) and "share" in str(error)
    assert "country" in str(error)
    states = last_run_states(drifted)
    assert "Transform" not in states or states["Transform"] not in ("COMPLETE", "CACHED")


def test_latest_blessed_model_as_the_baseline(first_run):
    config, _, _ = first_run
    against_blessed = dataclasses.replace(config, baseline="latest_blessed")
    run_local(against_blessed)
    states = last_run_states(against_blessed)
    assert "BaselineTrainer" not in states and states["LatestBlessedModelResolver"] == "COMPLETE"
    evaluation = find_evaluation(against_blessed.run_dir)
    overall = evaluation.overall()
    # The resolver found the first run's blessed model, which is this (cached) model: no change.
    assert overall["baseline_auc"] == pytest.approx(overall["auc"])
    assert evaluation.blessed is True


def test_kubeflow_v2_compile_names_every_component_with_its_container(first_run, tmp_path):
    config, _, _ = first_run
    spec = json.loads(compile_kubeflow(dataclasses.replace(config, image="registry.example/musicrec:1"), tmp_path / "pipeline.json").read_text())
    pipeline_spec = spec.get("pipelineSpec", spec)
    tasks = pipeline_spec["root"]["dag"]["tasks"]
    assert set(tasks) == COMPONENTS
    executors = pipeline_spec["deploymentSpec"]["executors"]
    assert len(executors) == len(COMPONENTS)
    for executor in executors.values():
        container = executor["container"]
        assert container["image"] == "registry.example/musicrec:1"
        assert container["command"] and container["args"]
    assert any("components.audio_trainer.component.AudioTrainerExecutor" in " ".join(e["container"]["args"]) for e in executors.values())
