"""`musicrec generate-demo`: writes a simulated music service in the plain layout.

The output is an ordinary dataset folder (users.csv, tracks.csv,
interactions.csv, audio/) plus `ground_truth/` with the latent factors, so the
demo exercises exactly the path real data takes, and the oracle can be
measured. It deliberately carries a few faults real data has: one audio file
of each unusable kind (missing, unreadable, empty, silent, too short), one
malformed interaction row and one interaction naming an unknown track, so the
validation and quarantine paths show up in every demo run.

Same seed, same dataset: the tables are identical byte for byte.
"""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Dict, List

import numpy as np
import pandas as pd
import soundfile
from tqdm import tqdm

from musicrec.simulation import world as world_lib
from musicrec.simulation.arrangement import build_arrangement
from musicrec.simulation.genres import GENRES_BY_NAME
from musicrec.simulation.oracle import GROUND_TRUTH_DIR
from musicrec.simulation.render import render

# Real catalogues mix containers, rates and channel counts; so does the demo.
FORMATS = (("ogg", "OGG", "VORBIS", 0.45), ("mp3", "MP3", "MPEG_LAYER_III", 0.35), ("flac", "FLAC", "PCM_16", 0.12), ("wav", "WAV", "PCM_16", 0.08))
SAMPLE_RATES = ((22050, 0.55), (44100, 0.25), (16000, 0.1), (32000, 0.1))
STEREO_SHARE = 0.3
FAULT_KINDS = ("missing", "unreadable", "empty", "silent", "too_short")
# Bump when the generated data changes, so cached demo datasets are regenerated.
GENERATOR_VERSION = 2


def generate_demo(out_dir, size: str = "demo", seed: int = 0, faults: bool = True, overwrite: bool = False) -> pathlib.Path:
    """Generates the dataset into `out_dir` and returns its path."""
    if size not in world_lib.SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(world_lib.SIZES)}")
    out = pathlib.Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty; pass overwrite=True (--overwrite) to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = world_lib.SIZES[size]
    rng = np.random.default_rng(seed)
    world = world_lib.sample_world(spec, rng)
    interactions = world_lib.simulate_listening(world, spec, rng)
    tracks = world.tracks.copy()
    tracks["audio_path"] = _render_catalogue(world.tracks, out, seed)
    fault_rows: List[Dict] = []
    extra_lines: List[str] = []
    if faults:
        tracks, interactions, fault_rows, extra_lines = _inject_faults(tracks, interactions, world, out, seed)
    _write_tables(out, world, tracks, interactions, extra_lines)
    _write_ground_truth(out, world, tracks, fault_rows, size, seed)
    return out


def is_generated(out_dir, size: str, seed: int) -> bool:
    """Whether `out_dir` holds this generator version's dataset for (size, seed)."""
    params_file = pathlib.Path(out_dir) / GROUND_TRUTH_DIR / "params.json"
    if not params_file.is_file():
        return False
    params = json.loads(params_file.read_text())
    return (params.get("generator_version"), params.get("size"), params.get("seed")) == (GENERATOR_VERSION, size, seed)


def _track_rng(seed: int, index: int) -> np.random.Generator:
    # Per-track streams: a track's audio does not depend on the others.
    return np.random.default_rng([seed, index])


def _choose(rng: np.random.Generator, options):
    weights = np.asarray([o[-1] for o in options], dtype=float)
    return options[int(rng.choice(len(options), p=weights / weights.sum()))]


def _render_catalogue(tracks: pd.DataFrame, out: pathlib.Path, seed: int) -> List[str]:
    paths = []
    for i, track in tqdm(list(tracks.iterrows()), desc="rendering tracks", unit="track", mininterval=5):
        rng = _track_rng(seed, i)
        style = track[[c for c in tracks.columns if c.startswith("style_")]].to_numpy(float)
        midi = build_arrangement(GENRES_BY_NAME[track["genre"]], style, rng, track["seconds"])
        paths.append(_write_audio(out, f"audio/{track['genre']}", track["track_id"], midi, track["seconds"], rng))
    return paths


def _write_audio(out, folder, track_id, midi, seconds, rng) -> str:
    ext, container, subtype, _ = _choose(rng, FORMATS)
    rate, _ = _choose(rng, SAMPLE_RATES)
    stereo = bool(rng.random() < STEREO_SHARE)
    audio = render(midi, rate, seconds, stereo=stereo)
    relative = f"{folder}/{track_id}.{ext}"
    (out / folder).mkdir(parents=True, exist_ok=True)
    soundfile.write(str(out / relative), audio, rate, format=container, subtype=subtype)
    return relative


def _inject_faults(tracks, interactions, world, out, seed):
    """Adds one track per unusable-audio kind, plus two bad interaction rows."""
    rng = _track_rng(seed, len(tracks))
    folder = out / "audio" / "faults"
    folder.mkdir(parents=True, exist_ok=True)
    fault_rows, new_tracks, new_events = [], [], []
    template = tracks.iloc[0]
    for k, kind in enumerate(FAULT_KINDS):
        track_id = f"t{len(tracks) + k + 1:05d}"
        relative = f"audio/faults/{track_id}.{ 'mp3' if kind == 'unreadable' else 'wav' if kind in ('empty', 'silent') else 'ogg'}"
        path = out / relative
        if kind == "unreadable":
            path.write_bytes(b"ID3\x03\x00" + rng.bytes(4096))
        elif kind == "empty":
            soundfile.write(str(path), np.zeros(0, np.float32), 22050)
        elif kind == "silent":
            soundfile.write(str(path), np.zeros(22050 * 20, np.float32), 22050)
        elif kind == "too_short":
            genre = GENRES_BY_NAME[template["genre"]]
            audio = render(build_arrangement(genre, genre.style_center, rng, 1.5), 22050, 1.5)
            soundfile.write(str(path), audio, 22050, format="OGG", subtype="VORBIS")
        # "missing": the row points at a file that is not there.
        row = template.copy()
        row["track_id"], row["audio_path"] = track_id, relative
        new_tracks.append(row)
        fault_rows.append({"track_id": track_id, "fault": kind})
        # A couple of plain plays, so the broken tracks are part of the log
        # without changing anyone's liked/disliked counts.
        for user in rng.choice(world.users["user_id"].to_numpy(), size=2, replace=False):
            new_events.append((user, track_id, int(interactions["timestamp"].iloc[-1]) + 60 * (k + 1), "play"))
    tracks = pd.concat([tracks, pd.DataFrame(new_tracks)], ignore_index=True)
    interactions = pd.concat([interactions, pd.DataFrame(new_events, columns=interactions.columns)], ignore_index=True)
    user = world.users["user_id"].iloc[0]
    extra_lines = [
        f"{user},{tracks['track_id'].iloc[0]},not-a-time,play",  # malformed timestamp
        f"{user},t99999,2024-09-01T00:00:00Z,play",  # unknown track id
    ]
    fault_rows += [
        {"track_id": "", "fault": "malformed_interaction_row"},
        {"track_id": "t99999", "fault": "unknown_track_in_interactions"},
    ]
    return tracks, interactions, fault_rows, extra_lines


def _iso(seconds: pd.Series) -> pd.Series:
    return pd.to_datetime(seconds, unit="s", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_tables(out, world, tracks, interactions, extra_lines):
    world.users[["user_id", "age", "gender", "country"]].to_csv(out / "users.csv", index=False)
    tracks[["track_id", "artist_id", "album_id", "audio_path", "genre", "release_date"]].to_csv(
        out / "tracks.csv", index=False
    )
    log = interactions.assign(timestamp=_iso(interactions["timestamp"]))
    with open(out / "interactions.csv", "w", newline="") as f:
        log.to_csv(f, index=False)
        for line in extra_lines:
            f.write(line + "\n")


def _write_ground_truth(out, world, tracks, fault_rows, size, seed):
    root = out / GROUND_TRUTH_DIR
    root.mkdir(exist_ok=True)
    latent_user = [c for c in world.users.columns if c.startswith(("taste_", "pref_"))]
    world.users[["user_id"] + latent_user].to_csv(root / "users.csv", index=False, float_format="%.6f")
    style = [c for c in world.tracks.columns if c.startswith("style_")]
    world.tracks[["track_id", "artist_id", "genre", "popularity", "seconds"] + style].to_csv(
        root / "tracks.csv", index=False, float_format="%.6f"
    )
    pd.DataFrame(fault_rows, columns=["track_id", "fault"]).to_csv(root / "faults.csv", index=False)
    np.savez_compressed(
        root / "artist_affinity.npz",
        user_ids=world.users["user_id"].to_numpy().astype(str),
        artist_ids=world.artist_ids.astype(str),
        affinity=world.artist_affinity,
    )
    params = {
        "generator_version": GENERATOR_VERSION,
        "size": size,
        "seed": seed,
        "weights": world.weights.__dict__,
        "utility": "A(u,t) = taste(u) . (2 style(t) - 1) + pref(u, genre(t)); "
        "U = A + artist_loyalty * affinity(u, artist) + popularity * z(log popularity)",
    }
    (root / "params.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
