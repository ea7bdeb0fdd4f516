"""Writes the TF Serving models, their warm-up requests, `models.config` and the batching parameters.

Layout under `base_path` (TF Serving's: one folder per model, one numbered
folder per version):

  audio_embedder/<version>/           embed_waveform (default), embed_wav: audio -> track-level AE
  user_embedder/<version>/            embed_user (default): history ids + demographics -> UE
  cold_start_recommender/<version>/   recommend_users (default), recommend_users_wav,
                                      recommend_users_for_embedding: audio -> top-k user ids, cosines
  models.config                       model_config_list for all three (paths as the container sees them)
  batching_parameters.txt             for `tensorflow_model_server --enable_batching`

Every version folder carries `assets.extra/tf_serving_warmup_requests`; the audio_embedder's and
the recommender's also carry `assets.extra/musicrec_model.json` (context frames, max_k, users).

Version folders appear whole: each model is written into a temporary sibling,
`.tmp-<version>-<pid>` (TF Serving only loads all-digit folder names), and
renamed to its version number once written. A push interrupted before that
leaves only the temporary folder, which the next export (and the next
pipeline run) removes and reports.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Dict, List

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf
from etils import epath
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2
from tfx.utils import io_utils

from musicrec import storage
from musicrec.audio import front_ends
from musicrec.serving import graphs, warmup
from musicrec.trainer.audio_data import UserVectors
from musicrec.names import ADAPT_USER_SIGNATURE, EMBED_LOG_MEL_SIGNATURE, MODEL_INFO_FILE, REFINED_USERS_FILE

MODEL_NAMES = (graphs.AUDIO_EMBEDDER, graphs.USER_EMBEDDER, graphs.RECOMMENDER)
MODELS_CONFIG = "models.config"
BATCHING_PARAMETERS = "batching_parameters.txt"
CONTAINER_BASE_PATH = "/models"
STAGING_PREFIX = ".tmp-"  # a version folder being written: .tmp-<version>-<pid>
# TF Serving's BatchingParameters (text proto; its message is not in the tensorflow-serving-api
# wheel, so it is written out here). Padding lets requests of different audio lengths share a
# batch; the graphs ignore what lies past each row's `num_samples`.
BATCHING_TEXT = """max_batch_size { value: 32 }
batch_timeout_micros { value: 2000 }
max_enqueued_batches { value: 64 }
num_batch_threads { value: 4 }
pad_variable_length_inputs: true
"""


class AudioEmbedder(tf.Module):
    def __init__(self, encoder, context_frames: int, front_end: str = "log_mel"):
        super().__init__()
        self.encoder = encoder  # tracked, so the encoder's variables are saved with this module
        self.track = graphs.TrackEmbedding(encoder.signatures[EMBED_LOG_MEL_SIGNATURE], context_frames,
                                           front_ends.front_end(front_end))
        self.front_end = self.track.front_end.module()  # musicnn's frozen network: its variables too

    def signatures(self):
        embed_waveform = tf.function(lambda inputs: {"audio_embedding": self.track.from_waveform(**inputs)},
                                     input_signature=[graphs.waveform_spec()])
        embed_wav = tf.function(lambda inputs: {"audio_embedding": self.track.from_wav(inputs["wav_bytes"])},
                                input_signature=[graphs.wav_spec()])
        return {graphs.EMBED_WAVEFORM: embed_waveform, graphs.EMBED_WAV: embed_wav, graphs.SERVING_DEFAULT: embed_waveform}


class ColdStartRecommender(AudioEmbedder):
    def __init__(self, encoder, context_frames: int, users: UserVectors, max_k: int, front_end: str = "log_mel"):
        super().__init__(encoder, context_frames, front_end)
        self.index = graphs.UserIndex(users.user_ids, users.vectors, max_k)

    def signatures(self):
        waveform = {**graphs.waveform_spec(), **graphs.k_spec()}
        wav = {**graphs.wav_spec(), **graphs.k_spec()}
        dim = self.index.user_vectors.shape[1]
        embedding = {"audio_embedding": tf.TensorSpec([None, dim], tf.float32, name="audio_embedding"), **graphs.k_spec()}
        from_waveform = tf.function(
            lambda i: self.index.top_k(self.track.from_waveform(i["waveform"], i["num_samples"], i["sample_rate"]), i["k"]),
            input_signature=[waveform])
        from_wav = tf.function(lambda i: self.index.top_k(self.track.from_wav(i["wav_bytes"]), i["k"]), input_signature=[wav])
        from_embedding = tf.function(lambda i: self.index.top_k(i["audio_embedding"], i["k"]), input_signature=[embedding])
        return {graphs.RECOMMEND_WAVEFORM: from_waveform, graphs.RECOMMEND_WAV: from_wav,
                graphs.RECOMMEND_EMBEDDING: from_embedding, graphs.SERVING_DEFAULT: from_waveform}


def export_serving_models(audio_encoder_dir, user_tower_dir, user_embeddings_path, base_path, version: int,
                          context_frames: int, max_k: int = 1000,
                          container_base_path: str = CONTAINER_BASE_PATH, front_end: str = "log_mel") -> Dict[str, epath.Path]:
    """Writes audio_embedder, user_embedder and cold_start_recommender as version `version` under
    `base_path`, plus `models.config` (base paths under `container_base_path`, where the serving
    container mounts `base_path`) and `batching_parameters.txt`. Returns {model name: version dir}.
    `front_end`: what the encoder reads (the audio model's `front_end`, `musicrec.audio.front_ends`);
    the graphs compute it from the request's waveform."""
    if int(version) < 1:
        raise ValueError(f"TF Serving versions are positive integers; got {version}")
    base = storage.path(base_path)
    dirs = {name: base / name / str(int(version)) for name in MODEL_NAMES}
    for path in dirs.values():
        if path.exists():
            raise FileExistsError(f"{path} exists: TF Serving versions are immutable; export a new version")
    encoder = tf.saved_model.load(str(audio_encoder_dir))
    if EMBED_LOG_MEL_SIGNATURE not in encoder.signatures:
        raise ValueError(f"{audio_encoder_dir} has no '{EMBED_LOG_MEL_SIGNATURE}' signature (an audio_encoder export)")
    users = scored_users(UserVectors.from_parquet(user_embeddings_path), encoder, storage.path(audio_encoder_dir))
    audio_dim = encoder.signatures[EMBED_LOG_MEL_SIGNATURE].structured_outputs["audio_embedding"].shape[-1]
    if users.vectors.shape[1] != audio_dim:
        raise ValueError(f"UEs are {users.vectors.shape[1]}-d but the audio encoder's AEs are {audio_dim}-d")

    remove_interrupted_exports(base)
    staging = {name: path.with_name(f"{STAGING_PREFIX}{path.name}-{os.getpid()}") for name, path in dirs.items()}
    save_model(AudioEmbedder(encoder, context_frames, front_end), staging[graphs.AUDIO_EMBEDDER])
    recommender = ColdStartRecommender(encoder, context_frames, users, max_k, front_end)
    save_model(recommender, staging[graphs.RECOMMENDER])
    # The user tower already holds its vocabulary lookups and normalisation; it is
    # copied as exported (byte for byte) and only gains warm-up requests.
    io_utils.copy_dir(str(user_tower_dir), str(staging[graphs.USER_EMBEDDER]))

    tower = tf.saved_model.load(str(user_tower_dir)).signatures[graphs.EMBED_USER]
    audio = warmup.warmup_waveform(recommender.track.min_samples)
    warmup.write(staging[graphs.AUDIO_EMBEDDER], warmup.audio_requests(graphs.AUDIO_EMBEDDER, audio))
    warmup.write(staging[graphs.RECOMMENDER], warmup.recommender_requests(audio, audio_dim, min(100, recommender.index.max_k)))
    warmup.write(staging[graphs.USER_EMBEDDER], warmup.user_requests(tower.structured_input_signature[1]))
    for name in (graphs.AUDIO_EMBEDDER, graphs.RECOMMENDER):
        write_model_info(staging[name], recommender)
    for name in MODEL_NAMES:
        # Atomic on a local file system: TF Serving never sees a half-written version. An object
        # store has no rename: the folder is copied, as TFX's own Pusher copies its versions.
        staging[name].rename(dirs[name])
    write_models_config(base / MODELS_CONFIG, container_base_path)
    (base / BATCHING_PARAMETERS).write_text(BATCHING_TEXT)
    return dirs


def write_model_info(version_dir: epath.Path, recommender: ColdStartRecommender) -> None:
    """What batch jobs need beside the graphs: the release job embeds precomputed features, so it
    needs the front end and the segment length the encoder was trained on, which the graph's input
    does not fix."""
    info = {"context_frames": int(recommender.track.context_frames), "front_end": recommender.track.front_end.name,
            "max_k": recommender.index.max_k,
            "users": recommender.index.num_users}
    (storage.path(version_dir) / MODEL_INFO_FILE).parent.mkdir(parents=True, exist_ok=True)
    (storage.path(version_dir) / MODEL_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")


def scored_users(users: UserVectors, audio_model, audio_model_dir: epath.Path) -> UserVectors:
    """The table the recommender scores AEs against, as the audio model scored them: the user
    branch's UEs (every user, from their whole history), through the audio model's UE adapter
    when it has one, and the vectors the audio model refined per user for those it refined."""
    vectors = users.vectors
    if ADAPT_USER_SIGNATURE in audio_model.signatures:
        adapt = audio_model.signatures[ADAPT_USER_SIGNATURE]
        vectors = adapt(user_embedding=tf.constant(vectors, tf.float32))["user_embedding"].numpy()
    refined_path = audio_model_dir / REFINED_USERS_FILE
    if refined_path.exists():
        refined = UserVectors.from_parquet(refined_path)
        index = users.index()
        known = np.array([user in index for user in refined.user_ids], bool)
        vectors = vectors.copy()
        vectors[[index[user] for user in refined.user_ids[known]]] = refined.vectors[known]
        logging.info("%s serving table: %d users take the audio model's refined vectors", musicrec.LOG_TAG, known.sum())
        if not known.all():
            logging.warning("%s serving table: %d refined users are not in the user branch's table and are not served",
                            musicrec.LOG_TAG, (~known).sum())
    return UserVectors(users.user_ids, vectors)


def remove_interrupted_exports(base_path) -> List[epath.Path]:
    """Deletes the temporary version folders an interrupted export left under `base_path` (those of
    this process, which exports one version at a time, or of a process no longer running) and
    logs each; returns them. Another live process's export in progress is left alone."""
    leftovers = [p for name in MODEL_NAMES for p in sorted((storage.path(base_path) / name).glob(f"{STAGING_PREFIX}*"))
                 if not _exporting_elsewhere(p)]
    for leftover in leftovers:
        leftover.rmtree()
        logging.warning("%s removed %s, left by an interrupted push (never served: not a version number)",
                        musicrec.LOG_TAG, leftover)
    return leftovers


def _exporting_elsewhere(staging_dir: epath.Path) -> bool:
    """Whether the process named in a `.tmp-<version>-<pid>` folder is another one, still running."""
    pid = staging_dir.name.rsplit("-", 1)[-1]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    return True


def save_model(module, path: epath.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(module, str(path), signatures=module.signatures())


def write_models_config(path: epath.Path, container_base_path: str = CONTAINER_BASE_PATH) -> None:
    """TF Serving's `--model_config_file`: every model, its latest version served."""
    config = model_server_config_pb2.ModelServerConfig()
    for name in MODEL_NAMES:
        config.model_config_list.config.add(
            name=name, base_path=f"{container_base_path.rstrip('/')}/{name}", model_platform="tensorflow")
    path.write_text(text_format.MessageToString(config))


def latest_version(model_dir: epath.Path) -> epath.Path:
    """The highest numbered version folder of a model (TF Serving's default version policy)."""
    model_dir = storage.path(model_dir)
    versions = [p for p in model_dir.iterdir() if p.name.isdigit() and (p / "saved_model.pb").exists()] \
        if model_dir.is_dir() else []
    if not versions:
        raise FileNotFoundError(f"no SavedModel versions under {model_dir} (expected {model_dir}/<number>/saved_model.pb)")
    return max(versions, key=lambda p: int(p.name))


def next_version(base_path) -> int:
    """One more than the highest version of any exported model under `base_path` (1 when none)."""
    found = [int(p.name) for name in MODEL_NAMES for p in (storage.path(base_path) / name).glob("*") if p.name.isdigit()]
    return max(found, default=0) + 1

