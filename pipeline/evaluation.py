"""`musicrec show-eval`: the TFMA evaluation of a pipeline run as a table, plots and an HTML page.

The evaluation is found through the run folder's MLMD store (the latest
run's own Evaluator execution: its evaluation and its blessing), or given as
the Evaluator's output folder. Found through a run, it also shows the run's
audio models beside the practitioner baselines on the same test pairs,
pooled and per user: the run's PractitionerBaselines output holds the pairs
and the baselines' figures, and each audio model scores those pairs through
its `score_examples` signature (what TFMA evaluates). The same folder opens
in TFMA's own notebook viewer:

    import tensorflow_model_analysis as tfma
    result = tfma.load_eval_result("<evaluation folder>", model_name="candidate")
    tfma.view.render_slicing_metrics(result, slicing_column="genre")
    tfma.view.render_plot(result)
"""

from __future__ import annotations

import dataclasses
import functools
import html
import json
import pathlib
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_model_analysis as tfma
from etils import epath
from tfx.utils import path_utils

from musicrec import storage
from musicrec.components.practitioner_baselines.component import read_baselines
from musicrec.data.tf_examples import columns_from_frame, serialize_rows
from musicrec.names import MODEL_INFO_FILE, SCORE_EXAMPLES_SIGNATURE
from musicrec.pipeline.runs import METADATA_FILE, PipelineRun, RunRecordError, runs_newest_first
from musicrec.trainer.audio_branch import VARIANT_NAMES
from musicrec.trainer.pair_metrics import pair_auc
from musicrec.trainer.practitioner_baselines import BASELINES, BaselineResult, format_baselines

EVALUATOR = "Evaluator"
PRACTITIONER_BASELINES = "PractitionerBaselines"
# The run's audio models scored beside the practitioner baselines, and what each one is.
AUDIO_MODELS = (("AudioTrainer", "the learned AE"), ("BaselineTrainer", "the paper's baseline"))
SCORE_BATCH = 4096
COLUMNS = ("example_count", "auc", "precision", "recall", "binary_accuracy", "calibration", "mean_label", "mean_prediction")
OVERALL = "Overall"


@dataclasses.dataclass
class BaselineComparison:
    """The run's audio models and its practitioner baselines on the same test pairs."""

    rows: List[dict]  # `BaselineResult.as_dict()`s, the audio models first; empty when there are none
    source: str  # the baselines' artifact folder, or why there are none
    not_configured: List[str] = dataclasses.field(default_factory=list)

    def table(self) -> str:
        if not self.rows:
            return f"Practitioner baselines: none ({self.source})"
        lines = [f"Beside practitioner baselines, on the same {self.rows[0]['pairs']} test pairs ({self.source}):", "",
                 "| model | AUC (pooled) | AUC (per user) | note |", "|---|---|---|---|", *format_baselines(self.rows)]
        if self.not_configured:
            lines.append(f"Not run (not in practitioner_baselines): {', '.join(self.not_configured)}")
        return "\n".join(lines)


FOLDER_ONLY = BaselineComparison([], "an Evaluator output folder was given: they are found through a run folder's MLMD record")


@dataclasses.dataclass
class Evaluation:
    path: epath.Path
    metrics: pd.DataFrame  # one row per slice (feature, value): the model's metrics, the baseline's AUC beside
    validation_ok: bool
    failures: List[str]
    blessed: Optional[bool] = None
    calibration: Optional[pd.DataFrame] = None  # overall: mean prediction, share liked, count per bin
    run_id: Optional[str] = None  # the pipeline run whose Evaluator wrote it, when found through MLMD
    run: Optional[PipelineRun] = dataclasses.field(default=None, repr=False)

    def source(self) -> str:
        return f"{self.path} (run {self.run_id})" if self.run_id else str(self.path)

    def overall(self) -> Dict[str, float]:
        return self.metrics[self.metrics["slice"] == OVERALL].iloc[0].to_dict()

    @functools.cached_property
    def baselines(self) -> BaselineComparison:
        """Computed when first shown: scoring loads the run's audio models."""
        return compare_with_baselines(self.run) if self.run is not None else FOLDER_ONLY

    def table(self) -> str:
        """The TFMA metrics per slice, then the comparison with the practitioner baselines."""
        return f"{self.tfma_table()}\n\n{self.baselines.table()}"

    def tfma_table(self) -> str:
        frame = self.metrics.copy()
        for column in frame.columns:
            if column not in ("slice", "value", "example_count"):
                frame[column] = frame[column].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
        frame["example_count"] = frame["example_count"].map(lambda v: f"{int(v)}")
        return frame.to_string(index=False)

    def decision(self) -> str:
        state = {True: "BLESSED", False: "NOT BLESSED"}.get(self.blessed, "blessing unknown")
        lines = [f"{state}: the model {'passed' if self.validation_ok else 'failed'} the evaluation thresholds"]
        return "\n".join(lines + [f"  - {failure}" for failure in self.failures])


def load_evaluation(path, blessed: Optional[bool] = None) -> Evaluation:
    """Reads an Evaluator output folder (metrics of the model and, if any, of the baseline)."""
    path = storage.path(path)
    names = _model_names(path)
    result = tfma.load_eval_result(str(path), model_name="candidate" if "baseline" in names else None)
    model = _slice_metrics(result)
    if "baseline" in names:
        baseline = _slice_metrics(tfma.load_eval_result(str(path), model_name="baseline"))[["slice", "value", "auc"]]
        model = model.merge(baseline.rename(columns={"auc": "baseline_auc"}), on=["slice", "value"], how="left")
    validation = tfma.load_validation_result(str(path))
    failures = [
        f"{_slice_name(failure.slice_key)}: {c.metric_key.name}{' change vs baseline' if c.metric_key.is_diff else ''} "
        f"= {c.metric_value.double_value.value:.4f} fails {' '.join(str(c.metric_threshold).split())}"
        + (f" ({c.message})" if c.message else "")
        for failure in validation.metric_validations_per_slice
        for c in failure.failures
    ]
    return Evaluation(path, model, validation.validation_ok, failures, blessed, _calibration(result.plots))


def run_evaluation(run: PipelineRun) -> Evaluation:
    """The evaluation a run's own Evaluator execution wrote (or reused from the cache), with the
    blessing the same execution wrote."""
    blessing = run.output(EVALUATOR, "blessing").custom_properties
    blessed = bool(blessing["blessed"].int_value) if "blessed" in blessing else None
    evaluation = load_evaluation(run.output_path(EVALUATOR, "evaluation"), blessed)
    evaluation.run_id, evaluation.run = run.run_id, run
    return evaluation


def compare_with_baselines(run: PipelineRun) -> BaselineComparison:
    """The run's audio models scored on its PractitionerBaselines test pairs, then the baselines."""
    if not run.succeeded(PRACTITIONER_BASELINES):
        state = run.states().get(PRACTITIONER_BASELINES)
        why = (f"{PRACTITIONER_BASELINES} {state} in run {run.run_id}" if state else
               f"run {run.run_id} has no {PRACTITIONER_BASELINES} execution: its practitioner_baselines was empty, "
               "or it predates them")
        return BaselineComparison([], why)
    folder = run.output_path(PRACTITIONER_BASELINES, "baselines")
    summary, pairs = read_baselines(folder)
    models = [audio_model_result(run, component, role, pairs) for component, role in AUDIO_MODELS if run.succeeded(component)]
    return BaselineComparison(models + summary["baselines"], str(folder),
                              [name for name in BASELINES if name not in summary["configured"]])


def audio_model_result(run: PipelineRun, component: str, role: str, pairs: pd.DataFrame) -> dict:
    """A `BaselineResult.as_dict()` of the model a run's audio trainer wrote, on `pairs`."""
    model_dir = storage.path(path_utils.serving_model_path(str(run.output_path(component, "model"))))
    variant = json.loads((model_dir / MODEL_INFO_FILE).read_text()).get("variant")
    probability, known = score_pairs(model_dir, pairs)
    unknown = int((known == 0).sum())
    note = role + (f"; {unknown} pairs with a user or track outside its tables (scored at cosine 0)" if unknown else "")
    return BaselineResult(component, f"{VARIANT_NAMES.get(variant, variant)} ({component})", pair_auc(pairs, probability),
                          note).as_dict()


def score_pairs(model_dir, pairs: pd.DataFrame) -> Tuple[np.ndarray, np.ndarray]:
    """(P(liked), known) of each (user_id, track_id) pair from a SavedModel's `score_examples` signature."""
    score = tf.saved_model.load(str(model_dir)).signatures[SCORE_EXAMPLES_SIGNATURE]
    examples = list(serialize_rows(columns_from_frame(pairs[["user_id", "track_id"]])))
    outputs = [score(examples=tf.constant(examples[i:i + SCORE_BATCH])) for i in range(0, len(examples), SCORE_BATCH)]
    return tuple(np.concatenate([output[key].numpy() for output in outputs]) for key in ("probability", "known"))


def find_evaluation(run_or_path) -> Evaluation:
    """A run folder (the evaluation of its latest run that evaluated a model) or an Evaluator output folder."""
    path = storage.path(run_or_path)
    if (path / METADATA_FILE).exists():
        run = next((r for r in runs_newest_first(path) if r.succeeded(EVALUATOR)), None)
        if run is None:
            raise RunRecordError(f"no run in {path} has evaluated a model yet")
        return run_evaluation(run)
    if (path / "eval_config.json").exists():
        return load_evaluation(path)
    raise FileNotFoundError(f"{path} is neither a pipeline run folder ({METADATA_FILE}) nor an Evaluator output folder")


def write_report(evaluation: Evaluation, out_dir) -> pathlib.Path:
    """auc_by_slice.png, calibration.png, metrics.csv, baselines.csv (where the run has them) and index.html
    under `out_dir`."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    evaluation.metrics.to_csv(out / "metrics.csv", index=False)
    if evaluation.baselines.rows:
        pd.DataFrame(evaluation.baselines.rows).to_csv(out / "baselines.csv", index=False)
    _plot_auc_by_slice(evaluation.metrics, out / "auc_by_slice.png")
    images = ["auc_by_slice.png"]
    if evaluation.calibration is not None and len(evaluation.calibration):
        _plot_calibration(evaluation.calibration, out / "calibration.png")
        images.append("calibration.png")
    page = (
        "<html><head><meta charset='utf-8'><title>musicrec evaluation</title></head><body>"
        f"<h1>Evaluation</h1><p>{html.escape(evaluation.source())}</p>"
        f"<pre>{html.escape(evaluation.decision())}</pre>"
        + " ".join(f"<img src='{image}'>" for image in images)
        +
        f"<pre>{html.escape(evaluation.table())}</pre></body></html>"
    )
    (out / "index.html").write_text(page)
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_auc_by_slice(frame: pd.DataFrame, path: pathlib.Path) -> None:
    plt = _pyplot()
    labels = [OVERALL if s == OVERALL else f"{s}={v}" for s, v in zip(frame["slice"], frame["value"])]
    figure, axis = plt.subplots(figsize=(8, max(3, 0.3 * len(frame))))
    rows = list(range(len(frame)))
    axis.barh([r - 0.2 for r in rows], frame["auc"], height=0.4, label="model")
    if "baseline_auc" in frame:
        axis.barh([r + 0.2 for r in rows], frame["baseline_auc"], height=0.4, label="baseline")
    axis.set_yticks(rows, labels)
    axis.invert_yaxis()
    axis.axvline(0.5, color="grey", linestyle=":", label="chance")
    axis.set_xlabel("test AUC (liked vs disliked)")
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _plot_calibration(calibration: pd.DataFrame, path: pathlib.Path) -> None:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":")
    axis.scatter(calibration["mean_prediction"], calibration["mean_label"],
                 s=10 + 90 * calibration["count"] / calibration["count"].max())
    axis.set_xlabel("mean predicted P(liked)")
    axis.set_ylabel("share liked")
    axis.set_title("Calibration (test pairs)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _model_names(path: epath.Path) -> List[str]:
    """TFMA names the models 'candidate' and 'baseline' when there is a baseline."""
    config = json.loads((path / "eval_config.json").read_text())
    return [spec.get("name", "") for spec in config.get("evalConfig", {}).get("modelSpecs", [])]


def _slice_name(slice_key) -> str:
    parts = []
    for key in slice_key.single_slice_keys:
        value = key.bytes_value.decode() if key.HasField("bytes_value") else (key.float_value or key.int64_value)
        parts.append(f"{key.column}={value}")
    return ", ".join(parts) or OVERALL


def _slice_metrics(result) -> pd.DataFrame:
    rows = []
    for slice_key, by_output in result.slicing_metrics:
        values = by_output.get("", {}).get("", {})
        feature, value = slice_key[0] if slice_key else (OVERALL, "")
        rows.append({"slice": feature, "value": str(value), **{name: float(values.get(name, {}).get("doubleValue", "nan")) for name in COLUMNS}})
    frame = pd.DataFrame(rows)
    frame["order"] = frame["slice"] != OVERALL
    return frame.sort_values(["order", "slice", "value"]).drop(columns="order").reset_index(drop=True)


def _calibration(plots) -> Optional[pd.DataFrame]:
    """The overall calibration histogram, TFMA's fine buckets summed into ten bins of P(liked);
    None when the evaluation has no calibration plot."""
    for slice_key, by_output in plots:
        if slice_key:
            continue
        buckets = by_output.get("", {}).get("", {}).get("calibrationHistogramBuckets", {}).get("buckets", [])
        frame = pd.DataFrame(
            [(b.get("upperThresholdExclusive", 1.0), b["numWeightedExamples"], b["totalWeightedLabel"],
              b["totalWeightedRefinedPrediction"]) for b in buckets if b.get("numWeightedExamples", 0) > 0],
            columns=["upper", "count", "labels", "predictions"],
        )
        frame["bin"] = (frame["upper"].clip(0, 1) * 10).clip(upper=9.999).astype(int)
        sums = frame.groupby("bin")[["count", "labels", "predictions"]].sum()
        return pd.DataFrame({"mean_prediction": sums["predictions"] / sums["count"],
                             "mean_label": sums["labels"] / sums["count"], "count": sums["count"]}).reset_index(drop=True)
    return None
