"""The TFX pipeline end to end on the tiny dataset: artifacts, TFMA, blessing, push, cache, the run summary,
interrupted runs, anomalies, Kubeflow."""

import collections
import dataclasses
import html
import json
import os
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

from musicrec.components.anomalies_gate import DataAnomaliesError
from conftest import PLANTED_AUDIO_STATUS, PLANTED_ROW_FAULTS, PLANTED_UNKNOWN_IDS, PLANTED_VALUE_FAULTS, tiny_config
from musicrec.audio.decode import AUDIO_STATUSES
from musicrec.data import contract
from musicrec.pipeline.config import PipelineConfig
from musicrec.names import MODEL_INFO_FILE, REFINED_USERS_FILE, USER_EMBEDDINGS_FILE
from musicrec.pipeline.demo import DEMO_CONFIG, has_oracle, summarize
from musicrec.pipeline.evaluation import find_evaluation, run_evaluation, write_report
from musicrec.pipeline.runner import Served, compile_kubeflow, last_run_states, make_served, run_local
from musicrec.pipeline.runs import abandon_interrupted, find_run, runs_newest_first
from musicrec.components.practitioner_baselines.component import read_baselines
from musicrec.data.adapters import load_with_adapter
from musicrec.data.audio_pairs import read_pair_examples
from musicrec.trainer.pair_metrics import pair_auc
from musicrec.serving import graphs
from musicrec.serving.scann_index import recommender_table
from musicrec.audio.front_ends import front_end
from musicrec.trainer.audio_branch import VARIANT_NAMES, AudioBranchConfig
from musicrec.trainer.audio_export import audio_model_front_end
from musicrec.trainer.log_mel_shards import feature_files, open_log_mels
from musicrec.trainer.practitioner_baselines import one_hot, practitioner_baselines, stored_patch_means
from musicrec.trainer.user_export import read_embeddings

COMPONENTS = {
    "AudioFeatures", "ListeningDataGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "AnomaliesGate",
    "Transform", "UserTrainer", "AudioTrainer", "BaselineTrainer", "Evaluator", "ServingPusher", "PractitionerBaselines",
}


@pytest.fixture(scope="module")
def first_run(faulty_tiny_dataset, tmp_path_factory):
    """The module's shared run, on the tiny dataset with one planted fault of every kind (conftest)."""
    config = tiny_config(faulty_tiny_dataset, tmp_path_factory.mktemp("pipeline"))
    outputs = run_local(config)
    return config, outputs, last_run_states(config)


def run_output(config, outputs, component_id: str, key: str) -> pathlib.Path:
    """The output folder a component's execution in the run `outputs` describes wrote or reused."""
    return find_run(config.run_dir, outputs["run_id"]).output_path(component_id, key)


def test_every_component_runs_and_every_artifact_loads(first_run):
    config, outputs, states = first_run
    assert set(states) == COMPONENTS and set(states.values()) == {"COMPLETE"}

    features = run_output(config, outputs, "AudioFeatures", "features")
    quarantine = (run_output(config, outputs, "AudioFeatures", "quarantine") / "quarantine.jsonl").read_text().splitlines()
    statuses = {json.loads(line)["status"] for line in quarantine}
    assert {"missing", "unreadable", "silent", "too_short"} <= statuses  # the generator's planted faults
    assert len(list(features.glob("log_mel-*"))) >= 1
    # The frames the run's variant reads (the demo's: musicnn's patch features) beside the log-mels.
    front = front_end(AudioBranchConfig.variant(config.variant).front_end)
    assert len(list(features.glob(f"{front.shard_prefix}-*"))) >= 1

    pairs = run_output(config, outputs, "ListeningDataGen", "audio_pairs")
    assert {p.name for p in pairs.iterdir() if p.is_dir()} == {"Split-train", "Split-eval", "Split-test", "Split-user_queries"}
    report = json.loads((pairs / "ingestion_report.json").read_text())
    assert report["audio_pairs.test"] > 0 and report["malformed_rows"] >= 1  # the generator plants malformed rows
    recorded = find_run(config.run_dir, outputs["run_id"]).output("ListeningDataGen", "audio_pairs").custom_properties
    assert recorded["malformed_rows"].int_value == report["malformed_rows"]  # the same counts in MLMD
    assert recorded["audio_pairs.test"].int_value == report["audio_pairs.test"]

    assert (run_output(config, outputs, "SchemaGen", "schema") / "schema.pbtxt").exists()
    transform_graph = run_output(config, outputs, "Transform", "transform_graph")
    import tensorflow_transform as tft

    assert len(tft.TFTransformOutput(str(transform_graph)).vocabulary_by_name("track_id")) > 10

    user_model = run_output(config, outputs, "UserTrainer", "model") / "Format-Serving"
    assert "embed_user" in tf.saved_model.load(str(user_model / "user_tower")).signatures
    audio_model = tf.saved_model.load(str(run_output(config, outputs, "AudioTrainer", "model") / "Format-Serving"))
    assert {"embed_log_mel", "score_examples"} <= set(audio_model.signatures)
    assert audio_model_front_end(run_output(config, outputs, "AudioTrainer", "model") / "Format-Serving") == front.name

    evaluation_dir = run_output(config, outputs, "Evaluator", "evaluation")
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

    # The recommender scores as the audio model did: its refined users take their refined vectors.
    audio_dir = run_output(config, outputs, "AudioTrainer", "model") / "Format-Serving"
    chosen = json.loads((audio_dir / MODEL_INFO_FILE).read_text())["training"]["user_refinement"]
    assert chosen is not None  # the demo's variant refines
    user_ids, table = recommender_table(base)
    ues = read_embeddings(run_output(config, outputs, "UserTrainer", "model") / "Format-Serving" / USER_EMBEDDINGS_FILE, "user_id")
    expected = dict(zip(ues["user_id"], graphs.normalised(np.stack(ues["embedding"].to_numpy()))))
    if chosen["chosen"] != "none":
        refined = read_embeddings(audio_dir / REFINED_USERS_FILE, "user_id")
        assert len(refined) == chosen["refined_users"] > 0
        expected.update(zip(refined["user_id"], graphs.normalised(np.stack(refined["embedding"].to_numpy()))))
    else:
        assert not (audio_dir / REFINED_USERS_FILE).exists()
    np.testing.assert_allclose(table, np.stack([expected[u] for u in user_ids]), atol=1e-5)


def test_practitioner_baselines_beside_the_audio_models_on_the_same_test_pairs(first_run):
    """The run's PractitionerBaselines figures are what practitioner_baselines computes on the run's own
    train and test pairs (musicnn's from the patch features AudioFeatures wrote for the variant); the
    evaluation report puts them beside the audio models scored on the same pairs."""
    config, outputs, _ = first_run
    run = find_run(config.run_dir, outputs["run_id"])
    written, pairs = read_baselines(run.output_path("PractitionerBaselines", "baselines"))
    audio_pairs = run.output_path("ListeningDataGen", "audio_pairs")
    train, test = (read_pair_examples([str(audio_pairs / f"Split-{split}" / "*")]) for split in ("train", "test"))
    assert written["test_pairs"] == len(pairs) == len(test) > 0
    pd.testing.assert_frame_equal(pairs[["user_id", "track_id", "label"]], test[["user_id", "track_id", "label"]])

    tracks = load_with_adapter(config.dataset_dir, config.dataset_adapter).tracks
    front = AudioBranchConfig.variant(config.variant).front_end  # the demo's: musicnn's MSD + MTT patch features
    patches = open_log_mels([feature_files(run.output_path("AudioFeatures", "features"), front)], 4096.0, front)
    expected = practitioner_baselines(train, test, {
        "musicnn": ("musicnn", stored_patch_means(patches)),
        "metadata_genre": ("genre one-hot", one_hot(tracks, "genre"))})
    recorded = run.output("PractitionerBaselines", "baselines").custom_properties
    rows = {row["name"]: row for row in written["baselines"]}
    assert list(rows) == [result.name for result in expected] == ["popularity", "musicnn", "metadata_genre"]
    for result in expected:
        row = rows[result.name]
        for key in ("pooled", "per_user"):
            assert 0.0 <= row[key] <= 1.0
            assert row[key] == pytest.approx(getattr(result.auc, key))
            assert recorded[f"{result.name}.{key}_auc"].double_value == pytest.approx(row[key], abs=1e-6)  # MLMD: 6 digits
        assert pair_auc(pairs, pairs[f"score.{result.name}"]).pooled == pytest.approx(row["pooled"])
    assert recorded["test_pairs"].int_value == len(test)

    evaluation = run_evaluation(run)  # what the summary and show-eval print (test_demo_command... runs both)
    shown = {row["name"]: row for row in evaluation.baselines.rows}
    assert list(shown) == ["AudioTrainer", "BaselineTrainer", "popularity", "musicnn", "metadata_genre"]
    assert all(row["pairs"] == len(test) for row in shown.values())
    # The audio models' pooled AUC on these pairs is the Evaluator's (TFMA) on its test split.
    overall = evaluation.overall()
    assert shown["AudioTrainer"]["pooled"] == pytest.approx(overall["auc"], abs=0.005)
    assert shown["BaselineTrainer"]["pooled"] == pytest.approx(overall["baseline_auc"], abs=0.005)
    printed = evaluation.table()
    for row in shown.values():
        assert f"| {row['description']} | {row['pooled']:.3f} | {row['per_user']:.3f} |" in printed
    assert "Not run (not in practitioner_baselines)" not in printed
    with pytest.raises(ValueError, match=r"unknown practitioner baseline\(s\) \[.musicnnn.\]"):
        dataclasses.replace(config, practitioner_baselines=["musicnnn"])


def _validate_data(dataset, report_dir) -> dict:
    """`musicrec validate-data` as a user runs it; its written summary."""
    result = subprocess.run([sys.executable, "-m", "musicrec.cli", "validate-data", str(dataset), "--report-dir", str(report_dir)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((report_dir / "validation_summary.json").read_text())


def test_every_planted_fault_is_counted_alike_by_validate_data_and_the_pipeline(first_run, tiny_dataset, tmp_path, capsys):
    """Fault injection end to end: validate-data counts each planted fault on top of the pristine dataset's
    own, and the run's record (AudioFeatures quarantine, ListeningDataGen counts) and printed summary agree."""
    config, outputs, _ = first_run
    # The planted list covers every kind the contract names (a new kind must be planted here too);
    # "malformed" is only what adapters that name no kind report.
    assert set(PLANTED_ROW_FAULTS) | {"duplicate", "malformed"} == set(contract.ROW_FAULTS)
    assert set(PLANTED_VALUE_FAULTS) == set(contract.VALUE_FAULTS) | set(contract.NORMALISED_VALUES)
    assert set(PLANTED_UNKNOWN_IDS) == set(contract.UNKNOWN_IDS)
    pristine, faulty = _validate_data(tiny_dataset, tmp_path / "pristine"), _validate_data(config.dataset_dir, tmp_path / "faulty")
    assert all(faulty["audio"][status] >= 1 for status in AUDIO_STATUSES)  # every quarantine reason occurs
    planted_rows = collections.Counter(list(PLANTED_ROW_FAULTS) + ["duplicate"])
    assert faulty["malformed_rows_by_kind"] == dict(collections.Counter(pristine["malformed_rows_by_kind"]) + planted_rows)
    assert faulty["changed_values_by_kind"] == dict(collections.Counter(pristine["changed_values_by_kind"])
                                                    + collections.Counter(PLANTED_VALUE_FAULTS))
    for kind in PLANTED_UNKNOWN_IDS:
        assert faulty["unknown_ids"][f"{kind}_rows"] == pristine["unknown_ids"][f"{kind}_rows"] + 1
    assert faulty["audio"][PLANTED_AUDIO_STATUS] == pristine["audio"][PLANTED_AUDIO_STATUS] + 1
    assert faulty["audio"]["ok"] == pristine["audio"]["ok"] - 1
    read = faulty["rows"]["interactions.csv"]
    assert read["read"] == read["loaded"] + read["malformed"] + read["unknown_user"] + read["unknown_track"]

    summary = summarize(config, outputs)
    printed = capsys.readouterr().out
    run = find_run(config.run_dir, outputs["run_id"])
    quarantine = run.output("AudioFeatures", "quarantine").custom_properties
    for status in AUDIO_STATUSES:
        assert quarantine[status].int_value == faulty["audio"][status] == summary["data"]["audio"][status], status
        assert f"{status} {faulty['audio'][status]}" in printed
    assert quarantine["extracted"].int_value == faulty["audio"]["ok"]
    assert f"{faulty['audio']['ok']} tracks with features" in printed
    recorded = {key: value.int_value for key, value in run.output("ListeningDataGen", "audio_pairs").custom_properties.items()}
    for kind, count in faulty["malformed_rows_by_kind"].items():
        assert recorded[f"malformed_rows.{kind}"] == count and f"malformed_rows.{kind} {count}" in printed
    for kind, count in faulty["changed_values_by_kind"].items():
        assert recorded[f"changed_values.{kind}"] == count and f"changed_values.{kind} {count}" in printed
    assert recorded["unknown_user_rows"] == faulty["unknown_ids"]["unknown_user_rows"]
    assert recorded["unknown_track_rows"] == faulty["unknown_ids"]["unknown_track_rows"]
    assert "audio_pairs.test" not in summary["data"]["ingestion_exclusions"]  # a size of what was written
    assert 0.5 < summary["oracle_auc"] < 1.0  # a dataset generated here keeps its oracle figures


def test_no_oracle_figures_for_a_dataset_with_a_ground_truth_folder_of_its_own(first_run, tmp_path, capsys):
    config, outputs, _ = first_run
    foreign = tmp_path / "service"
    (foreign / "ground_truth").mkdir(parents=True)  # the service's own labels, another shape
    (foreign / "ground_truth" / "labels.csv").write_text("user_id,track_id,label\nu1,t1,1\n")
    summary = summarize(dataclasses.replace(config, dataset_dir=str(foreign)), outputs)
    assert "oracle_auc" not in summary and "oracle" not in capsys.readouterr().out
    assert has_oracle(config.dataset_dir) and not has_oracle(foreign)
    (foreign / "ground_truth" / "params.json").write_text("not json")
    assert not has_oracle(foreign)
    manifest = json.loads((pathlib.Path(config.dataset_dir) / "ground_truth" / "params.json").read_text())
    (foreign / "ground_truth" / "params.json").write_text(json.dumps({**manifest, "generator_version": -1}))
    assert not has_oracle(foreign)  # another generator version's ground truth has another shape


def test_an_interrupted_command_prints_one_line(monkeypatch, tmp_path, capsys):
    import musicrec.pipeline.runner
    from musicrec import cli

    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(musicrec.pipeline.runner, "run_local", interrupted)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run")}))
    assert cli.main(["run", "--config", str(tmp_path / "config.yaml")]) == 130
    error = capsys.readouterr().err.strip()
    assert error.startswith("Interrupted") and len(error.splitlines()) == 1 and "Traceback" not in error


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
    assert "13 reused from the cache" in result.stderr
    assert "| popularity |" in result.stdout and "Overall" in result.stdout and "BLESSED" in result.stdout
    assert f"| {VARIANT_NAMES[config.variant]} (AudioTrainer) |" in result.stdout and "| genre one-hot + per-user LR (no audio) |" in result.stdout
    summary = json.loads((pathlib.Path(config.run_dir) / "summary.json").read_text())
    assert 0.7 < summary["oracle_auc"] < 0.97 and 0.0 <= summary["evaluation"]["overall"]["auc"] <= 1.0
    shown = subprocess.run([sys.executable, "-m", "musicrec.cli", "show-eval", config.run_dir, "--out", str(tmp_path / "eval")],
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0 and "popularity_bucket" in shown.stdout and (tmp_path / "eval" / "index.html").exists()
    for row in summary["baselines"]:  # the summary and show-eval print the baseline rows, and its page shows them
        figures = f"| {row['pooled']:.3f} | {row['per_user']:.3f} |"
        assert f"| {row['description']} {figures}" in result.stdout and f"| {row['description']} {figures}" in shown.stdout
        assert html.escape(f"| {row['description']} {figures}") in (tmp_path / "eval" / "index.html").read_text()
    assert len(pd.read_csv(tmp_path / "eval" / "baselines.csv")) == len(summary["baselines"]) == 5  # two audio models, three baselines


def test_rerun_hits_the_cache_and_blessing_follows_the_thresholds(first_run):
    config, _, _ = first_run
    run_local(config)
    assert set(last_run_states(config).values()) == {"CACHED"}

    strict = dataclasses.replace(config, min_auc=0.99)
    strict_outputs = run_local(strict)
    states = last_run_states(strict)
    assert states["Evaluator"] == "COMPLETE" and states["AudioTrainer"] == "CACHED"
    evaluation = find_evaluation(strict.run_dir)
    assert evaluation.overall()["auc"] < 0.99
    assert evaluation.blessed is False and not evaluation.validation_ok
    assert any("auc" in failure for failure in evaluation.failures)
    pushed = run_output(strict, strict_outputs, "ServingPusher", "pushed_model")
    assert not (pushed / "pushed.json").exists()

    # The change threshold against the DCUE baseline blocks blessing on its own.
    demanding = dataclasses.replace(config, min_auc_gain=0.5)
    run_local(demanding)
    evaluation = find_evaluation(demanding.run_dir)
    assert evaluation.blessed is False
    assert evaluation.failures and all("change vs baseline" in failure for failure in evaluation.failures)


def _leave_an_interrupted_execution(config, component: str):
    """What SIGINT/SIGTERM in the middle of a component leaves: the execution TFX's launcher
    registered RUNNING (the same call, in a run of its own) and output folders half written."""
    from tfx.orchestration import metadata
    from tfx.orchestration.portable import execution_publish_utils, outputs_utils
    from tfx.orchestration.portable.mlmd import context_lib

    # A stateful folder of an earlier execution (a failed one's, kept by TFX) is not the interrupted one's.
    earlier = pathlib.Path(config.pipeline_root) / component / ".system" / "stateful_working_dir" / "earlier-execution"
    earlier.mkdir(parents=True)
    made = earlier.stat().st_mtime - 3600  # an hour before the interrupted execution started
    os.utime(earlier, (made, made))

    with metadata.Metadata(metadata.sqlite_metadata_connection_config(str(config.metadata_path))) as m:
        previous = find_run(config.run_dir).execution(component)
        kept_types = {m.store.get_context_type(name).id for name in ("pipeline", "node")}
        contexts = [c for c in m.store.get_contexts_by_execution(previous.id) if c.type_id in kept_types]
        run = context_lib.register_context_if_not_exists(m, "pipeline_run", "interrupted-run")
        execution_type = m.store.get_execution_types_by_id([previous.type_id])[0]
        execution = execution_publish_utils.register_execution(m, execution_type, contexts + [run])
    node_dir = pathlib.Path(config.pipeline_root) / component
    partial = [node_dir / key / str(execution.id) for key in ("evaluation", "blessing")]
    partial.append(node_dir / ".system" / "executor_execution" / str(execution.id))
    for folder in partial:
        folder.mkdir(parents=True)
        (folder / "part-00000").write_text("half written")
    # TFX 1.16's launcher names the stateful working folder by a fresh uuid it records nowhere.
    stateful = pathlib.Path(outputs_utils.get_stateful_working_directory(str(node_dir), execution))
    (stateful / "part-00000").write_text("half written")
    return execution.id, partial + [stateful]


def test_the_next_run_marks_an_interrupted_execution_and_removes_its_partial_folders(first_run, capsys):
    config, _, _ = first_run
    execution_id, partial = _leave_an_interrupted_execution(config, "Evaluator")
    outputs = run_local(config)
    assert set(last_run_states(config).values()) == {"CACHED"}  # the run itself is unaffected
    store = find_run(config.run_dir, outputs["run_id"]).store
    execution = store.get_executions_by_id([execution_id])[0]
    assert execution.last_known_state == execution.CANCELED and "interrupted" in execution.custom_properties["abandoned"].string_value
    assert not any(folder.exists() for folder in partial)
    assert (pathlib.Path(config.pipeline_root) / "Evaluator" / ".system" / "stateful_working_dir" / "earlier-execution").is_dir()
    assert outputs["interrupted"] == [{"component": "Evaluator", "execution_id": execution_id, "run_id": "interrupted-run",
                                       "removed": sorted(str(folder) for folder in partial)}]
    summarize(config, outputs)
    printed = capsys.readouterr().out
    assert f"Evaluator (execution {execution_id}) of interrupted run interrupted-run: marked CANCELED" in printed
    assert abandon_interrupted(config.run_dir, config.pipeline_root) == []  # marked once


def test_an_anomaly_against_the_pinned_schema_stops_the_run(first_run, tmp_path):
    config, outputs, _ = first_run
    schema = run_output(config, outputs, "SchemaGen", "schema") / "schema.pbtxt"
    changed = tmp_path / "data"
    shutil.copytree(config.dataset_dir, changed)
    users = pd.read_csv(changed / "users.csv", dtype=str, keep_default_na=False)
    # Drift the contract accepts but the pinned schema does not: a new gender value appears
    # (the contract takes any text there), and a column goes missing.
    users.loc[:19, "gender"] = "undisclosed"
    users.drop(columns=["country"]).to_csv(changed / "users.csv", index=False)
    drifted = dataclasses.replace(config, dataset_dir=str(changed), schema_file=str(schema))
    with pytest.raises(Exception) as raised:
        run_local(drifted)
    error = raised.value
    while not isinstance(error, DataAnomaliesError) and error.__cause__ is not None:
        error = error.__cause__
    assert isinstance(error, DataAnomaliesError)
    assert "gender" in str(error) and "undisclosed" in str(error)
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


def _files(folder) -> dict:
    """Every file under a local folder (its path inside the folder -> bytes), warm-up assets aside."""
    folder = pathlib.Path(folder)  # a run's output paths are storage paths, which glob one level only
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file() and "assets.extra" not in p.parts}


def test_a_cached_rerun_after_another_configuration_reports_and_serves_its_own_models(first_run, capsys):
    """X (the first run), then Y (another user branch), then X again from the cache: the summary,
    show-eval and the served version are X's, not those of Y's newer folders."""
    config, first, _ = first_run
    other = run_local(dataclasses.replace(config, user_hidden=[16]))
    again = run_local(config)
    assert set(last_run_states(config).values()) == {"CACHED"}
    capsys.readouterr()
    summary = summarize(config, again)
    printed = capsys.readouterr().out
    report = "user_branch_report.md"
    own, others = (run_output(config, outputs, "UserTrainer", "model_run") / report for outputs in (first, other))
    assert own.read_text() != others.read_text()
    assert own.read_text() in printed and others.read_text() not in printed
    evaluation = run_output(config, first, "Evaluator", "evaluation")
    assert evaluation != run_output(config, other, "Evaluator", "evaluation")
    assert summary["evaluation"]["path"] == str(evaluation) and find_evaluation(config.run_dir).path == evaluation

    # Y's push was the newest version: X's cached push is pushed again as a newer one.
    base = pathlib.Path(config.serving_path)
    served = again["served"]
    newest = max(int(p.name) for p in (base / "user_embedder").iterdir() if p.name.isdigit())
    assert served["repushed_from"] == 1 and served["version"] == newest
    assert f"version {served['version']}" in printed
    newest_user_tower = base / "user_embedder" / str(served["version"])
    assert _files(newest_user_tower) == _files(run_output(config, first, "UserTrainer", "model") / "Format-Serving" / "user_tower")
    pusher = find_run(config.run_dir, again["run_id"]).execution("ServingPusher")
    assert pusher.custom_properties["served_version"].int_value == served["version"]
    # Recorded, so the same model is not pushed yet again while it is the newest.
    assert make_served(find_run(config.run_dir, again["run_id"]), base) == Served(pushed=True, version=served["version"])


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
    assert any("musicrec.components.audio_trainer.component.AudioTrainerExecutor" in " ".join(e["container"]["args"]) for e in executors.values())


def test_genre_eval_finds_the_audio_encoder_of_the_newest_run_that_trained_one(first_run):
    """`genre-eval --model RUN_DIR` takes the AudioTrainer model from MLMD, not the highest-numbered folder."""
    from musicrec.pipeline.audio_encoder_features import find_audio_encoder

    config, _, _ = first_run
    newest = next(r for r in runs_newest_first(config.run_dir) if r.succeeded("AudioTrainer"))
    decoy = pathlib.Path(config.pipeline_root) / "AudioTrainer" / "model" / "99999" / "Format-Serving"
    shutil.copytree(newest.output_path("AudioTrainer", "model") / "Format-Serving", decoy)  # no execution wrote it
    try:
        assert find_audio_encoder(config.run_dir) == newest.output_path("AudioTrainer", "model") / "Format-Serving"
    finally:
        shutil.rmtree(decoy.parent)
