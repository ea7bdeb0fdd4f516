"""`musicrec generate-demo`: writes a simulated music service in the plain layout.

The output is an ordinary dataset folder (users.csv, tracks.csv,
interactions.csv, audio/) plus `ground_truth/` with the latent factors, so the
demo exercises exactly the path real data takes, and the oracle can be
measured. It deliberately carries a few faults real data has: one audio file
of each unusable kind (missing, unreadable, empty, silent, too short), one
malformed interaction row and one interaction naming an unknown track, so the
validation and quarantine paths show up in every demo run.

`world` picks a preset (worlds.py): the same generator, configured to differ
from the default where real services differ.

Same world and seed, same dataset: the tables are identical byte for byte.
"""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Dict, List, Sequence

import numpy as np
import pandas as pd
import soundfile
from tqdm import tqdm

from musicrec.simulation import world as world_lib
from musicrec.simulation.arrangement import build_arrangement
from musicrec.simulation.genres import GenreStyle
from musicrec.simulation.oracle import GROUND_TRUTH_DIR
from musicrec.simulation.production import AudioSpec
from musicrec.simulation.render import render
from musicrec.simulation.worlds import get_world

FAULT_KINDS = ("missing", "unreadable", "empty", "silent", "too_short")
# Bump when the generated data changes, so cached demo datasets are regenerated.
GENERATOR_VERSION = 2


def generate_demo(
    out_dir, size: str = "demo", seed: int = 0, faults: bool = True, overwrite: bool = False, world: str = "default"
) -> pathlib.Path:
    """Generates the dataset of world preset `world` into `out_dir` and returns its path."""
    if size not in world_lib.SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(world_lib.SIZES)}")
    preset = get_world(world)
    out = pathlib.Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty; pass overwrite=True (--overwrite) to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = world_lib.SIZES[size]
    rng = np.random.default_rng(seed)
    latent = world_lib.sample_world(spec, rng, preset.service)
    interactions = world_lib.simulate_listening(latent, spec, rng)
    genres = {g.name: g for g in preset.service.genres}
    tracks = latent.tracks.copy()
    tracks["audio_path"] = _render_catalogue(latent.tracks, out, seed, genres, preset.audio)
    fault_rows: List[Dict] = []
    extra_lines: List[str] = []
    if faults:
        tracks, interactions, fault_rows, extra_lines = _inject_faults(tracks, interactions, latent, genres, out, seed)
    _write_tables(out, latent, tracks, interactions, extra_lines)
    _write_ground_truth(out, latent, tracks, fault_rows, dict(size=size, seed=seed, world=world))
    return out


def is_generated(out_dir, size: str, seed: int, world: str = "default") -> bool:
    """Whether `out_dir` holds this generator version's dataset for (size, seed, world)."""
    params_file = pathlib.Path(out_dir) / GROUND_TRUTH_DIR / "params.json"
    if not params_file.is_file():
        return False
    params = json.loads(params_file.read_text())
    # Datasets from before world presets were all of the default world, byte for byte.
    recorded = (params.get("generator_version"), params.get("size"), params.get("seed"), params.get("world", "default"))
    return recorded == (GENERATOR_VERSION, size, seed, world)


def _track_rng(seed: int, index: int) -> np.random.Generator:
    # Per-track streams: a track's audio does not depend on the others.
    return np.random.default_rng([seed, index])


def _choose(rng: np.random.Generator, options: Sequence, shares: Sequence[float]):
    weights = np.asarray(shares, dtype=float)
    return options[int(rng.choice(len(options), p=weights / weights.sum()))]


def _render_catalogue(
    tracks: pd.DataFrame, out: pathlib.Path, seed: int, genres: Dict[str, GenreStyle], audio: AudioSpec
) -> List[str]:
    paths = []
    for i, track in tqdm(list(tracks.iterrows()), desc="rendering tracks", unit="track", mininterval=5):
        rng = _track_rng(seed, i)
        style = track[[c for c in tracks.columns if c.startswith("style_")]].to_numpy(float)
        midi = build_arrangement(genres[track["genre"]], style, rng, track["seconds"])
        paths.append(_write_audio(out, f"audio/{track['genre']}", track["track_id"], midi, track["seconds"], audio, rng))
    return paths


def _write_audio(out, folder, track_id, midi, seconds, spec: AudioSpec, rng) -> str:
    audio_format = _choose(rng, spec.formats, [f.share for f in spec.formats])
    rate = _choose(rng, [rate for rate, _ in spec.sample_rates], [share for _, share in spec.sample_rates])
    stereo = bool(rng.random() < spec.stereo_share)
    mix = None if spec.mix is None else spec.mix.draw(rng)
    audio = render(midi, rate, seconds, stereo=stereo, mix=mix)
    relative = f"{folder}/{track_id}.{audio_format.ext}"
    (out / folder).mkdir(parents=True, exist_ok=True)
    soundfile.write(
        str(out / relative), audio, rate, format=audio_format.container, subtype=audio_format.subtype,
        compression_level=audio_format.compression_level, bitrate_mode=audio_format.bitrate_mode,
    )
    return relative


def _inject_faults(tracks, interactions, world, genres, out, seed):
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
            genre = genres[template["genre"]]
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


def _write_ground_truth(out, world, tracks, fault_rows, identity: Dict):
    """`identity`: size, seed and world name, which is_generated compares."""
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
        **identity,
        "weights": world.weights.__dict__,
        "utility": "A(u,t) = taste(u) . (2 style(t) - 1) + pref(u, genre(t)); "
        "U = A + artist_loyalty * affinity(u, artist) + popularity * z(log popularity)",
    }
    (root / "params.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
