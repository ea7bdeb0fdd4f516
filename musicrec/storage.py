"""Paths that may be local folders or object-store URIs (gs://, s3://, hdfs://).

TFX artifact URIs, dataset folders and serving base paths can each live in a
bucket. Local paths are made absolute (the pipeline runs components in other
working directories); URIs are kept exactly as given, since `pathlib` would
fold `gs://bucket` into `gs:/bucket`.

File access goes through `path()`, an `etils.epath.Path`: pathlib's API over
tf.io.gfile, which reads gs:// natively and s3:// / hdfs:// once
tensorflow-io is imported (`register_filesystems`, which `path()` calls for
URIs). Libraries that want a real file (pyarrow, libsndfile) get one through
the helpers below.
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import posixpath
import re
import sys
from typing import Union

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from etils import epath

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")

Location = Union[str, os.PathLike]
_object_store_used = False  # whether this process registered the object-store file systems
BEAM_WORKER_MAIN = "apache_beam.runners.worker.sdk_worker_main"


def is_uri(location) -> bool:
    """Whether `location` names an object-store (or other non-local) location, e.g. gs://bucket/x."""
    return bool(_SCHEME.match(str(location)))


def absolute(location) -> str:
    """A local path made absolute; a URI unchanged."""
    return str(location) if is_uri(location) else os.path.abspath(os.path.expanduser(str(location)))


def join(base, *parts) -> str:
    """`base`/`parts` with forward slashes for URIs, the platform's separator for local paths. A URI
    is ready for tf.io.gfile and tf.data (its file system registered)."""
    if not is_uri(base):
        return os.path.join(str(base), *map(str, parts))
    register_filesystems()
    return posixpath.join(str(base), *map(str, parts))


def path(location: Location) -> epath.Path:
    """`location` as a pathlib-like object whose file operations work on local paths and URIs alike."""
    if is_uri(location):
        register_filesystems()
    return epath.Path(absolute(location))


def is_inside(location: Location, root: Location) -> bool:
    """Whether `location` lies inside the folder `root`: symbolic links followed for local paths,
    and `..` segments resolved for URIs (object stores have no links)."""
    place, folder = resolved(location), resolved(root).rstrip("/")
    if is_uri(location) or is_uri(root):
        return place == folder or place.startswith(folder + "/")
    return os.path.commonpath([place, folder]) == folder


def resolved(location: Location) -> str:
    """A local path with its symbolic links followed; a URI with its `..` segments resolved."""
    if is_uri(location):
        scheme, _, rest = str(location).partition("://")
        return f"{scheme}://{posixpath.normpath(rest)}"
    return os.path.realpath(location)


def local_or_bytes(location: Location) -> Union[str, io.BytesIO]:
    """What a reader that opens files itself (libsndfile) takes: a local file's path, or an object's
    bytes in memory. Its own object-store client would need the store's credentials and endpoint
    configured again, which tf.io.gfile already has."""
    return absolute(location) if not is_uri(location) else io.BytesIO(path(location).read_bytes())


def arrow_source(location: Location) -> Union[str, pa.BufferReader]:
    """A Parquet file for pyarrow's readers: its local path, or an object's bytes in an Arrow buffer
    (never a Python file object: see musicrec.data.loading.parquet_batches)."""
    return absolute(location) if not is_uri(location) else pa.BufferReader(path(location).read_bytes())


def read_parquet(location: Location, columns=None) -> pd.DataFrame:
    return pq.read_table(arrow_source(location), columns=columns).to_pandas()


def write_parquet(table: Union[pd.DataFrame, pa.Table], location: Location) -> None:
    """Writes a frame (without its index) or an Arrow table as one Parquet file."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    path(location).write_bytes(buffer.getvalue().to_pybytes())


def register_filesystems() -> None:
    """Makes tf.io.gfile read and write s3:// and hdfs:// (tensorflow-io registers them on import;
    gs:// and local paths need nothing)."""
    global _object_store_used
    import tensorflow_io  # noqa: F401

    if not _object_store_used and _in_beam_worker():
        _end_beam_worker_at_exit()
    _object_store_used = True


def _in_beam_worker() -> bool:
    """Whether this process is a Beam SDK worker (DirectRunner's multi-processing workers, Dataflow's)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) == BEAM_WORKER_MAIN


def _end_beam_worker_at_exit() -> None:
    """A Beam worker ends by returning from its main function (status 0) or by an uncaught exception
    (status 1): it leaves with that status before the C++ destructors (see `exit_process`), so
    its runner does not report a worker that crashed after finishing its work."""
    failed = []
    hook = sys.excepthook

    def record_failure(*exc_info):
        failed.append(True)
        hook(*exc_info)

    sys.excepthook = record_failure
    atexit.register(lambda: _leave(1 if failed else 0))


def exit_process(status: int) -> None:
    """Ends a command-line process with `status`.

    tensorflow-io 0.37 (the release for TF 2.16) aborts the interpreter's shutdown once
    its S3 file system was used: "pure virtual method called", exit status 134
    (tensorflow/io#2039; the fix ships only in releases for newer TF). A process that
    touched an object store therefore flushes its output and leaves without running the
    C++ static destructors, so its exit status is its own."""
    if not _object_store_used:
        sys.exit(status)
    _leave(status)


def _leave(status: int) -> None:
    """Flushes the logs and output, then ends the process without the C++ static destructors."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
