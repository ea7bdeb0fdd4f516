"""Export of the audio branch: the encoder SavedModel and the calibrated pair scorer.

`export_audio_model` writes `embed_log_mel` (log-mel -> AE) and, with a
`PairScorer`, `score_examples` (the signature TFMA evaluates), the UE and
track AE tables baked in.
"""

from __future__ import annotations

import json
from typing import Optional

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf
from etils import epath

from musicrec import storage
from musicrec.names import (
    ADAPT_USER_SIGNATURE, AUDIO_ENCODER_DIR, EMBED_LOG_MEL_SIGNATURE, MODEL_INFO_FILE, REFINED_USERS_FILE,
    SCORE_EXAMPLES_SIGNATURE,
)
from musicrec.trainer.audio_training import TrainedAudioBranch
from musicrec.trainer.similarity import cosine
from musicrec.trainer.user_export import write_embeddings


class PairScorer(tf.Module):
    """Liked probability of (user_id, track_id) pairs given as serialized tf.Examples.

    The UE (or learned user vector) and track AE tables are baked in; the score
    is cos(user, track) through a logistic calibration fitted on the validation
    pairs, so TFMA's calibration and precision/recall at 0.5 mean something.
    Unknown users or tracks score cos = 0 (a zero vector), never an error, and
    the `known` output (0 for such a pair) says which scores are that
    fallback, so a caller scoring other pairs can count and drop them.
    """

    def __init__(self, user_ids, user_vectors, track_ids, track_vectors, slope: float, intercept: float):
        super().__init__(name="pair_scorer")
        self.user_index, self.users = self._table(user_ids, user_vectors, "user")
        self.track_index, self.tracks = self._table(track_ids, track_vectors, "track")
        self.slope, self.intercept = tf.constant(slope, tf.float32), tf.constant(intercept, tf.float32)

    @staticmethod
    def _table(ids, vectors, name):
        vectors = np.concatenate([vectors, np.zeros((1, vectors.shape[1]))]).astype(np.float32)  # the unknown row
        index = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(np.asarray(ids, dtype=str)), tf.range(len(ids), dtype=tf.int64)),
            default_value=len(ids), name=f"{name}_index",
        )
        return index, tf.Variable(vectors, trainable=False, name=f"{name}_vectors")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def score_examples(self, examples):
        spec = {key: tf.io.FixedLenFeature([], tf.string, default_value="") for key in ("user_id", "track_id")}
        parsed = tf.io.parse_example(examples, spec)
        user_rows, track_rows = self.user_index.lookup(parsed["user_id"]), self.track_index.lookup(parsed["track_id"])
        similarity = cosine(tf.gather(self.users, user_rows), tf.gather(self.tracks, track_rows))
        known = tf.logical_and(user_rows < self.user_index.size(), track_rows < self.track_index.size())
        return {"probability": tf.sigmoid(self.slope * similarity + self.intercept), "cosine": similarity,
                "known": tf.cast(known, tf.int64)}


def export_audio_model(trained: TrainedAudioBranch, path, scorer: Optional[PairScorer] = None) -> epath.Path:
    """SavedModel at `path`: `embed_log_mel` (also `serving_default`): the front end's frames
    [batch, frames, dim] (log-mel: 128 bands; musicnn: 753 features per patch) -> AE [batch, 40];
    with a scorer also `score_examples` (the signature TFMA evaluates); with a UE adapter also
    `adapt_user_embedding`: UE [batch, 40] -> the vector AEs are scored against, for any user
    (new ones too), so a UE table can be adapted where it is built. MODEL_INFO_FILE records
    the front end and the context frames.

    Serving (the audio_embedder) puts decoding and the front end in front of `embed_log_mel`.
    """
    encoder = trained.model.encoder
    embed = tf.function(
        lambda log_mel: {"audio_embedding": encoder(log_mel, training=False)},
        input_signature=[tf.TensorSpec([None, None, encoder.input_shape[-1]], tf.float32, name="log_mel")],
    )
    module = tf.Module()
    module.encoder = encoder
    signatures = {EMBED_LOG_MEL_SIGNATURE: embed, "serving_default": embed}
    if scorer is not None:
        module.scorer = scorer
        signatures[SCORE_EXAMPLES_SIGNATURE] = scorer.score_examples
    adapter = trained.model.adapter
    if adapter is not None:
        module.adapter = adapter
        signatures[ADAPT_USER_SIGNATURE] = tf.function(
            lambda user_embedding: {"user_embedding": adapter(user_embedding)},
            input_signature=[tf.TensorSpec([None, adapter.kernel.shape[0]], tf.float32, name="user_embedding")],
        )
    tf.saved_model.save(module, str(path), signatures=signatures)
    config = getattr(trained, "config", None)
    if config is not None:
        # What a reader of the bare encoder needs to feed it (the Trainer's run_fn adds the rest).
        write_model_info(path, {"front_end": config.front_end, "context_frames": config.context_frames})
    return storage.path(path)


def audio_model_front_end(model_dir) -> str:
    """The front end an audio-branch export reads, from its MODEL_INFO_FILE (log-mel for exports
    older than front ends, which have none or lack the key)."""
    path = storage.path(model_dir) / MODEL_INFO_FILE
    return json.loads(path.read_text()).get("front_end", "log_mel") if path.exists() else "log_mel"


def write_model_info(model_dir, info: dict) -> None:
    """`info` as the SavedModel's MODEL_INFO_FILE (JSON in assets.extra, beside the graph)."""
    path = storage.path(model_dir) / MODEL_INFO_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2) + "\n")


def write_refined_users(trained: TrainedAudioBranch, model_dir) -> Optional[epath.Path]:
    """The vectors of the users the refinement moved, beside the SavedModel (REFINED_USERS_FILE):
    the serving export gives them to those users in place of their UEs; the others keep their UE."""
    refinement = trained.refinement
    if refinement is None or not refinement.refined_users:
        return None
    path = storage.path(model_dir) / REFINED_USERS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_embeddings(path, "user_id", trained.users.user_ids[refinement.refined], refinement.vectors[refinement.refined])
    return path


def export_audio_encoder(trained: TrainedAudioBranch, out_dir) -> epath.Path:
    """The encoder alone, as `<out_dir>/audio_encoder/`."""
    return export_audio_model(trained, storage.path(out_dir) / AUDIO_ENCODER_DIR)


def export_untrained_encoder(out_dir, config=None) -> epath.Path:
    """An encoder with its initial weights, exported as a trained one is (`<out_dir>/audio_encoder/`):
    for benchmarks, whose timings do not depend on the weights."""
    import types

    from musicrec.trainer.audio_branch import AudioBranchConfig, build_audio_encoder

    encoder = build_audio_encoder(config or AudioBranchConfig())
    return export_audio_encoder(types.SimpleNamespace(model=types.SimpleNamespace(encoder=encoder, adapter=None)), out_dir)


