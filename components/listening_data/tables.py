"""The ingestion job's sources: a dataset's three tables as parsed rows, every other row reported.

`ReadTable` reads one plain-layout table file line by line (CSV) or row group by
row group (Parquet) with the loader's own functions (`musicrec.data.loading`):
one worker streams the file, holding only the record being read, into chunks of
raw records; the chunks are spread over the workers, which parse them with
`loading.parse_rows`, the loader's parser. So every row is loaded or reported
with the same file, line, fault kind and reason as `musicrec validate-data`
says. Duplicates need every row with the same key: the job finds them where it
groups rows by key anyway (tracks by track, users and their events by user);
each row carries its key as written (`TableRow.key_text`) for the report.

`DatasetTables` gives the same rows from an adapter's in-memory Dataset (an
adapter returns the tables whole; they are already checked and deduplicated).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pandas as pd
from etils import epath

from musicrec import storage
from musicrec.data import contract
from musicrec.data.loading import (
    ChangedValue, Dataset, MalformedRow, csv_records, duplicate_reason, parquet_batches, parse_rows, raw_frame,
    table_columns, table_path,
)
from musicrec.data.user_examples import demographic_kinds

# Tagged outputs of the job's steps, beside their main output.
MALFORMED = "malformed"  # MalformedRow: a row not loaded
CHANGED = "changed"  # ChangedValue: a row loaded with a value changed
COUNTS = "counts"  # (name, n): summed into the ingestion report
ROWS_READ = "rows_read."  # + table name: data rows in the table's file

# A quoted line break may make a record span lines (in an extra column); a record still
# open after this many lines is a quote left open, reported, not read on to the end of the file.
MAX_RECORD_LINES = 1000
CHUNK_ROWS = 2000  # raw records per chunk handed to a parsing worker


@dataclasses.dataclass(frozen=True)
class TableRow:
    """A loaded row: its line (CSV: the physical line; Parquet and in-memory tables: the row number),
    its parsed values by column (None when missing), its key as written, joined by ", " (what a
    duplicate's report shows), and the values changed while loading it."""

    line: int
    values: Dict[str, Any]
    key_text: str = ""
    changed: Tuple[ChangedValue, ...] = ()


@dataclasses.dataclass(frozen=True)
class Demographics:
    """The users table's demographic columns in table order, and which of them are numeric."""

    names: Tuple[str, ...]
    numeric: Tuple[str, ...]

    @property
    def categorical(self) -> Tuple[str, ...]:
        return tuple(name for name in self.names if name not in self.numeric)


@dataclasses.dataclass
class Tables:
    """What a source gives the job: each table's TableRows by table name, and the reports and
    counts of reading them (PCollections of MalformedRow, ChangedValue, and (name, n))."""

    rows: Dict[str, Any]
    malformed: List[Any]
    changed: List[Any]
    counts: List[Any]


class TableSource:
    """Where the job's rows come from."""

    deduplicated: bool  # whether rows repeating a key are gone already (else the job finds them)
    files: Dict[str, str]  # table name -> the file name reports name
    demographics: Demographics

    def read(self, pipeline) -> Tables:
        raise NotImplementedError


class PlainTables(TableSource):
    """A plain-layout dataset folder. The tables and their columns are checked on construction
    (`DatasetError` as the loader raises it: a table missing, an unreadable header, a required
    column missing); the rows are read by the job."""

    deduplicated = False

    def __init__(self, root, chunk_rows: int = CHUNK_ROWS, max_record_lines: int = MAX_RECORD_LINES):
        root = storage.path(root)
        self.paths = {spec.name: table_path(root, spec.name) for spec in contract.TABLES}
        columns = {spec.name: table_columns(self.paths[spec.name], spec) for spec in contract.TABLES}
        self.files = {name: path.name for name, path in self.paths.items()}
        names = tuple(c for c in columns[contract.USERS.name] if c != "user_id")
        # What the loader makes of each column: integers are numeric, any other kind is text.
        numeric = tuple(n for n in names if getattr(contract.USERS.column(n), "kind", None) == contract.INT)
        self.demographics = Demographics(names, numeric)
        self._chunk_rows = chunk_rows
        self._max_record_lines = max_record_lines

    def read(self, pipeline) -> Tables:
        read = {
            spec.name: pipeline | f"Read {spec.name}" >> ReadTable(self.paths[spec.name], spec, self._chunk_rows, self._max_record_lines)
            for spec in contract.TABLES
        }
        return Tables(
            rows={name: outputs["rows"] for name, outputs in read.items()},
            malformed=[outputs[MALFORMED] for outputs in read.values()],
            changed=[],  # they travel with their rows (TableRow.changed): a duplicate's are not reported
            counts=[outputs[COUNTS] for outputs in read.values()],
        )


class ReadTable(beam.PTransform):
    """A table file -> TableRows ("rows", each with its changed values), MalformedRow (MALFORMED)
    and its rows read (COUNTS). Rows repeating a key are not looked for here."""

    def __init__(self, path: epath.Path, spec: contract.TableSpec, chunk_rows: int = CHUNK_ROWS,
                 max_record_lines: int = MAX_RECORD_LINES):
        super().__init__()
        self._path, self._spec = str(path), spec
        self._chunk_rows, self._max_record_lines = chunk_rows, max_record_lines

    def expand(self, pbegin):
        read = (
            pbegin
            | "Path" >> beam.Create([self._path])
            | "Chunks" >> beam.FlatMap(_read_chunks, self._spec, self._chunk_rows, self._max_record_lines).with_outputs(
                MALFORMED, COUNTS, main="chunks")
        )
        parsed = (
            read.chunks
            | "Spread" >> beam.Reshuffle()
            | "Parse" >> beam.FlatMap(_parse_chunk, self._spec, storage.path(self._path).name).with_outputs(
                MALFORMED, main="rows")
        )
        malformed = (read[MALFORMED], parsed[MALFORMED]) | "Reports" >> beam.Flatten()
        return {"rows": parsed.rows, MALFORMED: malformed, COUNTS: read[COUNTS]}


@dataclasses.dataclass(frozen=True)
class _Chunk:
    header: Tuple[str, ...]
    lines: List[int]
    records: List[List[str]]


def _read_chunks(path: str, spec: contract.TableSpec, chunk_rows: int, max_record_lines: int) -> Iterator:
    """Streams a table file: chunks of raw records, the reports of records that cannot be read,
    and how many data rows the file has."""
    path = storage.path(path)
    if path.suffix == ".parquet":
        chunks = _parquet_chunks(path, chunk_rows)
    else:
        chunks = _csv_chunks(path, spec, chunk_rows, max_record_lines)
    rows_read = 0
    for item in chunks:
        if isinstance(item, MalformedRow):
            rows_read += 1
            yield beam.pvalue.TaggedOutput(MALFORMED, item)
        else:
            rows_read += len(item.records)
            yield item
    yield beam.pvalue.TaggedOutput(COUNTS, (ROWS_READ + spec.name, rows_read))


def _csv_chunks(path: epath.Path, spec: contract.TableSpec, chunk_rows: int, max_record_lines: int) -> Iterator:
    header, records = csv_records(path, spec, max_record_lines)
    chunk = _Chunk(tuple(header), [], [])
    for line, record in records:
        if isinstance(record, MalformedRow):
            yield record
            continue
        chunk.lines.append(line)
        chunk.records.append(record)
        if len(chunk.records) == chunk_rows:
            yield chunk
            chunk = _Chunk(tuple(header), [], [])
    if chunk.records:
        yield chunk


def _parquet_chunks(path: epath.Path, chunk_rows: int) -> Iterator:
    for raw, unreadable in parquet_batches(path, chunk_rows):
        yield from unreadable
        if len(raw):
            values = raw.drop(columns="_line")
            yield _Chunk(tuple(values.columns), raw["_line"].tolist(), values.to_numpy(dtype=object).tolist())


def _parse_chunk(chunk: _Chunk, spec: contract.TableSpec, file_name: str) -> Iterator:
    raw = raw_frame(chunk.header, chunk.records, chunk.lines)
    frame, malformed, changed = parse_rows(raw, spec, file_name)
    for report in malformed:
        yield beam.pvalue.TaggedOutput(MALFORMED, report)
    changed_by_line: Dict[int, List[ChangedValue]] = {}
    for report in changed:
        changed_by_line.setdefault(report.line, []).append(report)
    key_texts = _key_texts(raw.loc[frame.index], spec.key)
    lines = frame.pop("_line").tolist()
    for line, values, key_text in zip(lines, _records(frame), key_texts):
        yield TableRow(line, values, key_text, tuple(changed_by_line.get(line, ())))


def _key_texts(raw: pd.DataFrame, key: Sequence[str]) -> List[str]:
    """Each row's key as written (as `loading` shows a duplicate's)."""
    if raw.empty:
        return []
    return raw[list(key)].astype(str).agg(", ".join, axis=1).tolist()


def _records(frame: pd.DataFrame) -> Iterator[Dict[str, Any]]:
    """The rows of a frame as dicts of plain Python values (None when missing)."""
    names = list(frame.columns)
    for values in frame.itertuples(index=False, name=None):
        yield {name: _plain(value) for name, value in zip(names, values)}


def _plain(value):
    if isinstance(value, str):
        return value
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


class DatasetTables(TableSource):
    """An adapter's in-memory Dataset: its tables' rows (numbered from 1 in table order), its
    reports, and its counts of interactions naming unknown ids (which it did not keep)."""

    deduplicated = True

    def __init__(self, dataset: Dataset):
        self._dataset = dataset
        self.files = {spec.name: dataset.table_files.get(spec.name, spec.name) for spec in contract.TABLES}
        numeric, _ = demographic_kinds(dataset.users)
        self.demographics = Demographics(tuple(dataset.demographic_columns), tuple(numeric))

    def read(self, pipeline) -> Tables:
        dataset = self._dataset
        counts = [
            ("unknown_user_rows", int(dataset.unknown_user_rows)), ("unknown_track_rows", int(dataset.unknown_track_rows)),
            *((ROWS_READ + name, n) for name, n in dataset.rows_read.items()),
        ]
        rows = {}
        for spec in contract.TABLES:
            frame = getattr(dataset, spec.name).reset_index(drop=True)
            rows[spec.name] = pipeline | f"Rows of {spec.name}" >> beam.Create(
                [TableRow(line, values) for line, values in enumerate(_records(frame), start=1)])
        return Tables(
            rows=rows,
            malformed=[pipeline | "Malformed rows in memory" >> beam.Create(dataset.malformed)],
            changed=[pipeline | "Changed values in memory" >> beam.Create(dataset.changed_values)],
            counts=[pipeline | "Counts in memory" >> beam.Create(counts)],
        )


def first_of_each_key(rows: Sequence, key, file_name: str, spec: contract.TableSpec) -> Tuple[List, List[MalformedRow]]:
    """Rows (anything with `.line` and `.key_text`) with their first row per key (by line), and a
    duplicate report for each later one, as the loader reports it."""
    firsts: Dict[Tuple, Any] = {}
    repeats: List[MalformedRow] = []
    for row in sorted(rows, key=lambda r: r.line):
        first = firsts.setdefault(key(row), row)
        if first is not row:
            repeats.append(MalformedRow(file_name, row.line, duplicate_reason(spec.key, row.key_text, first.line), "duplicate"))
    return list(firsts.values()), repeats

