"""`musicrec reproduce-table1`: the paper's Table 1 on any plain-layout dataset.

Trains the six audio-branch variants at a 3 s context and the two Metric ones
at 10 s on the same split, and writes a table in the shape of the paper's
(precision, AUC) as markdown and JSON, with the oracle AUC of a generated
dataset beside it. Log-mel features and user embeddings are reused when given
(or when a previous run left them in the output folder), otherwise computed
first: features by the Beam transform, the user tower by the user branch.
Each user's UE is computed from their liked tracks outside the validation and
test pairs, so no UE contains a track it is evaluated on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from typing import Dict, List, Optional, Sequence, Tuple

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf

from musicrec.components.audio_features.transforms import extract_features
from musicrec.data.audio_pairs import SplitConfig
from musicrec.data.contract import FeedbackConfig
from musicrec.data.loading import load_dataset
from musicrec.simulation.oracle import GroundTruth, oracle_auc, preference_auc
from musicrec.trainer.audio_branch import PAPER_NAMES, VARIANT_NAMES, AudioBranchConfig
from musicrec.trainer.log_mel_shards import feature_files, open_log_mels
from musicrec.trainer.audio_data import prepare_audio_branch
from musicrec.trainer.audio_evaluation import evaluate_liked_disliked
from musicrec.trainer.audio_training import train_audio_branch
from musicrec.trainer.practitioner_baselines import (BASELINES, MSD_PATCH_FRONT_ENDS, check_baseline_names, evaluate_baselines,
                                                     format_baselines)
from musicrec.trainer.user_config import UserBranchConfig
from musicrec.names import USER_TOWER_DIR
from musicrec.trainer.user_module import run_on_dataset

# (variant, context seconds) rows of the paper's Table 1 (a) and (b).
TABLE1_ROWS: Tuple[Tuple[str, float], ...] = tuple((v, 3.0) for v in PAPER_NAMES) + (
    ("basic_binary", 10.0), ("dcue_1vs1", 10.0), ("metric_1vs1", 10.0), ("metric_1vs4", 10.0),
)
PAPER_TABLE1 = {  # (precision, AUC) as published
    ("basic_binary", 3.0): (0.677, 0.747), ("dcue_1vs1", 3.0): (0.623, 0.675), ("multi_1vs1", 3.0): (0.745, 0.752),
    ("multi_1vs4", 3.0): (0.687, 0.749), ("metric_1vs1", 3.0): (0.691, 0.765), ("metric_1vs4", 3.0): (0.681, 0.778),
    ("basic_binary", 10.0): (0.696, 0.762), ("dcue_1vs1", 10.0): (0.644, 0.697), ("metric_1vs1", 10.0): (0.717, 0.788),
    ("metric_1vs4", 10.0): (0.701, 0.792),
}


def parse_rows(text: str) -> Tuple[Tuple[str, float], ...]:
    """"metric_1vs4,dcue_1vs1@10" -> (("metric_1vs4", 3.0), ("dcue_1vs1", 10.0)): variants at 3 s unless given."""
    rows = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, seconds = item.partition("@")
        AudioBranchConfig.variant(name)  # an unknown name fails here, with the known ones
        rows.append((name, float(seconds) if seconds else 3.0))
    if not rows:
        raise ValueError("no variant given")
    return tuple(rows)


@dataclasses.dataclass(frozen=True)
class Table1Config:
    epochs: int = 10
    steps_per_epoch: Optional[int] = 150
    early_stopping_patience: int = 0  # > 0: stop on the validation AUC, keep the best epoch (AudioBranchConfig)
    lr_schedule: str = "inverse_time"
    protocol: str = "per_user"
    rows: Tuple[Tuple[str, float], ...] = TABLE1_ROWS
    seed: int = 0
    # Practitioner baselines on the same test pairs (trainer/practitioner_baselines.py), and the
    # categorical track columns the metadata baseline one-hot encodes when the dataset has them.
    baselines: Tuple[str, ...] = BASELINES
    metadata_columns: Tuple[str, ...] = ("genre",)

    def __post_init__(self):
        check_baseline_names(self.baselines)  # before hours of training, not after


def prepare_inputs(dataset_dir, out_dir, feedback: FeedbackConfig, features_dir=None, user_branch_dir=None,
                   front_ends: Sequence[str] = ("log_mel",)):
    """The feature store of each front end (by name) and the user tower: reused when present,
    computed otherwise."""
    out = pathlib.Path(out_dir)
    dataset = load_dataset(dataset_dir)
    features_dir = pathlib.Path(features_dir) if features_dir else out / "features"
    front_ends = sorted(set(front_ends) | {"log_mel"})  # log-mels decide which tracks are usable
    if not all(tf.io.gfile.glob(feature_files(features_dir, name)) for name in front_ends):
        tracks = dataset.audio_files()
        logging.info("%s\n", extract_features(tracks, features_dir, extra_front_ends=front_ends).format())
    user_branch_dir = pathlib.Path(user_branch_dir) if user_branch_dir else out / "user_branch"
    if not (user_branch_dir / "model" / USER_TOWER_DIR / "saved_model.pb").exists():
        run_on_dataset(dataset_dir, user_branch_dir, UserBranchConfig(), feedback)
    memory_mb = AudioBranchConfig().log_mel_memory_mb
    stores = {name: open_log_mels([feature_files(features_dir, name)], memory_mb, name) for name in front_ends}
    return dataset, stores, user_branch_dir / "model" / USER_TOWER_DIR


def reproduce_table1(dataset_dir, out_dir, config: Table1Config = Table1Config(), feedback: FeedbackConfig = FeedbackConfig(),
                     features_dir=None, user_branch_dir=None, feature_cache_dir=None) -> dict:
    """`feature_cache_dir` caches the baselines' musicnn features (default `<out_dir>/feature_cache`)."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    row_front_ends = {AudioBranchConfig.variant(variant).front_end for variant, _ in config.rows}
    dataset, stores, user_tower = prepare_inputs(dataset_dir, out, feedback, features_dir, user_branch_dir, row_front_ends)
    longest_context = max(AudioBranchConfig(context_seconds=s).context_frames for _, s in config.rows)
    pairs, users = prepare_audio_branch(dataset, stores["log_mel"], user_tower, longest_context, feedback,
                                        SplitConfig(config.protocol, seed=config.seed))
    results: List[dict] = []
    for variant, seconds in config.rows:
        audio_config = AudioBranchConfig.variant(variant, context_seconds=seconds, epochs=config.epochs,
                                                 steps_per_epoch=config.steps_per_epoch, seed=config.seed,
                                                 early_stopping_patience=config.early_stopping_patience,
                                                 lr_schedule=config.lr_schedule)
        logging.info("training %s at %.0f s", VARIANT_NAMES[variant], seconds)
        store = stores[audio_config.front_end]
        trained = train_audio_branch(pairs, store, users, audio_config)
        metrics = evaluate_liked_disliked(trained, pairs, store)
        results.append({"variant": variant, "model": VARIANT_NAMES[variant], "context_seconds": seconds,
                        "segments_per_second": trained.segments_per_second, **trained.training_summary(), **metrics})
        logging.info("%s at %.0f s: AUC %.3f, precision %.3f", VARIANT_NAMES[variant], seconds, metrics["auc"], metrics["precision"])
    report = {"dataset": str(dataset_dir), "protocol": config.protocol, "split": pairs.summary(),
              "training": dataclasses.asdict(config), "results": results,
              "baselines": run_baselines(dataset, pairs, pathlib.Path(feature_cache_dir or out / "feature_cache"), config,
                                           next((stores[n] for n in MSD_PATCH_FRONT_ENDS if n in stores), None))}
    if (pathlib.Path(dataset_dir) / "ground_truth").is_dir():
        truth, test = GroundTruth.load(dataset_dir), pairs.split("test")
        report["oracle_auc"] = oracle_auc(truth, test)
        report["preference_ceiling_auc"] = preference_auc(truth, test)
    report["checks"] = table1_checks(results, report.get("oracle_auc"), report["baselines"])
    (out / "table1.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "table1.md").write_text(format_table1(report) + "\n")
    return report


def run_baselines(dataset, pairs, feature_cache: pathlib.Path, config: Table1Config, musicnn_store=None) -> List[dict]:
    """The practitioner baselines on the variants' own train and test pairs; the musicnn baseline
    reads `musicnn_store` (the rows' musicnn patch features) when a row trained on them."""
    results = evaluate_baselines(pairs.split("train"), pairs.split("test"), dataset.tracks, dataset.audio_files(),
                                 feature_cache, config.baselines, config.metadata_columns, musicnn_store)
    return [r.as_dict() for r in results]


def table1_checks(results: Sequence[dict], oracle: Optional[float], baselines: Sequence[dict] = ()) -> Dict[str, bool]:
    """The acceptance checks: UE models beat DCUE; Metric-1vs4 within 10% of the oracle's margin over 0.5;
    the best variant beats every practitioner baseline that applies by at least 0.02 pooled AUC."""
    auc = {(r["variant"], r["context_seconds"]): r["auc"] for r in results}
    checks = {}
    for seconds in sorted({s for _, s in auc}):
        dcue = auc.get(("dcue_1vs1", seconds))
        if dcue is not None:
            ue_models = [a for (v, s), a in auc.items() if s == seconds and v != "dcue_1vs1"]
            checks[f"every UE model beats DCUE-1vs1 at {seconds:.0f} s"] = bool(ue_models) and min(ue_models) > dcue
    metric = auc.get(("metric_1vs4", 3.0))
    if oracle is not None and metric is not None:
        checks["Metric-1vs4 (3 s) within 10% of the oracle's margin over 0.5"] = metric - 0.5 >= 0.9 * (oracle - 0.5)
    applicable = [b["pooled"] for b in baselines if b["pooled"] is not None]
    if applicable and auc:
        checks["the best variant beats every practitioner baseline by >= 0.02 AUC"] = (
            max(auc.values()) >= max(applicable) + 0.02)
    return checks


def format_table1(report: dict) -> str:
    lines = []
    for seconds, caption in ((3.0, "(a) context duration 3 s"), (10.0, "(b) context duration 10 s")):
        rows = [r for r in report["results"] if r["context_seconds"] == seconds]
        if not rows:
            continue
        lines += [f"{caption}", "", "| Model | Precision | AUC | threshold | epochs | paper precision | paper AUC |",
                  "|---|---|---|---|---|---|---|"]
        for r in rows:
            paper = PAPER_TABLE1.get((r["variant"], seconds))  # none for the later variants: left blank
            published = f"| {paper[0]:.3f} | {paper[1]:.3f} |" if paper else "| | |"
            lines.append(f"| {r['model']} | {r['precision']:.3f} | {r['auc']:.3f} | {r['threshold']:+.3f} | {_epochs(r)} "
                         f"{published}")
        lines.append("")
    if report.get("baselines"):
        lines += ["Practitioner baselines, same split and test pairs", "",
                  "| Baseline | AUC (pooled) | AUC (per user) | note |", "|---|---|---|---|"]
        lines += [f"| {r['model']} ({r['context_seconds']:g} s) | {r['auc']:.3f} | {r['per_user_auc']:.3f} | the learned AE |"
                  for r in report["results"]]
        lines += format_baselines(report["baselines"]) + [""]
    if "oracle_auc" in report:
        lines.append(
            f"Oracle AUC (best from the audio-derivable preference, same test pairs): {report['oracle_auc']:.3f}; "
            f"ceiling (whole noise-free preference): {report['preference_ceiling_auc']:.3f}"
        )
    split = report["split"]["pairs"].get("test", {})
    lines.append(f"Split protocol {report['protocol']}; test pairs: {split.get('liked', 0)} liked, {split.get('disliked', 0)} disliked. "
                 "Precision at the cosine threshold that maximises validation accuracy.")
    for check, passed in report["checks"].items():
        lines.append(f"- {'PASS' if passed else 'FAIL'}: {check}")
    return "\n".join(lines)


def _epochs(result: dict) -> str:
    """"best/trained" with early stopping (the weights kept are the best epoch's), else the epochs trained."""
    if result.get("best_epoch"):
        return f"{result['best_epoch']}/{result['epochs_trained']}"
    return str(result.get("epochs_trained", ""))
