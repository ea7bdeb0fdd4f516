"""Reads a plain-layout dataset folder into typed tables, reporting every row it rejects.

Rows that break the contract (wrong field count, blank required value, an age
that is not an integer, an unparsable timestamp, a duplicate key) are not
loaded; each becomes a `MalformedRow` naming the file and line.
Interactions that name users or tracks absent from the other tables are kept
apart and counted. `DatasetError` is raised only when the folder cannot be used
at all (a table missing, a required column missing, nothing left to use).

CSV is read with the standard `csv` module rather than pandas' parser because
the report must give the exact physical line of every rejected row, which the
pandas and Arrow readers do not track for rows they accept.
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib
from typing import Dict, List, Tuple

import numpy as np
import pandas as pd

from musicrec.data import contract


class DatasetError(Exception):
    """The dataset cannot be used at all; the message says why and what to fix."""


@dataclasses.dataclass(frozen=True)
class MalformedRow:
    file: str
    # CSV: the physical line in the file (the header is line 1).
    # Parquet: the 1-based row number.
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclasses.dataclass
class Dataset:
    """A loaded dataset. Tables hold only rows that passed the contract checks.

    `interactions` holds only rows whose user and track are known; rows naming
    unknown ids are counted in `unknown_user_rows` / `unknown_track_rows`, with
    a few examples of each.
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

    def audio_file(self, audio_path: str) -> pathlib.Path:
        return self.root / audio_path

    def audio_files(self) -> List[Tuple[str, str]]:
        """(track_id, absolute audio path) of every track: the audio feature transform's input."""
        return [(t, str(self.audio_file(p))) for t, p in zip(self.tracks["track_id"], self.tracks["audio_path"])]

    @property
    def demographic_columns(self) -> List[str]:
        return [c for c in self.users.columns if c != "user_id"]


def load_dataset(root) -> Dataset:
    """Loads and checks the three tables of the dataset folder `root`."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    malformed: List[MalformedRow] = []
    tables, files = {}, {}
    for spec in contract.TABLES:
        path = _table_path(root, spec.name)
        frame, rejected = read_table(path, spec)
        tables[spec.name] = frame
        files[spec.name] = path.name
        malformed.extend(rejected)

    interactions = tables["interactions"]
    known_user = interactions["user_id"].isin(tables["users"]["user_id"])
    known_track = interactions["track_id"].isin(tables["tracks"]["track_id"])
    dataset = Dataset(
        root=root,
        users=tables["users"],
        tracks=tables["tracks"],
        interactions=interactions[known_user & known_track].reset_index(drop=True),
        malformed=malformed,
        unknown_user_rows=int((~known_user).sum()),
        unknown_track_rows=int((~known_track).sum()),
        unknown_user_examples=_examples(interactions.loc[~known_user, "user_id"]),
        unknown_track_examples=_examples(interactions.loc[~known_track, "track_id"]),
        table_files=files,
    )
    for name in ("users", "tracks"):
        if getattr(dataset, name).empty:
            raise DatasetError(f"{files[name]} has no usable rows ({len(malformed)} malformed rows in the dataset)")
    if dataset.interactions.empty:
        raise DatasetError(
            f"{files['interactions']} has no usable rows: {len(interactions)} well-formed rows, of which "
            f"{dataset.unknown_user_rows} name unknown users and {dataset.unknown_track_rows} unknown tracks"
        )
    return dataset


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


def read_table(path: pathlib.Path, spec: contract.TableSpec) -> Tuple[pd.DataFrame, List[MalformedRow]]:
    """Reads one table file, returning the typed well-formed rows and the rejected ones."""
    if path.suffix == ".parquet":
        raw, rejected = _read_parquet_as_strings(path)
    else:
        raw, rejected = _read_csv_as_strings(path)
    _check_columns(path, spec, raw.columns)
    frame, bad = _parse_values(raw, spec, path.name)
    rejected.extend(bad)
    rejected.sort(key=lambda m: m.line)
    return frame, rejected


def _read_csv_as_strings(path: pathlib.Path) -> Tuple[pd.DataFrame, List[MalformedRow]]:
    rejected: List[MalformedRow] = []
    lines: List[int] = []
    rows: List[List[str]] = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DatasetError(f"{path.name} is empty (no header line)") from None
        except (csv.Error, UnicodeDecodeError) as e:
            raise DatasetError(f"{path.name} is not a readable CSV file: {e}") from None
        if len(set(header)) != len(header):
            raise DatasetError(f"{path.name} has duplicate column names in its header: {header}")
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except (csv.Error, UnicodeDecodeError) as e:
                rejected.append(MalformedRow(path.name, reader.line_num, f"unparsable CSV: {e}"))
                continue
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line: no data, nothing to report
            if len(row) != len(header):
                rejected.append(
                    MalformedRow(path.name, reader.line_num, f"expected {len(header)} fields, found {len(row)}")
                )
                continue
            rows.append(row)
            lines.append(reader.line_num)
    raw = pd.DataFrame(rows, columns=header, dtype=object) if rows else pd.DataFrame(columns=header, dtype=object)
    raw = raw.apply(lambda col: col.str.strip()) if rows else raw
    raw["_line"] = np.asarray(lines, dtype=np.int64)
    return raw, rejected


def _read_parquet_as_strings(path: pathlib.Path) -> Tuple[pd.DataFrame, List[MalformedRow]]:
    try:
        frame = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises many types for a damaged file
        raise DatasetError(f"{path.name} is not a readable Parquet file: {e}") from None
    raw = pd.DataFrame(index=frame.index)
    for name in frame.columns:
        col = frame[name]
        if pd.api.types.is_datetime64_any_dtype(col):
            if col.dt.tz is not None:
                col = col.dt.tz_convert("UTC").dt.tz_localize(None)
            text = col.dt.strftime("%Y-%m-%dT%H:%M:%S").astype(object).where(col.notna(), "")
        else:
            # Nullable and categorical types become plain objects; integral
            # floats (an int column with nulls) read back as integers.
            text = col.astype(object).map(_parquet_value_text)
        raw[str(name)] = text.astype(str).str.strip()
    raw["_line"] = np.arange(1, len(frame) + 1, dtype=np.int64)
    return raw.reset_index(drop=True), []


def _parquet_value_text(value) -> str:
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return ""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


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


def _parse_values(
    raw: pd.DataFrame, spec: contract.TableSpec, file_name: str
) -> Tuple[pd.DataFrame, List[MalformedRow]]:
    """Parses each column by its kind; rows with any bad value are rejected."""
    out = pd.DataFrame(index=raw.index)
    problems = pd.Series("", index=raw.index, dtype=object)
    for name in raw.columns:
        if name == "_line":
            continue
        column = spec.column(name) or contract.Column(name, contract.STRING, required=False)
        values, bad_reason = _PARSERS[column.kind](raw[name], column)
        blank = raw[name] == ""
        if column.required:
            bad_reason = bad_reason.mask(blank, f"{name} is blank")
        problems = problems.mask((problems == "") & (bad_reason != ""), bad_reason)
        out[name] = values
    if spec.key is not None:
        # Only rows that are otherwise fine compete for a key: a good row is not
        # rejected as a duplicate of a malformed one.
        good = problems == ""
        first_line = raw[good].groupby(spec.key)["_line"].transform("min").reindex(raw.index)
        dup = raw[spec.key].where(good).duplicated(keep="first") & good
        dup_reason = f"duplicate {spec.key} '" + raw[spec.key] + "' (first on line " + first_line.fillna(0).astype(int).astype(str) + ")"
        problems = problems.mask(dup, dup_reason)
    bad = problems != ""
    rejected = [MalformedRow(file_name, int(line), reason) for line, reason in zip(raw.loc[bad, "_line"], problems[bad])]
    return out[~bad].reset_index(drop=True), rejected


def _no_problem(values: pd.Series) -> pd.Series:
    return pd.Series("", index=values.index, dtype=object)


def _parse_text(values: pd.Series, column: contract.Column):
    return values.astype(str), _no_problem(values)


def _parse_int(values: pd.Series, column: contract.Column):
    numbers = pd.to_numeric(values.where(values != ""), errors="coerce")
    finite = numbers.notna() & np.isfinite(numbers.fillna(0))
    integral = finite & (numbers == np.floor(numbers.where(finite, 0)))
    bad = (values != "") & ~integral
    reason = _no_problem(values).mask(bad, f"{column.name} '" + values + "' is not an integer")
    return numbers.where(integral).astype("Int64"), reason


def _parse_timestamp(values: pd.Series, column: contract.Column):
    """ISO-8601 strings or unix seconds, to int64 unix seconds (UTC)."""
    seconds = pd.to_numeric(values.where(values != ""), errors="coerce")
    text = values[seconds.isna() & (values != "")]
    if len(text):
        parsed = pd.to_datetime(text, errors="coerce", utc=True)
        seconds.loc[text.index] = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    bad = (values != "") & seconds.isna()
    reason = _no_problem(values).mask(
        bad, f"{column.name} '" + values + "' is neither ISO-8601 nor unix seconds"
    )
    return seconds.fillna(0).astype(np.int64), reason


def _parse_date(values: pd.Series, column: contract.Column):
    parsed = pd.to_datetime(values.where(values != ""), errors="coerce", utc=True)
    bad = (values != "") & parsed.isna()
    reason = _no_problem(values).mask(bad, f"{column.name} '" + values + "' is not an ISO-8601 date")
    return parsed.dt.strftime("%Y-%m-%d").fillna(""), reason


def _parse_event(values: pd.Series, column: contract.Column):
    # An event type this version does not interpret (a service adds "share")
    # is data drift, not a malformed row: it is kept, counted by validation,
    # ignored by feedback resolution, and flagged by the pipeline's TFDV check
    # against a pinned schema.
    return _parse_text(values, column)


_PARSERS = {
    contract.ID: _parse_text,
    contract.PATH: _parse_text,
    contract.STRING: _parse_text,
    contract.INT: _parse_int,
    contract.TIMESTAMP: _parse_timestamp,
    contract.DATE: _parse_date,
    contract.EVENT: _parse_event,
}

