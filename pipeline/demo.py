"""The main job on the embedded default dataset (what `make demo` runs).

Today it is: generate the simulated service (once), validate it, extract the
log-mel features with the Beam component, and print a summary with the oracle
AUC that later model stages are measured against. The TFX pipeline stages
(user branch, audio branch, evaluation, push) extend this job as they land.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from typing import Sequence

from components.audio_features.transforms import extract_features
from musicrec.data.contract import FeedbackConfig
from musicrec.data.feedback import feedback_labels
from musicrec.data.loading import load_dataset
from musicrec.data.validation import validate_dataset
from musicrec.simulation.generator import generate_demo, is_generated
from musicrec.simulation.oracle import GroundTruth, oracle_auc


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    data_dir: str = "data/demo"
    work_dir: str = "runs/demo"
    size: str = "demo"
    seed: int = 0
    # Context duration of the audio branch: audio shorter than this is quarantined.
    context_seconds: float = 3.0
    beam_args: Sequence[str] = ("--direct_num_workers=2", "--direct_running_mode=multi_processing")


def run_demo(config: DemoConfig = DemoConfig(), feedback: FeedbackConfig = FeedbackConfig()) -> dict:
    data_dir, work_dir = pathlib.Path(config.data_dir), pathlib.Path(config.work_dir)
    if is_generated(data_dir, config.size, config.seed):
        logging.info("using the %s dataset (seed %d) already in %s", config.size, config.seed, data_dir)
    elif (data_dir / "interactions.csv").exists() and not (data_dir / "ground_truth").exists():
        logging.info("using the dataset in %s (not generated: no oracle)", data_dir)
    else:
        logging.info("generating the %s dataset (seed %d) in %s", config.size, config.seed, data_dir)
        generate_demo(data_dir, config.size, config.seed, overwrite=True)

    dataset = load_dataset(data_dir)
    # Audio is checked once, by the feature extraction below, which decodes
    # every file anyway and quarantines the unusable ones with the same statuses.
    report = validate_dataset(dataset, feedback, check_audio=False)
    report.write(work_dir / "validation")
    print(report.format(), flush=True)
    if not report.usable:
        raise SystemExit("the dataset cannot be used: " + "; ".join(report.fatal))

    tracks = [(t, str(dataset.audio_file(p))) for t, p in zip(dataset.tracks["track_id"], dataset.tracks["audio_path"])]
    features = extract_features(
        tracks, work_dir / "features", min_seconds=config.context_seconds, beam_args=list(config.beam_args)
    )
    print(features.format(), flush=True)
    if features.extracted == 0:
        raise SystemExit("no track has usable audio; see " + str(work_dir / "features"))
    usable = set(dataset.tracks["track_id"]) - {q["track_id"] for q in features.quarantined}

    summary = {
        "dataset": str(data_dir),
        "validation": report.summary(),
        "features": {"dir": features.output_dir, "counts": features.counts},
    }
    resolved = feedback_labels(dataset.interactions, feedback)
    labels = resolved.labels
    labels = labels[labels["track_id"].isin(usable) & labels["user_id"].isin(resolved.eligible_users(feedback))]
    if (data_dir / "ground_truth").is_dir():
        summary["oracle_auc_all_feedback"] = oracle_auc(GroundTruth.load(data_dir), labels)
        print(
            f"Oracle AUC (best audio-only liked/disliked AUC on all {len(labels)} feedback pairs): "
            f"{summary['oracle_auc_all_feedback']:.3f}",
            flush=True,
        )
    (work_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"Summary written to {work_dir / 'summary.json'}", flush=True)
    return summary

