"""The main job on the embedded default dataset (what `make demo` runs).

Generates the simulated service once (or uses the dataset already there),
runs the TFX pipeline on it locally, and prints the evaluation: the user
branch's hit rates beside its baselines, the TFMA table of the audio branch
per slice beside the DCUE-1vs1 baseline, the blessing decision, the oracle
AUC on the same test pairs, and where everything was written.
"""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Optional

from musicrec.data.audio_pairs import read_pair_examples
from musicrec.simulation.generator import generate_demo, is_generated
from musicrec.simulation.oracle import GroundTruth, oracle_auc, preference_auc
from pipeline.config import PipelineConfig
from pipeline.evaluation import find_evaluation, write_report
from pipeline.runner import latest_output, run_local

DEMO_CONFIG = pathlib.Path(__file__).parent / "configs" / "demo.yaml"


def ensure_dataset(data_dir, size: str = "demo", seed: int = 0) -> None:
    data_dir = pathlib.Path(data_dir)
    if is_generated(data_dir, size, seed):
        logging.info("using the %s dataset (seed %d) already in %s", size, seed, data_dir)
    elif (data_dir / "interactions.csv").exists() and not (data_dir / "ground_truth").exists():
        logging.info("using the dataset in %s (not generated: no oracle)", data_dir)
    else:
        logging.info("generating the %s dataset (seed %d) in %s", size, seed, data_dir)
        generate_demo(data_dir, size, seed, overwrite=True)


def run_demo(config: Optional[PipelineConfig] = None, size: str = "demo", seed: int = 0) -> dict:
    config = config or PipelineConfig.from_yaml(DEMO_CONFIG)
    ensure_dataset(config.dataset_dir, size, seed)
    outputs = run_local(config)
    return summarize(config, outputs)


def summarize(config: PipelineConfig, outputs: dict) -> dict:
    """Prints and returns the run's results (see the module docstring)."""
    user_report = latest_output(config, "UserTrainer", "model_run") / "user_branch_report.md"
    print("User branch (hit rate / recall at K, time-based hold-out):\n" + user_report.read_text(), flush=True)
    evaluation = find_evaluation(config.run_dir)
    report_dir = write_report(evaluation, pathlib.Path(config.run_dir) / "evaluation")
    print(f"Audio branch ({config.variant}, {config.context_seconds:g} s) on the test pairs, TFMA:\n{evaluation.table()}")
    print(evaluation.decision(), flush=True)
    summary = {"outputs": outputs, "evaluation": {"path": str(evaluation.path), "blessed": evaluation.blessed,
                                                  "overall": evaluation.overall(), "report": str(report_dir)}}
    if (pathlib.Path(config.dataset_dir) / "ground_truth").is_dir():
        test = read_pair_examples([str(latest_output(config, "ListeningDataGen", "audio_pairs") / "Split-test" / "*")])
        truth = GroundTruth.load(config.dataset_dir)
        summary["oracle_auc"], summary["preference_ceiling_auc"] = oracle_auc(truth, test), preference_auc(truth, test)
        print(f"On the same test pairs: model AUC {evaluation.overall()['auc']:.3f}, oracle AUC (audio-derivable "
              f"preference) {summary['oracle_auc']:.3f}, ceiling (whole preference) {summary['preference_ceiling_auc']:.3f}")
    (pathlib.Path(config.run_dir) / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"Artifacts: {outputs['pipeline_root']}\nMetadata: {outputs['metadata']}\nServing models: {outputs['serving']}\n"
          f"Evaluation report: {report_dir / 'index.html'} (or `musicrec show-eval {config.run_dir}`)", flush=True)
    return summary
