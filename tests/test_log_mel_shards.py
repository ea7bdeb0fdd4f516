"""Log-mels past the memory budget: the shard index, blocks within the budget, block training
and AEs computed block by block, on the tiny dataset's real log-mels written as many shards."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from musicrec.data.loading import load_dataset
from musicrec.names import USER_TOWER_DIR
from musicrec.trainer.audio_branch import AudioBranchConfig, SiameseAudioModel
from musicrec.trainer.audio_data import prepare_audio_branch, usable_pairs
from musicrec.trainer.audio_evaluation import track_embeddings
from musicrec.trainer.audio_input import Cropper, LogMelStore, training_examples, triplet_dataset
from musicrec.trainer.audio_training import train_audio_branch
from musicrec.trainer.log_mel_shards import LogMelShards, block_dataset, open_log_mels, write_shards

SHARDS = 8


@pytest.fixture(scope="module")
def shard_files(tiny_log_mels, tmp_path_factory):
    return write_shards(tiny_log_mels, str(tmp_path_factory.mktemp("shards")), SHARDS)


def store_bytes(store: LogMelStore) -> int:
    return store.log_mels.numpy().nbytes if isinstance(store.log_mels, tf.Variable) else store.log_mels.nbytes


def test_the_index_reads_every_track_without_its_log_mel(shard_files, tiny_log_mels):
    shards = LogMelShards.scan(shard_files, budget_bytes=2**30)
    np.testing.assert_array_equal(shards.track_ids, tiny_log_mels.track_ids)
    np.testing.assert_array_equal(shards.lengths, tiny_log_mels.lengths)
    np.testing.assert_array_equal(shards.file_of_track, np.arange(len(tiny_log_mels.track_ids)) % SHARDS)
    assert shards.n_mels == tiny_log_mels.log_mels.shape[2]


def test_blocks_fit_the_budget_and_read_every_shard_once_per_pass(shard_files):
    index = LogMelShards.scan(shard_files, budget_bytes=2**30)
    budget = index.block_bytes([0, 1, 2])  # about three shards per block
    shards = LogMelShards.scan(shard_files, budget_bytes=budget)
    rng = np.random.default_rng(0)
    passes = [shards.blocks(rng) for _ in range(3)]
    for blocks in passes:
        assert sorted(f for block in blocks for f in block) == list(range(SHARDS))
        assert len(blocks) >= 3
        for block in blocks:  # each block fits the one buffer, whose size is within the budget
            loaded = shards.training_buffer.load(block)
            assert len(loaded.track_ids) * shards.row_bytes == shards.block_bytes(block) <= budget
            assert store_bytes(loaded) <= budget
            assert loaded.log_mels is shards.training_buffer.load(blocks[0]).log_mels  # reused, not reallocated
    assert len({tuple(map(tuple, blocks)) for blocks in passes}) > 1  # shuffled every pass


def test_a_loaded_block_holds_its_tracks_log_mels_padded_as_in_memory(shard_files, tiny_log_mels):
    shards = LogMelShards.scan(shard_files, budget_bytes=LogMelShards.scan(shard_files, 2**30).block_bytes([0, 1, 2]))
    buffer = shards.training_buffer
    for block in ([0, 1, 2], [5], [3, 7]):  # a smaller block after a larger one: stale rows stay unread
        loaded = buffer.load(block)
        rows = tiny_log_mels.rows(loaded.track_ids)
        assert set(shards.file_of_track[shards.rows(loaded.track_ids)]) == set(block)
        np.testing.assert_array_equal(loaded.lengths, tiny_log_mels.lengths[rows])
        frames = tiny_log_mels.log_mels.shape[1]
        np.testing.assert_array_equal(loaded.log_mels[: len(rows), :frames].numpy(), tiny_log_mels.log_mels[rows])
        crops = Cropper(loaded, 130).at(np.arange(len(rows)), np.zeros(len(rows), np.int32))
        np.testing.assert_array_equal(crops.numpy(), Cropper(tiny_log_mels, 130).at(rows, np.zeros(len(rows), np.int32)))


def test_a_shard_larger_than_the_budget_is_a_clear_error(shard_files):
    shards = LogMelShards.scan(shard_files, budget_bytes=1000)
    with pytest.raises(ValueError, match="alone needs .* MB, more than the log-mel memory budget"):
        shards.blocks()


def test_features_within_the_budget_load_in_memory_and_larger_ones_as_shards(shard_files, tiny_log_mels):
    total_mb = sum(tf.io.gfile.stat(f).length for f in shard_files) / 2**20
    in_memory = open_log_mels(shard_files, memory_mb=total_mb * 1.01)
    assert isinstance(in_memory, LogMelStore)
    np.testing.assert_array_equal(in_memory.log_mels, tiny_log_mels.log_mels)
    sharded = open_log_mels(shard_files, memory_mb=total_mb / 3)
    assert isinstance(sharded, LogMelShards) and len(sharded.blocks()) >= 3


def test_track_aes_from_blocks_equal_the_in_memory_ones(shard_files, tiny_log_mels):
    shards = open_log_mels(shard_files, memory_mb=sum(tf.io.gfile.stat(f).length for f in shard_files) / 2**20 / 3)
    encoder = SiameseAudioModel(AudioBranchConfig(), np.zeros((1, 40), np.float32)).encoder
    np.testing.assert_allclose(track_embeddings(encoder, shards, 130), track_embeddings(encoder, tiny_log_mels, 130),
                               atol=1e-5)
    some = np.array([1, 5, 6, 11])
    from_blocks = track_embeddings(encoder, shards, 130, track_rows=some)
    np.testing.assert_allclose(from_blocks[some], track_embeddings(encoder, tiny_log_mels, 130)[some], atol=1e-5)
    assert not np.delete(from_blocks, some, axis=0).any()  # only the rows asked for


def test_streamed_aes_of_short_and_long_tracks_equal_the_in_memory_ones(tmp_path):
    """Records are cropped one by one, padded as the in-memory store pads: tracks shorter than
    the context, and of any length, get the same segments and the same AEs."""
    rng = np.random.default_rng(0)
    lengths = [100, 140, 431, 700, 1292, 1500]
    store = LogMelStore.from_arrays([f"t{i}" for i in range(len(lengths))],
                                    [rng.normal(-40, 15, (n, 128)).astype(np.float16) for n in lengths])
    shards = LogMelShards.scan(write_shards(store, str(tmp_path), 3), budget_bytes=1)  # no block would fit
    encoder = SiameseAudioModel(AudioBranchConfig(), np.zeros((1, 40), np.float32)).encoder
    for context_frames in (130, 431):
        np.testing.assert_allclose(track_embeddings(encoder, shards, context_frames),
                                   track_embeddings(encoder, store, context_frames), atol=1e-5)


@pytest.fixture(scope="module")
def tiny_pairs(tiny_dataset, tiny_log_mels, tiny_user_branch):
    return prepare_audio_branch(load_dataset(tiny_dataset), tiny_log_mels, tiny_user_branch / "model" / USER_TOWER_DIR, 130)


def test_block_batches_pair_each_liked_track_with_the_users_dislikes_in_its_block(shard_files, tiny_pairs):
    pairs, users = tiny_pairs
    shards = LogMelShards.scan(shard_files, budget_bytes=LogMelShards.scan(shard_files, 2**30).block_bytes([0, 1, 2, 3]))
    train = usable_pairs(pairs.split("train"), users, shards, 130)
    def make(block_pairs, block, draw_seed):
        return triplet_dataset(training_examples(block_pairs, users.index(), block), Cropper(block, 130), 4, 8, draw_seed,
                               draw_seed=draw_seed)

    liked = set(zip(train.loc[train["label"] == 1, "user_id"], train.loc[train["label"] == 1, "track_id"]))
    disliked = set(zip(train.loc[train["label"] == 0, "user_id"], train.loc[train["label"] == 0, "track_id"]))
    for batch in block_dataset(shards, train, make, seed=0).take(40):
        rows = batch["rows"].numpy()
        assert len(set(shards.file_of_track[rows.ravel()])) <= 4  # every crop from one block
        for user, track_rows in zip(batch["user"].numpy(), rows):
            user_id = users.user_ids[user]
            assert (user_id, shards.track_ids[track_rows[0]]) in liked
            assert all((user_id, shards.track_ids[r]) in disliked for r in track_rows[1:])


def test_the_audio_branch_trains_from_blocks(shard_files, tiny_pairs):
    pairs, users = tiny_pairs
    shards = LogMelShards.scan(shard_files, budget_bytes=LogMelShards.scan(shard_files, 2**30).block_bytes([0, 1, 2, 3]))
    config = AudioBranchConfig.variant("metric_1vs4_genre", epochs=2, steps_per_epoch=6, early_stopping_patience=2)
    trained = train_audio_branch(pairs, shards, users, config)
    assert trained.epochs_trained == 2 and np.all(np.isfinite(trained.history["loss"]))
    assert len(trained.history["val_auc"]) == 2  # validation AEs computed block by block
    assert trained.refinement is not None


def test_every_pass_draws_new_crops_and_negatives(shard_files, tiny_pairs):
    """Each block's pipeline is built anew, so each gets its own draw seed: one block read twice
    (two passes) gives other crops, as the in-memory pipeline's epochs do."""
    pairs, users = tiny_pairs
    one_block = LogMelShards.scan(shard_files, budget_bytes=2**40)
    train = usable_pairs(pairs.split("train"), users, one_block, 130)

    def make(block_pairs, block, draw_seed):
        examples = training_examples(block_pairs, users.index(), block)
        return triplet_dataset(examples, Cropper(block, 130), 4, 10_000, draw_seed, draw_seed=draw_seed)

    first_pass, second_pass = (batch["liked"].numpy() for batch in block_dataset(one_block, train, make, seed=0).take(2))
    assert first_pass.shape == second_pass.shape  # the whole block in one batch, each pass
    assert not np.array_equal(np.sort(first_pass.sum(axis=(1, 2))), np.sort(second_pass.sum(axis=(1, 2))))


def test_blocks_that_split_every_users_likes_from_their_dislikes_are_a_clear_error(tmp_path):
    store = LogMelStore.from_arrays([f"t{i}" for i in range(4)], [np.zeros((140, 8), np.float16)] * 4)
    files = write_shards(store, str(tmp_path), 4)  # t0..t3, one per shard; blocks of one shard
    shards = LogMelShards.scan(files, budget_bytes=LogMelShards.scan(files, 2**40).block_bytes([0]))
    train = pd.DataFrame({"user_id": ["u0", "u0", "u1", "u1"], "track_id": ["t0", "t1", "t2", "t3"], "label": [1, 0, 1, 0]})

    def make(block_pairs, block, draw_seed):
        return triplet_dataset(training_examples(block_pairs, {"u0": 0, "u1": 1}, block), Cropper(block, 130), 1, 4,
                               draw_seed, draw_seed=draw_seed)

    # Raised in tf.data's generator thread: TensorFlow passes it on with its message.
    with pytest.raises(tf.errors.InvalidArgumentError, match="no block of log-mels forms a training example"):
        next(iter(block_dataset(shards, train, make, seed=0)))
