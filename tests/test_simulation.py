"""The simulated music service: determinism, the feedback guarantee, the oracle, and that audio carries taste."""

import filecmp

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from conftest import TINY_SEED
from musicrec.audio import decode
from musicrec.audio.logmel import log_mel_spectrogram
from musicrec.data.feedback import feedback_labels
from musicrec.data.loading import load_dataset
from musicrec.simulation import world as world_lib
from musicrec.simulation.generator import generate_demo
from musicrec.simulation.genres import STYLE_DIMENSIONS
from musicrec.simulation.oracle import GroundTruth, oracle_auc, preference_auc

TABLES = ["users.csv", "tracks.csv", "interactions.csv", "ground_truth/users.csv", "ground_truth/tracks.csv", "ground_truth/faults.csv"]


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
