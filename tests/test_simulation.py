"""The simulated music service: determinism, the feedback guarantee, the oracle, that audio carries taste,
and the world presets: each deterministic, loadable, with an oracle, and differing on the axes it claims."""

import dataclasses
import filecmp
import functools
import hashlib
import os

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import soundfile

from conftest import TINY_SEED
from musicrec import cli
from musicrec.audio import decode
from musicrec.audio.logmel import log_mel_spectrogram
from musicrec.data.contract import FeedbackConfig
from musicrec.data.feedback import feedback_labels
from musicrec.data.loading import load_dataset
from musicrec.data.validation import validate_dataset
from musicrec.simulation import world as world_lib
from musicrec.simulation.arrangement import build_arrangement
from musicrec.simulation.generator import generate_demo, is_generated
from musicrec.simulation.genres import GENRES, STYLE_DIMENSIONS
from musicrec.simulation.oracle import GroundTruth, oracle_auc, preference_auc
from musicrec.simulation.production import MixSpec
from musicrec.simulation.render import render
from musicrec.simulation.worlds import WORLDS, get_world

TABLES = ["users.csv", "tracks.csv", "interactions.csv", "ground_truth/users.csv", "ground_truth/tracks.csv", "ground_truth/faults.csv"]
# sha256 of the default world's tiny tables (seed 0) as generated before world
# presets existed: the default world, and the README's demo figures, must not
# move when presets are added. Change only with GENERATOR_VERSION.
DEFAULT_TINY_SHA256 = {
    "users.csv": "435401cd1c4e50b90e25647bd15ee5e73407b1336f0791da972948004b4574ca",
    "tracks.csv": "62ef02963435928c8e6d9de4e9428b5300abc44d8651bc751b84fa41350f792c",
    "interactions.csv": "6c5c28ebe9a7f5e52df6f9d6adb4fa3fe2e5cfa433e6a615fd2cacec719a11c4",
    "ground_truth/users.csv": "16e00df7f41a8a4c51d7c1df327e139da16e004694debf65b25c858912e0907c",
    "ground_truth/tracks.csv": "cafbe30b875c0a90735b1f3769d2ccf74267718bdab9727a2bd39567545e13d0",
    "ground_truth/faults.csv": "37e822d158ad91e36d678d99554f2a1742c884c71ea09e8648c0a1304ca94216",
}
PRESETS = [name for name in WORLDS if name != "default"]


def test_same_seed_gives_identical_tables(tiny_dataset, tmp_path):
    again = generate_demo(tmp_path / "again", size="tiny", seed=TINY_SEED)
    for name in TABLES:
        assert filecmp.cmp(tiny_dataset / name, again / name, shallow=False), name


def test_another_seed_gives_another_world():
    size = world_lib.SIZES["tiny"]
    logs = []
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        logs.append(world_lib.simulate_listening(world_lib.sample_world(size, rng), size, rng))
    assert not logs[0].equals(logs[1])


def test_every_user_has_ten_liked_and_ten_disliked(tiny_dataset):
    dataset = load_dataset(tiny_dataset)
    counts = feedback_labels(dataset.interactions).counts_per_user()
    assert len(counts) == len(dataset.users)
    assert counts["liked"].min() >= 10 and counts["disliked"].min() >= 10
    events = set(dataset.interactions["event"])
    assert events == {"play", "complete", "skip", "like", "dislike", "playlist_add"}


def _pairs(tiny_dataset):
    dataset = load_dataset(tiny_dataset)
    return feedback_labels(dataset.interactions).labels


def test_oracle_is_informative_but_below_one(tiny_dataset):
    truth = GroundTruth.load(tiny_dataset)
    pairs = _pairs(tiny_dataset)
    oracle = oracle_auc(truth, pairs)
    # Measured in the same run: random scores and shuffled labels give chance.
    rng = np.random.default_rng(0)
    random_auc = roc_auc_score(pairs["label"], rng.random(len(pairs)))
    shuffled = pairs.assign(label=rng.permutation(pairs["label"].to_numpy()))
    assert abs(random_auc - 0.5) < 0.05 and abs(oracle_auc(truth, shuffled) - 0.5) < 0.05
    assert 0.7 < oracle < 0.97


def test_full_preference_beats_audio_only_oracle(tiny_dataset):
    """Part of what users like is not in the audio: the full preference ranks better."""
    truth = GroundTruth.load(tiny_dataset)
    pairs = _pairs(tiny_dataset)
    assert preference_auc(truth, pairs) > oracle_auc(truth, pairs) + 0.03
    assert preference_auc(truth, pairs) < 1.0  # outcome noise: not even the full preference is perfect


def test_oracle_works_on_any_split(tiny_dataset):
    truth = GroundTruth.load(tiny_dataset)
    pairs = _pairs(tiny_dataset)
    half = pairs.sample(frac=0.5, random_state=0)
    assert 0.6 < oracle_auc(truth, half) < 1.0
    with pytest.raises(KeyError, match="not in the ground truth"):
        oracle_auc(truth, pd.DataFrame({"user_id": ["nobody", "nobody"], "track_id": ["t00001", "t00002"], "label": [0, 1]}))


def test_demographics_predict_part_of_taste(tiny_dataset):
    users = pd.read_csv(tiny_dataset / "users.csv").merge(pd.read_csv(tiny_dataset / "ground_truth" / "users.csv"))
    features = world_lib.demographic_features(users)
    taste = users[[c for c in users.columns if c.startswith(("taste_", "pref_"))]].to_numpy()
    r2 = LinearRegression().fit(features, taste).score(features, taste)
    assert 0.1 < r2 < 0.9  # explains part of taste, not all of it


def test_audio_carries_genre_and_style(tiny_dataset):
    """Mean log-mel per band predicts genre and energy far above chance: the audio is music, not noise."""
    tracks = pd.read_csv(tiny_dataset / "tracks.csv")
    truth = pd.read_csv(tiny_dataset / "ground_truth" / "tracks.csv")
    tracks = tracks.merge(truth[["track_id"] + [f"style_{d}" for d in STYLE_DIMENSIONS]])
    features = []
    for path in tracks["audio_path"]:
        mel = log_mel_spectrogram(decode.load_audio(tiny_dataset / path)).numpy()
        features.append(np.concatenate([mel.mean(0), mel.std(0)]))
    features = np.asarray(features)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    accuracy = cross_val_score(classifier, features, tracks["genre"], cv=3).mean()
    assert accuracy > 0.5  # chance is 1/8
    loud = features[:, :128].mean(1)
    assert np.corrcoef(loud, tracks["style_energy"])[0, 1] > 0.2


def test_default_world_is_unchanged_by_the_presets(tiny_dataset):
    for name, digest in DEFAULT_TINY_SHA256.items():
        assert hashlib.sha256((tiny_dataset / name).read_bytes()).hexdigest() == digest, name
    assert is_generated(tiny_dataset, "tiny", TINY_SEED) and is_generated(tiny_dataset, "tiny", TINY_SEED, world="default")


# --- World presets, generated at tiny size: one generation per world shared by the tests below.


@pytest.fixture(scope="module")
def world_dataset(tmp_path_factory):
    """world_dataset(name): that world's tiny dataset, generated once for the module."""

    @functools.lru_cache(maxsize=None)
    def generate(name):
        return generate_demo(tmp_path_factory.mktemp(name) / "data", size="tiny", seed=TINY_SEED, world=name)

    return generate


@pytest.mark.parametrize("name", PRESETS)
def test_each_world_is_deterministic_and_recorded(world_dataset, name, tmp_path):
    """Same world and seed, byte-identical tables, here through `musicrec generate-demo --world`."""
    first = world_dataset(name)
    again = tmp_path / "again"
    assert cli.main(["generate-demo", "--size", "tiny", "--seed", str(TINY_SEED), "--world", name, "--out", str(again)]) == 0
    for table in TABLES:
        assert filecmp.cmp(first / table, again / table, shallow=False), table
    assert is_generated(again, "tiny", TINY_SEED, world=name)
    assert not is_generated(again, "tiny", TINY_SEED)  # a cached default dataset is not this world's


@pytest.mark.parametrize("name", PRESETS)
def test_each_world_loads_validates_and_has_an_oracle(world_dataset, name):
    data = world_dataset(name)
    report = validate_dataset(data)
    assert report.usable, report.fatal
    tracks = pd.read_csv(data / "tracks.csv")
    faults = pd.read_csv(data / "ground_truth" / "faults.csv")
    assert report.audio_counts["ok"] == len(tracks) - faults["fault"].isin(decode.AUDIO_STATUSES).sum()
    truth = GroundTruth.load(data)
    assert truth.params["world"] == name
    pairs = _pairs(data)
    oracle = oracle_auc(truth, pairs)
    assert 0.7 < oracle < 0.97
    assert preference_auc(truth, pairs) > oracle


def test_unknown_world_is_refused_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match="unknown world 'nowhere'; choose one of .*crossover"):
        generate_demo(tmp_path / "x", size="tiny", world="nowhere")
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["generate-demo", "--out", str(tmp_path / "x"), "--world", "nowhere"])
    assert not (tmp_path / "x").exists()


# --- The axes each preset claims, measured on the latent world at demo size (no audio: seconds).


@functools.lru_cache(maxsize=None)
def _latent_demo(name):
    size = world_lib.SIZES["demo"]
    rng = np.random.default_rng(0)
    world = world_lib.sample_world(size, rng, get_world(name).service)
    return world, world_lib.simulate_listening(world, size, rng)


def _listening_figures(name):
    world, log = _latent_demo(name)
    feedback = feedback_labels(log)
    heard = log.drop_duplicates(["user_id", "track_id"]).groupby("track_id").size()
    heard = heard.reindex(world.tracks["track_id"], fill_value=0).sort_values(ascending=False)
    top_tenth = int(np.ceil(0.1 * len(heard)))
    return dict(
        pairs_per_track=len(feedback.labels) / len(world.tracks),
        median_liked=feedback.counts_per_user()["liked"].median(),
        top_tenth_share=heard.iloc[:top_tenth].sum() / heard.sum(),
        eligible_share=len(feedback.eligible_users(FeedbackConfig())) / len(world.users),
    )


def test_sparse_popular_has_fewer_pairs_more_popular_exposure_and_few_likes():
    default, sparse = _listening_figures("default"), _listening_figures("sparse_popular")
    assert 4.0 < default["pairs_per_track"] / sparse["pairs_per_track"] < 6.5  # about 5x fewer
    assert 8 <= sparse["median_liked"] <= 12 and default["median_liked"] > 20
    assert sparse["top_tenth_share"] > 0.5 > default["top_tenth_share"] + 0.15
    # Users below the 10 liked / 10 disliked minimum exist (the loader excludes and counts them), but not most.
    assert default["eligible_share"] == 1.0 and 0.3 < sparse["eligible_share"] < 0.9


def _share_nearer_another_genre(name):
    """Share of tracks whose latent style is nearer another genre's centre than their own's."""
    world, _ = _latent_demo(name)
    centres = np.asarray([g.style_center for g in world.model.genres])
    nearest = np.asarray([g.name for g in world.model.genres])[
        ((world.style[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    ]
    return float((nearest != world.tracks["genre"].to_numpy()).mean())


def test_crossover_has_many_overlapping_genres():
    world, _ = _latent_demo("crossover")
    assert world.tracks["genre"].nunique() >= 12
    assert _share_nearer_another_genre("crossover") > _share_nearer_another_genre("default") + 0.2


def _audio_figures(data):
    rows = []
    for path in pd.read_csv(data / "tracks.csv")["audio_path"]:
        if not path.startswith("audio/faults/"):
            info = soundfile.info(str(data / path))
            mono = decode.load_audio(data / path, sample_rate=info.samplerate, max_seconds=None)
            rows.append(dict(ext=path.rsplit(".", 1)[1], rate=info.samplerate, rms_db=20 * np.log10(np.sqrt(np.mean(mono**2))),
                             kbps=os.path.getsize(data / path) * 8 / info.duration / 1000))
    return pd.DataFrame(rows)


def test_crossover_audio_is_low_bitrate_low_rate_and_unevenly_mastered(tiny_dataset, world_dataset):
    crossover, default = _audio_figures(world_dataset("crossover")), _audio_figures(tiny_dataset)
    assert crossover["rate"].min() == 8000 and (crossover["rate"] <= 16000).mean() > 0.3
    assert default["rate"].min() == 16000
    lossy = crossover[crossover["ext"].isin(["mp3", "ogg"])]
    assert lossy["kbps"].median() < 40 < default[default["ext"].isin(["mp3", "ogg"])]["kbps"].median()
    assert crossover["rms_db"].std() > 2.5 * default["rms_db"].std()  # loudness varies between masters


def test_mix_sets_loudness_and_part_levels():
    midi = build_arrangement(GENRES[0], GENRES[0].style_center, np.random.default_rng(0), 4.0)
    quiet = MixSpec(loudness_dbfs=(-26.0, -26.0), reverb_wet=(0.0, 0.0)).draw(np.random.default_rng(0))
    audio = render(midi, 16000, 4.0, stereo=True, mix=quiet)
    assert 20 * np.log10(np.sqrt(np.mean(audio**2))) == pytest.approx(-26.0, abs=0.5)
    lead_out = dataclasses.replace(quiet, gains_db={**quiet.gains_db, "lead": -60.0})
    assert not np.allclose(render(midi, 16000, 4.0, mix=lead_out), render(midi, 16000, 4.0, mix=quiet), atol=1e-3)
    assert np.abs(audio).max() <= 0.9 + 1e-6  # the limiter's ceiling
