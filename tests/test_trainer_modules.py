"""The TFX Trainer entry points (`run_fn`) of both branches, called the way TFX's Trainer calls them."""

import json
import math

import numpy as np
import tensorflow as tf
from tfx.components.trainer.fn_args_utils import FnArgs

from sklearn.metrics import roc_auc_score

from musicrec.data.audio_pairs import build_audio_pairs, user_queries, write_pair_examples
from musicrec.data.loading import load_dataset
from musicrec.data.user_examples import build_user_examples, write_user_examples
from musicrec.trainer import audio_module, user_module
from musicrec.trainer.retrieval_eval import HYBRID, MF, POPULARITY, TWO_TOWER
from musicrec.data.tf_examples import columns_from_frame, serialize_rows
from musicrec.names import EMBED_LOG_MEL_SIGNATURE, EMBED_USER_SIGNATURE, SCORE_EXAMPLES_SIGNATURE, USER_EMBEDDINGS_FILE


def test_user_branch_run_fn_trains_reports_and_exports(tiny_dataset, tmp_path):
    data = build_user_examples(load_dataset(tiny_dataset))
    write_user_examples(data.train, tmp_path / "train.gz")
    write_user_examples(data.test, tmp_path / "eval-0.gz")
    write_user_examples(data.new_users, tmp_path / "eval-1.gz")
    args = FnArgs(
        train_files=[str(tmp_path / "train.gz")], eval_files=[str(tmp_path / "eval-*.gz")],
        serving_model_dir=str(tmp_path / "serving"), model_run_dir=str(tmp_path / "run"),
        custom_config={"user_branch": {"epochs": 3, "query": "hybrid"}},
    )
    user_module.run_fn(args)
    report = json.loads((tmp_path / "run" / user_module.REPORT_FILE).read_text())
    assert report["config"]["epochs"] == 3 and report["config"]["query"] == "hybrid"
    # The hybrid beside the same tower without the id, MF and popularity, all from this one run;
    # on new users only the towers that embed them, and popularity.
    assert set(report["metrics"]) == {HYBRID, TWO_TOWER, MF, POPULARITY}
    assert set(report["new_user_metrics"]) == {HYBRID, TWO_TOWER, POPULARITY}
    for who, users in (("metrics", data.test), ("new_user_metrics", data.new_users)):
        assert {m["test_targets"] for m in report[who].values()} == {len(users)}
        for metrics in report[who].values():
            assert metrics["k@1%"] == math.ceil(0.01 * metrics["catalogue"]) and metrics["k@5%"] == math.ceil(0.05 * metrics["catalogue"])
            assert 0.0 <= metrics["recall@1%"] <= metrics["recall@5%"] <= metrics["recall@200"] <= 1.0
    assert set(report["checks"]) == {f"{name} beats popularity on new users at recall@{share}"
                                     for name in (HYBRID, TWO_TOWER) for share in ("1%", "5%")}
    table = (tmp_path / "run" / "user_branch_report.md").read_text()
    assert "| recall@1% | recall@5% |" in table and f"1% K = {report['metrics'][MF]['k@1%']}" in table
    assert (tmp_path / "serving" / USER_EMBEDDINGS_FILE).exists()
    tower = tf.saved_model.load(str(tmp_path / "serving" / "user_tower")).signatures[EMBED_USER_SIGNATURE]
    assert "user_id" in tower.structured_input_signature[1]


def test_audio_branch_run_fn_trains_reports_and_exports(tiny_dataset, tiny_features_dir, tiny_user_branch, tiny_log_mels, tmp_path):
    dataset = load_dataset(tiny_dataset)
    pairs = build_audio_pairs(dataset.interactions, dataset.users["user_id"], tiny_log_mels.usable(130))
    write_pair_examples(pairs.split("train"), tmp_path / "train.gz")
    write_pair_examples(pairs.split("validation"), tmp_path / "eval.gz")
    (tmp_path / "queries").mkdir()
    write_user_examples(user_queries(dataset, pairs), tmp_path / "queries" / "q.gz")
    args = FnArgs(
        train_files=[str(tmp_path / "train.gz")], eval_files=[str(tmp_path / "eval.gz")],
        serving_model_dir=str(tmp_path / "serving"), model_run_dir=str(tmp_path / "run"),
        base_model=str(tiny_user_branch / "model"),
        custom_config={
            "log_mel_uri": str(tiny_features_dir), "user_queries_uri": str(tmp_path / "queries"),
            "audio_branch": {"variant": "metric_1vs1", "epochs": 8},
        },
    )
    audio_module.run_fn(args)
    report = json.loads((tmp_path / "run" / audio_module.REPORT_FILE).read_text())
    assert report["config"]["negatives"] == 1 and report["validation"]["test_pairs"] == len(pairs.split("validation"))
    assert report["validation"]["auc"] > 0.55
    model = tf.saved_model.load(str(tmp_path / "serving"))
    crop = tf.constant(tiny_log_mels.log_mels[:2, :130].astype(np.float32))
    embedding = model.signatures[EMBED_LOG_MEL_SIGNATURE](log_mel=crop)["audio_embedding"].numpy()
    assert embedding.shape == (2, 40) and np.all(np.isfinite(embedding))
    # The scoring signature TFMA evaluates: calibrated, monotone in the cosine, as good as the report says.
    validation = pairs.split("validation")
    records = tf.constant([r for r in serialize_rows(columns_from_frame(validation[["user_id", "track_id"]]))])
    scored = {k: v.numpy() for k, v in model.signatures[SCORE_EXAMPLES_SIGNATURE](examples=records).items()}
    calibration = report["calibration"]
    expected = 1 / (1 + np.exp(-(calibration["slope"] * scored["cosine"] + calibration["intercept"])))
    np.testing.assert_allclose(scored["probability"], expected, rtol=1e-5)
    assert abs(roc_auc_score(validation["label"], scored["probability"]) - report["validation"]["auc"]) < 1e-6
    assert scored["known"].tolist() == [1] * len(validation)
    unknown = model.signatures[SCORE_EXAMPLES_SIGNATURE](examples=tf.constant([b""]))
    assert float(unknown["cosine"][0]) == 0.0 and int(unknown["known"][0]) == 0
