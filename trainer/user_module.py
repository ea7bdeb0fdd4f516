"""TFX Trainer module of the user branch: `run_fn`, plus the same job for a plain dataset folder.

TFX calls `run_fn(fn_args)` with the ingestion component's user-branch
examples (GZIP tf.Example TFRecords) as train and eval files; hyperparameters
come from `custom_config["user_branch"]` (fields of UserBranchConfig). It
trains the two-tower model and the baselines, writes the hit-rate report next
to the model, and exports the SavedModels and embedding tables to the serving
model directory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Optional

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from musicrec import storage
from musicrec.data.contract import FeedbackConfig
from musicrec.data.loading import load_dataset
from musicrec.data.user_examples import (
    ExampleConfig,
    UserBranchData,
    branch_data_from_examples,
    build_user_examples,
    read_user_examples,
)
from musicrec.trainer.retrieval_eval import evaluate_user_branch
from musicrec.trainer.user_config import UserBranchConfig
from musicrec.trainer.user_layers import Vocabularies
from musicrec.trainer.user_export import export_user_branch

REPORT_FILE = "user_branch_report.json"


def train_evaluate_export(data: UserBranchData, config: UserBranchConfig, model_dir, report_dir,
                          vocab: Optional[Vocabularies] = None) -> dict:
    trained, report = evaluate_user_branch(data, config, verbose=2, vocab=vocab)
    logging.info("user branch hit rates:\n%s", report.table())
    export_user_branch(trained, data, model_dir)
    report_dir = storage.path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "config": dataclasses.asdict(config),
        "metrics": report.metrics,
        "new_user_metrics": report.new_user_metrics,
        "checks": report.checks,
        "epochs_trained": report.epochs,
        "excluded_users": data.excluded_users,
    }
    (report_dir / REPORT_FILE).write_text(json.dumps(payload, indent=2) + "\n")
    (report_dir / "user_branch_report.md").write_text(report.table() + "\n")
    return {"report": report, "trained": trained}


def run_fn(fn_args) -> None:
    """TFX Trainer entry point: the ingestion's user examples, and (when the pipeline has one)
    the Transform graph whose vocabularies and demographic statistics the model uses."""
    config = UserBranchConfig(**(fn_args.custom_config or {}).get("user_branch", {}))
    data = branch_data_from_examples(read_user_examples(fn_args.train_files), read_user_examples(fn_args.eval_files))
    vocab = None
    if fn_args.transform_graph_path:
        import tensorflow_transform as tft

        from musicrec.trainer.user_transform import vocabularies_from_transform

        vocab = vocabularies_from_transform(tft.TFTransformOutput(fn_args.transform_graph_path), data)
    train_evaluate_export(data, config, fn_args.serving_model_dir, fn_args.model_run_dir, vocab)


def run_on_dataset(dataset_dir, out_dir, config: UserBranchConfig = UserBranchConfig(),
                   feedback: FeedbackConfig = FeedbackConfig(), examples: ExampleConfig = ExampleConfig()) -> dict:
    """The same job straight from a plain-layout dataset folder (experiments, `musicrec user-branch`)."""
    data = build_user_examples(load_dataset(dataset_dir), feedback, examples)
    out = storage.path(out_dir)
    return train_evaluate_export(data, config, out / "model", out)
