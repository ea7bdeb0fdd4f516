"""The main job on the embedded default dataset (what `make demo` runs).

Generates the simulated service once (or uses the dataset already there),
runs the TFX pipeline on it locally, and prints the evaluation: the user
branch's hit rates beside its baselines, the TFMA table of the audio branch
per slice beside the DCUE-1vs1 baseline, the audio models beside the
practitioner baselines (popularity, musicnn + per-user LR, metadata
one-hot) on the same test pairs, pooled and per user, the blessing decision, the oracle
AUC on the same test pairs (generated datasets only), the audio quarantine
and ingestion exclusion counts, the served version, and where everything
was written. All of it is the run's own: followed through MLMD from the
run's executions, so a cached rerun reports what it reused, not the newest
folder another configuration wrote.
"""

from __future__ import annotations

import json
import logging
import pathlib
import re
from typing import Dict, Optional

from musicrec import storage
from musicrec.audio.decode import AUDIO_STATUSES
from musicrec.data.audio_pairs import read_pair_examples
from musicrec.names import TEST, split_folder
from musicrec.simulation.generator import GENERATOR_VERSION, generate_demo, is_generated
from musicrec.simulation.oracle import GROUND_TRUTH_DIR, GroundTruth, oracle_auc, preference_auc
from musicrec.pipeline.config import PipelineConfig
from musicrec.pipeline.evaluation import run_evaluation, write_report
from musicrec.pipeline.runner import Served, run_local
from musicrec.pipeline.runs import AbandonedExecution, PipelineRun, find_run

DEMO_CONFIG = pathlib.Path(__file__).parent / "configs" / "demo.yaml"
MANIFEST_FILE = "params.json"  # what generate-demo writes into ground_truth/
AUDIO_FEATURES, INGESTION = "AudioFeatures", "ListeningDataGen"
# ListeningDataGen's counts of rows and users left out, and of values it changed (the loader's
# reports by fault kind); the others are sizes of what it wrote.
EXCLUSION = re.compile(r"_rows\b|excluded|changed_values")


def ensure_dataset(data_dir, size: str = "demo", seed: int = 0) -> None:
    data_dir = pathlib.Path(data_dir)
    if is_generated(data_dir, size, seed):
        logging.info("using the %s dataset (seed %d) already in %s", size, seed, data_dir)
    elif (data_dir / "interactions.csv").exists() and generator_manifest(data_dir) is None:
        logging.info("using the dataset in %s (not generated: no oracle)", data_dir)
    else:
        logging.info("generating the %s dataset (seed %d) in %s", size, seed, data_dir)
        generate_demo(data_dir, size, seed, overwrite=True)


def generator_manifest(dataset_dir) -> Optional[dict]:
    """The manifest `musicrec generate-demo` writes (`ground_truth/params.json`, with its
    generator version), or None for a dataset it did not make, whatever folders it has."""
    try:
        manifest = json.loads((storage.path(dataset_dir) / GROUND_TRUTH_DIR / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and "generator_version" in manifest else None


def has_oracle(dataset_dir) -> bool:
    """Only datasets of this generator version carry a ground truth the oracle can read."""
    manifest = generator_manifest(dataset_dir)
    return manifest is not None and manifest["generator_version"] == GENERATOR_VERSION


def run_demo(config: Optional[PipelineConfig] = None, size: str = "demo", seed: int = 0) -> dict:
    config = config or PipelineConfig.from_yaml(DEMO_CONFIG)
    ensure_dataset(config.dataset_dir, size, seed)
    outputs = run_local(config)
    return summarize(config, outputs)


def summarize(config: PipelineConfig, outputs: dict) -> dict:
    """Prints and returns the results of the run `run_local` returned `outputs` for (see the
    module docstring); every figure comes from that run's own executions in MLMD, cached or not."""
    run = find_run(config.run_dir, outputs["run_id"])
    for record in outputs["interrupted"]:
        print("Cleaned up after an interrupted run: " + AbandonedExecution(**record).describe())
    data = data_counts(run)
    print(format_data_counts(run, data), flush=True)
    user_report = run.output_path("UserTrainer", "model_run") / "user_branch_report.md"
    print("User branch (hit rate / recall at K, time-based hold-out):\n" + user_report.read_text(), flush=True)
    evaluation = run_evaluation(run)
    report_dir = write_report(evaluation, pathlib.Path(config.run_dir) / "evaluation")
    print(f"Audio branch ({config.variant}, {config.context_seconds:g} s) on the test pairs, TFMA:\n{evaluation.table()}")
    print(evaluation.decision(), flush=True)
    summary = {"run_id": run.run_id, "outputs": outputs, "data": data,
               "evaluation": {"path": str(evaluation.path), "blessed": evaluation.blessed,
                              "overall": evaluation.overall(), "report": str(report_dir)},
               "baselines": evaluation.baselines.rows}
    if has_oracle(config.dataset_dir):
        test = read_pair_examples([str(run.output_path("ListeningDataGen", "audio_pairs") / split_folder(TEST) / "*")])
        truth = GroundTruth.load(config.dataset_dir)
        summary["oracle_auc"], summary["preference_ceiling_auc"] = oracle_auc(truth, test), preference_auc(truth, test)
        print(f"On the same test pairs: model AUC {evaluation.overall()['auc']:.3f}, oracle AUC (audio-derivable "
              f"preference) {summary['oracle_auc']:.3f}, ceiling (whole preference) {summary['preference_ceiling_auc']:.3f}")
    print(Served(**outputs["served"]).describe())
    (pathlib.Path(config.run_dir) / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"Artifacts: {outputs['pipeline_root']}\nMetadata: {outputs['metadata']}\nServing models: {outputs['serving']}\n"
          f"Evaluation report: {report_dir / 'index.html'} (or `musicrec show-eval {config.run_dir}`)", flush=True)
    return summary


def data_counts(run: PipelineRun) -> Dict[str, Dict[str, int]]:
    """The run's audio quarantine counts (AudioFeatures) and ingestion exclusion counts
    (ListeningDataGen), from the custom properties of the artifacts the run used."""
    audio = run.output(AUDIO_FEATURES, "quarantine").custom_properties
    ingestion = run.output(INGESTION, "audio_pairs").custom_properties
    return {
        "audio": {key: audio[key].int_value for key in ("extracted",) + AUDIO_STATUSES if key in audio},
        "ingestion_exclusions": {key: value.int_value for key, value in sorted(ingestion.items()) if EXCLUSION.search(key)},
    }


def format_data_counts(run: PipelineRun, data: Dict[str, Dict[str, int]]) -> str:
    states = run.states()
    cached = sum(state == "CACHED" for state in states.values())
    audio = data["audio"]
    quarantined = ", ".join(f"{status} {audio[status]}" for status in AUDIO_STATUSES if status in audio)
    exclusions = ", ".join(f"{key} {value}" for key, value in data["ingestion_exclusions"].items()) or "none"
    return (f"Run {run.run_id}: {len(states) - cached} components ran, {cached} reused from the cache\n"
            f"Audio: {audio.get('extracted', 0)} tracks with features; quarantined: {quarantined} "
            f"(listed in {run.output_path(AUDIO_FEATURES, 'quarantine')})\n"
            f"Ingestion exclusions: {exclusions}")
