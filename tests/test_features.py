"""Batch log-mel extraction with Beam: records and quarantine counts."""


import numpy as np
import tensorflow as tf

from musicrec.components.audio_features.transforms import extract_features
from musicrec.audio import decode
from musicrec.audio.logmel import log_mel_spectrogram
from musicrec.audio.records import encode_example, parse_example
from musicrec.data.loading import load_dataset


def test_record_round_trip():
    log_mel = np.random.default_rng(0).uniform(-100, 40, (130, 128)).astype(np.float32)
    parsed = parse_example(tf.constant(encode_example("t1", log_mel)))
    assert parsed["track_id"].numpy() == b"t1"
    np.testing.assert_allclose(parsed["log_mel"].numpy(), log_mel, atol=0.07)  # float16 storage


def test_extraction_writes_features_and_quarantines_each_bad_file(tiny_dataset, tmp_path):
    dataset = load_dataset(tiny_dataset)
    tracks = dataset.audio_files()
    report = extract_features(tracks, tmp_path / "features")

    assert report.counts == {"ok": 96, "missing": 1, "unreadable": 1, "empty": 1, "silent": 1, "too_short": 1}
    assert sorted(q["status"] for q in report.quarantined) == ["empty", "missing", "silent", "too_short", "unreadable"]
    records = tf.data.TFRecordDataset([str(p) for p in (tmp_path / "features").glob("log_mel-*")]).map(parse_example)
    parsed = {r["track_id"].numpy().decode(): r["log_mel"].numpy() for r in records}
    assert len(parsed) == 96
    assert not set(parsed) & {q["track_id"] for q in report.quarantined}

    # The stored features are the one log-mel function applied to the decoded first 30 s.
    track_id, path = tracks[5]
    expected = log_mel_spectrogram(decode.load_audio(path)).numpy()
    np.testing.assert_allclose(parsed[track_id], expected, atol=0.07)
    assert all(m.shape[1] == 128 and m.shape[0] <= 1292 for m in parsed.values())

    # A rerun replaces the output instead of adding to it.
    extract_features(tracks[:10], tmp_path / "features")
    rerun = tf.data.TFRecordDataset([str(p) for p in (tmp_path / "features").glob("log_mel-*")])
    assert sum(1 for _ in rerun) == 10


def test_features_are_written_in_shards_of_a_bounded_number_of_tracks(tiny_dataset, tmp_path, monkeypatch):
    """The trainer reads features past its memory budget in blocks of whole shards, so a catalogue
    comes out in many small shards rather than a few large ones."""
    from musicrec.components.audio_features import transforms

    monkeypatch.setattr(transforms, "TRACKS_PER_SHARD", 20)
    tracks = load_dataset(tiny_dataset).audio_files()
    extract_features(tracks, tmp_path / "features")
    shards = sorted((tmp_path / "features").glob("log_mel-*"))
    assert len(shards) == -(-len(tracks) // 20)
    ids = [r["track_id"].numpy() for r in tf.data.TFRecordDataset([str(p) for p in shards]).map(parse_example)]
    assert len(ids) == len(set(ids)) == 96
