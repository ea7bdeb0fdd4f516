"""Genre dataset adapters: every layout becomes one table of (track_id, path, genre, split).

Layouts (`LAYOUTS`):

- `gtzan`: GTZAN's `genres/<genre>/<genre>.000NN.{au,wav}` tree with the
  artist- and fault-filtered split of Kereliuk, Sturm & Larsen (443 train /
  197 validation / 290 test), shipped in `splits/gtzan/`. A listed file is
  matched by genre folder and stem, whatever its audio extension (the lists
  say `.wav`, the original archive has `.au`). Listed files that are absent
  stay in the table so extraction quarantines them as `missing`; files on disk
  outside the lists (the faulty ones) are counted as excluded.
- `fma`: FMA's `fma_metadata/tracks.csv` (two header rows) and the
  `fma_small/XXX/XXXXXX.mp3` tree; the tracks whose (set, subset) is `small`,
  labelled by (track, genre_top), split 7:3 within each genre (the paper's
  protocol; FMA's own split column is not used).
- `folders`: `<root>/<genre>/**/<audio file>`, split 7:3 within each genre.
- `demo`: a plain-layout dataset (`musicrec generate-demo`) labelled by the
  `genre` column of its tracks.csv, split 7:3 within each genre.

Seeded splits use scikit-learn's stratified `train_test_split`, which
allocates each genre's test share to within one track of 30%.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable, Dict, List

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

AUDIO_EXTENSIONS = (".wav", ".au", ".flac", ".ogg", ".mp3")
GTZAN_SPLITS_DIR = pathlib.Path(__file__).parent / "splits" / "gtzan"
GTZAN_SPLIT_FILES = {"train": "train_filtered.txt", "validation": "valid_filtered.txt", "test": "test_filtered.txt"}
TEST_FRACTION = 0.3  # the paper's 7:3 per-genre split (FMA-small)
COLUMNS = ["track_id", "path", "genre", "split"]


class GenreDatasetError(Exception):
    """The genre dataset cannot be used; the message says why and what to fix."""


@dataclasses.dataclass
class GenreDataset:
    layout: str
    root: pathlib.Path
    tracks: pd.DataFrame  # COLUMNS; split is "train", "validation" or "test"
    excluded: Dict[str, int]  # reason -> tracks left out before any audio is read

    def split(self, name: str) -> pd.DataFrame:
        return self.tracks[self.tracks["split"] == name]

    def summary(self) -> str:
        counts = self.tracks["split"].value_counts()
        splits = ", ".join(f"{name} {int(counts.get(name, 0))}" for name in ("train", "validation", "test") if name in counts)
        lines = [f"{self.layout} dataset {self.root}: {len(self.tracks)} tracks in "
                 f"{self.tracks['genre'].nunique()} genres ({splits})"]
        lines += [f"    excluded: {count} {reason}" for reason, count in self.excluded.items() if count]
        return "\n".join(lines)


def load_genre_dataset(root, layout: str, seed: int = 0) -> GenreDataset:
    if layout not in LAYOUTS:
        raise GenreDatasetError(f"unknown layout {layout!r}; choose one of {sorted(LAYOUTS)}")
    root = pathlib.Path(root)
    if not root.is_dir():
        raise GenreDatasetError(f"dataset folder {root} does not exist")
    dataset = LAYOUTS[layout](root, seed)
    if dataset.tracks.empty:
        raise GenreDatasetError(f"{root} holds no tracks in the {layout} layout (see docs/genre.md)")
    return dataset


def gtzan_split_lists() -> Dict[str, List[str]]:
    """split -> the listed `genre/genre.000NN.ext` entries, in file order."""
    return {split: (GTZAN_SPLITS_DIR / name).read_text().split() for split, name in GTZAN_SPLIT_FILES.items()}


def gtzan(root: pathlib.Path, seed: int = 0) -> GenreDataset:
    genres_dir = _gtzan_genres_dir(root)
    on_disk = {_stem_key(p.relative_to(genres_dir)): p for p in _audio_files(genres_dir)}
    rows = []
    for split, entries in gtzan_split_lists().items():
        for entry in entries:
            key = _stem_key(pathlib.PurePosixPath(entry))
            rows.append((key, str(on_disk.get(key, genres_dir / entry)), entry.split("/")[0], split))
    listed = {row[0] for row in rows}
    unlisted = sum(1 for key in on_disk if key not in listed)
    return GenreDataset("gtzan", root, pd.DataFrame(rows, columns=COLUMNS),
                        {"audio files outside the fault-filtered split": unlisted})


def _gtzan_genres_dir(root: pathlib.Path) -> pathlib.Path:
    """The folder holding the genre folders: the root itself, or its genres/ (original) or genres_original/ (Kaggle)."""
    for candidate in (root / "genres", root / "genres_original", root / "Data" / "genres_original", root):
        if (candidate / "blues").is_dir():
            return candidate
    raise GenreDatasetError(f"{root} has no GTZAN genre folders (expected blues/, classical/, ... under it or under genres/)")


def _stem_key(relative) -> str:
    """`blues/blues.00029.au` -> `blues/blues.00029`: a GTZAN track whatever its audio extension."""
    relative = pathlib.PurePosixPath(relative)
    return str(relative.with_suffix("")) if relative.suffix.lower() in AUDIO_EXTENSIONS else str(relative)


def fma(root: pathlib.Path, seed: int = 0) -> GenreDataset:
    metadata = next((p for p in (root / "fma_metadata" / "tracks.csv", root / "tracks.csv") if p.is_file()), None)
    if metadata is None:
        raise GenreDatasetError(f"{root} has no fma_metadata/tracks.csv or tracks.csv")
    audio_dir = root / "fma_small" if (root / "fma_small").is_dir() else root
    table = pd.read_csv(metadata, index_col=0, header=[0, 1], low_memory=False)  # FMA's own loader reads it so
    for column in (("set", "subset"), ("track", "genre_top")):
        if column not in table.columns:
            raise GenreDatasetError(f"{metadata} has no {column} column: is it FMA's tracks.csv (two header rows)?")
    small = table[table[("set", "subset")] == "small"]
    genre = small[("track", "genre_top")]
    labelled = small[genre.notna()]
    ids = [f"{int(track_id):06d}" for track_id in labelled.index]
    tracks = pd.DataFrame({
        "track_id": [str(int(track_id)) for track_id in labelled.index],
        "path": [str(audio_dir / i[:3] / f"{i}.mp3") for i in ids],
        "genre": labelled[("track", "genre_top")].astype(str).to_numpy(),
    })
    return GenreDataset("fma", root, _with_stratified_split(tracks, seed), {"small-subset tracks without genre_top": int(genre.isna().sum())})


def folders(root: pathlib.Path, seed: int = 0) -> GenreDataset:
    rows, other = [], 0
    for genre_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(p for p in genre_dir.rglob("*") if p.is_file()):
            if path.suffix.lower() in AUDIO_EXTENSIONS:
                rows.append((str(path.relative_to(root)), str(path), genre_dir.name))
            else:
                other += 1
    tracks = pd.DataFrame(rows, columns=COLUMNS[:3])
    return GenreDataset("folders", root, _with_stratified_split(tracks, seed),
                        {"files without an audio extension " + "/".join(AUDIO_EXTENSIONS): other})


def demo(root: pathlib.Path, seed: int = 0) -> GenreDataset:
    from musicrec.data.loading import load_dataset

    dataset = load_dataset(root)
    if "genre" not in dataset.tracks.columns:
        raise GenreDatasetError(f"{root}/{dataset.table_files['tracks']} has no genre column")
    audio = dataset.audio_files()
    files = pd.DataFrame(audio, columns=["track_id", "path"])
    genre = dataset.tracks["genre"].astype("string").str.strip()
    labelled = (genre.notna() & (genre != "")).to_numpy()
    inside = np.array([file.inside() for file in audio], dtype=bool)  # the extractors open paths themselves
    tracks = files[labelled & inside].assign(genre=genre[labelled & inside].to_numpy())
    malformed = sum(row.file == dataset.table_files["tracks"] for row in dataset.malformed)
    excluded = {"tracks without a genre": int((~labelled).sum()), "malformed rows in the tracks table": malformed,
                "tracks whose audio is outside the dataset": int((labelled & ~inside).sum())}
    return GenreDataset("demo", root, _with_stratified_split(tracks.reset_index(drop=True), seed), excluded)


def _audio_files(folder: pathlib.Path) -> List[pathlib.Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def _with_stratified_split(tracks: pd.DataFrame, seed: int, test_fraction: float = TEST_FRACTION) -> pd.DataFrame:
    """Adds `split`: within every genre, `test_fraction` of the tracks (seeded) are test, the rest train."""
    if tracks.empty:
        return tracks.assign(split=pd.Series(dtype=str))[COLUMNS]
    sizes = tracks["genre"].value_counts()
    if (sizes < 2).any():
        raise GenreDatasetError(
            "every genre needs at least 2 tracks to split into train and test; too few in: "
            + ", ".join(f"{g} ({n})" for g, n in sizes[sizes < 2].items())
        )
    _, test_index = train_test_split(tracks.index, test_size=test_fraction, random_state=seed, stratify=tracks["genre"])
    split = pd.Series("train", index=tracks.index)
    split[test_index] = "test"
    return tracks.assign(split=split)[COLUMNS]


LAYOUTS: Dict[str, Callable[[pathlib.Path, int], GenreDataset]] = {"gtzan": gtzan, "fma": fma, "folders": folders, "demo": demo}
