"""The user branch: examples, masking, the loss by hand, OOV ids, training vs baselines, exports."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

from musicrec.data.loading import load_dataset
from musicrec.data.user_examples import (
    HISTORY_FEATURES,
    PAD,
    ExampleConfig,
    branch_data_from_examples,
    build_user_examples,
    read_user_examples,
    write_user_examples,
)
from musicrec.trainer.ranking import FactorizedScores, queries, ranking_metrics, share_k
from musicrec.trainer.retrieval_eval import popularity_metrics, model_metrics
from musicrec.trainer.user_config import UserBranchConfig
from musicrec.trainer.user_layers import OOV_INDEX, IdEmbedding, MaskedMean
from musicrec.trainer.user_loss import retrieval_loss
from musicrec.trainer.user_training import ValidationRecall, split_validation, train_user_branch
from musicrec.trainer.user_export import (
    EMBED_USER_SIGNATURE,
    RECOMMEND_SIGNATURE,
    USER_EMBEDDINGS_FILE,
    export_user_branch,
    read_embeddings,
    signature_inputs,
)


@pytest.fixture(scope="module")
def branch_data(tiny_dataset):
    return build_user_examples(load_dataset(tiny_dataset))


@pytest.fixture(scope="module")
def trained(branch_data):
    return train_user_branch(branch_data, UserBranchConfig(epochs=15), verbose=0)


@pytest.fixture(scope="module")
def hybrid(branch_data):
    return train_user_branch(branch_data, UserBranchConfig(query="hybrid", epochs=10, early_stopping_patience=0), verbose=0)


def test_examples_follow_time_and_hold_out_the_last_liked_tracks(branch_data):
    train, test = branch_data.train.columns, branch_data.test.columns
    user = train["user_id"][0]
    rows = np.flatnonzero(train["user_id"] == user)
    # Example t has the t earlier liked tracks as history, padded at the end.
    assert all((train["history_track_ids"][r] != PAD).sum() == i for i, r in enumerate(rows))
    assert train["history_track_ids"][rows[2]][:2].tolist() == train["track_id"][rows[:2]].tolist()
    held_out = test["track_id"][test["user_id"] == user]
    assert len(held_out) == ExampleConfig().holdout_last
    assert not set(held_out) & set(train["track_id"][rows])
    # Albums and artists line up with the tracks.
    assert train["history_album_ids"][rows[3]][0].startswith("al") and train["history_artist_ids"][rows[3]][3] == PAD


def test_new_users_are_kept_out_of_training_and_evaluated_apart(branch_data, trained):
    new_users = set(branch_data.new_users.columns["user_id"])
    assert len(new_users) == round(0.1 * len(branch_data.latest))
    assert not new_users & set(branch_data.train.columns["user_id"]) and not new_users & set(branch_data.test.columns["user_id"])
    track_ids, _ = trained.candidate_embeddings()
    metrics = model_metrics(trained, branch_data, branch_data.new_users)
    assert metrics["test_users"] == len(new_users) and metrics["test_targets"] == 3 * len(new_users)
    assert popularity_metrics(branch_data, track_ids, branch_data.new_users)["test_users"] == len(new_users)


def test_masked_mean_ignores_padding():
    embeddings = tf.constant([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 5.0], [7.0, 7.0], [9.0, 9.0]]])
    known = tf.constant([[True, True, False], [False, False, False]])
    np.testing.assert_allclose(MaskedMean()(embeddings, known).numpy(), [[2.0, 3.0], [0.0, 0.0]])


def test_history_skip_is_the_centroid_of_the_history_in_candidate_space(trained, branch_data):
    # The skip term projects the averaged history with the candidate tower's own (linear)
    # layer, which equals averaging the history tracks' candidate embeddings.
    row = branch_data.latest.take(np.arange(1))
    history = row.columns["history_track_ids"][0]
    history = history[history != PAD]
    features = {name: tf.constant(row.columns[name].astype(str)) for name in HISTORY_FEATURES}
    tower = trained.model.query_tower
    skip = tower._combine_items(tower.pooled_history(features)).numpy()[0]
    centroid = trained.model.candidate_tower(tf.constant(history.astype(str))).numpy().mean(axis=0)
    np.testing.assert_allclose(skip, centroid, rtol=1e-4, atol=1e-5)


def test_retrieval_loss_matches_a_hand_computed_case():
    queries = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    positives = tf.constant([[2.0, 0.0], [1.0, 1.0]])
    negatives = tf.constant([[0.0, 3.0], [0.0, 0.0]])
    probability = tf.constant([0.5, 0.25])
    loss = retrieval_loss(
        tfrs.tasks.Retrieval(remove_accidental_hits=True), queries, positives, tf.constant(["p1", "p2"]), probability,
        negatives, tf.constant(["n1", PAD]),
    ).numpy()
    # By hand: logits q.c - log p for positives (log-Q), q.c for the hard
    # negative n1 (p = 1), the absent second negative masked out.
    def row_loss(logits, target):
        return -(logits[target] - np.log(np.sum(np.exp(logits))))
    row1 = np.array([2.0 - np.log(0.5), 1.0 - np.log(0.25), 0.0])
    row2 = np.array([0.0 - np.log(0.5), 1.0 - np.log(0.25), 3.0])
    assert loss == pytest.approx(row_loss(row1, 0) + row_loss(row2, 1), rel=1e-5)


def test_unknown_ids_and_demographics_do_not_crash(trained, branch_data):
    batch = branch_data.latest.take(np.arange(2))
    normal = trained.user_embeddings(batch)
    batch.columns["history_track_ids"] = np.where(batch.columns["history_track_ids"] == PAD, PAD, "never-seen-track")
    batch.columns["gender"] = np.asarray(["unknown-gender"] * 2, dtype=object)
    batch.columns["age"] = np.asarray([np.nan, 200.0], dtype=np.float32)
    unknown = trained.user_embeddings(batch)
    assert np.all(np.isfinite(unknown)) and not np.allclose(unknown, normal)
    # Unknown history ids are masked out like padding: same UE as an empty history.
    empty = batch.take(np.arange(2))
    for name in ("history_track_ids", "history_album_ids", "history_artist_ids"):
        batch.columns[name] = np.where(batch.columns[name] == PAD, PAD, "never-seen-id")
        empty.columns[name] = np.full_like(empty.columns[name], PAD)
    np.testing.assert_allclose(trained.user_embeddings(batch), trained.user_embeddings(empty), atol=1e-6)
    candidate = trained.model.candidate_tower(tf.constant(["never-seen-track"])).numpy()
    assert np.all(np.isfinite(candidate))


def test_training_beats_popularity_on_tiny(trained, branch_data):
    track_ids, _ = trained.candidate_embeddings()
    model = model_metrics(trained, branch_data)
    popularity = popularity_metrics(branch_data, track_ids)
    assert model["hit_rate@10"] > popularity["hit_rate@10"] + 0.05
    assert trained.history["loss"][-1] < trained.history["loss"][0]


def test_validation_holds_back_each_users_last_label(branch_data):
    config = UserBranchConfig()
    train, validation = split_validation(branch_data.train, config)
    assert len(train) + len(validation) == len(branch_data.train)
    counts = {u: int((branch_data.train.columns["user_id"] == u).sum()) for u in set(branch_data.train.columns["user_id"])}
    eligible = {u for u, n in counts.items() if n >= config.min_examples_for_validation}
    assert sorted(validation.columns["user_id"]) == sorted(eligible)
    for user, position in zip(validation.columns["user_id"], validation.columns["position"]):
        assert position == counts[user] - 1  # the user's last training label
        assert position not in train.columns["position"][train.columns["user_id"] == user]
    assert split_validation(branch_data.train, UserBranchConfig(early_stopping_patience=0))[1] is None


def test_early_stopping_keeps_the_best_epochs_weights(branch_data):
    # A high learning rate over-fits the tiny data quickly, so the validation recall turns down.
    config = UserBranchConfig(epochs=30, learning_rate=0.05, early_stopping_patience=2, refit_on_all_examples=False)
    trained = train_user_branch(branch_data, config, verbose=0)
    recall = trained.history[f"val_recall@{config.early_stopping_k}"]
    assert len(recall) < config.epochs, "the validation recall never stopped improving"
    assert trained.best_epoch == len(recall) - config.early_stopping_patience
    train, validation = split_validation(branch_data.train, config)
    check = ValidationRecall(dataclasses.replace(branch_data, train=train), validation, trained.vocab, config)
    assert check.evaluate(trained.model) == pytest.approx(max(recall))
    assert max(recall) > recall[-1]
    # By default the model is then retrained on every example for the chosen number of epochs.
    refit = train_user_branch(branch_data, dataclasses.replace(config, refit_on_all_examples=True), verbose=0)
    assert len(refit.history["refit_loss"]) == refit.best_epoch == trained.best_epoch


def test_exports_load_in_a_fresh_process_and_match_memory(trained, branch_data, tmp_path):
    out = export_user_branch(trained, branch_data, tmp_path / "export", top_k=20)
    rows = np.arange(4)
    inputs = signature_inputs(branch_data, trained, rows)
    expected = trained.user_embeddings(branch_data.latest.take(rows))
    np.save(tmp_path / "inputs.npy", inputs, allow_pickle=True)
    script = f"""
import json, numpy as np, tensorflow as tf
inputs = np.load({str(tmp_path / 'inputs.npy')!r}, allow_pickle=True).item()
feed = {{k: tf.constant(v) for k, v in inputs.items()}}
ue = tf.saved_model.load({str(out / 'user_tower')!r}).signatures[{EMBED_USER_SIGNATURE!r}](**feed)["user_embedding"]
top = tf.saved_model.load({str(out / 'retrieval')!r}).signatures[{RECOMMEND_SIGNATURE!r}](**feed)
print(json.dumps({{"ue": ue.numpy().tolist(), "ids": top["track_ids"].numpy().astype(str).tolist(), "scores": top["scores"].numpy().tolist()}}))
"""
    # A fresh interpreter that never imported musicrec or TFRS (only TF_USE_LEGACY_KERAS unset).
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(loaded["ue"], expected, atol=1e-5)
    # Retrieval returns the exact top 20 by dot product with the candidate table.
    track_ids, candidates = trained.candidate_embeddings()
    scores = expected @ candidates.T
    for row in range(len(rows)):
        assert loaded["ids"][row] == list(track_ids[np.argsort(-scores[row], kind="stable")[:20]])
        np.testing.assert_allclose(loaded["scores"][row], np.sort(scores[row])[::-1][:20], rtol=1e-4, atol=1e-4)
    table = read_embeddings(out / USER_EMBEDDINGS_FILE, "user_id")
    assert len(table) == len(branch_data.latest) and table["embedding"].iloc[0].shape == (40,)


def test_tf_examples_round_trip_to_the_same_training_data(branch_data, tmp_path):
    # Shuffled on disk: each user's latest history must come from `position`, not file order.
    shuffled = np.random.default_rng(0).permutation(len(branch_data.train))
    write_user_examples(branch_data.train.take(shuffled), tmp_path / "train.gz")
    write_user_examples(branch_data.test, tmp_path / "eval-0.gz")
    write_user_examples(branch_data.new_users, tmp_path / "eval-1.gz")
    rebuilt = branch_data_from_examples(read_user_examples([str(tmp_path / "train.gz")]), read_user_examples([str(tmp_path / "eval-*.gz")]))
    assert len(rebuilt.test) == len(branch_data.test) and len(rebuilt.new_users) == len(branch_data.new_users) > 0
    for name, column in branch_data.train.take(shuffled).columns.items():
        if column.dtype == np.float32:
            np.testing.assert_array_equal(rebuilt.train.columns[name], column)
        else:
            assert (rebuilt.train.columns[name] == column).all(), name
    assert rebuilt.numeric_demographics == ("age",) and set(rebuilt.categorical_demographics) == {"gender", "country"}
    # Each user's UE input is every liked track before the hold-out, as built from the dataset.
    original = {u: set(h[h != PAD]) for u, h in zip(branch_data.test.columns["user_id"], branch_data.test.columns["history_track_ids"])}
    for user, history in zip(rebuilt.latest.columns["user_id"], rebuilt.latest.columns["history_track_ids"]):
        assert set(history[history != PAD]) == original[user]


def test_id_dropout_looks_ids_up_as_oov_in_training_only():
    layer = IdEmbedding([f"u{i}" for i in range(10)], 4, "user", oov_dropout=0.3)
    ids = tf.constant([f"u{i % 10}" for i in range(4000)] + [PAD, "never-seen"])
    training = layer.indices(ids, training=True).numpy()
    dropped = (training[:4000] == OOV_INDEX).mean()
    assert 0.26 < dropped < 0.34  # binomial(4000, 0.3): sd 0.007
    assert training[4000] == 0 and training[4001] == OOV_INDEX  # padding stays padding
    assert (layer.indices(ids, training=False).numpy()[:4000] > OOV_INDEX).all()
    assert (IdEmbedding(["u0"], 4, "plain").indices(ids, training=True).numpy()[:4000:10] > OOV_INDEX).all()


def test_hybrid_tower_embeds_seen_users_by_id_and_new_users_from_history(hybrid, branch_data, tmp_path):
    assert hybrid.history["loss"][-1] < hybrid.history["loss"][0]
    trained_users = np.isin(branch_data.latest.columns["user_id"], branch_data.train.columns["user_id"])
    seen = branch_data.latest.take(np.flatnonzero(trained_users)[:4])
    as_new = seen.take(np.arange(4))
    as_new.columns["user_id"] = np.asarray(["never-seen-user"] * 4, dtype=object)
    # A seen user's id moves their UE away from what their history and demographics alone give.
    by_id, without_id = hybrid.user_embeddings(seen), hybrid.user_embeddings(as_new)
    assert np.linalg.norm(by_id - without_id, axis=1).min() > 1e-3
    # New users: every unknown id is the one OOV row, so their UEs come from history and
    # demographics, and differ from user to user.
    new_users = queries(branch_data.new_users).take(np.arange(4))
    renamed = new_users.take(np.arange(4))
    renamed.columns["user_id"] = np.asarray([f"other-{i}" for i in range(4)], dtype=object)
    embedded = hybrid.user_embeddings(new_users)
    np.testing.assert_allclose(embedded, hybrid.user_embeddings(renamed), atol=1e-6)
    assert np.all(np.isfinite(embedded)) and np.linalg.norm(embedded - embedded[:1], axis=1)[1:].min() > 1e-3
    metrics = model_metrics(hybrid, branch_data, branch_data.new_users)
    assert metrics["test_users"] == len(set(branch_data.new_users.columns["user_id"]))
    # The export takes the id too; a new user's id reaches the OOV row there as well.
    out = export_user_branch(hybrid, branch_data, tmp_path / "export", top_k=5)
    embed = tf.saved_model.load(str(out / "user_tower")).signatures[EMBED_USER_SIGNATURE]
    assert "user_id" in embed.structured_input_signature[1]
    feed = {name: tf.constant(values[:4]) for name, values in signature_inputs(branch_data, hybrid).items()}
    np.testing.assert_allclose(embed(**feed)["user_embedding"].numpy(), hybrid.user_embeddings(branch_data.latest.take(np.arange(4))), atol=1e-5)


def test_id_dropout_trains_the_oov_row_the_new_users_get(branch_data):
    # Without dropout no example reaches the OOV row, so it keeps its initial value; with it,
    # training moves it (the training flag reaches the tower through compute_loss).
    def oov_row(dropout):
        config = UserBranchConfig(query="hybrid", user_id_dropout=dropout, epochs=1, early_stopping_patience=0)
        return train_user_branch(branch_data, config, verbose=0).model.query_tower._user_embedding.embedding.embeddings.numpy()[OOV_INDEX]
    assert not np.allclose(oov_row(0.5), oov_row(0.0))


def test_config_refuses_unknown_queries_and_dropout_outside_0_1():
    with pytest.raises(ValueError, match="query must be one of"):
        UserBranchConfig(query="hybird")
    with pytest.raises(ValueError, match="probability"):
        UserBranchConfig(query="hybrid", user_id_dropout=1.5)


def test_recall_at_a_share_of_the_catalogue_is_recall_at_its_k(trained, branch_data):
    assert [share_k(s, n) for s, n in ((0.01, 95), (0.01, 100), (0.01, 101), (0.05, 600), (0.05, 576))] == [1, 1, 2, 30, 29]
    track_ids, candidates = trained.candidate_embeddings()
    scores = trained.user_embeddings(queries(branch_data.test)) @ candidates.T
    metrics = ranking_metrics(scores, track_ids, branch_data)
    assert metrics["k@5%"] == share_k(0.05, len(track_ids)) > metrics["k@1%"] == share_k(0.01, len(track_ids))
    for share in ("1%", "5%"):
        k = metrics[f"k@{share}"]
        assert metrics[f"recall@{share}"] == ranking_metrics(scores, track_ids, branch_data, ks=(k,), shares=())[f"recall@{k}"]


def _ranks_by_sorting(scores, track_ids, data, targets):
    """The reference: each user's whole catalogue sorted (stable), earlier liked tracks left out
    (the implementation before ranking went block by block)."""
    users = pd.unique(targets.columns["user_id"])
    position = {t: i for i, t in enumerate(track_ids)}
    seen, ranks = data.known_liked(targets), {}
    for row, user in enumerate(users):
        row_scores = scores[row].astype(np.float64).copy()
        row_scores[[position[t] for t in seen.get(user, ()) if t in position]] = -np.inf
        order = np.argsort(-row_scores, kind="stable")
        ranks[user] = {track_ids[i]: r for r, i in enumerate(order)}
    outside = len(track_ids)  # a target the catalogue lacks ranks last
    return [ranks[u].get(str(t), outside) for u, t in zip(targets.columns["user_id"], targets.columns["track_id"])]


@pytest.mark.parametrize("rows_per_block", [1, 7, 100000])
def test_ranking_in_blocks_of_factorized_scores_equals_sorting_the_whole_matrix(trained, branch_data, rows_per_block):
    track_ids, candidates = trained.candidate_embeddings()
    users = trained.user_embeddings(queries(branch_data.test))
    dense = users @ candidates.T
    reference = _ranks_by_sorting(dense, track_ids, branch_data, branch_data.test)
    ks = (1, 10, 50)
    for scores in (dense, FactorizedScores(users, candidates)):
        metrics = ranking_metrics(scores, track_ids, branch_data, ks=ks, rows_per_block=rows_per_block)
        frame = pd.DataFrame({"user": branch_data.test.columns["user_id"], "rank": reference})
        for k in ks:
            assert metrics[f"recall@{k}"] == pytest.approx((frame["rank"] < k).groupby(frame["user"]).mean().mean())
    # Ties (popularity scores every user alike, many tracks equally): the stable order decides.
    counts = pd.Series(branch_data.train.columns["track_id"].astype(str)).value_counts()
    popularity = counts.reindex(track_ids).fillna(0).to_numpy()[:, None]
    ones = np.ones((len(users), 1))
    tied = ranking_metrics(FactorizedScores(ones, popularity), track_ids, branch_data, ks=ks, rows_per_block=rows_per_block)
    frame = pd.DataFrame({"user": branch_data.test.columns["user_id"],
                          "rank": _ranks_by_sorting(ones @ popularity.T, track_ids, branch_data, branch_data.test)})
    for k in ks:
        assert tied[f"recall@{k}"] == pytest.approx((frame["rank"] < k).groupby(frame["user"]).mean().mean())


def test_ranking_a_sample_of_users(trained, branch_data):
    track_ids, candidates = trained.candidate_embeddings()
    scores = FactorizedScores(trained.user_embeddings(queries(branch_data.test)), candidates)
    every = ranking_metrics(scores, track_ids, branch_data)
    sample = ranking_metrics(scores, track_ids, branch_data, max_users=10, seed=3)
    assert sample["test_users"] == 10 < every["test_users"]
    assert sample == ranking_metrics(scores, track_ids, branch_data, max_users=10, seed=3)  # seeded
    assert sample != ranking_metrics(scores, track_ids, branch_data, max_users=10, seed=4)
    assert ranking_metrics(scores, track_ids, branch_data, max_users=10 ** 6) == every
