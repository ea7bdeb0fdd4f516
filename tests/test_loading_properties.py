"""Property tests of the table loaders (CSV and Parquet): whatever the corruption, every row read is
loaded or reported, each report at its row's true line, and nothing else is lost or invented.

Each example plants rows whose fate is known in advance (a byte that is not UTF-8, a bare
carriage return, a quote left open, a field too many or too few, a blank required value, a bad
timestamp, an unknown or re-cased event, a repeated event, an unknown id, an invalid age, a
quoted line break) in a table written with or without a BOM, with LF or CRLF line ends; or in a
Parquet table whose columns are text, binary, int64 or float64 (whichever holds the values), with
nulls, a NUL in a value, or bytes that are not UTF-8 in a binary value.
"""

from __future__ import annotations

import codecs
import dataclasses
import datetime
import math
import pathlib
from typing import FrozenSet, List, Optional, Tuple

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from musicrec.data import contract
from musicrec.data.loading import load_dataset, read_table

USERS = ("u0", "u1", "u2")
TRACKS = ("t0", "t1", "t2")
START = 1_704_067_200  # 2024-01-01T00:00:00Z
KNOWN_KINDS = {**contract.ROW_FAULTS, **contract.VALUE_FAULTS, **contract.NORMALISED_VALUES}
SPECS = {spec.name: spec for spec in contract.TABLES}
LOADED, UNKNOWN_USER, UNKNOWN_TRACK = "loaded", "unknown_user", "unknown_track"

# A byte that is not UTF-8 after ASCII (a stray continuation byte, lead bytes, latin-1 'é' and 'ü'), and NUL.
UNDECODABLE_BYTES = (b"\x80", b"\xc3", b"\xe9", b"\xef", b"\xfc", b"\xff", b"\x00")
# Timestamp text -> the fault kind it must be reported under.
BAD_TIMESTAMPS = {
    "inf": "timestamp_not_finite", "-inf": "timestamp_not_finite", "nan": "timestamp_not_finite",
    "NaN": "timestamp_not_finite", "1e30": "timestamp_out_of_range", "-5": "timestamp_out_of_range",
    "1900-01-01T00:00:00Z": "timestamp_out_of_range", "3000-01-01T00:00:00": "timestamp_out_of_range",
    str(START * 1000): "timestamp_milliseconds", "yesterday": "timestamp_unparsable",
}
# Corruptions of a CSV line's bytes (Parquet has "undecodable_value" instead).
BYTE_CORRUPTIONS = ["undecodable", "carriage_return", "open_quote", "field_count"]
PROPERTY_SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclasses.dataclass
class Planted:
    """One written row and what must become of it."""

    # None: null in Parquet, blank in CSV. Bytes that are not UTF-8 are surrogate escapes (Parquet only).
    fields: List[Optional[str]]
    # Malformed kinds it may be reported under; empty when it is well-formed and its fate
    # (loaded, duplicate, unknown id) follows from the rows before it.
    faults: FrozenSet[str] = frozenset()
    raw: Optional[bytes] = None  # the CSV line when a corruption works on bytes (CSV only)
    change: Optional[str] = None  # the changed-value kind it must carry if loaded
    key: Optional[Tuple] = None  # the parsed value that makes a later repeat a duplicate

    def csv_line(self) -> bytes:
        return self.raw if self.raw is not None else ",".join(f or "" for f in self.fields).encode("utf-8")

    def physical_lines(self) -> int:
        return 1 + self.csv_line().count(b"\n")


# ---------------------------------------------------------------------------------------------
# Interactions

@st.composite
def events(draw) -> Tuple[str, str, int, str]:
    user = draw(st.sampled_from(USERS + ("ghost", "üser")))  # valid UTF-8 that names no user
    track = draw(st.sampled_from(TRACKS + ("nosuch",)))
    return user, track, START + draw(st.integers(0, 2)), draw(st.sampled_from(contract.EVENT_TYPES))


def timestamp_text(seconds: int, iso: bool) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if iso else str(seconds)


@st.composite
def interaction_rows(draw, byte_level: bool) -> List[Planted]:
    """Rows of interactions, each clean, a repeat of an earlier clean one, or corrupted one way."""
    corruptions = ["clean", "repeat", "recased", "blank", "timestamp", "unknown_event"]
    corruptions += BYTE_CORRUPTIONS if byte_level else ["undecodable_value"]
    rows: List[Planted] = []
    clean: List[Tuple[str, str, int, str]] = []
    # Half the Parquet logs write no ISO time, so that an int64 or float64 timestamp column can hold them.
    iso_styles = [False] if not byte_level and draw(st.booleans()) else [False, True]
    for _ in range(draw(st.integers(1, 25))):
        corruption = draw(st.sampled_from(corruptions))
        event = draw(st.sampled_from(clean)) if corruption == "repeat" and clean else draw(events())
        user, track, seconds, kind = event
        fields = [user, track, timestamp_text(seconds, draw(st.sampled_from(iso_styles))), kind]
        planted = Planted(fields, key=(user, track, seconds, kind))
        if corruption in ("clean", "repeat"):
            clean.append(event)
        elif corruption == "recased":
            fields[3] = draw(st.sampled_from([kind.upper(), kind.capitalize()]))
            planted.change = "event_case_normalised"
        else:
            planted = corrupt(draw, corruption, planted)
        rows.append(planted)
    return rows


def corrupt(draw, corruption: str, planted: Planted) -> Planted:
    """The row with one fault planted, and the kinds it may be reported under."""
    fields = planted.fields
    line = planted.csv_line()
    if corruption == "blank":
        fields[draw(st.integers(0, 3))] = draw(st.sampled_from(["", None]))
        return Planted(fields, frozenset({"blank_required"}))
    if corruption == "timestamp":
        fields[2] = draw(st.sampled_from(sorted(BAD_TIMESTAMPS)))
        return Planted(fields, frozenset({BAD_TIMESTAMPS[fields[2]]}))
    if corruption == "unknown_event":
        fields[3] = "teleport"
        return Planted(fields, frozenset({"event_unknown"}))
    if corruption == "undecodable_value":  # Parquet: a NUL, or bytes that are not UTF-8 (forcing a binary column)
        column = draw(st.integers(0, len(fields) - 1))
        text = fields[column] or ""
        at = draw(st.integers(0, len(text)))
        fields[column] = text[:at] + draw(st.sampled_from(UNDECODABLE_BYTES)).decode("utf-8", "surrogateescape") + text[at:]
        return Planted(fields, frozenset({"undecodable"}))
    if corruption == "undecodable":
        at = draw(st.integers(0, len(line)))
        return Planted(fields, frozenset({"undecodable"}), line[:at] + draw(st.sampled_from(UNDECODABLE_BYTES)) + line[at:])
    if corruption == "carriage_return":  # anywhere but at the end, where it would be a CRLF line end
        at = draw(st.integers(0, len(line) - 1))
        raw = line[:at] + b"\r" + line[at:]
        return Planted(fields, frozenset({"unparsable_csv" if decodes(raw) else "undecodable"}), raw)
    if corruption == "open_quote":
        # Runs across the following lines (unparsable), or to the end of the file on the last row (one field).
        return Planted(fields, frozenset({"unparsable_csv", "field_count"}), b'"' + line)
    assert corruption == "field_count"
    raw = line + b",extra" if draw(st.booleans()) else line.rsplit(b",", 1)[0]
    return Planted(fields, frozenset({"field_count"}), raw)


def decodes(raw: bytes) -> bool:
    """Whether the bytes are UTF-8 text (a byte planted inside a character, as in 'ü', splits it)."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def expected_fates(rows: List[Planted], fate_of_new_key=lambda key: LOADED) -> List[str]:
    """Per row: "malformed" for a planted fault; "duplicate" for a well-formed row repeating an
    earlier well-formed row's key (the first is kept); else `fate_of_new_key(key)`."""
    seen, fates = set(), []
    for row in rows:
        if row.faults:
            fates.append("malformed")
        elif row.key in seen:
            fates.append("duplicate")
        else:
            seen.add(row.key)
            fates.append(fate_of_new_key(row.key))
    return fates


def interaction_fate(key) -> str:
    user, track = key[:2]
    return UNKNOWN_USER if user not in USERS else UNKNOWN_TRACK if track not in TRACKS else LOADED


# ---------------------------------------------------------------------------------------------
# Writing the tables

def write_csv(path: pathlib.Path, header: List[str], rows: List[Planted], crlf: bool, bom: bool) -> List[int]:
    """Writes the table; returns each row's first physical line."""
    end = b"\r\n" if crlf else b"\n"
    lines, number = [], 2
    for row in rows:
        lines.append(number)
        number += row.physical_lines()
    body = b"".join(row.csv_line() + end for row in rows)
    path.write_bytes((codecs.BOM_UTF8 if bom else b"") + ",".join(header).encode() + end + body)
    return lines


# Arrow type -> how a field's text is written in a column of that type (None: null).
PARQUET_VALUES = {
    pa.string(): lambda text: text,
    pa.binary(): lambda text: text.encode("utf-8", "surrogateescape"),
    pa.int64(): int,
    pa.float64(): float,
}


def parquet_types(draw, spec: contract.TableSpec, header: List[str], rows: List[Planted]) -> List[pa.DataType]:
    """Per column, a type that holds every value: binary for any column, text unless a value holds
    bytes that are not UTF-8, int64 / float64 for a timestamp or integer column whose values convert."""
    types = []
    for i, name in enumerate(header):
        values = [row.fields[i] for row in rows if row.fields[i]]
        numeric = column_of(spec, name).kind in (contract.TIMESTAMP, contract.INT)
        candidates = [t for t, write in PARQUET_VALUES.items() if (numeric or t in (pa.string(), pa.binary())) and converts(write, values)]
        types.append(draw(st.sampled_from(candidates)))
    return types


def column_of(spec: contract.TableSpec, name: str) -> contract.Column:
    return spec.column(name) or contract.Column(name, contract.STRING, required=False)  # an extra column


def converts(write, values: List[str]) -> bool:
    try:
        pa.array([write(v) for v in values])
    except (ValueError, UnicodeEncodeError, pa.ArrowException):
        return False
    return True


def write_parquet(path: pathlib.Path, header: List[str], rows: List[Planted], types: List[pa.DataType], spec) -> List[int]:
    columns = {}
    for i, (name, arrow_type) in enumerate(zip(header, types)):
        write = PARQUET_VALUES[arrow_type]
        columns[name] = pa.array([write(row.fields[i]) if row.fields[i] else None for row in rows], arrow_type)
        for row in rows:
            if arrow_type == pa.float64() and row.fields[i] and math.isnan(float(row.fields[i])):
                read_as_null(row, i, column_of(spec, name).required)
    pq.write_table(pa.table(columns), path)
    return list(range(1, len(rows) + 1))


def read_as_null(row: Planted, column: int, required: bool) -> None:
    """A NaN in a float64 column is a null, which the loader reads as blank: required, the row is
    malformed as blank; optional (an age), the value is missing, not an invalid age."""
    row.fields[column] = None
    if required:  # a row holds one planted fault: this one (a NaN timestamp)
        row.faults = frozenset({"blank_required"})
    else:
        row.change = None


def write_table(folder: pathlib.Path, name: str, header: List[str], rows: List[Planted], layout) -> List[int]:
    """`layout`: (CRLF, BOM) for CSV, or the Parquet column types."""
    for stale in folder.glob(f"{name}.*"):
        stale.unlink()
    if isinstance(layout, list):
        return write_parquet(folder / f"{name}.parquet", header, rows, layout, SPECS[name])
    crlf, bom = layout
    return write_csv(folder / f"{name}.csv", header, rows, crlf, bom)


def write_other_tables(folder: pathlib.Path) -> None:
    (folder / "users.csv").write_text("user_id,age,gender,country\n" + "".join(f"{u},30,female,SE\n" for u in USERS))
    (folder / "tracks.csv").write_text(
        "track_id,artist_id,album_id,audio_path\n" + "".join(f"{t},a,al,audio/{t}.wav\n" for t in TRACKS)
    )


CSV_LAYOUTS = st.tuples(st.booleans(), st.booleans())  # (CRLF line ends, a BOM)


def draw_table(data, folder: pathlib.Path, name: str, header: List[str], rows_strategy, table_format: str):
    """Draws rows (byte-level corruptions in CSV only) and writes them as table `name` (CSV with or
    without a BOM, LF or CRLF line ends; or Parquet with typed columns). Returns the rows and each
    row's first line."""
    rows = data.draw(rows_strategy(byte_level=table_format == "csv"))
    layout = data.draw(CSV_LAYOUTS) if table_format == "csv" else parquet_types(data.draw, SPECS[name], header, rows)
    return rows, write_table(folder, name, header, rows, layout)


def check_reports(reports, rows: List[Planted], fates: List[str], lines: List[int], file: str) -> None:
    """Each planted fault is reported once, at its row's first line, under one of its kinds; nothing
    else is reported except duplicates, and each changed value is on a loaded row that carries one."""
    malformed = {m.line: m for m in reports.malformed if m.file == file}
    assert len(malformed) == len([m for m in reports.malformed if m.file == file])  # one report per row
    expected = {line: row for line, row, fate in zip(lines, rows, fates) if fate in ("malformed", "duplicate")}
    assert sorted(malformed) == sorted(expected)
    for line, row in expected.items():
        assert malformed[line].kind in (row.faults or {"duplicate"}), (line, malformed[line], row)
    changed = {c.line: c.kind for c in reports.changed_values if c.file == file}
    assert changed == {line: row.change for line, row, fate in zip(lines, rows, fates) if row.change and fate != "duplicate"}
    assert set(m.kind for m in reports.malformed) | set(changed.values()) <= set(KNOWN_KINDS)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("corrupted")
    write_other_tables(folder)
    return folder


@pytest.mark.parametrize("table_format", ["csv", "parquet"])
@PROPERTY_SETTINGS
@given(data=st.data())
def test_every_interaction_row_is_loaded_or_reported_at_its_line(folder, table_format, data):
    header = ["user_id", "track_id", "timestamp", "event"]
    rows, lines = draw_table(data, folder, "interactions", header, interaction_rows, table_format)
    fates = expected_fates(rows, interaction_fate)
    if LOADED not in fates:
        return  # a dataset with no usable interaction is refused as a whole (tested in test_contract)

    dataset = load_dataset(folder)
    file = f"interactions.{table_format}"
    check_reports(dataset, rows, fates, lines, file)
    assert dataset.unknown_user_rows == fates.count(UNKNOWN_USER)
    assert dataset.unknown_track_rows == fates.count(UNKNOWN_TRACK)
    loaded = [row.key for row, fate in zip(rows, fates) if fate == LOADED]
    assert list(dataset.interactions.itertuples(index=False, name=None)) == loaded
    # The invariant the validation summary prints: rows read = loaded + each reported bucket.
    reported = len([m for m in dataset.malformed if m.file == file])
    assert dataset.rows_read["interactions"] == len(rows) == (
        len(dataset.interactions) + reported + dataset.unknown_user_rows + dataset.unknown_track_rows
    )


# ---------------------------------------------------------------------------------------------
# Users: invalid ages keep the user; a quoted line break in an extra column is one row

# Age text -> the changed-value kind it must carry (None: a valid age, or blank = missing).
AGES = {
    "34": None, "0": None, "120": None, "": None, "-5": "age_out_of_range", "121": "age_out_of_range",
    "200": "age_out_of_range", "NaN": "age_not_integer", "old": "age_not_integer", "34.5": "age_not_integer",
    "inf": "age_not_integer",
}


@st.composite
def user_rows(draw, byte_level: bool) -> List[Planted]:
    corruptions = ["clean", "blank"] + (["undecodable", "open_quote", "field_count"] if byte_level else ["undecodable_value"])
    rows = []
    for _ in range(draw(st.integers(1, 15))):
        user = draw(st.sampled_from(["u0", "u1", "u2", "u3"]))
        age = draw(st.sampled_from(sorted(AGES)))
        bio = draw(st.sampled_from(["quiet", '"two\nlines"', '"a, b"'])) if byte_level else "quiet"
        planted = Planted([user, age, "female", "SE", bio], change=AGES[age], key=(user,))
        corruption = draw(st.sampled_from(corruptions))
        if corruption == "blank":
            planted = Planted([None, age, "female", "SE", bio], frozenset({"blank_required"}))
        elif corruption != "clean":
            planted.fields[4] = "quiet"  # an open quote before a quoted line break would end at its quote
            planted = corrupt(draw, corruption, planted)
        rows.append(planted)
    return rows


@pytest.mark.parametrize("table_format", ["csv", "parquet"])
@PROPERTY_SETTINGS
@given(data=st.data())
def test_every_user_row_is_loaded_or_reported_at_its_line(folder, table_format, data):
    rows, lines = draw_table(data, folder, "users", ["user_id", "age", "gender", "country", "bio"], user_rows, table_format)
    fates = expected_fates(rows)

    path = folder / f"users.{table_format}"
    table = read_table(path, contract.USERS)
    check_reports(Reports(table.malformed, table.changed), rows, fates, lines, path.name)
    assert table.rows_read == len(rows) == len(table.frame) + len(table.malformed)
    loaded = [row for row, fate in zip(rows, fates) if fate == LOADED]
    assert table.frame["user_id"].tolist() == [row.fields[0] for row in loaded]
    # An invalid age is missing, like a blank one; the user stays.
    ages = [pd.NA if row.change or not row.fields[1] else int(row.fields[1]) for row in loaded]
    assert table.frame["age"].tolist() == ages
    assert table.frame["bio"].tolist() == [row.fields[4].strip('"') for row in loaded]


@dataclasses.dataclass
class Reports:
    """A read_table result's reports under the names check_reports reads from a Dataset."""

    malformed: list
    changed_values: list


# ---------------------------------------------------------------------------------------------
# Typed Parquet columns

def test_typed_parquet_times_far_out_of_pandas_range_cost_only_their_row(tmp_path):
    write_other_tables(tmp_path)
    seconds = [START, 32_503_680_000, None, START * 1000]  # 2024, the year 3000, null, beyond the year 9999
    pq.write_table(pa.table({
        "user_id": ["u0"] * 4, "track_id": ["t0", "t1", "t2", "t0"],
        "timestamp": pa.array(seconds, pa.timestamp("s")), "event": ["like"] * 4,
    }), tmp_path / "interactions.parquet")
    dataset = load_dataset(tmp_path)
    assert {(m.line, m.kind) for m in dataset.malformed} == {
        (2, "timestamp_out_of_range"), (3, "blank_required"), (4, "timestamp_unparsable"),
    }
    assert dataset.interactions["timestamp"].tolist() == [START]
