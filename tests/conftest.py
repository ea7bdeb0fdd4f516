"""Shared fixtures: one generated tiny dataset per session, and a writer for hand-made datasets."""

import pathlib
import shutil

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)
import numpy as np
import pandas as pd
import pytest
import soundfile

from musicrec.simulation.generator import generate_demo

TINY_SEED = 0


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> pathlib.Path:
    return generate_demo(tmp_path_factory.mktemp("tiny") / "data", size="tiny", seed=TINY_SEED)


def tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 1, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    mono = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return mono if channels == 1 else np.stack([mono] * channels, axis=1)


def write_dataset(root: pathlib.Path, users: str, tracks: str, interactions: str, audio_seconds: float = 4.0):
    """Writes CSV text tables and a short tone for every audio_path in tracks."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "users.csv").write_text(users)
    (root / "tracks.csv").write_text(tracks)
    (root / "interactions.csv").write_text(interactions)
    frame = pd.read_csv(root / "tracks.csv", dtype=str, on_bad_lines="skip")
    for path in frame.get("audio_path", pd.Series(dtype=str)).dropna():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(str(root / path), tone(audio_seconds, 22050), 22050)
    return root


def feedback_rows(user: str, liked: int, disliked: int, start: int = 1_700_000_000) -> str:
    """Interaction CSV lines: `liked` likes and `disliked` skips of tracks t1..tN."""
    lines = []
    for i in range(liked):
        lines.append(f"{user},t{i + 1},{start + i},like")
    for j in range(disliked):
        lines.append(f"{user},t{liked + j + 1},{start + 1000 + j},skip")
    return "\n".join(lines) + "\n"


def tracks_csv(n: int) -> str:
    rows = [f"t{i + 1},a{i % 3},al{i % 5},audio/t{i + 1}.wav" for i in range(n)]
    return "track_id,artist_id,album_id,audio_path\n" + "\n".join(rows) + "\n"


def tiny_config(dataset, run_dir=None, **overrides):
    """The demo's audio variant with short training; thresholds every model passes unless a test says
    otherwise. The musicnn baseline reads the musicnn patch features AudioFeatures writes for the
    demo's variant."""
    from musicrec.pipeline.config import PipelineConfig
    from musicrec.pipeline.demo import DEMO_CONFIG

    settings = dict(
        variant=PipelineConfig.from_yaml(DEMO_CONFIG).variant,
        dataset_dir=str(dataset), run_dir=str(run_dir or "runs/pipeline"), user_epochs=3, audio_epochs=2, audio_steps_per_epoch=5,
        min_auc=0.0, min_auc_gain=-1.0, audio_beam_args=[], practitioner_baselines=["popularity", "musicnn", "metadata"],
    )
    return PipelineConfig(**{**settings, **overrides})


@pytest.fixture(scope="session")
def tiny_features_dir(tiny_dataset, tmp_path_factory) -> pathlib.Path:
    """The tiny dataset's log-mel TFRecords, extracted by the Beam transform (DirectRunner, in process)."""
    from musicrec.components.audio_features.transforms import extract_features
    from musicrec.data.loading import load_dataset

    dataset = load_dataset(tiny_dataset)
    out = tmp_path_factory.mktemp("tiny_features")
    tracks = dataset.audio_files()
    extract_features(tracks, out)
    return out


@pytest.fixture(scope="session")
def tiny_log_mels(tiny_features_dir):
    from musicrec.trainer.audio_input import LogMelStore

    return LogMelStore.from_tfrecords([str(tiny_features_dir / "log_mel-*")])


@pytest.fixture(scope="session")
def tiny_user_branch(tiny_dataset, tmp_path_factory) -> pathlib.Path:
    """`musicrec user-branch` output on the tiny dataset (short training): model/user_tower, UE table, report."""
    from musicrec.trainer.user_config import UserBranchConfig
    from musicrec.trainer.user_module import run_on_dataset

    out = tmp_path_factory.mktemp("tiny_user_branch")
    run_on_dataset(tiny_dataset, out, UserBranchConfig(epochs=10))
    return out


@pytest.fixture(scope="session")
def tiny_user_vectors(tiny_user_branch):
    """The tiny dataset's UE table (every user, full history)."""
    from musicrec.trainer.audio_data import UserVectors
    from musicrec.names import USER_EMBEDDINGS_FILE

    return UserVectors.from_parquet(tiny_user_branch / "model" / USER_EMBEDDINGS_FILE)


# One planted fault of every kind the data contract names (musicrec.data.contract), on top of
# the generator's own: kind -> (table, what the fault does). Every count a report gives for the
# faulty copy must equal the pristine dataset's count plus these.
PLANTED_ROW_FAULTS = {  # interactions.csv lines that are not loaded
    "undecodable": b"u00001,t0\xef0001,2024-01-01T00:00:00Z,play",
    "unparsable_csv": b"u00001,t00001,2024-01-01T00:00:00Z,pl\ray",
    "field_count": b"u00001,t00001,2024-01-01T00:00:00Z",
    "blank_required": b",t00001,2024-01-01T00:00:00Z,play",
    "timestamp_unparsable": b"u00001,t00001,yesterday-ish,play",
    "timestamp_not_finite": b"u00001,t00001,inf,play",
    "timestamp_out_of_range": b"u00001,t00001,1e30,play",
    "timestamp_milliseconds": b"u00001,t00001,1700000000000,play",
    "event_unknown": b"u00001,t00001,2024-01-01T00:00:00Z,teleport",
}
PLANTED_UNKNOWN_IDS = {
    "unknown_user": b"nobody,t00001,2024-01-01T00:00:00Z,play",
    "unknown_track": b"u00001,t88888,2024-01-01T00:00:00Z,play",
}
PLANTED_VALUE_FAULTS = ("age_not_integer", "age_out_of_range", "release_date_unparsable", "event_case_normalised")
PLANTED_AUDIO_STATUS = "outside_dataset"


def plant_faults(pristine: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """A copy of a generated dataset with every planted fault above (and a duplicated event)."""
    shutil.copytree(pristine, out)
    lines = (out / "interactions.csv").read_bytes().rstrip(b"\n").split(b"\n")
    planted = [*PLANTED_ROW_FAULTS.values(), *PLANTED_UNKNOWN_IDS.values(),
               lines[1],  # duplicate: the first event again
               b",".join(lines[1].split(b",")[:2] + [b"2030-01-01T00:00:00Z", b"Like"])]  # event_case_normalised
    (out / "interactions.csv").write_bytes(b"\n".join(lines + planted) + b"\n")
    users = pd.read_csv(out / "users.csv", dtype=str, keep_default_na=False)
    users.loc[0, "age"], users.loc[1, "age"] = "NaN", "200"  # age_not_integer, age_out_of_range
    users.to_csv(out / "users.csv", index=False)
    tracks = pd.read_csv(out / "tracks.csv", dtype=str, keep_default_na=False)
    tracks.loc[0, "release_date"] = "not-a-date"  # release_date_unparsable
    soundfile.write(str(out.parent / "outside.wav"), tone(12.0, 22050), 22050)
    tracks.loc[1, "audio_path"] = "../outside.wav"  # real audio, but outside the dataset folder
    tracks.to_csv(out / "tracks.csv", index=False)
    return out


@pytest.fixture(scope="session")
def faulty_tiny_dataset(tiny_dataset, tmp_path_factory) -> pathlib.Path:
    """The tiny dataset with one planted fault of every kind: the pipeline tests' shared run uses it."""
    return plant_faults(tiny_dataset, tmp_path_factory.mktemp("faulty_tiny") / "data")
