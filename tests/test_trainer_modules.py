"""The TFX Trainer entry points (`run_fn`) of both branches, called the way TFX's Trainer calls them."""

import json

import numpy as np
import tensorflow as tf
from tfx.components.trainer.fn_args_utils import FnArgs

from musicrec.data.audio_pairs import build_audio_pairs, write_pair_examples
from musicrec.data.loading import load_dataset
from musicrec.data.user_examples import build_user_examples, write_user_examples
from trainer import audio_module, user_module
from trainer.user_export import EMBED_USER_SIGNATURE, USER_EMBEDDINGS_FILE, write_embeddings


def test_user_branch_run_fn_trains_reports_and_exports(tiny_dataset, tmp_path):
    data = build_user_examples(load_dataset(tiny_dataset))
    write_user_examples(data.train, tmp_path / "train.gz")
    write_user_examples(data.test, tmp_path / "eval.gz")
    args = FnArgs(
        train_files=[str(tmp_path / "train.gz")], eval_files=[str(tmp_path / "eval.gz")],
        serving_model_dir=str(tmp_path / "serving"), model_run_dir=str(tmp_path / "run"),
        custom_config={"user_branch": {"epochs": 3}},
    )
    user_module.run_fn(args)
    report = json.loads((tmp_path / "run" / user_module.REPORT_FILE).read_text())
    assert report["config"]["epochs"] == 3
    assert set(report["metrics"]) == {"two-tower (history + demographics)", "matrix factorisation (user id)", "popularity"}
    assert (tmp_path / "serving" / USER_EMBEDDINGS_FILE).exists()
    assert EMBED_USER_SIGNATURE in tf.saved_model.load(str(tmp_path / "serving" / "user_tower")).signatures


def test_audio_branch_run_fn_trains_reports_and_exports(tiny_dataset, tiny_features_dir, tiny_user_vectors, tiny_log_mels, tmp_path):
    dataset = load_dataset(tiny_dataset)
    pairs = build_audio_pairs(dataset.interactions, tiny_user_vectors.user_ids, tiny_log_mels.usable(130))
    write_pair_examples(pairs.split("train"), tmp_path / "train.gz")
    write_pair_examples(pairs.split("validation"), tmp_path / "eval.gz")
    write_embeddings(tmp_path / "ue.parquet", "user_id", tiny_user_vectors.user_ids, tiny_user_vectors.vectors)
    args = FnArgs(
        train_files=[str(tmp_path / "train.gz")], eval_files=[str(tmp_path / "eval.gz")],
        serving_model_dir=str(tmp_path / "serving"), model_run_dir=str(tmp_path / "run"),
        custom_config={
            "log_mel_pattern": str(tiny_features_dir / "log_mel-*"),
            "user_embeddings": str(tmp_path / "ue.parquet"),
            "audio_branch": {"negatives": 1, "loss": "hinge", "epochs": 8},
        },
    )
    audio_module.run_fn(args)
    report = json.loads((tmp_path / "run" / audio_module.REPORT_FILE).read_text())
    assert report["config"]["negatives"] == 1 and report["validation"]["test_pairs"] == len(pairs.split("validation"))
    assert report["validation"]["auc"] > 0.55
    encoder = tf.saved_model.load(str(tmp_path / "serving" / audio_module.AUDIO_ENCODER_DIR))
    crop = tf.constant(tiny_log_mels.log_mels[:2, :130].astype(np.float32))
    embedding = encoder.signatures[audio_module.EMBED_LOG_MEL_SIGNATURE](log_mel=crop)["audio_embedding"].numpy()
    assert embedding.shape == (2, 40) and np.all(np.isfinite(embedding))
