"""PractitionerBaselines: what an engineer builds in an afternoon, on the audio branch's own split.

Takes the ingestion's `audio_pairs` (the same train and test pairs the
AudioTrainer and the Evaluator use), the dataset folder (audio paths for
musicnn, the tracks table for the metadata one-hot) and AudioFeatures'
features (whose musicnn patch features, when the run's variant reads them,
the musicnn baseline averages instead of computing them again), and runs
`musicrec.trainer.practitioner_baselines.evaluate_baselines`: each baseline
fitted on the train split, scored on every test pair. It does not take the
audio model, so a retrained model reuses the baselines from the cache; the
reports (`pipeline/evaluation.py`) score the run's audio models on the pairs
written here.

Writes a `PractitionerBaselineResults` artifact:
- `baselines.json`: test and train pair counts, the baselines configured
  and the metadata columns, and per baseline (`baselines`) its description, pooled and per-user AUC (null where it does not
  apply or failed) and a note saying why, or what was approximated;
- `test_pairs.parquet`: the test pairs (user_id, track_id, label) in the
  order scored, and a `score.<name>` column per baseline that applies;
- custom properties: `test_pairs`, `<name>.pooled_auc`, `<name>.per_user_auc`
  (MLMD keeps six decimals; `baselines.json` the full value), `<name>.note`.
"""

# No `from __future__ import annotations`: TFX reads the function's annotations as types.
import json
from typing import Optional, Tuple

import pandas as pd
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types.artifact import Artifact
from tfx.types.standard_artifacts import Examples

import tensorflow as tf

from musicrec import storage
from musicrec.components.artifacts import LogMelFeatures
from musicrec.data.adapters import load_with_adapter
from musicrec.data.audio_pairs import read_pair_examples
from musicrec.names import TEST, TRAIN, split_folder
from musicrec.trainer.audio_branch import AudioBranchConfig
from musicrec.trainer.log_mel_shards import LogMels, feature_files, open_log_mels
from musicrec.trainer.practitioner_baselines import MSD_PATCH_FRONT_ENDS, evaluate_baselines

RESULTS_FILE = "baselines.json"
PAIRS_FILE = "test_pairs.parquet"
SCORE_PREFIX = "score."


class PractitionerBaselineResults(Artifact):
    """`baselines.json` and `test_pairs.parquet` (see the module docstring)."""

    TYPE_NAME = "musicrec.PractitionerBaselineResults"


def baselines_config(baselines, metadata_columns) -> str:
    """The component's `baselines_config` parameter."""
    return json.dumps({"baselines": list(baselines), "metadata_columns": list(metadata_columns)})


@component
def PractitionerBaselines(
    dataset_dir: Parameter[str],
    dataset_adapter: Parameter[str],
    baselines_config: Parameter[str],
    feature_cache_dir: Parameter[str],
    code_fingerprint: Parameter[str],
    audio_pairs: InputArtifact[Examples],
    audio_features: InputArtifact[LogMelFeatures],
    baselines: OutputArtifact[PractitionerBaselineResults],
) -> None:
    """Fits each configured baseline on the train pairs and scores every test pair; one that does
    not apply to the dataset or fails is written with the reason instead of an AUC.
    `feature_cache_dir`: musicnn features per audio file, kept across runs (keyed by file and model)."""
    del code_fingerprint  # only in the cache key
    config = json.loads(baselines_config)
    train, test = (read_pair_examples([storage.join(audio_pairs.uri, split_folder(split), "*")])
                   for split in (TRAIN, TEST))
    dataset = load_with_adapter(dataset_dir, dataset_adapter)
    musicnn_store = stored_musicnn_features(audio_features.uri) if "musicnn" in config["baselines"] else None
    results = evaluate_baselines(train, test, dataset.tracks, dataset.audio_files(), feature_cache_dir,
                                 config["baselines"], config["metadata_columns"], musicnn_store)
    out = storage.path(baselines.uri)
    out.mkdir(parents=True, exist_ok=True)
    pairs = test[["user_id", "track_id", "label"]].copy()
    for result in results:
        if result.scores is not None:
            pairs[SCORE_PREFIX + result.name] = result.scores
    storage.write_parquet(pairs, out / PAIRS_FILE)
    rows = [result.as_dict() for result in results]
    summary = {"test_pairs": len(test), "train_pairs": len(train), "configured": config["baselines"],
               "metadata_columns": config["metadata_columns"], "baselines": rows}
    (out / RESULTS_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    baselines.set_int_custom_property("test_pairs", len(test))
    for row in rows:
        for key in ("pooled", "per_user"):
            if row[key] is not None:
                baselines.set_float_custom_property(f"{row['name']}.{key}_auc", row[key])
        if row["note"]:
            baselines.set_string_custom_property(f"{row['name']}.note", row["note"])


def stored_musicnn_features(features_uri) -> Optional[LogMels]:
    """AudioFeatures' patch features that hold the musicnn baseline's, where the run's variant had
    them written."""
    for name in MSD_PATCH_FRONT_ENDS:
        pattern = feature_files(features_uri, name)
        if tf.io.gfile.glob(pattern):
            return open_log_mels([pattern], AudioBranchConfig().log_mel_memory_mb, name)
    return None


def read_baselines(uri) -> Tuple[dict, pd.DataFrame]:
    """(the `baselines.json` summary, the test pairs with their scores) of an artifact."""
    folder = storage.path(uri)
    return json.loads((folder / RESULTS_FILE).read_text()), storage.read_parquet(folder / PAIRS_FILE)
