"""TFX Trainer entry point of the audio branch: `run_fn` (TFX resolves
`musicrec.trainer.audio_module.run_fn` by that name).

Training lives in `audio_training`, evaluation and calibration in
`audio_evaluation`, the SavedModel in `audio_export`.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import pandas as pd

from musicrec import storage
from musicrec.data.audio_pairs import AudioPairs, read_pair_examples
from musicrec.data.user_examples import read_user_examples
from musicrec.names import USER_TOWER_DIR
from musicrec.trainer.audio_branch import AudioBranchConfig
from musicrec.trainer.audio_data import UserVectors, usable_pairs
from musicrec.trainer.audio_evaluation import evaluate_liked_disliked, fit_calibration, pair_scores, track_embeddings
from musicrec.trainer.audio_export import PairScorer, export_audio_model, write_model_info, write_refined_users
from musicrec.trainer.log_mel_shards import feature_files, open_log_mels
from musicrec.trainer.audio_training import train_audio_branch

REPORT_FILE = "audio_branch_report.json"
# Written next to the SavedModel's assets: what the pusher and readers need to know.


def run_fn(fn_args) -> None:
    """TFX Trainer entry point of the audio branch (run by components.audio_trainer.AudioTrainer).

    train_files / eval_files: the ingestion's audio pair examples (train,
    eval = validation). base_model: the user-branch model, whose user tower
    embeds each user from their `user_queries` row (liked tracks outside the
    evaluated pairs). custom_config: `log_mel_uri` and `user_queries_uri`
    (added by the AudioTrainer executor from its input artifacts) and
    optional `audio_branch` (AudioBranchConfig fields, e.g. {"variant":
    "metric_1vs4", "epochs": 10}).

    Exports one SavedModel: the encoder (`embed_log_mel`) and the calibrated
    pair scorer (`score_examples`) with the UE and track AE tables baked in.
    """
    custom = dict(fn_args.custom_config or {})
    branch = dict(custom.get("audio_branch", {}))
    variant = branch.pop("variant", None)
    config = AudioBranchConfig.variant(variant, **branch) if variant else AudioBranchConfig(**branch)
    store = open_log_mels([feature_files(custom["log_mel_uri"], config.front_end)], config.log_mel_memory_mb,
                          config.front_end)
    queries = read_user_examples([storage.join(custom["user_queries_uri"], "*")])
    users = UserVectors.from_user_tower(storage.join(fn_args.base_model, USER_TOWER_DIR), queries)
    frames = pd.concat([
        read_pair_examples(fn_args.train_files).assign(split="train"),
        read_pair_examples(fn_args.eval_files).assign(split="validation"),
    ], ignore_index=True)
    pairs = AudioPairs(pairs=frames, excluded={})
    trained = train_audio_branch(pairs, store, users, config, verbose=2)
    track_ae = track_embeddings(trained.model.encoder, store, config.context_frames)
    validation = usable_pairs(pairs.split("validation"), trained.users, store, 1)
    cosine = pair_scores(validation, trained.user_vectors(), trained.users.index(), track_ae, store)
    slope, intercept = fit_calibration(cosine, validation["label"].to_numpy())
    scorer = PairScorer(trained.users.user_ids, trained.user_vectors(), store.track_ids, track_ae, slope, intercept)
    model_dir = export_audio_model(trained, fn_args.serving_model_dir, scorer)
    info = {
        "variant": variant, "config": dataclasses.asdict(config), "context_frames": config.context_frames,
        "front_end": config.front_end,
        "calibration": {"slope": slope, "intercept": intercept},
        "validation": evaluate_liked_disliked(trained, pairs, store, test_split="validation", track_ae=track_ae),
        "segments_per_second": trained.segments_per_second,
        "training": trained.training_summary(),
    }
    write_model_info(model_dir, info)
    write_refined_users(trained, model_dir)
    report_dir = storage.path(fn_args.model_run_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / REPORT_FILE).write_text(json.dumps(info, indent=2) + "\n")
    logging.info("%s audio branch (%s): validation AUC %.3f", musicrec.LOG_TAG, variant or config.loss, info["validation"]["auc"])
