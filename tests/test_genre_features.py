"""Genre features and the genre-eval job on real audio: musicnn in its worker, the AE of a trained encoder, the cache.

musicnn runs only on a handful of the tiny dataset's 12 s clips (its worker
takes ~15 s to start); the beats-chance test uses the AE on all tiny tracks.
"""

import musicrec  # noqa: F401

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile

from musicrec.audio.decode import MissingAudioError
from musicrec.data.audio_pairs import build_audio_pairs
from musicrec.data.loading import load_dataset
from musicrec.genre.features import FeatureCache, extract_cached
from musicrec.pipeline.audio_encoder_features import AudioEncoderFeatures, find_audio_encoder
from musicrec.pipeline.table2 import GenreEvalConfig, run_genre_eval
from musicrec.trainer.audio_branch import AudioBranchConfig
from musicrec.trainer.audio_export import export_audio_encoder
from musicrec.trainer.audio_training import train_audio_branch


@pytest.fixture(scope="module")
def trained_encoder(tiny_dataset, tiny_log_mels, tiny_user_vectors, tmp_path_factory):
    """An audio encoder trained briefly (Metric-1vs4, 8 epochs) on the tiny dataset, exported as the pipeline does."""
    dataset = load_dataset(tiny_dataset)
    pairs = build_audio_pairs(dataset.interactions, tiny_user_vectors.user_ids, tiny_log_mels.usable(130))
    trained = train_audio_branch(pairs, tiny_log_mels, tiny_user_vectors, AudioBranchConfig.variant("metric_1vs4", epochs=8))
    return export_audio_encoder(trained, tmp_path_factory.mktemp("genre_encoder"))


@pytest.fixture(scope="module")
def tiny_tracks(tiny_dataset) -> pd.DataFrame:
    tracks = load_dataset(tiny_dataset).tracks
    return tracks.assign(path=[str(tiny_dataset / p) for p in tracks["audio_path"]])


def test_musicnn_front_end_is_musicnns_own(tiny_tracks):
    """spectrogram_patches on decoded samples == musicnn.extractor.batch_data on the file (own process: musicnn is TF1)."""
    path = next(p for p in tiny_tracks["path"] if p.endswith(".wav"))
    code = (
        "import numpy as np\n"
        "from musicrec.audio.decode import load_audio\n"
        "from musicrec.genre.musicnn_worker import patch_frames, spectrogram_patches\n"
        "from musicnn.extractor import batch_data\n"
        f"ours = spectrogram_patches(load_audio({path!r}, 16000, max_seconds=30.0))\n"
        f"theirs, _ = batch_data({path!r}, patch_frames(), patch_frames())\n"
        "assert ours.shape == theirs.shape and ours.shape[1:] == (187, 96), (ours.shape, theirs.shape)\n"
        "print(ours.shape[0], float(np.abs(ours - theirs.astype(np.float32)).max()))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    patches, difference = done.stdout.split()
    frames = 1 + int(soundfile.info(path).duration * 16000) // 256  # centred frames, hop 256 at 16 kHz
    assert int(patches) == frames // 187  # whole non-overlapping patches of 187 frames (musicnn's "3 s")
    assert float(difference) < 1e-3


def _folder_dataset(root, tiny_dataset, tiny_tracks, per_genre: int):
    """A folder-per-genre copy of the first `per_genre` tracks of three genres, plus a too-short and a silent file."""
    for genre in ("classical", "metal", "reggae"):
        (root / genre).mkdir(parents=True)
        for path in tiny_tracks[tiny_tracks["genre"] == genre]["path"].head(per_genre):
            shutil.copy(path, root / genre)
    soundfile.write(str(root / "metal" / "short.wav"), 0.3 * np.sin(np.arange(22050) / 5.0).astype(np.float32), 22050)
    soundfile.write(str(root / "reggae" / "silent.wav"), np.zeros(22050 * 5, np.float32), 22050)
    return root


def test_genre_eval_runs_all_three_feature_sets_and_caches(tiny_dataset, tiny_tracks, trained_encoder, tmp_path):
    data = _folder_dataset(tmp_path / "folders", tiny_dataset, tiny_tracks, per_genre=4)
    out = tmp_path / "out"
    result = run_genre_eval(data, "folders", trained_encoder.parent, out, GenreEvalConfig())
    report = json.loads((out / "genre_report.json").read_text())
    assert report == result.report
    assert [s["name"] for s in report["feature_sets"]] == ["baseline (musicnn)", "AE", "baseline + AE"]
    assert [s["dims"] for s in report["feature_sets"]] == [753, 40, 793]
    for key in ("baseline", "ae"):
        counts = report["features"][key]["quarantine"]
        assert counts["ok"] == 12 and counts["too_short"] == 1 and counts["silent"] == 1, (key, counts)
    assert report["dataset"]["usable_tracks"] == 12
    assert set(pd.read_csv(out / "quarantine.csv")["status"]) == {"too_short", "silent"}
    assert (out / "confusion_matrices.png").stat().st_size > 10_000
    assert "baseline + AE" in (out / "table2.md").read_text()

    again = run_genre_eval(data, "folders", trained_encoder.parent, out, GenreEvalConfig())
    for key in ("baseline", "ae"):
        assert again.report["features"][key]["computed"] == 0 and again.report["features"][key]["cached"] == 14
    assert again.report["accuracy"] == report["accuracy"]


def test_ae_features_beat_chance_on_the_demo_genres(tiny_dataset, trained_encoder, tmp_path):
    result = run_genre_eval(tiny_dataset, "demo", trained_encoder, tmp_path, GenreEvalConfig(feature_sets=("ae",)))
    report = result.report
    # The tiny dataset's five planted faulty files, each quarantined with its own reason.
    assert report["features"]["ae"]["quarantine"] == {"ok": 96, "missing": 1, "unreadable": 1, "empty": 1, "silent": 1,
                                                     "too_short": 1, "outside_dataset": 0}
    accuracy, chance = report["accuracy"]["AE"]["test"], report["chance_accuracy"]
    assert len(report["dataset"]["genres"]) == 8
    assert accuracy > max(chance.values()) + 0.25, (accuracy, chance)


def test_a_folder_without_an_encoder_is_refused_with_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no audio encoder SavedModel"):
        find_audio_encoder(tmp_path)


def test_cache_is_keyed_on_the_file_and_the_model(tiny_tracks, trained_encoder, tmp_path):
    audio = tmp_path / "a.wav"
    shutil.copy(next(p for p in tiny_tracks["path"] if p.endswith(".wav")), audio)
    tracks = pd.DataFrame({"track_id": ["a", "gone"], "path": [str(audio), str(tmp_path / "gone.wav")]})
    first = extract_cached(tracks, AudioEncoderFeatures(trained_encoder), tmp_path / "cache")
    assert first.computed == 1 and first.vectors.shape == (1, 40)
    assert first.quarantine["status"].tolist() == [MissingAudioError.status]
    assert extract_cached(tracks, AudioEncoderFeatures(trained_encoder), tmp_path / "cache").cached == 1
    os.utime(audio, ns=(1, 1))  # a changed file is recomputed
    assert extract_cached(tracks, AudioEncoderFeatures(trained_encoder), tmp_path / "cache").computed == 1
    ten_seconds = extract_cached(tracks, AudioEncoderFeatures(trained_encoder, context_seconds=10), tmp_path / "cache")
    assert ten_seconds.computed == 1  # another segment length is another cache entry
    assert FeatureCache(tmp_path / "cache", "x").load(str(tmp_path / "gone.wav")) is None
