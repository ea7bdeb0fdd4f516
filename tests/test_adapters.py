"""Dataset adapters: a service's own layout plugs into validation and ingestion by import path."""

import textwrap

import pytest
import soundfile

from musicrec.components.listening_data.ingest import IngestionConfig, ingest
from conftest import tone, write_dataset
from musicrec.data.adapters import load_with_adapter
from musicrec.data.contract import FeedbackConfig
from musicrec.data.loading import DatasetError
from musicrec.data.validation import validate_dataset

# A service that logs (user, track, seconds played) and keeps its catalogue as JSON lines.
ADAPTER = textwrap.dedent('''
    import json, pathlib
    import pandas as pd
    from musicrec.data.loading import Dataset, MalformedRow

    def load_play_log(root):
        root = pathlib.Path(root)
        tracks = pd.DataFrame([json.loads(line) for line in (root / "catalogue.jsonl").read_text().splitlines()])
        tracks = tracks.rename(columns={"id": "track_id", "artist": "artist_id", "album": "album_id", "file": "audio_path"})
        log, malformed = [], []
        for number, line in enumerate((root / "plays.tsv").read_text().splitlines(), start=1):
            fields = line.split("\\t")
            if len(fields) != 4 or not fields[2].isdigit():
                malformed.append(MalformedRow("plays.tsv", number, "expected user, track, seconds, time"))
                continue
            user, track, seconds, time = fields
            event = "complete" if int(seconds) >= 25 else "skip"
            log.append({"user_id": user, "track_id": track, "timestamp": int(time), "event": event})
        interactions = pd.DataFrame(log)
        users = pd.DataFrame({"user_id": sorted(interactions["user_id"].unique())})
        return Dataset(root=root, users=users, tracks=tracks, interactions=interactions, malformed=malformed)
''')


def test_a_custom_adapter_feeds_validation_and_ingestion(tmp_path, monkeypatch):
    (tmp_path / "play_log_adapter.py").write_text(ADAPTER)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = tmp_path / "service"
    data.mkdir()
    (data / "catalogue.jsonl").write_text("".join(
        f'{{"id": "t{i}", "artist": "a{i % 3}", "album": "al{i % 5}", "file": "audio/t{i}.wav"}}\n' for i in range(30)
    ))
    rows = [f"u{u}\tt{(u + i) % 30}\t{30 if i % 2 else 5}\t{1_700_000_000 + 100 * i}" for u in range(6) for i in range(24)]
    (data / "plays.tsv").write_text("\n".join(rows + ["broken line"]) + "\n")

    dataset = load_with_adapter(data, "play_log_adapter:load_play_log")
    assert len(dataset.malformed) == 1 and dataset.malformed[0].line == len(rows) + 1
    feedback = FeedbackConfig(min_liked=5, min_disliked=5)
    assert validate_dataset(dataset, feedback, check_audio=False).usable
    ingested = ingest(dataset, dataset.tracks["track_id"], IngestionConfig(feedback=feedback))
    assert ingested.counts["malformed_rows"] == 1 and ingested.counts["interactions"] == len(rows)
    assert ingested.counts["user_examples.train"] > 0 and ingested.counts["audio_pairs.test"] > 0
    # The interactions are split as the user branch is, so Transform's vocabularies (learned on
    # `train`) hold no held-out target and no new user.
    train, held_out = ingested.interactions["train"], ingested.user_examples["eval"]
    new_users = set(held_out["user_id"][held_out["new_user"] == 1])
    assert new_users and not new_users & set(train["user_id"])
    targets = set(zip(held_out["user_id"], held_out["track_id"]))
    assert targets and not targets & set(zip(train["user_id"], train["track_id"]))
    # No demographics in this service: slices fall back to "unknown" rather than failing.
    assert set(ingested.audio_pairs["test"]["age_bucket"]) == {"unknown"}


@pytest.mark.parametrize("name, message", [
    ("nosuch", "unknown dataset adapter"),
    ("nosuch_module:load", "cannot load dataset adapter"),
    ("musicrec.data.loading:DatasetError", "returned DatasetError"),
])
def test_bad_adapter_names_get_clear_errors(tmp_path, name, message):
    with pytest.raises(DatasetError, match=message):
        load_with_adapter(tmp_path, name)


SHARED_AUDIO_ADAPTER = textwrap.dedent('''
    import dataclasses, os, pathlib
    from musicrec.data.loading import load_dataset

    def load_with_shared_audio(root):
        return dataclasses.replace(load_dataset(root), audio_roots=(pathlib.Path(os.environ["SHARED_AUDIO"]),))
''')


def test_an_adapter_declares_another_audio_root(tmp_path, monkeypatch):
    shared = tmp_path / "shared_audio"
    shared.mkdir()
    soundfile.write(str(shared / "t1.wav"), tone(4.0, 22050), 22050)
    (tmp_path / "shared_audio_adapter.py").write_text(SHARED_AUDIO_ADAPTER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SHARED_AUDIO", str(shared))
    root = write_dataset(tmp_path / "data", "user_id\nu1\n", "track_id,artist_id,album_id,audio_path\n",
                         "user_id,track_id,timestamp,event\nu1,t1,1704103200,like\n")
    (root / "tracks.csv").write_text(f"track_id,artist_id,album_id,audio_path\nt1,a,al,{shared / 't1.wav'}\nt2,a,al,/etc/hostname\n")

    feedback = FeedbackConfig(min_liked=1, min_disliked=0)
    plain = validate_dataset(load_with_adapter(root), feedback)
    assert {a.track_id: a.status for a in plain.audio} == {"t1": "outside_dataset", "t2": "outside_dataset"}
    declared = validate_dataset(load_with_adapter(root, "shared_audio_adapter:load_with_shared_audio"), feedback)
    assert {a.track_id: a.status for a in declared.audio} == {"t1": "ok", "t2": "outside_dataset"}
