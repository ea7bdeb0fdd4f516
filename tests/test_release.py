"""The weekly release job end to end on the tiny service: train and push, release the held-back newest
tracks (one of them with broken audio), the lists, the report, reruns, ScaNN, errors, Kubeflow, and
the offline check's scoring."""

import json
import pathlib
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_config
from musicrec.components.release import transforms
from musicrec.components.release.transforms import ListsConfig, pick_inbox
from musicrec.data.loading import DatasetError, load_dataset, load_release_tracks
from musicrec.pipeline.release import (LISTS_DIR, REPORT_DIR, STAGING_PREFIX, ReleaseConfig, compile_release,
                                       release_pipeline_name, run_release)
from musicrec.pipeline.release_check import (METHODS, RELEASE_DIR, ReleaseCheckConfig, format_release_check,
                                             inbox_metrics, mean_track_auc, newest_tracks, run_release_check,
                                             scorable_outcomes)
from musicrec.pipeline.runs import RunRecordError, find_run, one_run_at_a_time

CHECK = ReleaseCheckConfig(holdout=0.2, lists=ListsConfig(top_users=12, inbox_size=4, artist_cap=1))
LISTS = CHECK.lists


@pytest.fixture(scope="module")
def broken_release_track(tiny_dataset):
    """The newest track, whose audio the service copy below breaks: the release must quarantine it."""
    return newest_tracks(load_dataset(tiny_dataset).tracks, CHECK.holdout)[0]


@pytest.fixture(scope="module")
def checked(tiny_dataset, broken_release_track, tmp_path_factory):
    """One release check on a copy of the tiny service (the module's shared run): split, train and
    push, release, score."""
    service = tmp_path_factory.mktemp("release_service") / "data"
    shutil.copytree(tiny_dataset, service)
    tracks = load_dataset(service).tracks.set_index("track_id")
    (service / tracks.loc[broken_release_track, "audio_path"]).write_bytes(b"not audio at all")
    out = tmp_path_factory.mktemp("release_check")
    training = tiny_config(service, practitioner_baselines=[])
    report = run_release_check(service, out, training, CHECK)
    run_dir = out / "run"
    return {"report": report, "out": out, "training": tiny_config(out / "train", run_dir, practitioner_baselines=[]),
            "published": pathlib.Path(report["run"]["published"])}


def lists(published: pathlib.Path, name: str) -> pd.DataFrame:
    return transforms.read_output(published / LISTS_DIR, name)


def test_the_check_scores_the_release_beside_the_baselines(checked):
    report = checked["report"]
    assert set(report["methods"]) == set(METHODS)
    for name, metrics in report["methods"].items():
        assert metrics["users_with_liked_new_tracks"] > 0, name
        assert 0 <= metrics["inbox_recall"] <= metrics["inbox_hit_rate"] <= 1, name
        assert 0 <= metrics["track_auc"] <= 1, name
    # The model's row is the published release's own inboxes.
    published_inbox = lists(checked["published"], transforms.USER_INBOX)
    assert report["methods"]["musicrec"]["users_with_inbox"] == published_inbox["user_id"].nunique()
    table = format_release_check(report)
    assert all(f"| {name} |" in table for name in METHODS)
    assert (checked["out"] / "release_check.md").read_text().strip() == table


def test_lists_follow_the_settings_and_skip_the_quarantined_track(checked, broken_release_track):
    published = checked["published"]
    release_tracks = load_release_tracks(checked["out"] / RELEASE_DIR).tracks
    quarantined = {q["track_id"] for q in json.loads((published / REPORT_DIR / "report.json").read_text())["quarantined"]}
    assert broken_release_track in quarantined
    embeddings = lists(published, transforms.TRACK_EMBEDDINGS)
    assert set(embeddings["track_id"]) == set(release_tracks["track_id"]) - quarantined
    assert np.isfinite(np.stack(embeddings["audio_embedding"])).all()

    summary = json.loads((published / LISTS_DIR / "release.json").read_text())
    track_users = lists(published, transforms.TRACK_USERS)
    per_track = track_users.groupby("track_id")
    assert (per_track.size() == min(LISTS.top_users, summary["users_in_model"])).all()
    for _, rows in per_track:
        assert rows["rank"].tolist() == list(range(1, len(rows) + 1))
        assert (np.diff(rows["score"].to_numpy()) <= 1e-7).all()  # best first
        assert rows["user_id"].is_unique

    inbox = lists(published, transforms.USER_INBOX)
    artists = dict(zip(release_tracks["track_id"], release_tracks["artist_id"]))
    assert (inbox.groupby("user_id").size() <= LISTS.inbox_size).all()
    assert (inbox.groupby(["user_id", "artist_id"]).size() <= LISTS.artist_cap).all()
    assert (inbox["artist_id"] == inbox["track_id"].map(artists)).all()
    # Every inbox entry is a (track, user) pick with the track's score for that user.
    picked = inbox.merge(track_users, on=["track_id", "user_id"], suffixes=("", "_pick"))
    assert len(picked) == len(inbox) and np.allclose(picked["score"], picked["score_pick"])
    # A user's inbox is their best picks under the cap, best first.
    for user, rows in inbox.groupby("user_id"):
        candidates = track_users[track_users["user_id"] == user]
        expected = pick_inbox(zip(candidates["score"], candidates["track_id"], candidates["track_id"].map(artists)),
                              LISTS)
        assert rows["track_id"].tolist() == [track for track, _, _ in expected], user


def test_the_release_ranks_users_as_the_served_recommender_does(checked):
    from musicrec.serving.client import connect, recommend_users

    published, training = checked["published"], checked["training"]
    track_users = lists(published, transforms.TRACK_USERS)
    tracks = load_release_tracks(checked["out"] / RELEASE_DIR).tracks.set_index("track_id")
    client = connect(None, training.serving_path)
    for track_id in sorted(track_users["track_id"].unique())[:3]:
        served = recommend_users(client, checked["out"] / RELEASE_DIR / tracks.loc[track_id, "audio_path"], LISTS.top_users)
        batch = track_users[track_users["track_id"] == track_id]
        # The served graph computes the log-mel itself; the release reads AudioFeatures' float16 copy.
        assert np.allclose(batch["score"], [score for _, score in served], atol=2e-3), track_id
        assert batch["user_id"].iloc[0] == served[0][0]


def test_the_report_covers_the_release(checked, broken_release_track):
    report_dir = checked["published"] / REPORT_DIR
    figures = json.loads((report_dir / "report.json").read_text())
    inbox = lists(checked["published"], transforms.USER_INBOX)
    summary = figures["summary"]
    assert figures["figures"]["users_reached"] == inbox["user_id"].nunique() == summary["users_reached"]
    assert figures["figures"]["tracks_quarantined"] >= 1
    assert broken_release_track in {q["track_id"] for q in figures["quarantined"]}
    markdown = (report_dir / "report.md").read_text()
    assert f"version {summary['model_version']}" in markdown and broken_release_track in markdown
    for section in ("Score distributions", "Per genre", "Per demographic slice", "Quarantined files"):
        assert section in markdown and section in (report_dir / "index.html").read_text()
    slices = pd.DataFrame(figures["tables"]["Per demographic slice"])
    assert {"gender", "country", "age_bucket"} <= set(slices["column"])
    assert (slices.groupby("column")["users"].sum() == summary["users_in_model"]).all()
    for plot in ("scores.png", "inbox_sizes.png", "genres.png"):
        assert (report_dir / plot).stat().st_size > 1000


def test_a_rerun_of_the_same_week_publishes_a_new_identical_version(checked):
    training, first = checked["training"], checked["published"]
    (first.parent / f"{STAGING_PREFIX}7-1").mkdir()  # what an interrupted publish leaves
    again = run_release(training, ReleaseConfig(tracks_dir=str(checked["out"] / RELEASE_DIR), name="check",
                                                top_users=LISTS.top_users, inbox_size=LISTS.inbox_size,
                                                artist_cap=LISTS.artist_cap))
    second = pathlib.Path(again["published"])
    assert second.parent == first.parent and int(second.name) == int(first.name) + 1
    assert set(again["states"].values()) == {"CACHED"}
    assert not list(first.parent.glob(STAGING_PREFIX + "*"))
    for name in (transforms.TRACK_USERS, transforms.USER_INBOX):
        pd.testing.assert_frame_equal(lists(first, name), lists(second, name))
    # The training pipeline's latest run is still its own: the release runs are recorded apart.
    assert find_run(training.run_dir, pipeline_name=release_pipeline_name(training)).run_id == again["run_id"]
    assert "Evaluator" in find_run(training.run_dir, pipeline_name=training.pipeline_name).executions


def test_rejected_rows_of_the_tracks_table_are_reported(checked, tmp_path):
    release_dir = tmp_path / "week"
    shutil.copytree(checked["out"] / RELEASE_DIR, release_dir)
    with (release_dir / "tracks.csv").open("a") as tracks:
        tracks.write("t99999,,al1,audio/none.wav,rock,2030-01-01\n")  # no artist: a required id
    released = run_release(checked["training"], ReleaseConfig(tracks_dir=str(release_dir), **vars(LISTS)))
    report = json.loads((pathlib.Path(released["published"]) / REPORT_DIR / "report.json").read_text())
    figures = report["figures"]
    assert figures["rows_rejected"] == 1 and "artist_id" in report["rejected_rows"][0]["reason"]
    assert figures["rows_read"] == figures["tracks_in_table"] + figures["rows_rejected"]
    assert figures["tracks_in_table"] == figures["tracks_ranked"] + figures["tracks_quarantined"]
    assert "Rejected rows of the tracks table" in (pathlib.Path(released["published"]) / REPORT_DIR / "report.md").read_text()


def test_scann_ranking_and_a_named_version(checked, tmp_path):
    from musicrec.serving.scann_index import ScannUserIndex, version_table

    training = checked["training"]
    summary = json.loads((checked["published"] / LISTS_DIR / "release.json").read_text())
    user_ids, vectors = version_table(summary["model_dir"])
    ScannUserIndex.build(user_ids, vectors, k=LISTS.top_users).save(tmp_path / "scann")
    released = run_release(training, ReleaseConfig(
        tracks_dir=str(checked["out"] / RELEASE_DIR), name="scann", top_users=LISTS.top_users,
        inbox_size=LISTS.inbox_size, artist_cap=LISTS.artist_cap, scann_index=str(tmp_path / "scann"),
        model_version=summary["model_version"]))
    assert released["summary"]["ranking"] == "scann" and released["summary"]["model_version"] == summary["model_version"]
    exact, approximate = lists(checked["published"], transforms.TRACK_USERS), lists(pathlib.Path(released["published"]), transforms.TRACK_USERS)
    found = approximate.groupby("track_id")["user_id"].apply(set)
    expected = exact.groupby("track_id")["user_id"].apply(set)
    recall = np.mean([len(found[t] & expected[t]) / len(expected[t]) for t in expected.index])
    assert recall >= 0.9


def test_clear_errors(checked, tmp_path):
    training = checked["training"]
    release = dict(tracks_dir=str(checked["out"] / RELEASE_DIR), name="errors")
    with pytest.raises(ValueError, match="no pushed version 99"):
        run_release(training, ReleaseConfig(**release, model_version=99))
    with pytest.raises(ValueError, match="max_k"):
        run_release(training, ReleaseConfig(**release, top_users=5000))
    with pytest.raises(RunRecordError, match="no pipeline run|no blessed, pushed model"):
        run_release(tiny_config(checked["out"] / "train", tmp_path / "never_trained"), ReleaseConfig(**release))
    with pytest.raises(ValueError, match="top_users must be at least 1"):
        ReleaseConfig(**release, top_users=0)
    with pytest.raises(ValueError, match="one plain folder name"):
        run_release(training, ReleaseConfig(tracks_dir=release["tracks_dir"], name="../elsewhere"))
    with one_run_at_a_time(training.run_dir):  # a training run in progress: the release waits its turn
        with pytest.raises(RunRecordError, match="another musicrec run is using"):
            run_release(training, ReleaseConfig(**release))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no tracks.csv"):
        load_release_tracks(tmp_path / "empty")


def test_the_release_pipeline_compiles_for_kubeflow_without_the_data(tmp_path):
    training = tiny_config("gs://no-such-bucket/service", tmp_path / "run", serving_base_path="gs://no-such-bucket/serving")
    spec = json.loads(compile_release(training, ReleaseConfig(tracks_dir="gs://no-such-bucket/releases/2026-W48"),
                                      tmp_path / "release.json").read_text())
    tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"]
    assert set(tasks) == {"ReleaseAudioFeatures", "ReleaseInference", "ReleaseReport"}
    assert spec["pipelineSpec"]["root"]["inputDefinitions"]["parameters"]["tracks_dir"]["type"] == "STRING"
    assert tasks["ReleaseAudioFeatures"]["inputs"]["parameters"]["dataset_dir"] == {"componentInputParameter": "tracks_dir"}
    serving = tasks["ReleaseInference"]["inputs"]["parameters"]["serving_base_path"]
    assert serving["runtimeValue"]["constantValue"]["stringValue"] == "gs://no-such-bucket/serving"


def test_inbox_metrics_and_track_auc_on_known_outcomes():
    outcomes = pd.DataFrame({"user_id": ["a", "a", "b", "b", "c", "z", "a"], "track_id": ["t1", "t2", "t1", "t2", "t1", "t1", "tq"],
                             "label": [1, 0, 0, 1, 1, 1, 1]})
    labels, left_out = scorable_outcomes(outcomes, ["t1", "t2"], np.array(["a", "b", "c"]))
    assert len(labels) == 5 and left_out == {"on_tracks_not_ranked (quarantined audio)": 1, "of_users_not_in_the_model": 1}
    inbox = pd.DataFrame({"user_id": ["a", "b"], "track_id": ["t1", "t1"]})
    metrics = inbox_metrics(inbox, labels)
    # a: liked t1, in inbox; b: liked t2, not in inbox; c: liked t1, no inbox.
    assert metrics["users_with_liked_new_tracks"] == 3
    assert metrics["inbox_hit_rate"] == pytest.approx(1 / 3) and metrics["inbox_recall"] == pytest.approx(1 / 3)
    oracle = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # [tracks t1, t2] x [users a, b, c]
    assert mean_track_auc(oracle, ["t1", "t2"], np.array(["a", "b", "c"]), labels) == 1.0
    assert mean_track_auc(-oracle, ["t1", "t2"], np.array(["a", "b", "c"]), labels) == 0.0


def test_pick_inbox_caps_artists_and_size():
    candidates = [(0.9, "t1", "x"), (0.8, "t2", "x"), (0.7, "t3", "x"), (0.6, "t4", "y"), (0.5, "t5", "z")]
    assert pick_inbox(candidates, ListsConfig(10, 3, 2)) == [("t1", "x", 0.9), ("t2", "x", 0.8), ("t4", "y", 0.6)]
    assert pick_inbox(candidates, ListsConfig(10, 10, 1)) == [("t1", "x", 0.9), ("t4", "y", 0.6), ("t5", "z", 0.5)]
