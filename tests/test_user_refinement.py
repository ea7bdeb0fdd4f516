"""Per-user refinement of the scored user vectors (trainer/user_refinement.py)."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from musicrec.data.loading import load_dataset
from musicrec.names import USER_TOWER_DIR
from musicrec.trainer.audio_branch import AudioBranchConfig
from musicrec.trainer.audio_data import prepare_audio_branch, usable_pairs
from musicrec.trainer.audio_evaluation import evaluate_liked_disliked, pair_scores, track_embeddings
from musicrec.trainer.audio_training import train_audio_branch
from musicrec.trainer.user_refinement import NONE, RefinementConfig, choose_refinement, refine_user_vectors, unit


def _world(seed: int, users: int = 60, tracks: int = 300, dim: int = 8, pairs_per_user: int = 30, ue_noise: float = 1.0):
    """True tastes, UEs that are noisy views of them, and liked (1) / disliked (0) pairs drawn from the tastes."""
    rng = np.random.default_rng(seed)
    taste, ae = unit(rng.normal(size=(users, dim))), unit(rng.normal(size=(tracks, dim)))
    ue = unit(taste + ue_noise * rng.normal(size=taste.shape) / np.sqrt(dim))
    user_rows = np.repeat(np.arange(users), pairs_per_user)
    track_rows = rng.integers(0, tracks, size=len(user_rows))
    labels = (np.sum(taste[user_rows] * ae[track_rows], axis=1) > 0).astype(int)
    return ue, ae, user_rows, track_rows, labels


def test_refinement_is_a_ridge_regression_toward_the_ue():
    ue, ae, users, tracks, labels = _world(0, users=5, pairs_per_user=12)
    users, tracks, labels = np.append(users, 5), np.append(tracks, 0), np.append(labels, 1)  # user 5: one pair
    ue = np.vstack([ue, [3.0] + [0.0] * 7])  # and a UE of norm 3
    refined = refine_user_vectors(ue, users, ae[tracks], labels, alpha=2.0, target=0.5)
    for user in range(5):
        x, prior = ae[tracks[users == user]], unit(ue[user])
        t = np.where(labels[users == user] == 1, 0.5, -0.5)
        expected = prior + np.linalg.solve(x.T @ x + 2.0 * np.eye(8), x.T @ (t - x @ prior))
        np.testing.assert_allclose(refined[user], expected, atol=1e-6)
    np.testing.assert_allclose(refined[5], unit(ue[5]))  # fewer pairs than min_pairs: the unit UE
    far = refine_user_vectors(ue, users, ae[tracks], labels, alpha=1e9, target=0.5)
    np.testing.assert_allclose(far, unit(ue), atol=1e-6)  # infinite strength of the prior: the UEs


def test_the_validation_pairs_choose_whether_and_how_much_to_refine():
    ue, ae, users, tracks, labels = _world(1)
    train, held_out = np.arange(len(users)) % 3 != 0, np.arange(len(users)) % 3 == 0
    arrays = lambda mask: (users[mask], ae[tracks[mask]], labels[mask])  # noqa: E731
    chosen = choose_refinement(ue, arrays(train), arrays(held_out), RefinementConfig())
    assert chosen.chosen != NONE and chosen.refined_users == 60
    assert chosen.validation_auc[chosen.chosen] == max(chosen.validation_auc.values()) > chosen.validation_auc[NONE] + 0.05

    # UEs that are the tastes themselves: the users' pairs add nothing, and none is kept.
    truth = unit(ue)
    exact_labels = (np.sum(truth[users] * ae[tracks], axis=1) > 0).astype(int)
    exact = lambda mask: (users[mask], ae[tracks[mask]], exact_labels[mask])  # noqa: E731
    kept = choose_refinement(truth, exact(train), exact(held_out), RefinementConfig())
    assert kept.validation_auc[NONE] == 1.0 and kept.chosen == NONE and kept.refined_users == 0
    np.testing.assert_allclose(kept.vectors, truth)

    with pytest.raises(ValueError, match="both liked and disliked"):
        choose_refinement(ue, arrays(train), (users[:3], ae[:3], np.ones(3, int)))


def test_a_refined_model_scores_and_reports_with_its_refined_vectors(tiny_dataset, tiny_log_mels, tiny_user_branch):
    dataset = load_dataset(tiny_dataset)
    pairs, users = prepare_audio_branch(dataset, tiny_log_mels, tiny_user_branch / "model" / USER_TOWER_DIR, 130)
    config = AudioBranchConfig.variant("metric_1vs4_refined", epochs=2, steps_per_epoch=5)
    trained = train_audio_branch(pairs, tiny_log_mels, users, config)
    refinement = trained.refinement
    np.testing.assert_array_equal(trained.user_vectors(), refinement.vectors)
    assert trained.training_summary()["user_refinement"] == refinement.summary()
    metrics = evaluate_liked_disliked(trained, pairs, tiny_log_mels)
    # The evaluation scores the validation pairs with the vectors the refinement chose them by.
    assert metrics["validation_auc"] == pytest.approx(refinement.validation_auc[refinement.chosen], abs=1e-6)
    validation = usable_pairs(pairs.split("validation"), users, tiny_log_mels, 1)
    track_ae = track_embeddings(trained.model.encoder, tiny_log_mels, config.context_frames)
    plain = pair_scores(validation, trained.model.user_table(), users.index(), track_ae, tiny_log_mels)
    assert roc_auc_score(validation["label"], plain) == pytest.approx(refinement.validation_auc[NONE], abs=1e-4)


def test_the_serving_table_takes_the_adapted_ues_and_the_refined_vectors(tiny_dataset, tiny_log_mels, tiny_user_branch,
                                                                         tmp_path):
    import tensorflow as tf

    from musicrec.serving.export import scored_users
    from musicrec.trainer.audio_data import UserVectors
    from musicrec.trainer.audio_export import export_audio_model, write_refined_users

    dataset = load_dataset(tiny_dataset)
    pairs, users = prepare_audio_branch(dataset, tiny_log_mels, tiny_user_branch / "model" / USER_TOWER_DIR, 130)
    config = AudioBranchConfig.variant("metric_1vs4_refined", user_vector="adapted_ue", epochs=2, steps_per_epoch=5)
    trained = train_audio_branch(pairs, tiny_log_mels, users, config)
    refinement = trained.refinement
    assert refinement.refined_users > 0  # after two epochs the users' own pairs still say more than the UEs
    export_audio_model(trained, tmp_path / "audio")
    assert write_refined_users(trained, tmp_path / "audio").exists()

    served_ues = UserVectors.from_parquet(tiny_user_branch / "model" / "user_embeddings.parquet")
    table = scored_users(served_ues, tf.saved_model.load(str(tmp_path / "audio")), tmp_path / "audio")
    assert list(table.user_ids) == list(served_ues.user_ids)
    adapter = trained.model.adapter
    adapted = served_ues.vectors @ adapter.kernel.numpy() + adapter.bias.numpy()
    moved = set(users.user_ids[refinement.refined])
    refined_rows = {u: refinement.vectors[i] for i, u in enumerate(users.user_ids)}
    for row, user in enumerate(table.user_ids):
        expected = refined_rows[user] if user in moved else adapted[row]
        np.testing.assert_allclose(table.vectors[row], expected, atol=1e-5)
