"""The data contract: loading, malformed rows with file and line, unknown ids, feedback, validation."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile

from musicrec.components.audio_features.transforms import extract_features
from conftest import feedback_rows, tone, tracks_csv, write_dataset
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
        "u1,t4,1704103200,listen\n"  # line 6: unknown event type
        ",t5,1704103200,play\n"  # line 7: blank user id
        "u1,t6,1704103200,skip\n"  # line 8: fine (unix seconds)
    )
    tracks = tracks_csv(6) + "t2,a9,al9,audio/t2.wav\n"  # line 8: duplicate key
    users = USERS + "u3,old,female,DE,free\n"  # line 4: age not an integer: set to missing, user kept
    dataset = load_dataset(write_dataset(tmp_path, users, tracks, interactions))

    found = {(m.file, m.line): (m.kind, m.reason) for m in dataset.malformed}
    assert {place: kind for place, (kind, _) in found.items()} == {
        ("interactions.csv", 3): "field_count", ("interactions.csv", 5): "timestamp_unparsable",
        ("interactions.csv", 6): "event_unknown", ("interactions.csv", 7): "blank_required",
        ("tracks.csv", 8): "duplicate",
    }
    assert "expected 4 fields, found 5" in found[("interactions.csv", 3)][1]
    assert "yesterday" in found[("interactions.csv", 5)][1]
    assert "event 'listen' is not one of play, complete" in found[("interactions.csv", 6)][1]
    assert "user_id is blank" in found[("interactions.csv", 7)][1]
    assert "duplicate track_id 't2' (first on line 3)" in found[("tracks.csv", 8)][1]
    assert [str(c) for c in dataset.changed_values] == ["users.csv:4: age 'old' is not an integer; set to missing"]

    assert list(dataset.interactions["track_id"]) == ["t1", "t6"]
    # ISO-8601 and unix seconds give the same clock.
    assert dataset.interactions["timestamp"].tolist() == [1704103200] * 2
    # Extra demographic columns are kept; a blank age is missing, not malformed.
    assert dataset.demographic_columns == ["age", "gender", "country", "plan"]
    assert dataset.users.set_index("user_id").loc["u2", "age"] is pd.NA
    assert dataset.users.set_index("user_id").loc["u3", "age"] is pd.NA


def test_unknown_ids_are_counted_not_loaded(tmp_path):
    interactions = "user_id,track_id,timestamp,event\nu1,t1,1,like\nghost,t1,2,like\nu1,nosuch,3,like\nghost,nosuch,4,play\n"
    dataset = load_dataset(write_dataset(tmp_path, USERS, tracks_csv(2), interactions))
    assert len(dataset.interactions) == 1
    # Each row is counted once (so read = loaded + excluded): unknown user first, else unknown track.
    assert dataset.unknown_user_rows == 2 and dataset.unknown_track_rows == 1
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
    assert sorted(found.values()) == sorted(set(AUDIO_STATUSES) - {"outside_dataset"})  # the generator plants one of each
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


def _copy_tables(source, target):
    """The dataset's three tables without its audio: enough for loading and `check_audio=False`."""
    target.mkdir(parents=True)
    for name in ("users.csv", "tracks.csv", "interactions.csv"):
        shutil.copy(source / name, target / name)
    return target


def test_an_undecodable_byte_costs_exactly_its_row(tiny_dataset, tmp_path):
    clean = load_dataset(_copy_tables(tiny_dataset, tmp_path / "clean"))
    damaged_root = _copy_tables(tiny_dataset, tmp_path / "damaged")
    lines = (damaged_root / "interactions.csv").read_bytes().split(b"\n")
    lines[2000] = lines[2000].replace(b",", b",\xef", 1)  # line 2001: one byte that is not UTF-8
    (damaged_root / "interactions.csv").write_bytes(b"\n".join(lines))
    damaged = load_dataset(damaged_root)

    new = set(damaged.malformed) - set(clean.malformed)
    assert [(m.file, m.line, m.kind) for m in new] == [("interactions.csv", 2001, "undecodable")]
    assert "b'\\xef'" in next(iter(new)).reason
    assert set(clean.malformed) <= set(damaged.malformed)  # every other report keeps its true line
    assert len(damaged.interactions) == len(clean.interactions) - 1
    assert damaged.unknown_user_rows == clean.unknown_user_rows == 0
    assert damaged.rows_read["interactions"] == clean.rows_read["interactions"] == len(lines) - 2


def test_line_numbers_stay_true_across_quoted_line_breaks_and_stray_quotes(tmp_path):
    users = 'user_id,age,gender,country,bio\nu1,34,female,SE,"likes\nfolk"\nu2,30,male,US,plain\n'
    interactions = (
        "user_id,track_id,timestamp,event\n"
        'u1,"t1,1704103200,like\n'  # line 2: the quote is never closed on its line
        "u1,t2,1704103200,like\n"  # line 3
        "u1,t3,1704103200,li\rke\n"  # line 4: a bare carriage return
        "u2,t\x004,1704103200,like\n"  # line 5: a NUL byte
        "u2,t5,1704103200,like\n"  # line 6
    )
    dataset = load_dataset(write_dataset(tmp_path, users, tracks_csv(5), interactions))
    found = {(m.file, m.line): m.kind for m in dataset.malformed}
    assert found == {
        ("interactions.csv", 2): "unparsable_csv", ("interactions.csv", 4): "unparsable_csv",
        ("interactions.csv", 5): "undecodable",
    }
    assert list(dataset.interactions["track_id"]) == ["t2", "t5"]
    assert dataset.users.set_index("user_id").loc["u1", "bio"] == "likes\nfolk"  # free text may span lines
    assert dataset.rows_read == {"users": 2, "tracks": 5, "interactions": 5}


def test_timestamps_out_of_range_or_in_milliseconds_are_malformed_rows(tmp_path):
    interactions = "user_id,track_id,timestamp,event\n" + "".join(
        f"u1,t{i + 1},{value},like\n"
        for i, value in enumerate(["inf", "1e30", "1704103200000", "-5", "1900-01-01T00:00:00Z", "nan", "1704103200.7"])
    )
    dataset = load_dataset(write_dataset(tmp_path, USERS, tracks_csv(7), interactions))
    found = {m.line: (m.kind, m.reason) for m in dataset.malformed}
    assert {line: kind for line, (kind, _) in found.items()} == {
        2: "timestamp_not_finite", 3: "timestamp_out_of_range", 4: "timestamp_milliseconds",
        5: "timestamp_out_of_range", 6: "timestamp_out_of_range", 7: "timestamp_not_finite",
    }
    assert "looks like milliseconds" in found[4][1] and "2024-01-01T10:00:00" in found[4][1]
    assert dataset.interactions["timestamp"].tolist() == [1704103200]


def test_values_that_are_accepted_but_wrong_are_reported(tmp_path):
    users = USERS + "u3,-5,female,DE,free\nu4,200,male,DE,free\nu5,NaN,male,DE,free\nu6,old,male,DE,free\n"
    interactions = (
        "user_id,track_id,timestamp,event\n"
        "u1,t1,1704103200,like\n"
        "u1,t1,2024-01-01T10:00:00Z,like\n"  # line 3: the same event as line 2
        "u1,t2,1704103200,Like\n"  # line 4: case
        "u5,t3,1704103200,PLAY\n"  # line 5: case, and the user whose age is NaN
        "u1,t4,1704103200,teleport\n"  # line 6: unknown event
    )
    dataset = load_dataset(write_dataset(tmp_path, users, tracks_csv(4), interactions))
    assert {(m.file, m.line, m.kind) for m in dataset.malformed} == {
        ("interactions.csv", 3, "duplicate"), ("interactions.csv", 6, "event_unknown"),
    }
    assert {(c.file, c.line, c.kind) for c in dataset.changed_values} == {
        ("users.csv", 4, "age_out_of_range"), ("users.csv", 5, "age_out_of_range"),
        ("users.csv", 6, "age_not_integer"), ("users.csv", 7, "age_not_integer"),
        ("interactions.csv", 4, "event_case_normalised"), ("interactions.csv", 5, "event_case_normalised"),
    }
    ages = dataset.users.set_index("user_id")["age"]
    assert ages["u1"] == 34 and all(ages[u] is pd.NA for u in ("u2", "u3", "u4", "u5", "u6"))
    assert dataset.unknown_user_rows == 0 and list(dataset.interactions["event"]) == ["like", "like", "play"]

    report = validate_dataset(dataset, FeedbackConfig(min_liked=1, min_disliked=0), check_audio=False)
    assert report.events_by_type["like"] == 2  # "Like" counts as feedback
    summary = report.summary()
    assert summary["malformed_rows_by_kind"] == {"duplicate": 1, "event_unknown": 1}
    assert summary["changed_values_by_kind"] == {"age_not_integer": 2, "age_out_of_range": 2, "event_case_normalised": 2}
    assert summary["missing_values"]["users.age"] == 5
    assert summary["rows"]["interactions.csv"] == {
        "read": 5, "loaded": 3, "malformed": 2, "unknown_user": 0, "unknown_track": 0,
    }
    printed = report.format()
    for line in (
        "interactions.csv: 5 rows read = 3 loaded + 2 malformed + 0 unknown user + 0 unknown track",
        "users.csv: 6 rows read = 6 loaded + 0 malformed",
        "malformed rows (not loaded): 2 (duplicate 1, event_unknown 1)",
        "values changed, rows kept: 6 (age_not_integer 2, age_out_of_range 2, event_case_normalised 2)",
        "missing values: users.age 5",
        "users.csv:4: age '-5' is outside 0..120; set to missing",
    ):
        assert line in printed, printed


def test_audio_outside_the_dataset_is_quarantined_not_opened(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    soundfile.write(str(elsewhere / "real.wav"), tone(4.0, 22050), 22050)
    (tmp_path / "data" / "audio").mkdir(parents=True)
    (tmp_path / "data" / "audio" / "link.wav").symlink_to(elsewhere / "real.wav")
    tracks = (
        "track_id,artist_id,album_id,audio_path\n"
        "t1,a,al,audio/t1.wav\n"
        "t2,a,al,../../etc/passwd\n"
        "t3,a,al,/etc/hostname\n"
        f"t4,a,al,{elsewhere / 'real.wav'}\n"
        "t5,a,al,audio/link.wav\n"
    )
    root = write_dataset(tmp_path / "data", USERS, "track_id,artist_id,album_id,audio_path\nt1,a,al,audio/t1.wav\n",
                         "user_id,track_id,timestamp,event\n" + feedback_rows("u1", 1, 0))
    (root / "tracks.csv").write_text(tracks)
    dataset = load_dataset(root)
    outside = {"t2", "t3", "t4", "t5"}

    report = validate_dataset(dataset, FeedbackConfig(min_liked=1, min_disliked=0))
    assert {a.track_id: a.status for a in report.audio} == {"t1": "ok", **{t: "outside_dataset" for t in outside}}
    assert report.audio_counts["outside_dataset"] == 4
    assert "outside_dataset 4" in report.format()

    features = extract_features(dataset.audio_files(), tmp_path / "features")
    assert features.counts == {"ok": 1, "outside_dataset": 4}
    assert {q["track_id"] for q in features.quarantined} == outside
    assert all("outside the dataset" in q["detail"] for q in features.quarantined)


@pytest.mark.parametrize("damage", ["random bytes", "truncated"])
def test_a_corrupt_parquet_table_is_a_clear_error(tmp_path, damage):
    root = write_dataset(tmp_path / "data", USERS, tracks_csv(2), "user_id,track_id,timestamp,event\nu1,t1,1,like\n")
    frame = pd.read_csv(root / "interactions.csv", dtype=str)
    (root / "interactions.csv").unlink()
    frame.to_parquet(root / "interactions.parquet")
    whole = (root / "interactions.parquet").read_bytes()
    damaged = np.random.default_rng(0).bytes(20_000) if damage == "random bytes" else whole[: len(whole) // 2]
    (root / "interactions.parquet").write_bytes(damaged)
    result = subprocess.run(
        [sys.executable, "-m", "musicrec.cli", "validate-data", str(root), "--skip-audio", "--report-dir", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "interactions.parquet is not a readable Parquet file" in result.stderr
    assert "terminate called" not in result.stderr


def test_parquet_bytes_are_utf8_text_and_undecodable_values_cost_their_row(tmp_path):
    root = write_dataset(tmp_path, USERS, tracks_csv(3), "user_id,track_id,timestamp,event\nu1,t1,1704103200,like\n")
    (root / "interactions.csv").unlink()
    pq.write_table(pa.table({
        # A binary id column, as some exports write text: row 2's bytes are not UTF-8.
        "user_id": pa.array([b"u1", b"u\xff1", b"u2", b"u1"], pa.binary()),
        "track_id": ["t1", "t2", "t3", "t\x002"],  # row 4: a NUL inside a string
        "timestamp": pa.array([1704103200] * 4, pa.int64()),
        "event": ["like"] * 4,
    }), root / "interactions.parquet")
    dataset = load_dataset(root)
    assert [(m.line, m.kind) for m in dataset.malformed] == [(2, "undecodable"), (4, "undecodable")]
    assert "b'\\xff'" in dataset.malformed[0].reason and "b'\\x00'" in dataset.malformed[1].reason
    assert dataset.interactions[["user_id", "track_id"]].values.tolist() == [["u1", "t1"], ["u2", "t3"]]
    assert dataset.unknown_user_rows == 0 and dataset.rows_read["interactions"] == 4


@pytest.mark.parametrize("table_format", ["csv", "parquet"])
def test_a_log_written_in_milliseconds_is_refused_naming_the_fault(tmp_path, table_format):
    millis = [1704103200000 + i for i in range(3)]
    root = write_dataset(tmp_path / "d", USERS, tracks_csv(3), "user_id,track_id,timestamp,event\n" + "".join(
        f"u1,t{i + 1},{ms},like\n" for i, ms in enumerate(millis)
    ))
    if table_format == "parquet":
        (root / "interactions.csv").unlink()
        pq.write_table(pa.table({
            "user_id": ["u1"] * 3, "track_id": ["t1", "t2", "t3"], "timestamp": pa.array(millis, pa.int64()),
            "event": ["like"] * 3,
        }), root / "interactions.parquet")
    result = subprocess.run(
        [sys.executable, "-m", "musicrec.cli", "validate-data", str(root), "--skip-audio", "--report-dir", str(tmp_path / "r")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    where = "line 2" if table_format == "csv" else "row 1"
    assert f"3 malformed rows (timestamp_milliseconds 3: {where}: timestamp '1704103200000' looks like milliseconds" in result.stderr


def test_a_users_table_with_no_usable_row_says_why(tmp_path):
    root = write_dataset(tmp_path, "user_id,age\n,30\n,31\n", tracks_csv(1), "user_id,track_id,timestamp,event\nu1,t1,1,like\n")
    with pytest.raises(DatasetError, match=r"users.csv has no usable rows: 2 rows read; 2 malformed rows "
                                           r"\(blank_required 2: line 2: user_id is blank\)"):
        load_dataset(root)
