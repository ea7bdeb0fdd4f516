"""Paths that may be local folders or object-store URIs (gs://, s3://, hdfs://).

TFX artifact URIs, dataset folders and serving base paths can each live in a
bucket. Local paths are made absolute (the pipeline runs components in other
working directories); URIs are kept exactly as given, since `pathlib` would
fold `gs://bucket` into `gs:/bucket`. File access goes through `tf.io.gfile`,
which reads gs:// natively and s3:// / hdfs:// once tensorflow-io is imported
(`musicrec.storage.register_filesystems`).
"""

from __future__ import annotations

import os
import posixpath
import re

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_uri(path) -> bool:
    """Whether `path` names an object-store (or other non-local) location, e.g. gs://bucket/x."""
    return bool(_SCHEME.match(str(path)))


def absolute(path) -> str:
    """A local path made absolute; a URI unchanged."""
    return str(path) if is_uri(path) else os.path.abspath(os.path.expanduser(str(path)))


def join(base, *parts) -> str:
    """`base`/`parts` with forward slashes for URIs, the platform's separator for local paths."""
    return posixpath.join(str(base), *map(str, parts)) if is_uri(base) else os.path.join(str(base), *map(str, parts))


def register_filesystems() -> None:
    """Makes tf.io.gfile read and write s3:// and hdfs:// (tensorflow-io registers them on import;
    gs:// and local paths need nothing)."""
    import tensorflow_io  # noqa: F401
