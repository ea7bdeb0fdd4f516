"""The musicnn front end end to end: Beam features, the head variant's training, export and serving.

One module fixture extracts the tiny dataset's musicnn patch features with the feature
component's Beam transform, trains `metric_1vs4_genre_musicnn` briefly on them and exports
the encoder and the audio embedder as the pusher does; the tests check each step against
the definitions it must agree with.
"""

import json
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf
from tfx.components.trainer.fn_args_utils import FnArgs

from musicrec.audio import front_ends
from musicrec.audio.decode import load_audio
from musicrec.audio.front_ends import LOG_MEL_FRONT_END, MUSICNN_FRONT_END
from musicrec.components.audio_features.transforms import INDEX_FILE, extract_features, read_index, read_jsonl
from musicrec.data.audio_pairs import build_audio_pairs, user_queries, write_pair_examples
from musicrec.data.contract import FeedbackConfig
from musicrec.components.release.transforms import PushedRecommender
from musicrec.components.serving_pusher.component import push_serving_models
from musicrec.data.loading import load_dataset
from musicrec.data.user_examples import write_user_examples
from musicrec.serving import graphs, warmup
from musicrec.serving.repository import ModelRepository
from musicrec.trainer import audio_module
from musicrec.serving.export import AudioEmbedder, save_model
from musicrec.trainer.audio_branch import AudioBranchConfig, build_audio_encoder
from musicrec.trainer.audio_evaluation import track_embeddings
from musicrec.trainer.audio_export import audio_model_front_end, export_audio_encoder
from musicrec.trainer.audio_input import LogMelStore
from musicrec.trainer.audio_training import train_audio_branch
from musicrec.trainer.log_mel_shards import feature_files, open_log_mels
from musicrec.trainer.practitioner_baselines import musicnn_features

VARIANT = "metric_1vs4_genre_musicnn"
FEEDBACK = FeedbackConfig(min_liked=2, min_disliked=2)  # users hear a third of the tracks kept
TRACKS = 32  # a third of the tiny catalogue: pairs for a few steps, extracted in about 30 s


@pytest.fixture(scope="module")
def musicnn_run(tiny_dataset, tiny_user_vectors, tmp_path_factory):
    dataset = load_dataset(tiny_dataset)
    tracks = dataset.audio_files()[:TRACKS]
    features = tmp_path_factory.mktemp("musicnn_features")
    report = extract_features(tracks, features, extra_front_ends=["musicnn"])
    store = open_log_mels([feature_files(features, "musicnn")], 4096.0, "musicnn")
    config = AudioBranchConfig.variant(VARIANT, epochs=1, steps_per_epoch=5)
    pairs = build_audio_pairs(dataset.interactions, tiny_user_vectors.user_ids, store.usable(config.context_frames), FEEDBACK)
    trained = train_audio_branch(pairs, store, tiny_user_vectors, config)
    out = tmp_path_factory.mktemp("musicnn_model")
    encoder_dir = export_audio_encoder(trained, out)
    return types.SimpleNamespace(dataset=dataset, tracks=tracks, features=features, report=report, store=store,
                                 config=config, pairs=pairs, trained=trained, encoder_dir=encoder_dir, out=out)


def test_front_ends_cut_contexts_and_segments_their_own_way():
    assert MUSICNN_FRONT_END.num_frames(3.0) == 1 and MUSICNN_FRONT_END.num_frames(9.0) == 3
    with pytest.raises(ValueError, match="whole 3 s frames"):
        MUSICNN_FRONT_END.num_frames(4.0)
    assert list(MUSICNN_FRONT_END.segment_offsets(10, 1)) == list(range(10))  # ten abutting 3 s patches
    assert list(MUSICNN_FRONT_END.segment_offsets(14, 3)) == [0, 3, 6]  # only the first 30 s (10 patches)
    assert list(LOG_MEL_FRONT_END.segment_offsets(1292, 130)) == [i * 129 for i in range(10)]  # shared boundary frames
    config = AudioBranchConfig.variant(VARIANT)
    assert config.context_frames == 1 and config.optimizer == "adam"
    with pytest.raises(ValueError, match="not log-mels"):
        AudioBranchConfig.variant(VARIANT, augment=True)
    with pytest.raises(ValueError, match="front_end"):
        AudioBranchConfig(front_end="mfcc")
    encoder = build_audio_encoder(config)  # patches [batch, patches, 753] -> [batch, 40]
    assert encoder.input_shape == (None, None, 753) and encoder.output_shape == (None, 40)


def test_a_traced_first_use_builds_the_network_eagerly():
    """A fresh process's first call of the musicnn front end may come while a graph traces (the
    Beam transform's `track_frames`); the network must still build and load its weights."""
    script = ("import musicrec, numpy as np; from musicrec.audio.front_ends import MUSICNN_FRONT_END as m; "
              "f = m.track_frames()(np.zeros(70000, np.float32) + 0.01); print(f.shape)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("(1, 753)")


def test_shortest_audio_gives_exactly_one_patch():
    extractor = MUSICNN_FRONT_END.module()
    shortest = MUSICNN_FRONT_END.min_samples(1)
    waveform = 0.1 * np.random.default_rng(0).standard_normal((2, shortest)).astype(np.float32)
    _, counts = extractor(tf.constant(waveform), tf.constant([shortest, shortest - 1], tf.int32))
    assert counts.numpy().tolist() == [1, 0]


def test_beam_writes_musicnn_patch_features_beside_the_log_mels(musicnn_run):
    index = read_index(musicnn_run.features)
    assert musicnn_run.report.extracted == len(index) > 0
    log_mels = LogMelStore.from_tfrecords([feature_files(musicnn_run.features)])
    store = musicnn_run.store
    assert list(store.track_ids) == list(log_mels.track_ids)  # one record per extracted track in each
    assert store.front_end == "musicnn" and store.log_mels.shape[-1] == 753
    # The index records each front end's frames: the store's patch counts.
    patches = {r["track_id"]: r["musicnn_frames"] for r in read_jsonl(musicnn_run.features / INDEX_FILE)}
    assert [patches[t] for t in store.track_ids] == store.lengths.tolist()
    track_id, path = musicnn_run.tracks[0]
    waveform = load_audio(path, max_seconds=30.0)
    expected = front_ends.MUSICNN_FRONT_END.module()(tf.constant(waveform[None]), tf.constant([len(waveform)]))
    row = store.rows([track_id])[0]
    frames = int(expected[1].numpy()[0])
    at_16k = -(-len(waveform) * 16000 // 22050)
    assert store.lengths[row] == frames == min(10, (1 + at_16k // 256) // 187)  # whole 3 s patches of the first 30 s
    np.testing.assert_allclose(store.log_mels[row, :frames].astype(np.float32), expected[0].numpy()[0, :frames],
                               rtol=2e-3, atol=2e-3)  # stored as float16


def test_musicnn_front_ends_extracted_together_share_one_run_of_the_networks(tiny_dataset):
    """The feature transform runs several front ends' frames through `track_frames_of`: each
    musicnn front end's frames are its columns of the widest one's, equal to its own run."""
    names = ["musicnn_msd_mtt", "log_mel", "musicnn"]  # musicnn's are columns of musicnn_msd_mtt's
    _, path = load_dataset(tiny_dataset).audio_files()[1]
    waveform = load_audio(path, max_seconds=30.0)
    together = front_ends.track_frames_of(names)(waveform)
    assert list(together) == names
    for name in names:
        alone = front_ends.front_end(name).track_frames()(waveform).numpy()
        np.testing.assert_allclose(together[name], alone, rtol=1e-5, atol=1e-5)
    widest = front_ends.MUSICNN_MSD_MTT_MAX_MEAN_FRONT_END
    columns = front_ends.MUSICNN_MSD_MTT_FRONT_END.columns_in(widest)  # each model's max_pool, not its mean_pool
    assert list(columns[[0, 752, 753, 1505]]) == [0, 752, 1506, 2258]
    assert list(front_ends.MUSICNN_FRONT_END.columns_in(widest)) == list(range(753))
    with pytest.raises(ValueError):
        widest.columns_in(front_ends.MUSICNN_FRONT_END)  # a front end is no slice of a narrower one


def test_the_musicnn_variant_trains_and_embeds_every_track(musicnn_run):
    trained = musicnn_run.trained
    assert trained.training_summary()["epochs_trained"] == 1
    assert trained.model.encoder.get_layer("hidden").trainable  # the head trains; musicnn's network is not in it
    table = track_embeddings(trained.model.encoder, musicnn_run.store, musicnn_run.config.context_frames)
    assert table.shape == (len(musicnn_run.store.track_ids), 40) and np.isfinite(table).all()
    unit = table / np.linalg.norm(table, axis=1, keepdims=True)
    assert (unit @ unit.T)[np.triu_indices(len(unit), 1)].max() < 0.9999  # every track its own AE
    assert audio_model_front_end(musicnn_run.encoder_dir) == "musicnn"  # recorded beside the SavedModel


def test_audio_embedder_from_waveform_matches_the_stored_features(musicnn_run, tmp_path):
    """Serving computes musicnn's features in the graph from the waveform; training read them from
    the Beam features: both give each track the same AE (up to the store's float16)."""
    loaded = tf.saved_model.load(str(musicnn_run.encoder_dir))
    embedder = AudioEmbedder(loaded, musicnn_run.config.context_frames, "musicnn")
    save_model(embedder, tmp_path / "audio_embedder")
    served = tf.saved_model.load(str(tmp_path / "audio_embedder")).signatures[graphs.EMBED_WAVEFORM]
    audio = [load_audio(path, max_seconds=None) for _, path in musicnn_run.tracks[:3]]
    inputs = warmup.waveform_inputs(audio)
    got = served(**{k: tf.constant(v) for k, v in inputs.items()})["audio_embedding"].numpy()
    table = track_embeddings(musicnn_run.trained.model.encoder, musicnn_run.store, musicnn_run.config.context_frames)
    rows = musicnn_run.store.rows([t for t, _ in musicnn_run.tracks[:3]])
    cosines = np.sum(got * table[rows], axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(table[rows], axis=1)
    assert cosines.min() > 0.999
    np.testing.assert_allclose(got, table[rows], rtol=0.02, atol=0.02)
    too_short = warmup.waveform_inputs([audio[0][: MUSICNN_FRONT_END.min_samples(1) - 1]])
    with pytest.raises(tf.errors.InvalidArgumentError, match="musicnn frames"):
        served(**{k: tf.constant(v) for k, v in too_short.items()})


def test_trainer_run_fn_and_pusher_serve_the_musicnn_variant(musicnn_run, tiny_user_branch, tmp_path):
    """The TFX Trainer's run_fn reads the musicnn shards of the feature artifact, the pusher
    exports graphs that compute musicnn's features from audio, and the release job's batch
    embedding of the stored features agrees with them."""
    pairs = musicnn_run.pairs
    write_pair_examples(pairs.split("train"), tmp_path / "train.gz")
    write_pair_examples(pairs.split("validation"), tmp_path / "eval.gz")
    (tmp_path / "queries").mkdir()
    write_user_examples(user_queries(musicnn_run.dataset, pairs, FEEDBACK), tmp_path / "queries" / "q.gz")
    audio_uri = tmp_path / "audio_model"
    audio_module.run_fn(FnArgs(
        train_files=[str(tmp_path / "train.gz")], eval_files=[str(tmp_path / "eval.gz")],
        serving_model_dir=str(audio_uri / "Format-Serving"), model_run_dir=str(tmp_path / "run"),
        base_model=str(tiny_user_branch / "model"),
        custom_config={"log_mel_uri": str(musicnn_run.features), "user_queries_uri": str(tmp_path / "queries"),
                       "audio_branch": {"variant": VARIANT, "epochs": 1, "steps_per_epoch": 5}},
    ))
    report = json.loads((tmp_path / "run" / audio_module.REPORT_FILE).read_text())
    assert report["front_end"] == "musicnn" and report["context_frames"] == 1
    user_uri = tmp_path / "user_model"
    user_uri.mkdir()
    (user_uri / "Format-Serving").symlink_to(tiny_user_branch / "model")
    version, dirs = push_serving_models(str(audio_uri), str(user_uri), str(tmp_path / "serving"))
    recommender = PushedRecommender(dirs[graphs.RECOMMENDER])
    assert recommender.front_end == "musicnn"
    audio = [load_audio(path, max_seconds=None) for _, path in musicnn_run.tracks[:2]]
    served = ModelRepository(tmp_path / "serving").predict(graphs.AUDIO_EMBEDDER, warmup.waveform_inputs(audio),
                                                          graphs.EMBED_WAVEFORM)["audio_embedding"]
    rows = musicnn_run.store.rows([t for t, _ in musicnn_run.tracks[:2]])
    stored = [musicnn_run.store.log_mels[r, : musicnn_run.store.lengths[r]].astype(np.float32) for r in rows]
    np.testing.assert_allclose(recommender.embed(stored), served, rtol=0.02, atol=0.02)
    users, scores = recommender.top_users(served, 5)
    assert users.shape == (2, 5) and np.all(np.diff(scores, axis=1) <= 1e-6)


def test_the_musicnn_baseline_reads_the_stored_patches_or_computes_the_same_in_process(musicnn_run, tmp_path, monkeypatch):
    """The practitioner baseline's musicnn vectors: the mean of the run's stored patch features,
    or, without them, the port's own, cached per file. Both are the same vectors."""
    from musicrec.genre.musicnn_runner import MusicnnPortFeatures

    stored = musicnn_features(musicnn_run.tracks, tmp_path, musicnn_run.store)
    assert list(stored.track_ids) == list(musicnn_run.store.track_ids)
    some = musicnn_run.tracks[:3]
    computed = musicnn_features(some, tmp_path / "cache")
    assert computed.vectors.shape == (3, 753)
    rows = stored.rows([file.track_id for file in some])
    first = musicnn_run.store.rows([some[0].track_id])[0]
    by_hand = musicnn_run.store.log_mels[first, :musicnn_run.store.lengths[first]].astype(np.float32).mean(axis=0)
    np.testing.assert_allclose(stored.vectors[rows[0]], by_hand, rtol=1e-5, atol=1e-5)
    # The shards hold float16: the same vectors to its precision.
    np.testing.assert_allclose(stored.vectors[rows], computed.vectors, rtol=2e-3, atol=2e-3)

    def no_extraction(self, tracks):
        raise AssertionError("recomputed")
        yield

    monkeypatch.setattr(MusicnnPortFeatures, "extract", no_extraction)
    again = musicnn_features(some, tmp_path / "cache")  # every vector from the cache
    np.testing.assert_array_equal(again.vectors, computed.vectors)
