"""Fingerprints of a dataset folder for the pipeline's cache: what changes whenever the data does.

A digest of the names, sizes and modification times of the files a component
reads (no file is read, so it costs a listing even for a bucket). Computed at
run time, inside the run (`musicrec.components.dataset_fingerprint`), never
when the pipeline is built or compiled: the compiling machine need not see the
data. The folder may be local or an object-store URI (through `tf.io.gfile`).

Two scopes: the tables (what ListeningDataGen reads) and the audio inputs
(the tracks table and every file under the folder's sub-folders, what
AudioFeatures reads), so new interactions do not rerun the audio features.
"""

from __future__ import annotations

import hashlib
import posixpath
from typing import Iterable, List

from musicrec.data.adapters import PLAIN, RELEASE_TRACKS
from musicrec.data.contract import TABLES

TABLES_SCOPE = "tables"
AUDIO_SCOPE = "audio"


def _gfile():
    import tensorflow as tf

    from musicrec.storage import register_filesystems

    register_filesystems()
    return tf.io.gfile


def _stem(name: str) -> str:
    return posixpath.splitext(posixpath.basename(name.rstrip("/")))[0]


def _children(folder: str):
    """(files, sub-folders) directly under `folder`, full paths, sorted."""
    gfile = _gfile()
    entries = sorted(gfile.listdir(folder))
    paths = [posixpath.join(folder, e.rstrip("/")) for e in entries]
    folders = [p for e, p in zip(entries, paths) if e.endswith("/") or gfile.isdir(p)]
    return [p for p in paths if p not in folders], folders


def _tables(files: List[str], adapter: str) -> List[str]:
    """The plain layout's tables among top-level files, or every one of them for another adapter's layout."""
    return [f for f in files if _stem(f) in {t.name for t in TABLES}] if adapter in (PLAIN, RELEASE_TRACKS) else files


def table_files(dataset_dir: str, adapter: str = PLAIN) -> List[str]:
    return _tables(_children(dataset_dir)[0], adapter)


def audio_inputs(dataset_dir: str, adapter: str = PLAIN) -> List[str]:
    """The tracks table (all tables when there is none by that name) and every sub-folder (the audio)."""
    files, folders = _children(dataset_dir)  # one listing of the folder
    tables = _tables(files, adapter)
    return ([t for t in tables if _stem(t) == "tracks"] or tables) + folders


def files_fingerprint(paths: Iterable[str]) -> str:
    """A digest of the names, sizes and modification times of the given files and of every file
    under the given folders (recursively)."""
    import tensorflow as tf

    gfile = _gfile()
    digest = hashlib.sha256()
    for path in sorted(paths):
        if gfile.isdir(path):
            files = sorted(posixpath.join(root, name) for root, _, names in gfile.walk(path) for name in names)
        else:
            files = [path]
        for file in files:
            try:
                stat = gfile.stat(file)
                size, mtime = stat.length, stat.mtime_nsec
            except tf.errors.NotFoundError:  # removed while listing: still changes the digest
                size, mtime = -1, -1
            digest.update(f"{file}|{size}|{mtime}\n".encode())
    return digest.hexdigest()[:16]


def dataset_fingerprint(dataset_dir: str, adapter: str = PLAIN, scope: str = TABLES_SCOPE) -> str:
    """The fingerprint of what one scope of a dataset folder holds (TABLES_SCOPE or AUDIO_SCOPE)."""
    if scope not in (TABLES_SCOPE, AUDIO_SCOPE):
        raise ValueError(f"scope must be {TABLES_SCOPE!r} or {AUDIO_SCOPE!r}, not {scope!r}")
    files = table_files(dataset_dir, adapter) if scope == TABLES_SCOPE else audio_inputs(dataset_dir, adapter)
    return files_fingerprint(files)
