"""Exports of the user branch: the user-tower and retrieval SavedModels, and the embedding tables.

  user_tower/   SavedModel, signature `embed_user`: history ids + demographics -> UE [batch, 40]
                (the hybrid tower also takes `user_id`; an id outside training embeds as a new user)
  retrieval/    SavedModel, signature `recommend_tracks`: the same inputs -> top-k (scores, track_ids),
                a TFRS BruteForce index over every candidate track
  user_embeddings.parquet   user_id, embedding (40 floats): the UE of every user with a liked track
                            (`table_queries`: those seen in training and the held-out new users),
                            by the exported user tower from their history and demographics
  track_embeddings.parquet  track_id, embedding (40 floats): the candidate tower's output

The audio branch reads `user_embeddings.parquet`; serving loads the SavedModels.
Vocabulary lookups live inside the graphs, so serving needs no preprocessing.
"""

from __future__ import annotations

import logging
from typing import Dict

import musicrec  # (importing it first sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf
import tensorflow_recommenders as tfrs
from etils import epath

from musicrec import storage
from musicrec.data.user_examples import HISTORY_FEATURES, UserBranchData, UserExamples
from musicrec.trainer.user_training import TrainedUserBranch
from musicrec.names import EMBED_USER_SIGNATURE, RECOMMEND_SIGNATURE, RETRIEVAL_DIR, TRACK_EMBEDDINGS_FILE, USER_EMBEDDINGS_FILE, USER_TOWER_DIR



def input_signature(trained: TrainedUserBranch, history_length: int) -> Dict[str, tf.TensorSpec]:
    spec = {name: tf.TensorSpec([None, history_length], tf.string, name=name) for name in HISTORY_FEATURES}
    spec.update({name: tf.TensorSpec([None], tf.float32, name=name) for name in trained.vocab.numeric})
    spec.update({name: tf.TensorSpec([None], tf.string, name=name) for name in trained.vocab.categorical})
    if trained.config.uses_user_id:
        spec["user_id"] = tf.TensorSpec([None], tf.string, name="user_id")
    return spec


def export_user_branch(trained: TrainedUserBranch, data: UserBranchData, out_dir, top_k: int = 100) -> epath.Path:
    if not trained.config.uses_history:
        raise ValueError("only the towers with history + demographics are exported (the user-id model cannot embed new users)")
    out = storage.path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    history_length = data.train.columns["history_track_ids"].shape[1]
    signature = input_signature(trained, history_length)
    query_tower = trained.model.query_tower

    embed = tf.function(lambda features: {"user_embedding": query_tower(features)}, input_signature=[signature])
    module = tf.Module()
    module.query_tower = query_tower
    tf.saved_model.save(module, str(out / USER_TOWER_DIR), signatures={EMBED_USER_SIGNATURE: embed, "serving_default": embed})

    track_ids, candidates = trained.candidate_embeddings()
    index = tfrs.layers.factorized_top_k.BruteForce(query_tower, k=min(top_k, len(track_ids)))
    index.index(tf.constant(candidates), tf.constant(track_ids.astype(str)))
    recommend = tf.function(
        lambda features: dict(zip(("scores", "track_ids"), index(features))), input_signature=[signature]
    )
    index(signature_inputs(data, trained, rows=slice(0, 1)))  # builds the index before saving
    tf.saved_model.save(index, str(out / RETRIEVAL_DIR), signatures={RECOMMEND_SIGNATURE: recommend, "serving_default": recommend})

    queries = table_queries(data)
    write_embeddings(out / USER_EMBEDDINGS_FILE, "user_id", queries.columns["user_id"], trained.user_embeddings(queries))
    write_embeddings(out / TRACK_EMBEDDINGS_FILE, "track_id", track_ids, candidates)
    return out


def table_queries(data: UserBranchData) -> UserExamples:
    """One user-tower query per user of the UE table: the rows of `data.latest`, plus each
    held-out new user it lacks, from the history of their target rows (every liked track
    before their hold-out) and their demographics.

    The table is what the served recommender ranks, so a user missing here can never be
    recommended a track. The pipeline's Trainer rebuilds `latest` from the training examples
    alone (`branch_data_from_examples`), so it lacks every new user; the plain-dataset path
    (`build_user_examples`) lists them already, and nothing is added there.
    """
    new = data.new_users
    known = set(data.latest.columns["user_id"].astype(str))
    users = new.columns["user_id"].astype(str) if new is not None else np.asarray([], dtype=str)
    _, first_rows = np.unique(users, return_index=True)  # a new user's target rows share one history
    added = np.asarray([row for row in first_rows if users[row] not in known], dtype=np.int64)
    logging.info("%s UE table: %d users (%d held-out new users added)", musicrec.LOG_TAG, len(known) + len(added), len(added))
    if not len(added):
        return data.latest
    extra = new.take(added).columns
    return UserExamples({name: np.concatenate([column, extra[name]]) for name, column in data.latest.columns.items()})


def signature_inputs(data: UserBranchData, trained: TrainedUserBranch, rows=None) -> Dict[str, np.ndarray]:
    """The serving inputs for `data.latest` (all rows, or `rows`), as the signatures take them."""
    history_length = data.train.columns["history_track_ids"].shape[1]
    inputs = {}
    for name, spec in input_signature(trained, history_length).items():
        values = data.latest.columns[name]
        inputs[name] = values.astype(str) if spec.dtype == tf.string else values
    return inputs if rows is None else {k: v[rows] for k, v in inputs.items()}


def write_embeddings(path, id_column: str, ids, embeddings: np.ndarray) -> None:
    table = pa.table(
        {
            id_column: pa.array(np.asarray(ids).astype(str)),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.astype(np.float32).reshape(-1)), embeddings.shape[1]),
        }
    )
    storage.write_parquet(table, path)


def read_embeddings(path, id_column: str) -> pd.DataFrame:
    """id column + `embedding` as a float32 [n, d] numpy array per row."""
    frame = pq.read_table(storage.arrow_source(path)).to_pandas()
    frame["embedding"] = frame["embedding"].map(lambda v: np.asarray(v, dtype=np.float32))
    return frame
