"""ServingPusher: if the Evaluator blessed the audio model, writes the serving models.

TFX's Pusher copies one trained model directory to `<base>/<version>/`. The
serving side needs three models composed from both Trainers' outputs
(`musicrec.serving.export.export_serving_models`: audio_embedder, user_embedder,
cold_start_recommender, plus models.config and batching parameters), so this
component does the composition and then writes the same `PushedModel`
artifact, with the same custom properties, that TFX's Pusher writes.

A cached push is not re-executed, so after another configuration's push the
cached model is no longer the newest version; `pipeline.runner` then pushes
it again with `push_serving_models` (TF Serving serves the newest version).
"""

# No `from __future__ import annotations`: TFX reads the function's annotations as types.
import json
import logging
from typing import Dict, Tuple

from etils import epath
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types.standard_artifacts import Model, ModelBlessing, PushedModel
from tfx.utils import path_utils

import musicrec
from musicrec import storage
from musicrec.names import MODEL_INFO_FILE
from musicrec.names import USER_EMBEDDINGS_FILE, USER_TOWER_DIR


@component
def ServingPusher(
    audio_model: InputArtifact[Model],
    user_model: InputArtifact[Model],
    model_blessing: InputArtifact[ModelBlessing],
    serving_base_path: Parameter[str],
    code_fingerprint: Parameter[str],
    pushed_model: OutputArtifact[PushedModel],
) -> None:
    del code_fingerprint  # only in the cache key: a changed export reruns the push
    if not model_blessing.get_int_custom_property("blessed"):
        pushed_model.set_int_custom_property("pushed", 0)
        logging.warning("%s push: the model was not blessed by the evaluator; nothing pushed", musicrec.LOG_TAG)
        return
    version, pushed = push_serving_models(audio_model.uri, user_model.uri, serving_base_path)
    pushed_model.set_int_custom_property("pushed", 1)
    pushed_model.set_string_custom_property("pushed_destination", storage.absolute(serving_base_path))
    pushed_model.set_int_custom_property("pushed_version", version)
    storage.path(pushed_model.uri).mkdir(parents=True, exist_ok=True)
    (storage.path(pushed_model.uri) / "pushed.json").write_text(
        json.dumps({name: str(path) for name, path in pushed.items()}, indent=2) + "\n"
    )


def push_serving_models(audio_model_uri: str, user_model_uri: str, serving_base_path: str) -> Tuple[int, Dict[str, epath.Path]]:
    """Exports the serving models composed from the two Trainers' Model artifacts as the next
    version under `serving_base_path`; returns (version, {model name: version folder})."""
    from musicrec.serving.export import export_serving_models, next_version
    from musicrec.trainer.audio_export import audio_model_front_end

    audio_dir = storage.path(path_utils.serving_model_path(audio_model_uri))
    user_dir = storage.path(path_utils.serving_model_path(user_model_uri))
    info = json.loads((audio_dir / MODEL_INFO_FILE).read_text())
    version = next_version(serving_base_path)
    pushed = export_serving_models(
        audio_encoder_dir=audio_dir, user_tower_dir=user_dir / USER_TOWER_DIR,
        user_embeddings_path=user_dir / USER_EMBEDDINGS_FILE, base_path=serving_base_path, version=version,
        context_frames=info["context_frames"], front_end=audio_model_front_end(audio_dir),
    )
    logging.info("%s push: version %d of %s under %s", musicrec.LOG_TAG, version, ", ".join(pushed), serving_base_path)
    return version, pushed
