"""The audio branch: losses by hand, every variant's shapes, crops, splits, and training vs untrained."""

import numpy as np
import pytest
import tensorflow as tf

from musicrec.data.audio_pairs import SplitConfig, build_audio_pairs
from musicrec.data.loading import load_dataset
from musicrec.trainer.audio_branch import (
    VARIANTS,
    AudioBranchConfig,
    SiameseAudioModel,
    binary_loss,
    build_audio_encoder,
    hinge_loss,
    build_optimizer,
    learning_rate,
    softmax_loss,
)
from musicrec.audio.front_ends import LOG_MEL_FRONT_END, front_end
from musicrec.trainer.audio_input import Cropper, LogMelStore
from musicrec.trainer.similarity import cosine, unit_vectors
from musicrec.data.feedback import feedback_labels
from musicrec.data.user_examples import history_examples
from musicrec.trainer.audio_data import UserVectors, prepare_audio_branch
from musicrec.trainer.audio_evaluation import accuracy_threshold, evaluate_liked_disliked
from musicrec.trainer.audio_training import train_audio_branch
from musicrec.names import USER_TOWER_DIR


def test_cosine_and_losses_match_hand_computed_values():
    users = tf.constant([[1.0, 0.0], [3.0, 4.0]])
    tracks = tf.constant([[2.0, 0.0], [-4.0, 3.0]])
    np.testing.assert_allclose(cosine(users, tracks).numpy(), [1.0, 0.0], atol=1e-6)
    # Candidates per user, every pair (the serving index, its table normalised once), and a zero vector.
    np.testing.assert_allclose(cosine(users, tf.stack([tracks, -tracks], axis=1)).numpy(), [[1, -1], [0, 0]], atol=1e-6)
    np.testing.assert_allclose(cosine(users, unit_vectors(tracks), all_pairs=True, b_is_unit=True).numpy(),
                               [[1.0, -0.8], [0.6, 0.0]], atol=1e-6)
    assert cosine(tf.zeros([1, 2]), tracks[:1]).numpy()[0] == 0.0

    liked, disliked = tf.constant([0.5, 0.9]), tf.constant([[0.6, 0.1], [-0.5, 0.65]])
    # Row 1: max(0, .2 - .5 + .6) + max(0, .2 - .5 + .1) = 0.3 + 0 (inside the zero region).
    # Row 2: both negatives far enough below the positive: the hinge is exactly zero.
    np.testing.assert_allclose(hinge_loss(liked, disliked, 0.2).numpy(), [0.3, 0.0], atol=1e-6)
    logits = np.array([0.5, 0.6, 0.1])
    expected = -np.log(np.exp(0.5) / np.exp(logits).sum())
    assert softmax_loss(liked[:1], disliked[:1]).numpy()[0] == pytest.approx(expected, rel=1e-6)
    assert binary_loss(tf.constant([0.3]), tf.constant([1.0])).numpy()[0] == pytest.approx(-np.log(1 / (1 + np.exp(-0.3))), rel=1e-6)
    assert binary_loss(tf.constant([0.3]), tf.constant([0.0])).numpy()[0] == pytest.approx(-np.log(1 - 1 / (1 + np.exp(-0.3))), rel=1e-6)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("seconds", [3.0, 9.0])
def test_every_variant_builds_and_gives_one_loss_per_example(variant, seconds):
    config = AudioBranchConfig.variant(variant, context_seconds=seconds)
    model = SiameseAudioModel(config, np.random.default_rng(0).normal(size=(5, 40)).astype(np.float32))
    frames, dim = config.context_frames, front_end(config.front_end).frame_dim
    batch = {"user": tf.constant([0, 3])}
    if config.loss == "binary":
        batch.update(track=tf.random.normal([2, frames, dim]), label=tf.constant([1.0, 0.0]))
    else:
        batch.update(liked=tf.random.normal([2, frames, dim]), disliked=tf.random.normal([2, config.negatives, frames, dim]))
        if config.needs_liked_mask:  # user 0 liked the first example's track, user 3 the second's
            batch["liked_by"] = tf.constant([[True] + [False] * (2 * config.negatives + 1),
                                             [False] * (config.negatives + 1) + [True] + [False] * config.negatives])
    losses = model.example_losses(batch)
    assert losses.shape == (2,) and np.all(np.isfinite(losses.numpy()))
    assert model.embed(tf.random.normal([3, frames, dim])).shape == (3, 40)
    patches = {3.0: 1, 9.0: 3}[seconds]  # musicnn front ends: one frame per 3 s patch
    assert frames == {"log_mel": {3.0: 130, 9.0: 388}[seconds], "musicnn": patches, "musicnn_msd_mtt": patches,
                      "musicnn_msd_mtt_max_mean": patches}[config.front_end]
    assert model.user_vectors.trainable == (variant == "dcue_1vs1")


def test_encoder_matches_the_documented_shape():
    encoder = build_audio_encoder(AudioBranchConfig())
    convs = [layer for layer in encoder.layers if isinstance(layer, tf.keras.layers.Layer) and "conv" in layer.name]
    assert len(convs) == 5
    assert 200_000 < encoder.count_params() < 500_000
    assert encoder.layers[-1].activation.__name__ == "linear"


def test_optimizer_is_the_papers():
    config = AudioBranchConfig()
    optimizer = build_optimizer(config, total_steps=1000)
    assert isinstance(optimizer, tf.keras.optimizers.SGD) or type(optimizer).__name__ == "SGD"
    assert optimizer.nesterov and optimizer.momentum == pytest.approx(0.9)
    schedule = learning_rate(config, total_steps=1000)
    assert float(schedule(0)) == pytest.approx(0.1)
    assert float(schedule(1_000_000)) == pytest.approx(0.1 / (1 + 1e-6 * 1_000_000))


def test_cosine_schedule_spans_the_training_budget():
    schedule = learning_rate(AudioBranchConfig(lr_schedule="cosine"), total_steps=200)
    assert float(schedule(0)) == pytest.approx(0.1)
    assert float(schedule(100)) == pytest.approx(0.1 * (0.01 + 0.99 * 0.5), rel=1e-4)  # half way: half the way down
    assert float(schedule(200)) == pytest.approx(0.001)
    with pytest.raises(ValueError, match="lr_schedule"):
        AudioBranchConfig(lr_schedule="step")


def test_random_crops_stay_inside_each_tracks_first_30_seconds():
    lengths = [140, 1292, 431]
    arrays = [np.tile(np.arange(n, dtype=np.float16)[:, None] / 8, (1, 128)) for n in lengths]
    store = LogMelStore.from_arrays(["a", "b", "c"], arrays)
    cropper = Cropper(store, context_frames=130)
    rows = tf.constant(np.repeat([0, 1, 2], 200))
    crops = cropper.random(rows).numpy()[:, :, 0] * 8
    starts = crops[:, 0]
    assert np.all(np.diff(crops, axis=1) == 1)  # contiguous frames
    assert np.all(starts + 130 <= np.repeat(lengths, 200))  # never past the track's end (or 30 s = 1292 frames)
    assert starts[200:400].max() > 900  # and the whole range is used
    assert list(LOG_MEL_FRONT_END.segment_offsets(1292, 130)) == [i * 129 for i in range(10)]  # ten 3 s segments in 30 s
    assert list(LOG_MEL_FRONT_END.segment_offsets(5000, 431)) == [0, 430, 860]  # three 10 s segments, only the first 30 s
    assert list(LOG_MEL_FRONT_END.segment_offsets(517, 130)) == [0, 129, 258, 387]  # a 12 s track: four 3 s segments


@pytest.mark.parametrize("protocol", ["per_user", "users", "cold_tracks"])
def test_splits_are_disjoint_as_promised(tiny_dataset, protocol):
    dataset = load_dataset(tiny_dataset)
    pairs = build_audio_pairs(dataset.interactions, dataset.users["user_id"], dataset.tracks["track_id"], split=SplitConfig(protocol))
    frame = pairs.pairs
    assert set(frame["split"]) == {"train", "validation", "test"}
    assert not frame.duplicated(["user_id", "track_id"]).any()
    if protocol == "per_user":
        shares = frame.groupby(["user_id", "label"])["split"].value_counts(normalize=True).unstack(fill_value=0)
        assert shares["train"].between(0.5, 0.7).all() and shares["test"].between(0.1, 0.3).all()
    key = {"users": "user_id", "cold_tracks": "track_id"}.get(protocol)
    if key:
        sets = [set(frame.loc[frame["split"] == s, key]) for s in ("train", "validation", "test")]
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
        share = len(sets[0]) / sum(map(len, sets))
        assert 0.5 < share < 0.7


def test_excluded_users_and_tracks_are_counted(tiny_dataset):
    dataset = load_dataset(tiny_dataset)
    users = dataset.users["user_id"].iloc[:50]
    tracks = dataset.tracks["track_id"].iloc[:80]
    pairs = build_audio_pairs(dataset.interactions, users, tracks)
    assert pairs.excluded["users without a user embedding"] == 10
    assert pairs.excluded["pairs whose track has no usable audio"] > 0
    assert set(pairs.pairs["user_id"]) <= set(users) and set(pairs.pairs["track_id"]) <= set(tracks)


def test_accuracy_threshold_separates_validation_scores():
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.0])
    labels = np.array([1, 1, 1, 0, 0, 0])
    assert 0.2 < accuracy_threshold(scores, labels) < 0.7


def test_user_embeddings_never_contain_the_evaluated_tracks(tiny_dataset, tiny_log_mels, tiny_user_branch):
    dataset = load_dataset(tiny_dataset)
    tower = tiny_user_branch / "model" / USER_TOWER_DIR
    pairs, users = prepare_audio_branch(dataset, tiny_log_mels, tower, 130, split=SplitConfig("cold_tracks"))
    evaluated = pairs.pairs[pairs.pairs["split"] != "train"]
    liked = feedback_labels(dataset.interactions).labels.query("label == 1")
    kept = liked.merge(evaluated[["user_id", "track_id"]], how="left", indicator=True).query("_merge == 'left_only'")
    expected = UserVectors.from_user_tower(tower, history_examples(dataset, kept, users.user_ids))
    np.testing.assert_allclose(users.vectors, expected.vectors, atol=1e-6)
    leaky = UserVectors.from_user_tower(tower, history_examples(dataset, liked, users.user_ids))
    assert not np.allclose(users.vectors, leaky.vectors, atol=1e-3)  # the held-out tracks did change the UEs


def test_short_training_beats_chance_and_untrained_does_not(tiny_dataset, tiny_log_mels, tiny_user_branch):
    dataset = load_dataset(tiny_dataset)
    pairs, users = prepare_audio_branch(dataset, tiny_log_mels, tiny_user_branch / "model" / USER_TOWER_DIR, 130)
    untrained = train_audio_branch(pairs, tiny_log_mels, users, AudioBranchConfig.variant("metric_1vs4", epochs=0))
    trained = train_audio_branch(pairs, tiny_log_mels, users, AudioBranchConfig.variant("metric_1vs4", epochs=15))
    before = evaluate_liked_disliked(untrained, pairs, tiny_log_mels)
    after = evaluate_liked_disliked(trained, pairs, tiny_log_mels)
    assert abs(before["auc"] - 0.5) < 0.08
    assert after["auc"] > 0.6 and after["auc"] > before["auc"] + 0.08
    assert trained.history["loss"][-1] < trained.history["loss"][0]


@pytest.mark.parametrize("variant", ["metric_1vs4", "dcue_1vs1"])
def test_early_stopping_keeps_the_best_epochs_weights(tiny_dataset, tiny_log_mels, tiny_user_branch, variant):
    """The model handed back scores the validation pairs exactly as well as its best epoch did (not its last)."""
    dataset = load_dataset(tiny_dataset)
    pairs, users = prepare_audio_branch(dataset, tiny_log_mels, tiny_user_branch / "model" / USER_TOWER_DIR, 130)
    # A learning rate high enough that the validation AUC does not just climb: the best epoch is rarely the last.
    config = AudioBranchConfig.variant(variant, epochs=6, steps_per_epoch=4, early_stopping_patience=2,
                                       learning_rate=0.5, lr_schedule="cosine")
    trained = train_audio_branch(pairs, tiny_log_mels, users, config)
    by_epoch = trained.history["val_auc"]
    summary = trained.training_summary()
    assert summary["epochs_trained"] == len(by_epoch) <= 6
    assert summary["best_epoch"] == int(np.argmax(by_epoch)) + 1
    if summary["epochs_trained"] < 6:  # stopped early: patience epochs without improvement after the best
        assert summary["epochs_trained"] == summary["best_epoch"] + 2
    restored = evaluate_liked_disliked(trained, pairs, tiny_log_mels, test_split="validation")
    assert restored["auc"] == pytest.approx(max(by_epoch), abs=1e-6)
