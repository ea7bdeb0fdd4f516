"""Dataset adapters: how a dataset folder of some layout becomes the plain-layout tables.

An adapter is a function `folder -> musicrec.data.loading.Dataset`. `plain`
(the data contract's layout, CSV or Parquet) is built in; any other adapter
is named by its import path, "package.module:function" (as TFX names custom
executors), so a service plugs in its own logs and catalogue without touching
the pipeline. Everything downstream (validation, ingestion, audio features)
takes the Dataset, whichever adapter produced it. An adapter should build the
three tables with the contract's columns (`musicrec.data.contract`) and count
what it could not convert in `Dataset.malformed` rather than drop it (a
`MalformedRow` with file, line and, where one fits, a fault kind of
`contract.ROW_FAULTS`), and set `Dataset.rows_read` when it knows how many rows
each table had, so the validation summary can show that none went missing.

Audio is opened only inside the dataset folder: a track whose `audio_path`
resolves (symbolic links followed) anywhere else is quarantined as
"outside_dataset". An adapter whose audio lives in another folder declares it
explicitly in `Dataset.audio_roots`, e.g.
`dataclasses.replace(load_dataset(root), audio_roots=("/mnt/audio",))` (or a
bucket URI); its tracks may then name absolute paths under that folder.
The folder may be local or a bucket (gs://, s3://): an adapter reads its files
through `musicrec.storage.path(root)`, as `plain` does.
"""

from __future__ import annotations

import importlib
from typing import Callable

from musicrec.data.loading import Dataset, DatasetError, load_dataset, load_release_tracks

PLAIN = "plain"
# A folder of new releases: the tracks table and its audio only (the release job's input).
RELEASE_TRACKS = "release_tracks"
BUILT_IN = {PLAIN: load_dataset, RELEASE_TRACKS: load_release_tracks}

Adapter = Callable[..., Dataset]


def resolve_adapter(name: str) -> Adapter:
    """`plain`, or "package.module:function"."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    module_name, _, function_name = name.partition(":")
    if not module_name or not function_name:
        raise DatasetError(f"unknown dataset adapter {name!r}: use {sorted(BUILT_IN)} or 'package.module:function'")
    try:
        adapter = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise DatasetError(f"cannot load dataset adapter {name!r}: {error}") from error
    if not callable(adapter):
        raise DatasetError(f"dataset adapter {name!r} is not a function")
    return adapter


def load_with_adapter(root, adapter: str = PLAIN) -> Dataset:
    dataset = resolve_adapter(adapter)(root)
    if not isinstance(dataset, Dataset):
        raise DatasetError(f"dataset adapter {adapter!r} returned {type(dataset).__name__}, not a musicrec Dataset")
    return dataset
