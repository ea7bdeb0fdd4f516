"""The main job on the embedded default dataset (what `make demo` runs).

Today it is: generate the simulated service (once), validate it, extract the
log-mel features with the Beam transform, train the user branch (hit rates
beside the popularity and MF baselines), train the proposed audio-branch model
on its UEs and print its liked/disliked AUC beside the oracle. The TFX
pipeline (TFMA evaluation, blessing, push) replaces this sequence when it lands.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from typing import Optional, Sequence


from components.audio_features.transforms import extract_features
from musicrec.data.contract import FeedbackConfig
from musicrec.data.loading import load_dataset
from musicrec.data.validation import validate_dataset
from musicrec.simulation.generator import generate_demo, is_generated
from musicrec.simulation.oracle import GroundTruth, oracle_auc, preference_auc
from trainer.audio_branch import PAPER_NAMES, AudioBranchConfig
from trainer.audio_input import LogMelStore
from trainer.audio_module import evaluate_liked_disliked, prepare_audio_branch, train_audio_branch
from trainer.user_branch import UserBranchConfig
from trainer.user_export import USER_TOWER_DIR
from trainer.user_module import run_on_dataset


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    data_dir: str = "data/demo"
    work_dir: str = "runs/demo"
    size: str = "demo"
    seed: int = 0
    # Context duration of the audio branch: audio shorter than this is quarantined.
    context_seconds: float = 3.0
    beam_args: Sequence[str] = ("--direct_num_workers=2", "--direct_running_mode=multi_processing")
    user_epochs: int = 15
    audio_variant: str = "metric_1vs4"
    audio_epochs: int = 10
    audio_steps_per_epoch: Optional[int] = 150


def run_demo(config: DemoConfig = DemoConfig(), feedback: FeedbackConfig = FeedbackConfig()) -> dict:
    data_dir, work_dir = pathlib.Path(config.data_dir), pathlib.Path(config.work_dir)
    _ensure_dataset(config, data_dir)
    dataset = load_dataset(data_dir)
    # Audio is checked once, by the feature extraction below, which decodes
    # every file anyway and quarantines the unusable ones with the same statuses.
    report = validate_dataset(dataset, feedback, check_audio=False)
    report.write(work_dir / "validation")
    print(report.format(), flush=True)
    if not report.usable:
        raise SystemExit("the dataset cannot be used: " + "; ".join(report.fatal))

    tracks = dataset.audio_files()
    features = extract_features(
        tracks, work_dir / "features", min_seconds=config.context_seconds, beam_args=list(config.beam_args)
    )
    print(features.format(), flush=True)
    if features.extracted == 0:
        raise SystemExit("no track has usable audio; see " + str(work_dir / "features"))
    summary = {"dataset": str(data_dir), "validation": report.summary(), "features": {"dir": features.output_dir, "counts": features.counts}}

    user_branch = run_on_dataset(data_dir, work_dir / "user_branch", UserBranchConfig(epochs=config.user_epochs), feedback)
    print("User branch (hit rate / recall at K, time-based hold-out):\n" + user_branch["report"].table(), flush=True)
    summary["user_branch"] = {"seen_users": user_branch["report"].metrics, "new_users": user_branch["report"].new_user_metrics}

    summary["audio_branch"] = _audio_branch(config, dataset, work_dir, feedback)
    (work_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"Summary written to {work_dir / 'summary.json'}", flush=True)
    return summary


def _ensure_dataset(config: DemoConfig, data_dir: pathlib.Path) -> None:
    if is_generated(data_dir, config.size, config.seed):
        logging.info("using the %s dataset (seed %d) already in %s", config.size, config.seed, data_dir)
    elif (data_dir / "interactions.csv").exists() and not (data_dir / "ground_truth").exists():
        logging.info("using the dataset in %s (not generated: no oracle)", data_dir)
    else:
        logging.info("generating the %s dataset (seed %d) in %s", config.size, config.seed, data_dir)
        generate_demo(data_dir, config.size, config.seed, overwrite=True)


def _audio_branch(config: DemoConfig, dataset, work_dir: pathlib.Path, feedback: FeedbackConfig) -> dict:
    """Trains the proposed model (Metric-1vs4) on the UEs and reports AUC beside the oracle."""
    store = LogMelStore.from_tfrecords([str(work_dir / "features" / "log_mel-*")])
    audio_config = AudioBranchConfig.variant(
        config.audio_variant, context_seconds=config.context_seconds, epochs=config.audio_epochs,
        steps_per_epoch=config.audio_steps_per_epoch,
    )
    pairs, users = prepare_audio_branch(
        dataset, store, work_dir / "user_branch" / "model" / USER_TOWER_DIR, audio_config.context_frames, feedback
    )
    trained = train_audio_branch(pairs, store, users, audio_config)
    result = {"variant": config.audio_variant, **evaluate_liked_disliked(trained, pairs, store), "excluded": pairs.excluded}
    line = f"Audio branch ({PAPER_NAMES[config.audio_variant]}, {config.context_seconds:.0f} s): test AUC {result['auc']:.3f}, precision {result['precision']:.3f} at cosine >= {result['threshold']:+.3f}"
    if (pathlib.Path(config.data_dir) / "ground_truth").is_dir():
        truth, test = GroundTruth.load(config.data_dir), pairs.split("test")
        result["oracle_auc"], result["preference_ceiling_auc"] = oracle_auc(truth, test), preference_auc(truth, test)
        line += (f"; on the same test pairs, oracle AUC (audio-derivable preference) {result['oracle_auc']:.3f}, "
                 f"ceiling (whole preference) {result['preference_ceiling_auc']:.3f}")
    print(line, flush=True)
    return result
