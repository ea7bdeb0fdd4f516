"""Columns <-> tf.Example TFRecords: the one place example files are written and read.

A "columns" mapping holds equal-length numpy arrays, one per feature:
float32 arrays become float_list features, integer arrays int64_list, and
anything else (strings, object arrays) bytes_list. A 2-d column (a padded
history) becomes a list feature of its row. Files are GZIP-compressed, the
TFX convention for Examples artifacts, so ExampleGen-style outputs,
StatisticsGen, Transform and TFMA read them as they are.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Mapping

import numpy as np
import tensorflow as tf


def _feature_maker(column: np.ndarray) -> Callable[[object], tf.train.Feature]:
    """How a column's values become features, decided once per column by its dtype."""
    if column.dtype == np.float32:
        return lambda values: tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))
    if np.issubdtype(column.dtype, np.integer):
        return lambda values: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
    return lambda values: tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(v).encode() for v in values]))


def serialize_rows(columns: Mapping[str, np.ndarray]) -> Iterable[bytes]:
    lengths = {len(column) for column in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"columns differ in length: { {k: len(v) for k, v in columns.items()} }")
    makers = {name: (column, _feature_maker(column), column.ndim == 2) for name, column in columns.items()}
    for i in range(lengths.pop() if lengths else 0):
        feature = {name: make(column[i] if is_list else [column[i]]) for name, (column, make, is_list) in makers.items()}
        yield tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_tf_examples(columns: Mapping[str, np.ndarray], path) -> int:
    """Writes one GZIP TFRecord file; returns the number of examples."""
    count = 0
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for record in serialize_rows(columns):
            writer.write(record)
            count += 1
    return count


def columns_from_frame(frame) -> Dict[str, np.ndarray]:
    """A pandas DataFrame as columns: floats as float32, integers as int64, the rest as strings."""
    columns = {}
    for name in frame.columns:
        values = frame[name]
        if np.issubdtype(values.dtype, np.floating):
            columns[name] = values.to_numpy(dtype=np.float32)
        elif np.issubdtype(values.dtype, np.integer) or values.dtype == bool:
            columns[name] = values.to_numpy(dtype=np.int64)
        else:
            columns[name] = values.astype(str).to_numpy(dtype=object)
    return columns


def read_tf_examples(file_patterns, list_features: Iterable[str] = ()) -> Dict[str, np.ndarray]:
    """Reads GZIP TFRecords back into columns. Features named in `list_features` come back as
    2-d object arrays (one row per example); all others as scalars per example."""
    if isinstance(file_patterns, str):
        file_patterns = [file_patterns]
    files = sorted(f for pattern in file_patterns for f in tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no example files match {list(file_patterns)}")
    list_features = set(list_features)
    rows: Dict[str, list] = {}
    kinds: Dict[str, str] = {}
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
        for name, feature in tf.train.Example.FromString(record).features.feature.items():
            kind = kinds.setdefault(name, feature.WhichOneof("kind"))
            if kind == "bytes_list":
                values = [v.decode() for v in feature.bytes_list.value]
            else:
                values = list(getattr(feature, kind).value)
            rows.setdefault(name, []).append(values if name in list_features else values[0])
    dtypes = {"float_list": np.float32, "int64_list": np.int64, "bytes_list": object}
    return {
        name: np.asarray(values, dtype=object) if name in list_features else np.asarray(values, dtype=dtypes[kinds[name]])
        for name, values in rows.items()
    }
