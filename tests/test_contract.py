"""The data contract: loading, malformed rows with file and line, unknown ids, feedback, validation."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from conftest import feedback_rows, tracks_csv, write_dataset
from musicrec.audio.decode import AUDIO_STATUSES
from musicrec.data.contract import FeedbackConfig
from musicrec.data.feedback import feedback_labels
from musicrec.data.loading import DatasetError, load_dataset
from musicrec.data.validation import validate_dataset

USERS = "user_id,age,gender,country,plan\nu1,34,female,SE,free\nu2,,male,US,premium\n"


def test_malformed_rows_are_reported_with_file_and_line(tmp_path):
    interactions = (
        "user_id,track_id,timestamp,event\n"
        "u1,t1,2024-01-01T10:00:00Z,like\n"  # line 2: fine (ISO)
        "u1,t2,1704103200,play,extra\n"  # line 3: too many fields
        "\n"  # line 4: blank, ignored
        "u1,t3,yesterday,play\n"  # line 5: bad timestamp
        "u1,t4,1704103200,listen\n"  # line 6: unknown event type: kept, counted by validation
        ",t5,1704103200,play\n"  # line 7: blank user id
        "u1,t6,1704103200,skip\n"  # line 8: fine (unix seconds)
    )
    tracks = tracks_csv(6) + "t2,a9,al9,audio/t2.wav\n"  # line 8: duplicate key
    users = USERS + "u3,old,female,DE,free\n"  # line 4: age not an integer
    dataset = load_dataset(write_dataset(tmp_path, users, tracks, interactions))

    found = {(m.file, m.line): m.reason for m in dataset.malformed}
    assert set(found) == {
        ("interactions.csv", 3), ("interactions.csv", 5), ("interactions.csv", 7),
        ("tracks.csv", 8), ("users.csv", 4),
    }
    assert "expected 4 fields, found 5" in found[("interactions.csv", 3)]
    assert "yesterday" in found[("interactions.csv", 5)]
    assert "user_id is blank" in found[("interactions.csv", 7)]
    assert "duplicate track_id 't2' (first on line 3)" in found[("tracks.csv", 8)]
    assert "age 'old' is not an integer" in found[("users.csv", 4)]

    assert list(dataset.interactions["track_id"]) == ["t1", "t4", "t6"]
    # ISO-8601 and unix seconds give the same clock.
    assert dataset.interactions["timestamp"].tolist() == [1704103200] * 3
    assert validate_dataset(dataset, check_audio=False).events_by_type["unknown:listen"] == 1
    # Extra demographic columns are kept; a blank age is missing, not malformed.
    assert dataset.demographic_columns == ["age", "gender", "country", "plan"]
    assert dataset.users.set_index("user_id").loc["u2", "age"] is pd.NA


def test_unknown_ids_are_counted_not_loaded(tmp_path):
    interactions = "user_id,track_id,timestamp,event\nu1,t1,1,like\nghost,t1,2,like\nu1,nosuch,3,like\nghost,nosuch,4,play\n"
    dataset = load_dataset(write_dataset(tmp_path, USERS, tracks_csv(2), interactions))
    assert len(dataset.interactions) == 1
    assert dataset.unknown_user_rows == 2 and dataset.unknown_track_rows == 2
    assert dataset.unknown_user_examples == ("ghost",) and dataset.unknown_track_examples == ("nosuch",)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda root: (root / "tracks.csv").unlink(), "no tracks.csv or tracks.parquet"),
        (lambda root: (root / "tracks.csv").write_text("track_id,artist_id,album_id\nt1,a,b\n"), "missing required column(s) audio_path"),
        (lambda root: (root / "users.csv").write_text(""), "users.csv is empty"),
        (lambda root: (root / "interactions.csv").write_text("user_id,track_id,timestamp,event\nx,y,1,play\n"), "no usable rows"),
        (lambda root: pd.DataFrame({"user_id": ["u1"]}).to_parquet(root / "users.parquet"), "both users.csv and users.parquet"),
    ],
)
def test_unusable_datasets_raise_clear_errors(tmp_path, change, message):
    root = write_dataset(tmp_path, USERS, tracks_csv(2), "user_id,track_id,timestamp,event\nu1,t1,1,like\n")
    change(root)
    with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_dataset(root)


def test_parquet_tables_load_like_csv(tiny_dataset, tmp_path):
    csv = load_dataset(tiny_dataset)
    for name in ("users", "tracks", "interactions"):
        frame = pd.read_csv(tiny_dataset / f"{name}.csv", dtype=str, keep_default_na=False, on_bad_lines="skip")
        if name == "users":
            frame["age"] = frame["age"].astype(int)  # native types, as a Parquet export would have
        if name == "interactions":
            frame = frame[frame["timestamp"] != "not-a-time"]
            frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).dt.tz_localize(None)
        frame.to_parquet(tmp_path / f"{name}.parquet", index=False)
    parquet = load_dataset(tmp_path)
    pd.testing.assert_frame_equal(csv.users, parquet.users)
    pd.testing.assert_frame_equal(csv.tracks, parquet.tracks)
    pd.testing.assert_frame_equal(csv.interactions, parquet.interactions)
    assert parquet.unknown_track_rows == csv.unknown_track_rows == 1


def test_feedback_resolution_prefers_latest_explicit_event():
    log = pd.DataFrame(
        [
            ("u", "a", 1, "like"), ("u", "a", 2, "skip"),  # explicit like beats a later implicit skip
            ("u", "b", 1, "like"), ("u", "b", 2, "dislike"),  # latest explicit wins
            ("u", "c", 1, "skip"), ("u", "c", 2, "complete"),  # no explicit: latest implicit
            ("u", "d", 1, "play"),  # not feedback
        ],
        columns=["user_id", "track_id", "timestamp", "event"],
    )
    result = feedback_labels(log)
    assert dict(zip(result.labels["track_id"], result.labels["label"])) == {"a": 1, "b": 0, "c": 1}
    assert result.conflicts == 3
    # Configuration decides what counts: with complete as neutral, c is a skip.
    custom = feedback_labels(log, FeedbackConfig(liked_events=("like", "playlist_add")))
    assert dict(zip(custom.labels["track_id"], custom.labels["label"]))["c"] == 0


def test_feedback_config_rejects_unknown_or_overlapping_events():
    with pytest.raises(ValueError, match="unknown event types"):
        FeedbackConfig(liked_events=("like", "heart"))
    with pytest.raises(ValueError, match="both liked and disliked"):
        FeedbackConfig(liked_events=("like", "skip"))


def test_users_below_minimum_are_excluded_and_counted(tmp_path):
    interactions = "user_id,track_id,timestamp,event\n" + feedback_rows("u1", 10, 10) + feedback_rows("u2", 10, 9)
    report = validate_dataset(write_dataset(tmp_path, USERS, tracks_csv(20), interactions))
    assert report.eligible_users == 1
    assert report.excluded_users["user_id"].tolist() == ["u2"]
    assert report.excluded_users.set_index("user_id").loc["u2", "disliked"] == 9
    assert report.feedback_per_user["disliked"] == {"min": 9.0, "median": 9.5, "max": 10.0}
    assert report.usable


def test_validation_of_generated_dataset_finds_every_planted_fault(tiny_dataset, tmp_path):
    report = validate_dataset(tiny_dataset)
    faults = pd.read_csv(tiny_dataset / "ground_truth" / "faults.csv", dtype=str, keep_default_na=False)
    planted = {t: f for t, f in zip(faults["track_id"], faults["fault"]) if f in AUDIO_STATUSES}
    found = {a.track_id: a.status for a in report.audio if a.status != "ok"}
    assert found == planted
    assert sorted(found.values()) == sorted(AUDIO_STATUSES)
    assert report.audio_counts["ok"] == report.counts["tracks"] - 5
    assert len(report.malformed_rows) == 1 and report.unknown_ids["unknown_track_rows"] == 1
    assert report.eligible_users == report.counts["users"] and report.usable

    written = report.write(tmp_path / "report")
    summary = json.loads((written / "validation_summary.json").read_text())
    assert summary["audio"]["silent"] == 1 and summary["malformed_rows"] == 1
    quarantine = pd.read_csv(written / "audio_quarantine.csv")
    assert set(quarantine["status"]) == {"missing", "unreadable", "empty", "silent", "too_short"}


def test_validate_data_cli_exit_codes(tiny_dataset, tmp_path):
    ok = subprocess.run(
        [sys.executable, "-m", "musicrec.cli", "validate-data", str(tiny_dataset), "--report-dir", str(tmp_path / "r")],
        capture_output=True, text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "audio: ok 96, missing 1, unreadable 1, empty 1, silent 1, too_short 1" in ok.stdout
    assert "interactions.csv:" in ok.stdout and "not-a-time" in ok.stdout

    unusable = write_dataset(
        tmp_path / "few", USERS, tracks_csv(6), "user_id,track_id,timestamp,event\n" + feedback_rows("u1", 3, 3)
    )
    bad = subprocess.run(
        [sys.executable, "-m", "musicrec.cli", "validate-data", str(unusable), "--report-dir", str(tmp_path / "r2")],
        capture_output=True, text=True,
    )
    assert bad.returncode == 2
    assert "no user has at least 10 liked and 10 disliked tracks" in bad.stderr

    missing = subprocess.run(
        [sys.executable, "-m", "musicrec.cli", "validate-data", str(tmp_path / "nothing")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr
