"""Genre classifiers on fixed audio features: the paper's section 3.3 and Table 2.

The classifier is a scikit-learn Pipeline of PCA to 128 dimensions and an
RBF-kernel SVM with gamma ("bandwidth") 1/128 and C 1, the paper's settings.
The PCA whitens its output: the paper does not say, but the reference code it
cites for the GTZAN protocol (jordipons/sklearn-audio-transfer-learning) uses
`PCA(n_components=128, whiten=True)` followed by `SVC(C=1, kernel='rbf',
gamma='scale')`, and on whitened 128-d data gamma='scale' is 1/128, the value
the paper states. Without whitening the kernel would depend on each feature
set's raw scale (musicnn's max_pool reaches ~100, the AE's scale is arbitrary
under a cosine loss). No StandardScaler: neither the paper nor that code has
one.

PCA to 128 needs 128 feature dimensions and, whitened, clearly more
training tracks than components: whitening scales every component to unit
variance, so components estimated from few tracks (the last ones are mostly
noise) weigh as much as the first. The PCA therefore keeps
min(128, dims, training tracks // 2) components, and the result says so when
that is fewer than 128 (the AE alone has 40 dims; the tiny demo has ~70
training tracks). At the paper's scale (GTZAN 443, FMA-small 5,600 training
tracks) the cap changes nothing. On the tiny demo, musicnn features reach a
test accuracy of 0.86-0.96 with 8-32 whitened components but 0.50 with 50 and
0.11 (chance) with 67 of 68 tracks, which is why the cap exists.

Each feature set is reported with test accuracy (validation too where the
dataset has one, as GTZAN), per-class accuracy (each genre's recall) and the
confusion matrix, beside a chance baseline measured on the same split
(scikit-learn's DummyClassifier, stratified and majority).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Dict, List, Optional, Sequence

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
from sklearn.decomposition import PCA
from sklearn.dummy import DummyClassifier
from sklearn.metrics import accuracy_score, confusion_matrix, recall_score
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC

# Table 2 as published: average classification accuracy of the SVM.
PAPER_TABLE2 = {
    "without AE": {"GTZAN": 0.7653, "FMA-small": 0.5918},
    "with AE": {"GTZAN": 0.8013, "FMA-small": 0.6148, "MIREX08": 0.7474},
}


@dataclasses.dataclass(frozen=True)
class GenreClassifierConfig:
    pca_dims: int = 128
    whiten: bool = True
    gamma: float = 1.0 / 128
    C: float = 1.0
    seed: int = 0


def genre_classifier(config: GenreClassifierConfig, n_train: int, n_features: int) -> Pipeline:
    """PCA(min(128, dims, tracks // 2), whitened) -> SVC(rbf, gamma 1/128, C 1)."""
    dims = max(1, min(config.pca_dims, n_features, n_train // 2))
    return Pipeline([
        ("pca", PCA(n_components=dims, whiten=config.whiten, random_state=config.seed)),
        ("svm", SVC(kernel="rbf", gamma=config.gamma, C=config.C)),
    ])


@dataclasses.dataclass
class FeatureSetResult:
    name: str
    dims: int  # feature dimensions before the PCA
    pca_dims: int
    accuracy: Dict[str, float]  # split -> accuracy
    per_class: Dict[str, float]  # genre -> accuracy on the test split (recall)
    confusion: List[List[int]]  # test split, rows true genre, columns predicted, in `labels` order
    labels: List[str]
    note: str = ""


def evaluate_feature_set(name: str, features: Dict[str, np.ndarray], genres: Dict[str, np.ndarray],
                         config: GenreClassifierConfig = GenreClassifierConfig(), test_split: str = "test") -> FeatureSetResult:
    """Fits on features["train"], scores every other split; per-class and confusion on `test_split`."""
    x_train, y_train = features["train"], genres["train"]
    if len(np.unique(y_train)) < 2:
        raise ValueError(f"{name}: the training split has fewer than two genres")
    model = genre_classifier(config, *x_train.shape).fit(x_train, y_train)
    labels = sorted(set(y_train) | set(genres[test_split]))
    accuracy = {split: float(accuracy_score(genres[split], model.predict(x)))
                for split, x in features.items() if split != "train" and len(x)}
    predicted = model.predict(features[test_split])
    recalls = recall_score(genres[test_split], predicted, labels=labels, average=None, zero_division=0)
    pca_dims = model.named_steps["pca"].n_components_
    note = ""
    if pca_dims < config.pca_dims:
        limit = (f"the features have {x_train.shape[1]} dimensions" if pca_dims == x_train.shape[1] else
                 f"{x_train.shape[0]} training tracks support at most {pca_dims} whitened components (half as many)")
        note = f"PCA kept {pca_dims} components, not {config.pca_dims}: {limit}"
    return FeatureSetResult(
        name=name, dims=int(x_train.shape[1]), pca_dims=int(pca_dims), accuracy=accuracy,
        per_class={g: float(r) for g, r in zip(labels, recalls)},
        confusion=confusion_matrix(genres[test_split], predicted, labels=labels).tolist(), labels=labels, note=note,
    )


def chance_accuracy(genres: Dict[str, np.ndarray], seed: int = 0, test_split: str = "test") -> Dict[str, float]:
    """Test accuracy of scikit-learn's DummyClassifier fitted on the training genres (no features)."""
    scores = {}
    for strategy in ("stratified", "most_frequent"):
        dummy = DummyClassifier(strategy=strategy, random_state=seed).fit(np.zeros((len(genres["train"]), 1)), genres["train"])
        test = genres[test_split]
        scores[strategy] = float(accuracy_score(test, dummy.predict(np.zeros((len(test), 1)))))
    return scores


def format_table2(results: Sequence[FeatureSetResult], chance: Dict[str, float], paper_column: str = "",
                  paper_rows: Optional[Dict[str, str]] = None) -> str:
    """Markdown in the shape of Table 2 (accuracy per feature set), then per-class accuracy."""
    paper_rows = paper_rows or {}
    has_validation = any("validation" in r.accuracy for r in results)
    head = "| SVM features | dims | PCA | test accuracy |" + (" validation accuracy |" if has_validation else "")
    head += f" paper ({paper_column}) |" if paper_column else ""
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        row = f"| {r.name} | {r.dims} | {r.pca_dims} | {r.accuracy['test']:.4f} |"
        row += f" {r.accuracy.get('validation', float('nan')):.4f} |" if has_validation else ""
        if paper_column:
            published = PAPER_TABLE2.get(paper_rows.get(r.name, ""), {}).get(paper_column)
            row += f" {published:.4f} |" if published is not None else " – |"
        lines.append(row)
    for strategy, score in chance.items():
        lines.append(f"| chance ({strategy} DummyClassifier) | – | – | {score:.4f} |" + (" |" if has_validation else "")
                     + (" – |" if paper_column else ""))
    lines += ["", per_class_table(results)]
    lines += [f"\nNote ({r.name}): {r.note}" for r in results if r.note]
    return "\n".join(lines)


def per_class_table(results: Sequence[FeatureSetResult]) -> str:
    labels = results[0].labels
    lines = ["| genre | " + " | ".join(r.name for r in results) + " |", "|---|" + "---|" * len(results)]
    for genre in labels:
        lines.append(f"| {genre} | " + " | ".join(f"{r.per_class.get(genre, float('nan')):.3f}" for r in results) + " |")
    return "\n".join(lines)


def plot_confusion_matrices(results: Sequence[FeatureSetResult], path) -> pathlib.Path:
    """One confusion matrix per feature set (test split, counts), side by side, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = 1.8 + 0.45 * len(results[0].labels)
    figure, axes = plt.subplots(1, len(results), figsize=(size * len(results), size), squeeze=False)
    for axis, r in zip(axes[0], results):
        ConfusionMatrixDisplay(np.asarray(r.confusion), display_labels=r.labels).plot(
            ax=axis, colorbar=False, xticks_rotation=60, cmap="Blues")
        axis.set_title(f"{r.name}: accuracy {r.accuracy['test']:.3f}")
    figure.tight_layout()
    path = pathlib.Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

