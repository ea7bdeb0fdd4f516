"""`musicrec genre-eval`: the paper's Table 2 on a genre dataset.

Loads the dataset through its adapter, extracts (or reads from the cache)
the musicnn baseline and the AE of every track, fits the PCA + RBF-SVM
classifier of `trainer.genre` on each feature set (baseline only, AE only,
baseline + AE) and writes to the output folder:

- `genre_report.json`: settings, dataset counts, quarantine, accuracy per
  feature set and split, per-class accuracy, confusion matrices, chance;
- `table2.md`: the same in the shape of the paper's Table 2;
- `confusion_matrices.png`: one test-split confusion matrix per feature set;
- `quarantine.csv`: every track left out, with the extractor and reason.

All feature sets are evaluated on the same tracks: a track either extractor
cannot use is left out of all of them (and counted).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from typing import Dict, Optional, Tuple

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import pandas as pd

from musicrec.genre.datasets import GenreDataset, load_genre_dataset
from musicrec.genre.features import TrackFeatures, describe, extract_cached
from musicrec.pipeline.audio_encoder_features import AudioEncoderFeatures
from musicrec.genre.classifier import (
    GenreClassifierConfig,
    chance_accuracy,
    evaluate_feature_set,
    format_table2,
    plot_confusion_matrices,
)

# Feature set -> the extractors whose vectors it concatenates, in order.
FEATURE_SETS: Dict[str, Tuple[str, ...]] = {"baseline": ("baseline",), "ae": ("ae",), "baseline+ae": ("baseline", "ae")}
SET_NAMES = {"baseline": "baseline (musicnn)", "ae": "AE", "baseline+ae": "baseline + AE"}
PAPER_ROWS = {SET_NAMES["baseline"]: "without AE", SET_NAMES["baseline+ae"]: "with AE"}
PAPER_COLUMNS = {"gtzan": "GTZAN", "fma": "FMA-small"}
REPORT_FILE, TABLE_FILE, PLOT_FILE, QUARANTINE_FILE = "genre_report.json", "table2.md", "confusion_matrices.png", "quarantine.csv"


@dataclasses.dataclass(frozen=True)
class GenreEvalConfig:
    feature_sets: Tuple[str, ...] = tuple(FEATURE_SETS)
    context_seconds: float = 3.0  # the AE's segment length (the encoder's training context)
    seed: int = 0  # the 7:3 per-genre splits
    classifier: GenreClassifierConfig = GenreClassifierConfig()
    cache_dir: Optional[str] = None  # default: <out>/feature_cache
    progress_every_s: float = 10.0

    def __post_init__(self):
        unknown = set(self.feature_sets) - set(FEATURE_SETS)
        if unknown or not self.feature_sets:
            raise ValueError(f"feature sets must be among {list(FEATURE_SETS)}, not {sorted(unknown) or 'none'}")

    @property
    def extractors(self) -> Tuple[str, ...]:
        return tuple(dict.fromkeys(e for s in self.feature_sets for e in FEATURE_SETS[s]))


@dataclasses.dataclass
class GenreEval:
    report: dict
    markdown: str
    out_dir: pathlib.Path


def run_genre_eval(dataset_dir, layout: str, model_dir, out_dir, config: GenreEvalConfig = GenreEvalConfig()) -> GenreEval:
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_genre_dataset(dataset_dir, layout, config.seed)
    logging.info("%s %s", musicrec.LOG_TAG, dataset.summary())
    features = extract_features(dataset, model_dir, config, pathlib.Path(config.cache_dir or out / "feature_cache"))
    usable = _usable_tracks(dataset, features)
    genres = {split: frame["genre"].to_numpy() for split, frame in usable.groupby("split")}
    for split in ("train", "test"):
        if split not in genres:
            raise ValueError(f"no usable {split} tracks left (see {QUARANTINE_FILE}); nothing to evaluate")
    results = []
    for key in config.feature_sets:
        matrices = {split: np.concatenate([features[e].matrix(frame["track_id"]) for e in FEATURE_SETS[key]], axis=1)
                    for split, frame in usable.groupby("split")}
        results.append(evaluate_feature_set(SET_NAMES[key], matrices, genres, config.classifier))
    chance = chance_accuracy(genres, config.seed)
    markdown = "\n".join([dataset.summary()] + [f.format() for f in features.values()]
                          + [f"{len(usable)} tracks have every feature and are classified.", "",
                             format_table2(results, chance, PAPER_COLUMNS.get(layout, ""), PAPER_ROWS)])
    report = _report(dataset, features, usable, results, chance, config, model_dir)
    _write(out, report, markdown, results, features)
    return GenreEval(report, markdown, out)


def extract_features(dataset: GenreDataset, model_dir, config: GenreEvalConfig, cache_dir: pathlib.Path) -> Dict[str, TrackFeatures]:
    extractors = {}
    if "baseline" in config.extractors:
        from musicrec.genre.musicnn_runner import MusicnnFeatures

        extractors["baseline"] = MusicnnFeatures()
    if "ae" in config.extractors:
        if model_dir is None:
            raise ValueError("the AE feature sets need --model (the audio encoder SavedModel)")
        extractors["ae"] = AudioEncoderFeatures(model_dir, config.context_seconds)
    features = {}
    for key, extractor in extractors.items():
        features[key] = extract_cached(dataset.tracks, extractor, cache_dir, config.progress_every_s)
        logging.info("%s %s", musicrec.LOG_TAG, features[key].format())
    return features


def _usable_tracks(dataset: GenreDataset, features: Dict[str, TrackFeatures]) -> pd.DataFrame:
    usable = dataset.tracks["track_id"].isin(set.intersection(*(set(f.track_ids) for f in features.values())))
    return dataset.tracks[usable]


def _report(dataset, features, usable, results, chance, config, model_dir) -> dict:
    return {
        "dataset": {"layout": dataset.layout, "root": str(dataset.root), "tracks": len(dataset.tracks),
                    "usable_tracks": len(usable), "excluded_before_extraction": dataset.excluded,
                    "splits": usable["split"].value_counts().to_dict(), "genres": sorted(usable["genre"].unique())},
        "model": None if model_dir is None else str(model_dir),
        "settings": {**dataclasses.asdict(config.classifier), "context_seconds": config.context_seconds,
                     "split_seed": config.seed, "classifier": "PCA(whiten) -> SVC(rbf)",
                     "musicnn_track_vector": "mean of max_pool over non-overlapping 3 s patches of the first 30 s",
                     "ae_track_vector": "mean AE over back-to-back context-length segments of the first 30 s"},
        "features": {key: describe(f) for key, f in features.items()},
        "accuracy": {r.name: r.accuracy for r in results},
        "chance_accuracy": chance,
        "feature_sets": [dataclasses.asdict(r) for r in results],
    }


def _write(out: pathlib.Path, report: dict, markdown: str, results, features) -> None:
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    (out / TABLE_FILE).write_text("# Genre classification (the paper's Table 2)\n\n" + markdown + "\n")
    plot_confusion_matrices(results, out / PLOT_FILE)
    quarantine = pd.concat([f.quarantine.assign(extractor=f.name) for f in features.values()], ignore_index=True)
    quarantine.to_csv(out / QUARANTINE_FILE, index=False)
