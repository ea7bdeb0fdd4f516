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
import pathlib
import re
from typing import Callable, Dict, Iterator, List, Sequence, Set, Tuple, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from musicrec.audio import decode
from musicrec.data import contract


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

    root: pathlib.Path
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
    audio_roots: Tuple[pathlib.Path, ...] = ()

    def audio_files(self) -> List[decode.AudioFile]:
        """Every track's audio file, with the folders it must resolve inside (unpacks as
        (track_id, path)): the input of audio validation and of the audio feature transform."""
        roots = tuple(str(pathlib.Path(r).resolve()) for r in (self.root, *self.audio_roots))
        return [
            decode.AudioFile(t, str(pathlib.Path(roots[0]) / p), roots)
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
    root = pathlib.Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    tables: Dict[str, Table] = {}
    files = {}
    for spec in contract.TABLES:
        path = _table_path(root, spec.name)
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


def _no_usable_rows(file: str, table: "Table") -> str:
    """Why a table has no usable rows: its malformed rows by fault kind, with the first reason of each
    (a log written wholly in milliseconds must say so, not just that nothing was left)."""
    first: Dict[str, MalformedRow] = {}
    counts = collections.Counter()
    for row in table.malformed:
        first.setdefault(row.kind, row)
        counts[row.kind] += 1
    place = "row" if file.endswith(".parquet") else "line"
    kinds = "; ".join(f"{kind} {n:,}: {place} {first[kind].line}: {first[kind].reason}" for kind, n in counts.most_common())
    return f"{file} has no usable rows: {table.rows_read:,} rows read; {len(table.malformed):,} malformed rows" + (
        f" ({kinds})" if kinds else ""
    )


def _table_path(root: pathlib.Path, name: str) -> pathlib.Path:
    candidates = [root / f"{name}.csv", root / f"{name}.parquet"]
    found = [p for p in candidates if p.is_file()]
    if not found:
        raise DatasetError(f"{root} has no {name}.csv or {name}.parquet (see the data contract in README.md)")
    if len(found) > 1:
        raise DatasetError(f"{root} has both {name}.csv and {name}.parquet; keep one")
    return found[0]


def _examples(ids: pd.Series, limit: int = 5) -> Tuple[str, ...]:
    return tuple(ids.drop_duplicates().head(limit).tolist())


def read_table(path: pathlib.Path, spec: contract.TableSpec) -> Table:
    """Reads one table file: the typed loaded rows, and a report for every other row."""
    if path.suffix == ".parquet":
        raw, unreadable = _undecodable_parquet_rows(_read_parquet_as_strings(path), path.name)
    else:
        raw, unreadable = _read_csv_as_strings(path, spec)
    _check_columns(path, spec, raw.columns)
    frame, malformed, changed = _parse_values(raw, spec, path.name)
    by_line = operator.attrgetter("line")
    return Table(frame, sorted(unreadable + malformed, key=by_line), sorted(changed, key=by_line), len(raw) + len(unreadable))


# ---------------------------------------------------------------------------------------------
# CSV

# Bytes that are not UTF-8 text: lone surrogates U+DC80..U+DCFF (what "surrogateescape"
# decodes an invalid byte to) and NUL.
_UNDECODABLE = re.compile("[\udc80-\udcff\x00]")


def _read_csv_as_strings(path: pathlib.Path, spec: contract.TableSpec) -> Tuple[pd.DataFrame, List[MalformedRow]]:
    lines = _decoded_lines(path)
    header = _read_header(path, lines)
    # Only extra columns may hold line breaks: no value of a contract column has one.
    free_text = [i for i, name in enumerate(header) if spec.column(name) is None]
    rejected: List[MalformedRow] = []
    line_numbers: List[int] = []
    rows: List[List[str]] = []
    for line, record in _csv_records(path.name, lines, _may_span_lines(len(header), free_text)):
        if isinstance(record, MalformedRow):
            rejected.append(record)
        elif len(record) != len(header):
            rejected.append(MalformedRow(path.name, line, f"expected {len(header)} fields, found {len(record)}", "field_count"))
        else:
            rows.append(record)
            line_numbers.append(line)
    raw = pd.DataFrame(rows, columns=header, dtype=object) if rows else pd.DataFrame(columns=header, dtype=object)
    raw = raw.apply(lambda col: col.str.strip()) if rows else raw
    raw["_line"] = np.asarray(line_numbers, dtype=np.int64)
    return raw, rejected


def _decoded_lines(path: pathlib.Path) -> List[str]:
    """The file's physical lines (split at b"\\n", endings kept), each decoded on its own.

    Decoding per line, with undecodable bytes kept as surrogate escapes, confines
    a bad byte to its line (UTF-8 never uses the newline byte inside a character).
    """
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    # Not bytes.splitlines: a bare carriage return is a corrupt byte inside a line, not a line end.
    lines = data.split(b"\n")
    last = lines.pop()
    return [(line + b"\n").decode("utf-8", "surrogateescape") for line in lines] + (
        [last.decode("utf-8", "surrogateescape")] if last else []
    )


def _read_header(path: pathlib.Path, lines: List[str]) -> List[str]:
    if not lines:
        raise DatasetError(f"{path.name} is empty (no header line)")
    if _UNDECODABLE.search(lines[0]):
        raise DatasetError(f"{path.name} is not a readable CSV file: its header is not UTF-8 text")
    try:
        header = [h.strip() for h in next(csv.reader([lines[0]]))]
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


def _csv_records(file: str, lines: List[str], may_span: Callable[[List[str]], bool]) -> Iterator[Tuple[int, Record]]:
    """(first line, fields or the reason it cannot be read) of every non-blank record after the header."""
    undecodable = {i for i, line in enumerate(lines) if (not line.isascii() or "\x00" in line) and _UNDECODABLE.search(line)}
    position = 1  # index in `lines` of the next line to read; line numbers are indices + 1
    while position < len(lines):
        position = yield from _records_from(file, lines, position, may_span, undecodable)


def _records_from(file: str, lines: List[str], position: int, may_span, undecodable: Set[int]) -> Iterator[Tuple[int, Record]]:
    """Reads records from `lines[position]` on; returns where to restart after an unreadable one.
    `undecodable`: the indices of the lines holding bytes that are not UTF-8 text."""
    reader = csv.reader(lines[i] for i in range(position, len(lines)))
    while True:
        first = position + reader.line_num  # index of the record's first line
        try:
            fields = next(reader)
        except StopIteration:
            return len(lines)
        except csv.Error as error:
            # The reader's state is lost mid-record: report the record's first line, resume after it.
            yield first + 1, _unreadable(file, first, lines[first:first + 1], f"unparsable CSV: {error}")
            return first + 1
        last = position + reader.line_num  # index after the record's last line
        if last - first > 1 and not may_span(fields):
            reason = "unparsable CSV: a quote opened on this line is not closed on it"
            yield first + 1, _unreadable(file, first, lines[first:first + 1], reason)
            return first + 1
        if undecodable and not undecodable.isdisjoint(range(first, last)):
            yield first + 1, _unreadable(file, first, lines[first:last], "")
        elif fields:  # a blank line holds no data: nothing to report
            yield first + 1, fields


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


def _read_parquet_as_strings(path: pathlib.Path) -> pd.DataFrame:
    """Every column as stripped text ('' when null); timestamps as ISO-8601 text (UTC).

    Read through Arrow's own file reader (`ParquetFile` on the path), not
    `pandas.read_parquet`: pandas hands pyarrow a Python file object, and with
    pyarrow 10 a damaged file then leaves a reader thread behind that aborts the
    whole process at exit ("terminate called without an active exception",
    apache/arrow#34314), after the error was already caught.
    """
    try:
        table = pq.ParquetFile(str(path)).read(use_threads=False)
    except Exception as e:  # pyarrow raises many types for a damaged file
        raise DatasetError(f"{path.name} is not a readable Parquet file: {e}") from None
    # A stored pandas index (a column named like "__index_level_0__") is not data.
    index_columns = {c for c in (table.schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)}
    raw = pd.DataFrame(
        {name: _parquet_text(column) for name, column in zip(table.column_names, table.columns) if name not in index_columns}
    )
    raw["_line"] = np.arange(1, table.num_rows + 1, dtype=np.int64)
    return raw


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

def _check_columns(path: pathlib.Path, spec: contract.TableSpec, columns) -> None:
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
    """Parses each column by its kind.

    A fault in a required column rejects the row; in an optional column it sets
    the value to missing and keeps the row. Among the rows left, later repeats
    of the key are duplicates.
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
    if spec.key:
        rejected.add(_duplicates(raw, out, spec.key, ~rejected.found))
    changed.kinds[rejected.found] = ""  # a rejected row is reported once, as rejected
    lines = raw["_line"].to_numpy()
    return (
        out[~rejected.found].reset_index(drop=True),
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


def _duplicates(raw: pd.DataFrame, parsed: pd.DataFrame, key: Tuple[str, ...], good: np.ndarray) -> Finding:
    """Good rows whose parsed key repeats an earlier good row's."""
    # Only rows that are otherwise fine compete for a key: a good row is not
    # rejected as a duplicate of a malformed one.
    keys = parsed.loc[good, list(key)]
    dup = keys.duplicated(keep="first").reindex(raw.index, fill_value=False).to_numpy()
    reasons = np.empty(0, dtype=object)
    if dup.any():
        first_line = raw.loc[good, "_line"].groupby([keys[c] for c in key]).transform("min")[dup[good]]
        shown = raw.loc[dup, list(key)].astype(str).agg(", ".join, axis=1)
        reasons = (f"duplicate {', '.join(key)} '" + shown + "' (first on line " + first_line.astype(str) + ")").to_numpy()
    return Finding(dup, "duplicate", reasons)


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
