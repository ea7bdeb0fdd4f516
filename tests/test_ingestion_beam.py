"""The ingestion Beam job writes exactly what the in-memory ingestion wrote before it.

The reference is the pandas ingestion the job replaced, kept here unchanged: the
in-memory library (`build_user_examples`, `build_audio_pairs`, `user_queries`,
which `musicrec user-branch` and Table 1 still use) joined with the contexts and
slices in pandas. On the tiny dataset with a planted fault of every kind, the
job must write the same tf.Examples per split (in any order), the same counts,
and report every rejected row and changed value as the loader does. Examples are
compared serialized deterministically: protobuf writes a map's entries (an
Example's features) in an order that differs from process to process, so even
two runs of the same code do not write the same bytes.
"""

import json
import pathlib

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from musicrec.components.listening_data import ingest as ingestion
from musicrec.components.listening_data.tables import MALFORMED, PlainTables, ReadTable
from musicrec.data import contract, tf_examples
from musicrec.data.audio_pairs import SplitConfig, build_audio_pairs, user_queries
from musicrec.data.contract import count_by_kind
from musicrec.data.loading import DatasetError, MalformedRow, load_dataset, read_table
from musicrec.data.user_examples import build_user_examples
from musicrec.names import split_folder
from conftest import write_dataset

PROTOCOLS = ("per_user", "cold_tracks")


def usable_tracks(dataset) -> list:
    """Every track but every seventh: some pairs have no usable audio."""
    return [track for i, track in enumerate(dataset.tracks["track_id"]) if i % 7]


def run_job(root, usable, config, out: pathlib.Path) -> ingestion.IngestionReport:
    """The job as the component runs it: the tracks with usable audio from an audio features index
    (the others too short, as in the index the AudioFeatures component writes)."""
    out.mkdir(parents=True, exist_ok=True)
    index = out / "index.jsonl"
    tracks = pd.read_csv(pathlib.Path(root) / "tracks.csv", dtype=str, keep_default_na=False, usecols=["track_id"])["track_id"]
    index.write_text("".join(json.dumps({"track_id": t, "frames": 200 if t in set(usable) else 100}) + "\n" for t in tracks))
    uris = {artifact: str(out / artifact) for artifact in ingestion.ARTIFACT_SPLITS}
    pipeline = beam.Pipeline(options=PipelineOptions(list(ingestion.DIRECT_RUNNER)))
    return ingestion.run_ingestion(pipeline, PlainTables(root), ingestion.AudioIndex(str(index), 130), config, uris)


def written_examples(out: pathlib.Path) -> dict:
    """artifact/split -> the examples the job wrote there, serialized deterministically, sorted."""
    written = {}
    for artifact, splits in ingestion.ARTIFACT_SPLITS.items():
        for split in splits:
            files = sorted(str(f) for f in (out / artifact / split_folder(split)).glob("*"))
            records = tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator() if files else []
            written[f"{artifact}/{split}"] = canonical(records)
    return written


def canonical(records) -> list:
    """Serialized tf.Examples, each serialized again deterministically (features in key order), sorted."""
    return sorted(tf.train.Example.FromString(record).SerializeToString(deterministic=True) for record in records)


@pytest.fixture(scope="module", params=PROTOCOLS)
def job(request, faulty_tiny_dataset, tmp_path_factory):
    """The job and the reference on the tiny dataset with every planted fault, per split protocol."""
    dataset = load_dataset(faulty_tiny_dataset)
    config = ingestion.IngestionConfig(split=SplitConfig(protocol=request.param))
    out = tmp_path_factory.mktemp(f"ingestion_{request.param}")
    report = run_job(faulty_tiny_dataset, usable_tracks(dataset), config, out)
    return dataset, config, out, report


def test_the_job_writes_the_in_memory_examples(job):
    dataset, config, out, _ = job
    expected, _ = reference_ingestion(dataset, usable_tracks(dataset), config)
    written = written_examples(out)
    assert set(written) == set(expected)
    for destination in expected:
        assert len(written[destination]) == len(expected[destination]), destination
        assert written[destination] == expected[destination], destination
    assert all(written.values())  # no split agrees by being empty on both sides


def test_the_job_counts_what_the_in_memory_ingestion_counted(job):
    dataset, config, out, report = job
    _, expected = reference_ingestion(dataset, usable_tracks(dataset), config)
    assert report.counts == expected and list(report.counts) == list(expected)
    for artifact in ingestion.ARTIFACT_SPLITS:
        assert json.loads((out / artifact / ingestion.REPORT_FILE).read_text()) == expected
    # Every planted fault kind is counted, and some pairs lack audio.
    assert {"malformed_rows.duplicate", "malformed_rows.undecodable", "changed_values.age_out_of_range"} <= set(expected)
    assert expected["audio_pairs_excluded.pairs_whose_track_has_no_usable_audio"] > 0


def test_the_job_reports_each_rejected_row_and_changed_value_as_the_loader_does(job):
    dataset, _, out, _ = job
    for name, reports in ((ingestion.MALFORMED_ROWS_FILE, dataset.malformed), (ingestion.CHANGED_VALUES_FILE, dataset.changed_values)):
        files = sorted((out / "interactions").glob(f"{name}-*.csv"))
        written = pd.concat([pd.read_csv(f, dtype={"line": int}, keep_default_na=False) for f in files])
        expected = [(r.file, r.line, r.reason, r.kind) for r in reports]
        assert sorted(written.itertuples(index=False, name=None)) == sorted(expected)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_table_read_in_small_chunks_is_the_loaders_table(faulty_tiny_dataset, tmp_path, suffix):
    """Lines and reports stay right across chunk boundaries (and Parquet row groups)."""
    spec = contract.INTERACTIONS
    path = faulty_tiny_dataset / "interactions.csv"
    if suffix == ".parquet":  # the well-formed lines, as text, with one value that is not UTF-8
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, on_bad_lines="skip", encoding_errors="replace")
        timestamps = [b"\xff" if i == 5 else value.encode() for i, value in enumerate(frame["timestamp"])]
        table = pa.Table.from_pandas(frame, preserve_index=False).set_column(2, "timestamp", pa.array(timestamps, pa.binary()))
        path = tmp_path / "interactions.parquet"
        pq.write_table(table, path, row_group_size=300)
    expected = read_table(path, spec)
    repeats = {r.line for r in expected.malformed if r.kind == "duplicate"}  # found later, by key
    columns = ["user_id", "track_id", "timestamp", "event"]
    with beam.Pipeline(options=PipelineOptions(list(ingestion.DIRECT_RUNNER))) as pipeline:
        read = pipeline | ReadTable(path, spec, chunk_rows=500)
        kept = read["rows"] | beam.Filter(lambda row: row.line not in repeats)
        assert_that(kept | beam.Map(lambda row: tuple(row.values[c] for c in columns)),
                    equal_to(list(expected.frame[columns].itertuples(index=False, name=None))), label="rows")
        assert_that(read[MALFORMED], equal_to([r for r in expected.malformed if r.line not in repeats]), label="malformed")
        assert_that(kept | beam.FlatMap(lambda row: row.changed), equal_to(expected.changed), label="changed")
    assert len(expected.malformed) > len(repeats) > 0 and expected.changed


def test_a_quote_left_open_costs_its_line_not_the_rest_of_the_file(tmp_path):
    """A quoted value may span lines only in an extra column; one left open is reported after
    `max_record_lines` lines, and every later row is read."""
    path = tmp_path / "users.csv"
    path.write_text("user_id,age,bio\n" + 'u0,30,"never closed\n' + "".join(f"u{i},30,x\n" for i in range(1, 60)))
    reason = "unparsable CSV: a quote opened on this line is not closed within 20 lines"
    with beam.Pipeline(options=PipelineOptions(list(ingestion.DIRECT_RUNNER))) as pipeline:
        read = pipeline | ReadTable(path, contract.USERS, chunk_rows=10, max_record_lines=20)
        assert_that(read["rows"] | beam.Map(lambda row: (row.line, row.values["user_id"])),
                    equal_to([(i + 2, f"u{i}") for i in range(1, 60)]), label="rows")
        assert_that(read[MALFORMED], equal_to([MalformedRow("users.csv", 2, reason, "unparsable_csv")]), label="malformed")


def test_an_unusable_log_is_refused_with_the_loaders_reason(tmp_path):
    """A log written in milliseconds: the job stops with the message the loader gives."""
    root = write_dataset(tmp_path / "data", "user_id,age\nu1,30\n", "track_id,artist_id,album_id,audio_path\nt1,a,al,t1.wav\n",
                         "user_id,track_id,timestamp,event\n" + "".join(f"u1,t1,{1_700_000_000_000 + i},like\n" for i in range(3)))
    with pytest.raises(DatasetError) as expected:
        load_dataset(root)
    with pytest.raises(DatasetError) as refused:
        run_job(root, ["t1"], ingestion.IngestionConfig(), tmp_path / "out")
    assert str(refused.value) == str(expected.value) and "timestamp_milliseconds 3" in str(refused.value)


# ---------------------------------------------------------------------------------------------
# The reference: the in-memory ingestion as it was before the job replaced it.

AGE_BUCKETS = ((0, "<18"), (18, "18-24"), (25, "25-34"), (35, "35-44"), (45, "45-54"), (55, "55-64"), (65, "65+"))
POPULARITY_BUCKETS = ((0.2, "head"), (0.5, "torso"), (1.0, "tail"))
UNKNOWN = "unknown"


def reference_ingestion(dataset, usable, config):
    """artifact/split -> sorted serialized examples, and the counts, as the pandas ingestion gave them."""
    counts = {
        "users": len(dataset.users), "tracks": len(dataset.tracks), "interactions": len(dataset.interactions),
        "malformed_rows": len(dataset.malformed),
        **{f"malformed_rows.{kind}": n for kind, n in count_by_kind(r.kind for r in dataset.malformed).items()},
        **{f"changed_values.{kind}": n for kind, n in count_by_kind(r.kind for r in dataset.changed_values).items()},
        "unknown_user_rows": int(dataset.unknown_user_rows), "unknown_track_rows": int(dataset.unknown_track_rows),
    }
    user_data = build_user_examples(dataset, config.feedback, config.examples)
    counts.update({f"user_branch_excluded_users.{_key(k)}": v for k, v in user_data.excluded_users.items()})
    pairs = build_audio_pairs(dataset.interactions, dataset.users["user_id"], usable, config.feedback, config.split)
    counts.update({f"audio_pairs_excluded.{_key(k)}": v for k, v in pairs.excluded.items()})
    evaluation = {name: np.concatenate([user_data.test.columns[name], user_data.new_users.columns[name]]) for name in user_data.test.columns}
    users, tracks = _user_context(dataset), _track_context(dataset)
    splits = {
        "interactions": _interaction_splits(dataset, users, tracks, user_data.holdout_start),
        "user_examples": {"train": user_data.train.columns, "eval": evaluation},
        "audio_pairs": _audio_pair_splits(dataset, users, tracks, pairs, config),
    }
    serialized = {}
    for artifact, by_split in splits.items():
        for split, columns in by_split.items():
            counts[f"{artifact}.{split}"] = len(next(iter(columns.values()))) if columns else 0
            serialized[f"{artifact}/{split}"] = canonical(tf_examples.serialize_rows(columns))
    return serialized, counts


def _key(reason: str) -> str:
    return "_".join("".join(c if c.isalnum() else " " for c in reason.lower()).split())


def _demographic_columns(frame, names):
    columns = {}
    for name in names:
        values = frame[name]
        if pd.api.types.is_numeric_dtype(values):
            columns[name] = values.astype("Float64").to_numpy(dtype=np.float32, na_value=np.nan)
        else:
            columns[name] = values.fillna("").astype(str).to_numpy(dtype=object)
    return columns


def _user_context(dataset):
    users = dataset.users.set_index("user_id").copy()
    if "age" in users and pd.api.types.is_numeric_dtype(users["age"]):
        bounds = [b for b, _ in AGE_BUCKETS] + [np.inf]
        users["age_bucket"] = pd.cut(users["age"], bounds, right=False, labels=[n for _, n in AGE_BUCKETS]).astype(object)
    else:
        users["age_bucket"] = UNKNOWN
    users["age_bucket"] = users["age_bucket"].fillna(UNKNOWN)
    return users


def _track_context(dataset):
    tracks = dataset.tracks.set_index("track_id")[["album_id", "artist_id"]].copy()
    genre = dataset.tracks.set_index("track_id").get("genre")
    tracks["genre"] = genre.replace("", UNKNOWN).fillna(UNKNOWN) if genre is not None else UNKNOWN
    return tracks


def _interaction_splits(dataset, users, tracks, holdout_start):
    log = dataset.interactions.sort_values(["timestamp", "user_id", "track_id"], kind="stable").reset_index(drop=True)
    joined = log.join(tracks, on="track_id").join(users[dataset.demographic_columns], on="user_id")
    columns = {
        **{name: joined[name].astype(str).to_numpy(dtype=object) for name in ("user_id", "track_id", "album_id", "artist_id", "genre", "event")},
        "timestamp": joined["timestamp"].to_numpy(dtype=np.int64),
        **_demographic_columns(joined, dataset.demographic_columns),
    }
    start = log["user_id"].map(holdout_start).fillna(np.inf).to_numpy()
    is_eval = log["timestamp"].to_numpy() >= start
    return {"train": {k: v[~is_eval] for k, v in columns.items()}, "eval": {k: v[is_eval] for k, v in columns.items()}}


def _popularity_buckets(train_pairs, track_ids):
    likes = train_pairs[train_pairs["label"] == 1]["track_id"].value_counts().reindex(track_ids, fill_value=0)
    rank = likes.rank(ascending=False, method="first") / max(len(likes), 1)
    bucket = pd.Series(POPULARITY_BUCKETS[-1][1], index=likes.index, dtype=object)
    for share, name in reversed(POPULARITY_BUCKETS):
        bucket[rank <= share] = name
    return bucket


def _audio_pair_splits(dataset, users, tracks, pairs, config):
    tracks = tracks.assign(popularity_bucket=_popularity_buckets(pairs.split("train"), tracks.index))
    frame = pairs.pairs.join(tracks[["genre", "popularity_bucket"]], on="track_id")
    slices = [c for c in ("gender", "age_bucket", "country") if c in users]
    frame = frame.join(users[slices], on="user_id")
    for name in slices:
        frame[name] = frame[name].fillna(UNKNOWN).astype(str).replace("", UNKNOWN)
    keep = ["user_id", "track_id", "label", *slices, "popularity_bucket", "genre"]
    names = {"train": "train", "validation": "eval", "test": "test"}
    splits = {names[s]: tf_examples.columns_from_frame(frame.loc[frame["split"] == s, keep]) for s in names}
    splits["user_queries"] = user_queries(dataset, pairs, config.feedback, config.examples.history_length).columns
    return splits
