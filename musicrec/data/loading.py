"""Reads a plain-layout dataset folder into typed tables, reporting every row it rejects.

Every row read lands in one place (the rules are the data contract's,
`musicrec.data.contract`): loaded; loaded with a value changed
(`Dataset.changed_values`: an invalid optional value set to missing, an event
lower-cased); not loaded and reported with file, line and fault kind
(`Dataset.malformed`); or, for interactions, counted as naming an unknown user
or track. `DatasetError` is raised only when the folder cannot be used at all
(a table missing or unreadable, a required column missing, nothing left to use).

CSV is read with the standard `csv` module rather than pandas' parser because
the report must give the exact physical line of every rejected row, which the
pandas and Arrow readers do not track for rows they accept. Lines are decoded
one by one (undecodable bytes kept as surrogate escapes, then reported), so a
bad byte costs exactly its row and never shifts a later line number.
"""

from __future__ import annotations

import codecs
import collections
import csv
import dataclasses
import datetime
import operator
import re
from typing import Callable, Deque, Dict, Iterator, List, Optional, Sequence, Set, Tuple, TypeVar, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from etils import epath

from musicrec import storage
from musicrec.audio import decode
from musicrec.data import contract


T = TypeVar("T")


class DatasetError(Exception):
    """The dataset cannot be used at all; the message says why and what to fix."""


@dataclasses.dataclass(frozen=True)
class RowReport:
    file: str
    # CSV: the physical line in the file where the row starts (the header is line 1).
    # Parquet: the 1-based row number.
    line: int
    reason: str
    # A fault kind of the data contract (contract.ROW_FAULTS, VALUE_FAULTS, NORMALISED_VALUES).
    kind: str = "malformed"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


class MalformedRow(RowReport):
    """A row that was not loaded."""


class ChangedValue(RowReport):
    """A row that was loaded with one value changed: set to missing, or normalised."""


@dataclasses.dataclass
class Dataset:
    """A loaded dataset. Tables hold only rows that passed the contract checks.

    `interactions` holds only rows whose user and track are known; rows naming
    unknown ids are counted in `unknown_user_rows` / `unknown_track_rows` (a
    row is counted once: as unknown user when its user is unknown, else as
    unknown track), with a few examples of each. `rows_read` holds the number
    of data rows in each table's file (by table name), where the adapter knows it.
    `audio_roots` names folders other than `root` that audio paths may resolve
    into; an adapter whose audio lives elsewhere declares them here.
    """

    root: epath.Path  # a local folder or a bucket URI (musicrec.storage)
    users: pd.DataFrame
    tracks: pd.DataFrame
    interactions: pd.DataFrame
    malformed: List[MalformedRow]
    unknown_user_rows: int = 0
    unknown_track_rows: int = 0
    unknown_user_examples: Tuple[str, ...] = ()
    unknown_track_examples: Tuple[str, ...] = ()
    table_files: Dict[str, str] = dataclasses.field(default_factory=dict)
    changed_values: List[ChangedValue] = dataclasses.field(default_factory=list)
    rows_read: Dict[str, int] = dataclasses.field(default_factory=dict)
    audio_roots: Tuple[storage.Location, ...] = ()

    def audio_files(self) -> List[decode.AudioFile]:
        """Every track's audio file, with the folders it must resolve inside (unpacks as
        (track_id, path)): the input of audio validation and of the audio feature transform."""
        roots = tuple(storage.resolved(r) for r in (self.root, *self.audio_roots))
        return [
            decode.AudioFile(t, storage.join(roots[0], p), roots)
            for t, p in zip(self.tracks["track_id"], self.tracks["audio_path"])
        ]

    @property
    def demographic_columns(self) -> List[str]:
        return [c for c in self.users.columns if c != "user_id"]


@dataclasses.dataclass
class Table:
    """One table file as read: the typed loaded rows and what was reported about the others."""

    frame: pd.DataFrame
    malformed: List[MalformedRow]
    changed: List[ChangedValue]
    rows_read: int


def load_dataset(root) -> Dataset:
    """Loads and checks the three tables of the dataset folder `root`."""
    root = storage.path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    tables: Dict[str, Table] = {}
    files = {}
    for spec in contract.TABLES:
        path = table_path(root, spec.name)
        tables[spec.name] = read_table(path, spec)
        files[spec.name] = path.name
    malformed = [row for table in tables.values() for row in table.malformed]

    interactions = tables["interactions"].frame
    known_user = interactions["user_id"].isin(tables["users"].frame["user_id"])
    known_track = interactions["track_id"].isin(tables["tracks"].frame["track_id"])
    unknown_track = known_user & ~known_track
    dataset = Dataset(
        root=root,
        users=tables["users"].frame,
        tracks=tables["tracks"].frame,
        interactions=interactions[known_user & known_track].reset_index(drop=True),
        malformed=malformed,
        unknown_user_rows=int((~known_user).sum()),
        unknown_track_rows=int(unknown_track.sum()),
        unknown_user_examples=_examples(interactions.loc[~known_user, "user_id"]),
        unknown_track_examples=_examples(interactions.loc[unknown_track, "track_id"]),
        table_files=files,
        changed_values=[row for table in tables.values() for row in table.changed],
        rows_read={name: table.rows_read for name, table in tables.items()},
    )
    for name in ("users", "tracks"):
        if getattr(dataset, name).empty:
            raise DatasetError(_no_usable_rows(files[name], tables[name]))
    if dataset.interactions.empty:
        raise DatasetError(
            _no_usable_rows(files["interactions"], tables["interactions"])
            + f"; {len(interactions):,} well-formed rows, of which {dataset.unknown_user_rows:,} name unknown users "
            f"and {dataset.unknown_track_rows:,} unknown tracks"
        )
    return dataset


def load_release_tracks(root) -> Dataset:
    """A folder of new releases: the tracks table (CSV or Parquet, the contract's columns) and the
    audio it points to, with no users or interactions (nobody has heard these tracks yet). The
    release job's input; its `users` and `interactions` are empty tables."""
    root = storage.path(root)
    if not root.is_dir():
        raise DatasetError(f"release folder {root} does not exist")
    path = table_path(root, contract.TRACKS.name)
    tracks = read_table(path, contract.TRACKS)
    if tracks.frame.empty:
        raise DatasetError(_no_usable_rows(path.name, tracks))
    empty = {spec.name: pd.DataFrame({c.name: pd.Series(dtype=object) for c in spec.columns})
             for spec in (contract.USERS, contract.INTERACTIONS)}
    return Dataset(root=root, users=empty["users"], tracks=tracks.frame, interactions=empty["interactions"],
                   malformed=tracks.malformed, table_files={contract.TRACKS.name: path.name},
                   changed_values=tracks.changed, rows_read={contract.TRACKS.name: tracks.rows_read})


def _no_usable_rows(file: str, table: "Table") -> str:
    first: Dict[str, MalformedRow] = {}
    counts = collections.Counter()
    for row in table.malformed:
        first.setdefault(row.kind, row)
        counts[row.kind] += 1
    return no_usable_rows_message(file, table.rows_read, {kind: (n, first[kind]) for kind, n in counts.items()})


def no_usable_rows_message(file: str, rows_read: int, malformed: Dict[str, Tuple[int, MalformedRow]]) -> str:
    """Why a table has no usable rows: its malformed rows by fault kind (kind -> how many, and the
    first by line), most frequent first, with the first reason of each (a log written wholly in
    milliseconds must say so, not just that nothing was left)."""
    place = "row" if file.endswith(".parquet") else "line"
    ordered = sorted(malformed.items(), key=lambda item: (-item[1][0], item[1][1].line))
    kinds = "; ".join(f"{kind} {n:,}: {place} {first.line}: {first.reason}" for kind, (n, first) in ordered)
    total = sum(n for n, _ in malformed.values())
    return f"{file} has no usable rows: {rows_read:,} rows read; {total:,} malformed rows" + (f" ({kinds})" if kinds else "")


def table_path(root: epath.Path, name: str) -> epath.Path:
    """The file of table `name` in the dataset folder: its CSV or its Parquet file (not both)."""
    candidates = [root / f"{name}.csv", root / f"{name}.parquet"]
    found = [p for p in candidates if p.is_file()]
    if not found:
        raise DatasetError(f"{root} has no {name}.csv or {name}.parquet (see the data contract in README.md)")
    if len(found) > 1:
        raise DatasetError(f"{root} has both {name}.csv and {name}.parquet; keep one")
    return found[0]


def _examples(ids: pd.Series, limit: int = 5) -> Tuple[str, ...]:
    return tuple(ids.drop_duplicates().head(limit).tolist())


def read_table(path: epath.Path, spec: contract.TableSpec) -> Table:
    """Reads one table file: the typed loaded rows, and a report for every other row."""
    if path.suffix == ".parquet":
        raw, unreadable = next(parquet_batches(path))
    else:
        raw, unreadable = _read_csv_as_strings(path, spec)
    _check_columns(path, spec, raw.columns)
    frame, malformed, changed = _parse_values(raw, spec, path.name)
    by_line = operator.attrgetter("line")
    return Table(frame, sorted(unreadable + malformed, key=by_line), sorted(changed, key=by_line), len(raw) + len(unreadable))


def table_columns(path: epath.Path, spec: contract.TableSpec) -> List[str]:
    """The columns of a table file, read from its header (CSV) or schema (Parquet) alone and checked
    against the contract: what a reader that streams the rows checks before the first row."""
    if path.suffix == ".parquet":
        file = _read_parquet(path, lambda: pq.ParquetFile(storage.arrow_source(path)))
        index_columns = _index_columns(file.schema_arrow)
        columns = [name for name in file.schema_arrow.names if name not in index_columns]
    else:
        columns = _read_header(path, next(iter_decoded_lines(path), None))
    _check_columns(path, spec, columns)
    return columns


def raw_frame(header: Sequence[str], rows: Sequence[Sequence[str]], lines: Sequence[int]) -> pd.DataFrame:
    """Records as a frame of stripped text, with each record's line in `_line`: what the parsers take."""
    raw = pd.DataFrame(list(rows), columns=list(header), dtype=object) if rows else pd.DataFrame(columns=list(header), dtype=object)
    raw = raw.apply(lambda col: col.str.strip()) if rows else raw
    raw["_line"] = np.asarray(lines, dtype=np.int64)
    return raw


# ---------------------------------------------------------------------------------------------
# CSV

# Bytes that are not UTF-8 text: lone surrogates U+DC80..U+DCFF (what "surrogateescape"
# decodes an invalid byte to) and NUL.
_UNDECODABLE = re.compile("[\udc80-\udcff\x00]")


def _read_csv_as_strings(path: epath.Path, spec: contract.TableSpec) -> Tuple[pd.DataFrame, List[MalformedRow]]:
    header, records = csv_records(path, spec)
    rejected: List[MalformedRow] = []
    line_numbers: List[int] = []
    rows: List[List[str]] = []
    for line, record in records:
        if isinstance(record, MalformedRow):
            rejected.append(record)
        else:
            rows.append(record)
            line_numbers.append(line)
    return raw_frame(header, rows, line_numbers), rejected


def csv_records(path: epath.Path, spec: contract.TableSpec,
                max_record_lines: Optional[int] = None) -> Tuple[List[str], Iterator[Tuple[int, "Record"]]]:
    """The header of a CSV table and, read line by line, (first line, fields or the report of why
    it is not loaded) of every non-blank record after it, fields counted against the header.

    Only the lines of the record being read are held. A quoted value may span lines
    (in an extra column); `max_record_lines` bounds how many, so that a quote left
    open cannot make a streaming reader hold the rest of the file: a record still
    open after that many lines is reported as unparsable on its first line, and
    reading resumes on the next line. None (the in-memory loader) sets no bound.
    """
    lines = iter_decoded_lines(path)
    header = _read_header(path, next(lines, None))
    # Only extra columns may hold line breaks: no value of a contract column has one.
    free_text = [i for i, name in enumerate(header) if spec.column(name) is None]
    records = _csv_records(path.name, lines, _may_span_lines(len(header), free_text), max_record_lines)
    return header, _counted_fields(path.name, len(header), records)


def _counted_fields(file: str, width: int, records: Iterator[Tuple[int, "Record"]]) -> Iterator[Tuple[int, "Record"]]:
    for line, record in records:
        if not isinstance(record, MalformedRow) and len(record) != width:
            record = MalformedRow(file, line, f"expected {width} fields, found {len(record)}", "field_count")
        yield line, record


def iter_decoded_lines(path: epath.Path) -> Iterator[str]:
    """The file's physical lines (split at b"\\n", endings kept), each decoded on its own, one at a time.

    Decoding per line, with undecodable bytes kept as surrogate escapes, confines
    a bad byte to its line (UTF-8 never uses the newline byte inside a character).
    A file read as binary splits at b"\\n" only: a bare carriage return is a corrupt
    byte inside a line, not a line end.
    """
    with path.open("rb") as f:
        for number, line in enumerate(f):
            if number == 0 and line.startswith(codecs.BOM_UTF8):
                line = line[len(codecs.BOM_UTF8):]
            if line:
                yield line.decode("utf-8", "surrogateescape")


def _read_header(path: epath.Path, first_line: Optional[str]) -> List[str]:
    if first_line is None:
        raise DatasetError(f"{path.name} is empty (no header line)")
    if _UNDECODABLE.search(first_line):
        raise DatasetError(f"{path.name} is not a readable CSV file: its header is not UTF-8 text")
    try:
        header = [h.strip() for h in next(csv.reader([first_line]))]
    except (csv.Error, StopIteration) as e:
        raise DatasetError(f"{path.name} is not a readable CSV file: {e}") from None
    if len(set(header)) != len(header):
        raise DatasetError(f"{path.name} has duplicate column names in its header: {header}")
    return header


def _may_span_lines(width: int, free_text: Sequence[int]) -> Callable[[List[str]], bool]:
    """Whether a record read across several lines is a real quoted line break, not a stray quote."""
    def check(fields: List[str]) -> bool:
        return len(fields) == width and not any(
            "\n" in value or "\r" in value for i, value in enumerate(fields) if i not in free_text
        )
    return check


Record = Union[List[str], MalformedRow]


class _LineWindow:
    """A stream of lines by index (the header is index 0), each read once; the lines from the first
    line of the record being read on are kept, so that reading can resume on any line after it."""

    def __init__(self, lines: Iterator[str], start: int):
        self._lines = lines
        self._start = start  # the index of self._kept[0]
        self._kept: Deque[str] = collections.deque()

    def get(self, index: int) -> Optional[str]:
        """Line `index` (not before the kept ones), or None past the last line."""
        while index >= self._start + len(self._kept):
            line = next(self._lines, None)
            if line is None:
                return None
            self._kept.append(line)
        return self._kept[index - self._start]

    def span(self, first: int, last: int) -> List[str]:
        """Lines first..last-1, all read already."""
        return [self._kept[i - self._start] for i in range(first, last)]

    def forget_before(self, index: int) -> None:
        while self._start < index and self._kept:
            self._kept.popleft()
            self._start += 1


def _csv_records(file: str, lines: Iterator[str], may_span: Callable[[List[str]], bool],
                 max_record_lines: Optional[int] = None) -> Iterator[Tuple[int, Record]]:
    """(first line, fields or the reason it cannot be read) of every non-blank record in `lines`
    (the lines after the header)."""
    window = _LineWindow(lines, start=1)
    position: Optional[int] = 1  # index of the next line to read; line numbers are indices + 1
    while position is not None:
        position = yield from _records_from(file, window, position, may_span, max_record_lines)


def _records_from(file: str, window: _LineWindow, position: int, may_span,
                  max_record_lines: Optional[int]) -> Iterator[Tuple[int, Record]]:
    """Reads records from line index `position` on; returns where to restart after an unreadable
    one (None at the end of the file)."""
    record = _RecordStart(position)
    reader = csv.reader(_lines_from(window, position, record, max_record_lines))
    while True:
        first = record.first = position + reader.line_num  # index of the record's first line
        window.forget_before(first)
        try:
            fields = next(reader)
        except StopIteration:
            return None
        except csv.Error as error:
            # The reader's state is lost mid-record: report the record's first line, resume after it.
            reason = record.too_long_reason or f"unparsable CSV: {error}"
            yield first + 1, _unreadable(file, first, window.span(first, first + 1), reason)
            return first + 1
        last = position + reader.line_num  # index after the record's last line
        if record.too_long_reason or (last - first > 1 and not may_span(fields)):
            reason = record.too_long_reason or "unparsable CSV: a quote opened on this line is not closed on it"
            yield first + 1, _unreadable(file, first, window.span(first, first + 1), reason)
            return first + 1
        if any(_is_undecodable(line) for line in window.span(first, last)):
            yield first + 1, _unreadable(file, first, window.span(first, last), "")
        elif fields:  # a blank line holds no data: nothing to report
            yield first + 1, fields


@dataclasses.dataclass
class _RecordStart:
    """Where the record being read starts, and why it was cut short (when it ran past the bound)."""

    first: int
    too_long_reason: str = ""


def _lines_from(window: _LineWindow, position: int, record: _RecordStart, max_record_lines: Optional[int]) -> Iterator[str]:
    """The lines from `position` on, for the csv reader; ends early, saying why, when the record
    being read would run past `max_record_lines` lines."""
    index = position
    while True:
        if max_record_lines is not None and index - record.first >= max_record_lines:
            record.too_long_reason = f"unparsable CSV: a quote opened on this line is not closed within {max_record_lines} lines"
            return
        line = window.get(index)
        if line is None:
            return
        yield line
        index += 1


def _is_undecodable(line: str) -> bool:
    return (not line.isascii() or "\x00" in line) and _UNDECODABLE.search(line) is not None


def _undecodable_bytes(lines: List[str]) -> bytes:
    """The bytes in `lines` that are not UTF-8 text (b"" when there are none)."""
    found = "".join(c for line in lines for c in _UNDECODABLE.findall(line))
    return found.encode("utf-8", "surrogateescape")


def _unreadable(file: str, index: int, lines: List[str], csv_reason: str) -> MalformedRow:
    """The report of a record starting at `lines[index]` that cannot be read: its undecodable
    bytes if it has any (the likelier cause of a parse error too), else the csv module's reason."""
    bad = _undecodable_bytes(lines)
    if bad:
        return MalformedRow(file, index + 1, f"not UTF-8 text: bytes {bad!r}", "undecodable")
    return MalformedRow(file, index + 1, csv_reason, "unparsable_csv")


# ---------------------------------------------------------------------------------------------
# Parquet

_UNITS_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def parquet_batches(path: epath.Path, batch_rows: Optional[int] = None) -> Iterator[Tuple[pd.DataFrame, List[MalformedRow]]]:
    """The Parquet table in frames of up to `batch_rows` rows (all in one when None): every column as
    stripped text ('' when null), timestamps as ISO-8601 text (UTC), the 1-based row number in
    `_line`; each frame without its undecodable rows, which come reported beside it.

    Read through Arrow's own file reader (`ParquetFile` on the path), not
    `pandas.read_parquet`: pandas hands pyarrow a Python file object, and with
    pyarrow 10 a damaged file then leaves a reader thread behind that aborts the
    whole process at exit ("terminate called without an active exception",
    apache/arrow#34314), after the error was already caught.
    """
    file = _read_parquet(path, lambda: pq.ParquetFile(storage.arrow_source(path)))
    index_columns = _index_columns(file.schema_arrow)
    if batch_rows is None:
        tables: Iterator[pa.Table] = iter([_read_parquet(path, lambda: file.read(use_threads=False))])
    else:
        tables = _parquet_tables(path, file, batch_rows)
    first_row = 1
    for table in tables:
        raw = pd.DataFrame(
            {name: _parquet_text(column) for name, column in zip(table.column_names, table.columns) if name not in index_columns}
        )
        raw["_line"] = np.arange(first_row, first_row + table.num_rows, dtype=np.int64)
        first_row += table.num_rows
        yield _undecodable_parquet_rows(raw, path.name)


def _parquet_tables(path: epath.Path, file: pq.ParquetFile, batch_rows: int) -> Iterator[pa.Table]:
    batches = file.iter_batches(batch_size=batch_rows, use_threads=False)
    while True:
        batch = _read_parquet(path, lambda: next(batches, None))
        if batch is None:
            return
        yield pa.Table.from_batches([batch])


def _read_parquet(path: epath.Path, read: Callable[[], T]) -> T:
    try:
        return read()
    except Exception as e:  # pyarrow raises many types for a damaged file
        raise DatasetError(f"{path.name} is not a readable Parquet file: {e}") from None


def _index_columns(schema: pa.Schema) -> Set[str]:
    """A stored pandas index (a column named like "__index_level_0__") is not data."""
    return {c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)}


def _parquet_text(column: pa.ChunkedArray) -> pd.Series:
    if pa.types.is_timestamp(column.type):
        return _timestamp_text(column)
    # Nullable and categorical types become plain objects; integral
    # floats (an int column with nulls) read back as integers.
    return column.to_pandas().astype(object).map(_parquet_value_text).astype(str).str.strip()


def _timestamp_text(column: pa.ChunkedArray) -> pd.Series:
    """ISO-8601 text (UTC) of an Arrow timestamp column, read as integer seconds from Arrow:
    pandas' nanosecond range (1677..2262) would fail the whole table on one far-off time."""
    ticks = column.cast(pa.int64()).fill_null(0).to_numpy()
    seconds = pd.Series(np.floor_divide(ticks, _UNITS_PER_SECOND[column.type.unit]))
    times = pd.to_datetime(seconds, unit="s", errors="coerce")
    text = times.dt.strftime("%Y-%m-%dT%H:%M:%S").astype(object)
    far = times.isna()
    text[far] = seconds[far].map(_far_iso_text)
    return text.where(~column.is_null().to_numpy(), "")


def _far_iso_text(seconds: int) -> str:
    try:
        return (_EPOCH + datetime.timedelta(seconds=int(seconds))).isoformat()
    except OverflowError:
        return f"{seconds} seconds after 1970, beyond the year 9999"


def _undecodable_parquet_rows(raw: pd.DataFrame, file: str) -> Tuple[pd.DataFrame, List[MalformedRow]]:
    """The rows without a value that is not UTF-8 text, and a report for each row with one: bytes
    that do not decode (a binary column), or a NUL; the same rule as a CSV line's."""
    values = raw.drop(columns="_line")
    bad = values.apply(lambda column: column.str.contains(_UNDECODABLE)).any(axis=1).to_numpy(dtype=bool)
    reports = [
        _unreadable(file, line - 1, list(row), "")
        for line, row in zip(raw.loc[bad, "_line"], values[bad].itertuples(index=False))
    ]
    return raw[~bad].reset_index(drop=True), reports


def _parquet_value_text(value) -> str:
    if isinstance(value, bytes):  # a binary column: text as UTF-8, undecodable bytes kept to be reported
        return value.decode("utf-8", "surrogateescape")
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return ""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


# ---------------------------------------------------------------------------------------------
# Values

def _check_columns(path: epath.Path, spec: contract.TableSpec, columns) -> None:
    missing = [c for c in spec.required_columns if c not in columns]
    if missing:
        raise DatasetError(
            f"{path.name} is missing required column(s) {', '.join(missing)}; "
            f"it has {', '.join(c for c in columns if c != '_line')}"
        )
    if not spec.extra_columns_allowed:
        known = {c.name for c in spec.columns} | {"_line"}
        extra = [c for c in columns if c not in known]
        if extra:
            raise DatasetError(f"{path.name} has unexpected column(s) {', '.join(extra)}")


@dataclasses.dataclass
class Finding:
    """The rows of a column whose value breaks a rule (or was normalised), their fault kind, and
    the reason for each flagged row (in row order; computed for those rows only)."""

    rows: np.ndarray  # bool, one per row
    kind: str
    reasons: np.ndarray  # str, one per flagged row

    @classmethod
    def of(cls, rows: pd.Series, kind: str, column: contract.Column, values: pd.Series, says) -> "Finding":
        """Reasons "<column> '<value>' <says>"; `says` is text, or a Series of it indexed like `values`."""
        flagged = rows.to_numpy(dtype=bool)
        text = says if isinstance(says, str) else says[flagged]
        return cls(flagged, kind, (f"{column.name} '" + values[flagged] + "' " + text).to_numpy(dtype=object))


@dataclasses.dataclass
class Parsed:
    """A column parsed by its kind. `faults`: values that break the column's rule;
    `notes`: values that were normalised and kept."""

    values: pd.Series
    faults: List[Finding] = dataclasses.field(default_factory=list)
    notes: List[Finding] = dataclasses.field(default_factory=list)


def _parse_values(
    raw: pd.DataFrame, spec: contract.TableSpec, file_name: str
) -> Tuple[pd.DataFrame, List[MalformedRow], List[ChangedValue]]:
    """Parses each column by its kind (`parse_rows`); among the rows left, later repeats of the key
    are duplicates, and the values changed in those rows are not reported (a row is reported once)."""
    frame, rejected, changed = parse_rows(raw, spec, file_name)
    if spec.key:
        repeats = _duplicates(raw, frame, spec.key, file_name)
        repeated_lines = {row.line for row in repeats}
        frame = frame[~frame["_line"].isin(repeated_lines)]
        rejected = rejected + repeats
        changed = [row for row in changed if row.line not in repeated_lines]
    return frame.drop(columns="_line").reset_index(drop=True), rejected, changed


def parse_rows(
    raw: pd.DataFrame, spec: contract.TableSpec, file_name: str
) -> Tuple[pd.DataFrame, List[MalformedRow], List[ChangedValue]]:
    """Parses each column of some rows of a table by its kind: the rows loaded (typed, with `_line`
    and the index of `raw`), and the reports of the others and of the values changed.

    A fault in a required column rejects the row; in an optional column it sets
    the value to missing and keeps the row. Duplicates are not looked for: that
    takes every row of the table (`_parse_values`, or the ingestion job's grouping by key).
    """
    out = pd.DataFrame(index=raw.index)
    rejected, changed = _FirstFinding(len(raw)), _FirstFinding(len(raw))
    for name in raw.columns:
        if name == "_line":
            continue
        column = spec.column(name) or contract.Column(name, contract.STRING, required=False)
        parsed = _PARSERS[column.kind](raw[name], column)
        values = parsed.values
        if column.required:
            blank = (raw[name] == "").to_numpy()
            rejected.add(Finding(blank, "blank_required", np.full(blank.sum(), f"{name} is blank", dtype=object)))
            for finding in parsed.faults:
                rejected.add(finding)
        else:
            for finding in parsed.faults:
                changed.add(finding, "; set to missing")
                values = values.mask(finding.rows)
        for finding in parsed.notes:
            changed.add(finding)
        out[name] = values
    changed.kinds[rejected.found] = ""  # a rejected row is reported once, as rejected
    lines = raw["_line"].to_numpy()
    out["_line"] = lines
    return (
        out[~rejected.found],
        rejected.reports(MalformedRow, file_name, lines),
        changed.reports(ChangedValue, file_name, lines),
    )


class _FirstFinding:
    """The first fault kind and reason found in each row."""

    def __init__(self, rows: int):
        self.kinds = np.full(rows, "", dtype=object)
        self.reasons = np.full(rows, "", dtype=object)

    @property
    def found(self) -> np.ndarray:
        return self.kinds != ""

    def add(self, finding: Finding, suffix: str = "") -> None:
        new = finding.rows & ~self.found
        if new.any():
            self.kinds[new] = finding.kind
            self.reasons[new] = finding.reasons[new[finding.rows]] + suffix

    def reports(self, report_type, file_name: str, lines: np.ndarray) -> list:
        found = self.found
        return [
            report_type(file_name, int(line), reason, kind)
            for line, reason, kind in zip(lines[found], self.reasons[found], self.kinds[found])
        ]


def _duplicates(raw: pd.DataFrame, frame: pd.DataFrame, key: Tuple[str, ...], file_name: str) -> List[MalformedRow]:
    """Rows of `frame` (the parsed rows of `raw` that are otherwise fine) whose parsed key repeats
    an earlier one's. Only rows that are otherwise fine compete for a key: a good row is not
    rejected as a duplicate of a malformed one."""
    keys = frame[list(key)]
    repeated = keys.duplicated(keep="first").to_numpy()
    if not repeated.any():
        return []
    first_lines = frame["_line"].groupby([keys[c] for c in key]).transform("min")[repeated]
    shown = raw.loc[frame.index[repeated], list(key)].astype(str).agg(", ".join, axis=1)
    return [
        MalformedRow(file_name, int(line), duplicate_reason(key, text, int(first)), "duplicate")
        for line, text, first in zip(frame["_line"][repeated], shown, first_lines)
    ]


def duplicate_reason(key: Sequence[str], shown: str, first_line: int) -> str:
    """Why a row is a duplicate: its key as written (`shown`: the key's values joined by ", ")
    repeats the row on `first_line`."""
    return f"duplicate {', '.join(key)} '{shown}' (first on line {first_line})"


def _parse_text(values: pd.Series, column: contract.Column) -> Parsed:
    return Parsed(values.astype(str))


def _parse_int(values: pd.Series, column: contract.Column) -> Parsed:
    numbers = pd.to_numeric(values.where(values != ""), errors="coerce")
    finite = numbers.notna() & np.isfinite(numbers.fillna(0))
    integral = finite & (numbers == np.floor(numbers.where(finite, 0)))
    parsed = Parsed(numbers.where(integral).astype("Int64"))
    parsed.faults.append(Finding.of((values != "") & ~integral, f"{column.name}_not_integer", column, values, "is not an integer"))
    if column.valid_range is not None:
        low, high = column.valid_range
        outside = integral & ~numbers.between(low, high)
        parsed.faults.append(Finding.of(outside, f"{column.name}_out_of_range", column, values, f"is outside {low}..{high}"))
    return parsed


def _parse_timestamp(values: pd.Series, column: contract.Column) -> Parsed:
    """ISO-8601 strings or unix seconds within the column's valid range, to int64 unix seconds (UTC)."""
    given = values != ""
    numbers = pd.to_numeric(values.where(given), errors="coerce")
    nan_text = values.str.lstrip("+-").str.lower() == "nan"  # to_numeric reads it as a missing number
    seconds = numbers.mask(nan_text, np.inf)
    iso = given & numbers.isna() & ~nan_text
    if iso.any():
        seconds[iso] = _iso_seconds(values[iso])
    low, high = column.valid_range or contract.TIMESTAMP_RANGE
    finite = pd.Series(np.isfinite(seconds), index=values.index)  # False for NaN: text that is no time at all
    in_range = finite & seconds.between(low, high)
    # Only a bare number can be milliseconds; an ISO time says what it is.
    milliseconds = finite & ~in_range & ~iso & (seconds / 1000).between(low, high)
    name = column.name
    as_seconds = _iso_text(seconds[milliseconds] / 1000)
    return Parsed(
        np.floor(seconds.where(in_range, 0)).astype(np.int64),
        faults=[
            Finding.of(given & seconds.isna(), f"{name}_unparsable", column, values, "is neither ISO-8601 nor unix seconds"),
            Finding.of(given & np.isinf(seconds), f"{name}_not_finite", column, values, "is not a finite number"),
            Finding.of(milliseconds, f"{name}_milliseconds", column, values, "looks like milliseconds (divided by 1000 it is "
                       + as_seconds.reindex(values.index, fill_value="") + "); the contract takes unix seconds"),
            Finding.of(finite & ~in_range & ~milliseconds, f"{name}_out_of_range", column, values,
                       f"is outside {_iso_date(low)}..{_iso_date(high)}"),
        ],
    )


def _iso_seconds(text: pd.Series) -> pd.Series:
    """Unix seconds of ISO-8601 times (UTC when no zone is given); NaN for text that is no time."""
    parsed = pd.to_datetime(text, errors="coerce", utc=True)
    seconds = ((parsed - _EPOCH) // pd.Timedelta(seconds=1)).astype(float)
    far = parsed.isna()  # pandas holds only 1677..2262; Python's datetime reads the rest
    seconds[far] = text[far].map(_python_iso_seconds)
    return seconds


def _python_iso_seconds(text: str) -> float:
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return np.nan
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return (moment - _EPOCH).total_seconds()


def _iso_text(seconds: pd.Series) -> pd.Series:
    return pd.to_datetime(seconds, unit="s", errors="coerce").dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_date(seconds: float) -> str:
    return (_EPOCH + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%d")


def _parse_date(values: pd.Series, column: contract.Column) -> Parsed:
    parsed = pd.to_datetime(values.where(values != ""), errors="coerce", utc=True)
    bad = (values != "") & parsed.isna()
    return Parsed(
        parsed.dt.strftime("%Y-%m-%d").fillna(""),
        faults=[Finding.of(bad, f"{column.name}_unparsable", column, values, "is not an ISO-8601 date")],
    )


def _parse_event(values: pd.Series, column: contract.Column) -> Parsed:
    lowered = values.str.lower()
    known = lowered.isin(contract.EVENT_TYPES)
    recased = known & (lowered != values)
    return Parsed(
        lowered.where(known, values),
        faults=[Finding.of((values != "") & ~known, f"{column.name}_unknown", column, values,
                           f"is not one of {', '.join(contract.EVENT_TYPES)}")],
        notes=[Finding.of(recased, f"{column.name}_case_normalised", column, values, "read as '" + lowered + "'")],
    )


_PARSERS = {
    contract.ID: _parse_text,
    contract.PATH: _parse_text,
    contract.STRING: _parse_text,
    contract.INT: _parse_int,
    contract.TIMESTAMP: _parse_timestamp,
    contract.DATE: _parse_date,
    contract.EVENT: _parse_event,
}
