"""Practitioner baselines on the tiny dataset: AUC bookkeeping, per-user LR against an oracle representation, popularity."""

import numpy as np
import pandas as pd
import pytest

from musicrec.data.audio_pairs import SplitConfig, build_audio_pairs
from musicrec.data.loading import load_dataset
from musicrec.simulation.genres import STYLE_DIMENSIONS
from musicrec.simulation.oracle import GroundTruth
from musicrec.trainer.pair_metrics import pair_auc
from musicrec.trainer.practitioner_baselines import (
    PerUserLogistic, TrackFeatureTable, evaluate_baselines, format_baselines, one_hot, popularity_scores,
    practitioner_baselines,
)


def _pairs(tiny_dataset, protocol):
    dataset = load_dataset(tiny_dataset)
    pairs = build_audio_pairs(dataset.interactions, dataset.users["user_id"], dataset.tracks["track_id"],
                              split=SplitConfig(protocol, seed=0))
    return dataset, pairs.split("train"), pairs.split("test")


def test_pair_auc_pooled_and_per_user():
    pairs = pd.DataFrame({"user_id": ["a", "a", "a", "b", "b", "c"], "label": [1, 0, 0, 1, 0, 1]})
    scores = np.array([0.9, 0.1, 0.5, 0.2, 0.8, 0.3])
    auc = pair_auc(pairs, scores)
    assert auc.per_user == pytest.approx((1.0 + 0.0) / 2)  # user c has one label only: left out of the mean
    assert auc.users == 2 and auc.pairs == 6
    # pooled: liked 0.9, 0.2, 0.3 vs disliked 0.1, 0.5, 0.8 -> 5 of 9 orderings right
    assert auc.pooled == pytest.approx(5 / 9)


def test_per_user_lr_learns_taste_from_an_oracle_representation(tiny_dataset):
    """LR on the simulator's true style + genre of each track beats LR on noise of the same size by a wide margin."""
    dataset, train, test = _pairs(tiny_dataset, "per_user")
    truth = GroundTruth.load(tiny_dataset).tracks
    style = truth[[f"style_{d}" for d in STYLE_DIMENSIONS]].to_numpy(np.float32)
    genre = one_hot(truth, "genre").vectors
    oracle = TrackFeatureTable(truth["track_id"].tolist(), np.hstack([style, genre]))
    noise = TrackFeatureTable(oracle.track_ids, np.random.default_rng(0).normal(size=oracle.vectors.shape))
    informed = pair_auc(test, PerUserLogistic(oracle).fit(train).score(test))
    blind = pair_auc(test, PerUserLogistic(noise).fit(train).score(test))
    assert abs(blind.pooled - 0.5) < 0.1
    assert informed.pooled > blind.pooled + 0.1 and informed.per_user > blind.per_user + 0.1


def test_baselines_report_on_both_protocols(tiny_dataset):
    dataset, train, test = _pairs(tiny_dataset, "per_user")
    results = practitioner_baselines(train, test, {"metadata": ("genre one-hot + per-user LR", one_hot(dataset.tracks, "genre"))})
    by_name = {r.name: r for r in results}
    assert by_name["popularity"].auc.pairs == len(test)
    assert by_name["metadata"].auc.pooled > 0.55  # users in the simulator prefer some genres
    rows = format_baselines([r.as_dict() for r in results])
    assert len(rows) == 2 and rows[0].startswith("| popularity")

    _, cold_train, cold_test = _pairs(tiny_dataset, "cold_tracks")
    cold = {r.name: r for r in practitioner_baselines(cold_train, cold_test, {})}
    assert cold["popularity"].auc is None and "new releases" in cold["popularity"].note
    assert (popularity_scores(cold_train, cold_test) == 0).all()


def test_every_configured_baseline_is_reported_even_where_it_does_not_apply_or_fails(tiny_dataset, tmp_path, monkeypatch):
    """A missing metadata column, a constant one, new releases under cold_tracks and a broken musicnn install
    are each a row without an AUC that says why; none is left out, and the others still run."""
    from musicrec.genre.musicnn_runner import MusicnnPortFeatures

    def broken_install(self, tracks):
        raise FileNotFoundError("the musicnn package is not installed: pip install --no-deps musicnn==0.1.0\n(requirements/nodeps.txt)")
        yield  # a generator, like the real extractor

    monkeypatch.setattr(MusicnnPortFeatures, "extract", broken_install)
    dataset, train, test = _pairs(tiny_dataset, "cold_tracks")
    tracks = dataset.tracks.assign(label="same label everywhere")
    results = evaluate_baselines(train, test, tracks, dataset.audio_files(), tmp_path, metadata_columns=("genre", "mood", "label"))
    by_name = {r.name: r for r in results}
    assert list(by_name) == ["popularity", "musicnn", "metadata_genre", "metadata_mood", "metadata_label"]
    assert by_name["popularity"].auc is None and "new releases" in by_name["popularity"].note
    assert by_name["musicnn"].auc is None
    assert by_name["musicnn"].note == "failed: FileNotFoundError: the musicnn package is not installed: pip install --no-deps musicnn==0.1.0"
    assert by_name["metadata_mood"].note == "does not apply: the tracks table has no 'mood' column"
    assert by_name["metadata_label"].note == "does not apply: the 'label' column has fewer than two distinct values"
    genre = by_name["metadata_genre"]  # new releases still have a genre: it applies under cold_tracks
    assert genre.auc.pairs == len(test) and genre.auc.pooled == pytest.approx(pair_auc(test, genre.scores).pooled)
    rows = format_baselines([r.as_dict() for r in results])
    assert sum("| n/a | n/a |" in row for row in rows) == 4


def test_the_musicnn_baseline_reads_the_msd_max_pool_columns_of_any_musicnn_front_end():
    """Front ends concatenate model by model, each model's pools in order: the baseline takes
    MSD_musicnn's max_pool, averaged over the track's patches, whichever front end stored it."""
    from musicrec.audio import musicnn
    from musicrec.audio.front_ends import FRONT_ENDS
    from musicrec.trainer.audio_input import LogMelStore
    from musicrec.trainer.practitioner_baselines import MSD_PATCH_FRONT_ENDS, stored_patch_means

    assert MSD_PATCH_FRONT_ENDS == ("musicnn", "musicnn_msd_mtt", "musicnn_msd_mtt_max_mean")
    for name in MSD_PATCH_FRONT_ENDS:
        columns = np.arange(FRONT_ENDS[name].frame_dim, dtype=np.float32) / 1000  # each column holds its index
        patches = [np.stack([columns, columns + 1]), columns[None]]  # two patches (mean: +0.5), one patch
        store = LogMelStore.from_arrays(["a", "b"], [p.astype(np.float16) for p in patches], name)
        table = stored_patch_means(store)
        expected = columns[:musicnn.FEATURE_DIM].astype(np.float16).astype(np.float32)
        np.testing.assert_allclose(table.vectors, np.stack([expected + 0.5, expected]), atol=2e-3)
    with pytest.raises(ValueError, match="not 'log_mel' frames"):
        stored_patch_means(LogMelStore.from_arrays(["a"], [np.zeros((5, 128), np.float16)]))
