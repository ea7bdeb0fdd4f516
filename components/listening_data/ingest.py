"""The listening-data ingestion, an Apache Beam job: dataset tables -> three Examples artifacts.

It runs wherever Beam runs (DirectRunner here, Dataflow at scale, by the
pipeline's Beam args) and never holds a whole table in one process: the tables
are read line by line (`tables.py`), rows are grouped by track and by user, and
each user's work happens per key (`steps.py`). It writes, as TFX Examples
artifacts (`Split-<name>/` folders of GZIP tf.Example TFRecords):

  interactions  one example per event, joined with the user's demographics and
                the track's album/artist/genre; split as the user branch is:
                `eval` holds each user's events from their hold-out on (all of
                a new user's), `train` the rest. TFDV checks
                these (StatisticsGen, SchemaGen, ExampleValidator) and Transform
                learns the id vocabularies and demographic statistics from them.
  user_examples the user branch's (history, demographics) -> next liked track
                examples (`musicrec.data.user_examples`): `train`, and `eval`
                with the held-out targets of seen and of new users.
  audio_pairs   liked/disliked (user, track) pairs of the audio branch
                (`musicrec.data.audio_pairs`) with TFMA's slice features
                (gender, age_bucket, country, popularity_bucket, genre): splits
                `train`, `eval` (validation), `test`; plus `user_queries`, one
                row per user with their liked tracks *outside* the eval and test
                pairs, from which the audio Trainer computes the UEs it trains
                and is evaluated against (so no UE contains a track it is
                evaluated on).

The examples are those the in-memory library gives (`build_user_examples`,
`build_audio_pairs`, `user_queries`), split for split. Every row the loader
would reject is reported with file, line, reason and fault kind
(`malformed_rows-*.csv` and `changed_values-*.csv` beside the interactions'
splits), and every exclusion is counted: the counts come back from the job as
side outputs (`IngestionReport.counts`), which the component records in MLMD
custom properties and in `ingestion_report.json`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import tempfile
from typing import Dict, Iterable, List, Mapping, Sequence, Union

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.options.pipeline_options import PipelineOptions
from etils import epath

from musicrec import storage
from musicrec.components.listening_data import steps
from musicrec.components.listening_data.tables import (
    CHANGED, COUNTS, MALFORMED, ROWS_READ, DatasetTables, PlainTables, TableSource,
)
from musicrec.data import contract, tf_examples
from musicrec.data.audio_pairs import NO_USABLE_AUDIO, NO_USER_EMBEDDING, SplitConfig, below_minimum, no_pairs_left
from musicrec.data.contract import FeedbackConfig
from musicrec.data.loading import Dataset, DatasetError, MalformedRow, no_usable_rows_message
from musicrec.data.user_examples import HISTORY_FEATURES, NO_LIKED_TRACKS, TOO_FEW_LIKED_TRACKS, ExampleConfig
from musicrec.data.validation import no_eligible_users
from musicrec.names import EVAL, TEST, TRAIN, USER_QUERIES, split_folder

Columns = Dict[str, np.ndarray]
REPORT_FILE = "ingestion_report.json"
EXAMPLES_PREFIX = "data_tfrecord"
# Per-line reports, written beside the interactions' splits (the columns of `musicrec validate-data`'s).
MALFORMED_ROWS_FILE, CHANGED_VALUES_FILE = "malformed_rows", "changed_values"
REPORT_COLUMNS = ("file", "line", "reason", "kind")
# The job's side outputs, under the interactions artifact while it runs.
TALLY_DIR = "ingestion_tallies"
COUNTS_FILE, KINDS_FILE = "counts.jsonl", "reports_by_kind.jsonl"
ARTIFACT_SPLITS = {
    "interactions": (TRAIN, EVAL),
    "user_examples": (TRAIN, EVAL),
    "audio_pairs": (TRAIN, EVAL, TEST, USER_QUERIES),
}
DESTINATIONS = tuple(f"{artifact}/{split}" for artifact, splits in ARTIFACT_SPLITS.items() for split in splits)
DIRECT_RUNNER = ("--direct_running_mode=in_memory",)


@dataclasses.dataclass(frozen=True)
class IngestionConfig:
    feedback: FeedbackConfig = FeedbackConfig()
    examples: ExampleConfig = ExampleConfig()
    split: SplitConfig = SplitConfig()

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "IngestionConfig":
        raw = json.loads(text)
        return cls(
            feedback=FeedbackConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw["feedback"].items()}),
            examples=ExampleConfig(**raw["examples"]),
            split=SplitConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw["split"].items()}),
        )


@dataclasses.dataclass(frozen=True)
class AudioIndex:
    """The tracks with usable audio, read by the job from the audio features' index (JSON lines of
    track_id and frames): those with at least `min_frames` log-mel frames."""

    path: str
    min_frames: int

    def tracks(self, pipeline):
        min_frames = self.min_frames
        return (pipeline | "Read audio index" >> beam.io.ReadFromText(self.path)
                | "Index records" >> beam.Map(json.loads)
                | "Long enough" >> beam.Filter(lambda record: record["frames"] >= min_frames)
                | "Track ids" >> beam.Map(lambda record: record["track_id"]))


def table_source(dataset_dir, adapter: str) -> TableSource:
    """The plain layout is read by the job itself; any other adapter returns its tables in memory."""
    from musicrec.data.adapters import PLAIN, load_with_adapter

    return PlainTables(dataset_dir) if adapter == PLAIN else DatasetTables(load_with_adapter(dataset_dir, adapter))


# ---------------------------------------------------------------------------------------------
# The job

def add_ingestion(pipeline, source: TableSource, usable_tracks: Union[AudioIndex, Iterable[str]],
                  config: IngestionConfig, uris: Mapping[str, str]) -> None:
    """Adds the ingestion to `pipeline`: examples into the artifact folders `uris` (by artifact name),
    per-line reports beside the interactions, tallies into the interactions' TALLY_DIR. The tracks
    with usable audio are read from an AudioIndex, or given."""
    if isinstance(usable_tracks, AudioIndex):
        with_audio = usable_tracks.tracks(pipeline)
    else:
        with_audio = pipeline | "Tracks with audio" >> beam.Create(sorted(set(usable_tracks)))
    settings = steps.JobSettings(config.feedback, config.examples, config.split, source.files, source.deduplicated,
                                 source.demographics)
    tables = source.read(pipeline)
    by_track = {
        "tracks": tables.rows["tracks"] | "Tracks by id" >> beam.Map(lambda row: (row.values["track_id"], row)),
        "events": tables.rows["interactions"] | "Events by track" >> beam.Map(lambda row: (row.values["track_id"], row)),
        "audio": with_audio | "Audio by track" >> beam.Map(lambda track: (track, True)),
    }
    joined = (by_track | "Group by track" >> beam.CoGroupByKey()
              | "Join tracks" >> beam.ParDo(steps.JoinTrack(), settings).with_outputs(
                  MALFORMED, CHANGED, COUNTS, steps.TRACK_LINES, main="events"))
    by_user = {
        "users": tables.rows["users"] | "Users by id" >> beam.Map(lambda row: (row.values["user_id"], row)),
        "events": joined.events,
    }
    users = (by_user | "Group by user" >> beam.CoGroupByKey()
             | "Resolve users" >> beam.ParDo(steps.ResolveUser(), settings).with_outputs(
                 MALFORMED, CHANGED, COUNTS, steps.LIKED, steps.PAIRS, steps.QUERIES, main="users"))
    draws = (users[steps.LIKED] | "Liked counts" >> beam.combiners.ToList()
             | "Replay user draws" >> beam.FlatMap(steps.replay_user_draws, config.examples))
    user_examples = ({"user": users.users, "draw": draws} | "Draws by user" >> beam.CoGroupByKey()
                     | "User examples" >> beam.ParDo(steps.UserExamples(), settings).with_outputs(COUNTS, main="examples"))
    pairs = users[steps.PAIRS] | "Split pairs" >> _SplitPairs(config.split)
    pair_examples = pairs | "Pair examples" >> _PairExamples(joined[steps.TRACK_LINES], settings)
    evaluated = (pairs | "Evaluated pairs" >> beam.Filter(lambda pair: pair.split != "train")
                 | beam.Map(lambda pair: (pair.user_id, pair.track_id)))
    queries = ({"query": users[steps.QUERIES], "evaluated": evaluated} | "Evaluated by user" >> beam.CoGroupByKey()
               | "User queries" >> beam.FlatMap(steps.user_query_example, settings))
    examples = (user_examples.examples, pair_examples, queries) | "Examples" >> beam.Flatten()
    written = _write_examples(examples, uris)

    tally_dir = storage.path(uris["interactions"]) / TALLY_DIR
    counts = [*tables.counts, joined[COUNTS], users[COUNTS], user_examples[COUNTS], written]
    _ = (counts | "Counts" >> beam.Flatten() | "Sum counts" >> beam.CombinePerKey(sum)
         | "Counts as JSON" >> beam.Map(lambda item: json.dumps({"name": item[0], "n": item[1]}))
         | "Write counts" >> beam.io.WriteToText(str(tally_dir / COUNTS_FILE), shard_name_template=""))
    malformed = [*tables.malformed, joined[MALFORMED], users[MALFORMED]] | "Malformed rows" >> beam.Flatten()
    changed = [*tables.changed, joined[CHANGED], users[CHANGED]] | "Changed values" >> beam.Flatten()
    by_kind = []
    for name, reports, file_name in (("malformed", malformed, MALFORMED_ROWS_FILE), ("changed", changed, CHANGED_VALUES_FILE)):
        _ = (reports | f"{name} as CSV" >> beam.Map(_csv_line)
             | f"Write {name}" >> beam.io.WriteToText(str(storage.path(uris["interactions"]) / file_name),
                                                      file_name_suffix=".csv", header=",".join(REPORT_COLUMNS)))
        by_kind.append(reports | f"{name} by kind" >> beam.Map(lambda report, name=name: ((name, report.file, report.kind), report)))
    _ = (by_kind | "Reports" >> beam.Flatten() | "First of each kind" >> beam.CombinePerKey(_CountAndFirst())
         | "Kinds as JSON" >> beam.Map(_kind_json)
         | "Write kinds" >> beam.io.WriteToText(str(tally_dir / KINDS_FILE), shard_name_template=""))


class _SplitPairs(beam.PTransform):
    """(user_id, UserPairs) -> Pair, split by the protocol's draws (replayed over per-key summaries)."""

    def __init__(self, split: SplitConfig):
        super().__init__()
        self._split = split

    def expand(self, user_pairs):
        split = self._split
        if split.protocol == "per_user":
            states = (user_pairs | "Pair counts" >> beam.Map(_label_counts) | beam.combiners.ToList()
                      | "Replay pair splits" >> beam.FlatMap(steps.replay_pair_splits, split))
            return ({"pairs": user_pairs, "states": states} | beam.CoGroupByKey()
                    | "Split each user's pairs" >> beam.FlatMap(steps.split_per_user, split))
        if split.protocol == "users":
            keyed_pairs = user_pairs | "Pairs of users" >> beam.FlatMap(lambda item: ((item[0], p) for p in steps.pairs_of(item[1])))
            keys = user_pairs | "Users" >> beam.Map(lambda item: item[0])
        else:  # cold_tracks
            keyed_pairs = user_pairs | "Pairs by track" >> beam.FlatMap(lambda item: ((p.track_id, p) for p in steps.pairs_of(item[1])))
            keys = keyed_pairs | "Tracks" >> beam.Keys()
        key_splits = keys | beam.combiners.ToList() | "Split keys" >> beam.FlatMap(steps.key_splits, split)
        return {"pairs": keyed_pairs, "split": key_splits} | beam.CoGroupByKey() | beam.FlatMap(steps.split_by_key)


def _label_counts(item):
    user_id, user_pairs = item
    liked = sum(label for _, label in user_pairs.pairs)
    return user_id, len(user_pairs.pairs) - liked, liked


class _PairExamples(beam.PTransform):
    """Pair -> (destination, serialized example), with each track's popularity bucket (its rank in
    the liked training pairs among every track)."""

    def __init__(self, track_lines, settings: steps.JobSettings):
        super().__init__()
        self._track_lines, self._settings = track_lines, settings

    def expand(self, pairs):
        likes = (pairs | "Liked training pairs" >> beam.Filter(lambda pair: pair.split == "train" and pair.label == 1)
                 | beam.Map(lambda pair: (pair.track_id, 1)))
        buckets = ({"line": self._track_lines, "likes": likes} | "Likes by track" >> beam.CoGroupByKey()
                   | beam.Map(lambda item: (item[0], next(iter(item[1]["line"])), sum(item[1]["likes"])))
                   | beam.combiners.ToList() | "Rank tracks" >> beam.FlatMap(steps.popularity_buckets))
        by_track = pairs | "Pairs by track" >> beam.Map(lambda pair: (pair.track_id, pair))
        return ({"pairs": by_track, "bucket": buckets} | "Buckets by track" >> beam.CoGroupByKey()
                | beam.FlatMap(steps.pair_examples, self._settings))


def _write_examples(examples, uris: Mapping[str, str]):
    """Writes each destination's examples into `<artifact>/Split-<split>/`; returns their counts."""
    parts = examples | "By split" >> beam.Partition(lambda item, n: DESTINATIONS.index(item[0]), len(DESTINATIONS))
    counts = []
    for destination, part in zip(DESTINATIONS, parts):
        artifact, split = destination.split("/")
        prefix = storage.path(uris[artifact]) / split_folder(split) / EXAMPLES_PREFIX
        records = part | f"{destination} records" >> beam.Values()
        _ = records | f"Write {destination}" >> beam.io.WriteToTFRecord(
            str(prefix), file_name_suffix=".gz", compression_type=CompressionTypes.GZIP)
        counts.append(records | f"Count {destination}" >> beam.Map(lambda _, key=f"{artifact}.{split}": (key, 1)))
    return counts | "Written" >> beam.Flatten()


def _csv_line(report) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow([getattr(report, column) for column in REPORT_COLUMNS])
    return out.getvalue()


class _CountAndFirst(beam.CombineFn):
    """How many reports, and the first by line."""

    def create_accumulator(self):
        return 0, None

    def add_input(self, accumulator, report):
        return self.merge_accumulators([accumulator, (1, report)])

    def merge_accumulators(self, accumulators):
        n = sum(count for count, _ in accumulators)
        firsts = [first for _, first in accumulators if first is not None]
        return n, min(firsts, key=lambda report: report.line) if firsts else None

    def extract_output(self, accumulator):
        return accumulator


def _kind_json(item) -> str:
    (name, file, kind), (n, first) = item
    return json.dumps({"reports": name, "file": file, "kind": kind, "n": n, "line": first.line, "reason": first.reason})


# ---------------------------------------------------------------------------------------------
# Running it, and what it reports

@dataclasses.dataclass
class IngestionReport:
    """What the job counted: `counts` (recorded in MLMD and `ingestion_report.json`: table sizes,
    reports by fault kind, unknown ids, exclusions, examples per split) and `tallies` (everything
    it summed, with the rows read per table and the users with enough feedback), and per table
    file and fault kind, how many rows were not loaded with the first of them."""

    counts: Dict[str, int]
    tallies: Dict[str, int]
    malformed: Dict[str, Dict[str, tuple]]  # file -> kind -> (n, first MalformedRow)
    seconds: float = 0.0

    def rows_read(self, table: str) -> int:
        return self.tallies.get(ROWS_READ + table, 0)

    def format(self, files: Mapping[str, str]) -> str:
        """Per table file, rows read = loaded + malformed (+ unknown ids), then the exclusions and splits."""
        c = self.counts
        lines = [f"ingestion: users {c['users']}, tracks {c['tracks']}, interactions {c['interactions']}"]
        for name, file in files.items():
            malformed = sum(n for n, _ in self.malformed.get(file, {}).values())
            unknown = (f" + {c['unknown_user_rows']} unknown user + {c['unknown_track_rows']} unknown track"
                       if name == "interactions" else "")
            lines.append(f"  {file}: {self.rows_read(name)} rows read = {c[name]} loaded + {malformed} malformed{unknown}")
        lines.append("  " + ", ".join(f"{key} {value}" for key, value in c.items() if "." in key))
        return "\n".join(lines)


def run_ingestion(pipeline, source: TableSource, usable_tracks: Union[AudioIndex, Iterable[str]],
                  config: IngestionConfig, uris: Mapping[str, str]) -> IngestionReport:
    """Runs the job on `pipeline` (a `beam.Pipeline`, run on leaving its `with`), then checks that
    the dataset was usable (DatasetError or ValueError saying why not, as the in-memory loader and
    validation would) and writes `ingestion_report.json` into every artifact."""
    with pipeline as p:
        add_ingestion(p, source, usable_tracks, config, uris)
    tally_dir = storage.path(uris["interactions"]) / TALLY_DIR
    tallies = {record["name"]: record["n"] for record in _read_jsonl(tally_dir / COUNTS_FILE)}
    kinds = _read_jsonl(tally_dir / KINDS_FILE)
    tally_dir.rmtree()
    report = IngestionReport(_ingestion_counts(tallies, kinds, config), tallies, _malformed_by_file(kinds))
    _check_usable(report, source.files, config.feedback)
    for uri in uris.values():
        (storage.path(uri) / REPORT_FILE).write_text(json.dumps(report.counts, indent=2) + "\n")
    return report


def _read_jsonl(path: epath.Path) -> List[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _ingestion_counts(tallies: Dict[str, int], kinds: List[dict], config: IngestionConfig) -> Dict[str, int]:
    """The report's counts, in the order it has always listed them; exclusions and splits are
    listed even when none."""
    by_kind = {name: _sum_by_kind(record for record in kinds if record["reports"] == name) for name in ("malformed", "changed")}
    listed = [
        "users", "tracks", "interactions", "malformed_rows",
        *(f"malformed_rows.{kind}" for kind in by_kind["malformed"]),
        *(f"changed_values.{kind}" for kind in by_kind["changed"]),
        "unknown_user_rows", "unknown_track_rows",
        *(steps.user_branch_excluded(reason) for reason in (NO_LIKED_TRACKS, TOO_FEW_LIKED_TRACKS)),
        *(steps.audio_pairs_excluded(reason) for reason in (NO_USABLE_AUDIO, NO_USER_EMBEDDING, below_minimum(config.feedback))),
        *(destination.replace("/", ".") for destination in DESTINATIONS),
    ]
    values = {
        **tallies, "malformed_rows": sum(by_kind["malformed"].values()),
        **{f"malformed_rows.{kind}": n for kind, n in by_kind["malformed"].items()},
        **{f"changed_values.{kind}": n for kind, n in by_kind["changed"].items()},
    }
    return {name: int(values.get(name, 0)) for name in listed}


def _sum_by_kind(records: Iterable[dict]) -> Dict[str, int]:
    """Reports by fault kind over every file, sorted by kind (as `contract.count_by_kind` counts them)."""
    totals: Dict[str, int] = {}
    for record in records:
        totals[record["kind"]] = totals.get(record["kind"], 0) + record["n"]
    return dict(sorted(totals.items()))


def _malformed_by_file(kinds: List[dict]) -> Dict[str, Dict[str, tuple]]:
    out: Dict[str, Dict[str, tuple]] = {}
    for record in kinds:
        if record["reports"] == "malformed":
            first = MalformedRow(record["file"], record["line"], record["reason"], record["kind"])
            out.setdefault(record["file"], {})[record["kind"]] = (record["n"], first)
    return out


def _check_usable(report: IngestionReport, files: Mapping[str, str], feedback: FeedbackConfig) -> None:
    """Stops on a dataset the models cannot use, with the reasons the loader and validation give."""
    counts = report.counts
    for spec in contract.TABLES:
        if counts[spec.name] == 0:
            message = no_usable_rows_message(files[spec.name], report.rows_read(spec.name),
                                             report.malformed.get(files[spec.name], {}))
            if spec is contract.INTERACTIONS:
                well_formed = counts["unknown_user_rows"] + counts["unknown_track_rows"]
                message += (f"; {well_formed:,} well-formed rows, of which {counts['unknown_user_rows']:,} name unknown users "
                            f"and {counts['unknown_track_rows']:,} unknown tracks")
            raise DatasetError(message)
    if report.tallies.get("eligible_users", 0) == 0:
        raise ValueError("the dataset cannot be used: " + no_eligible_users(feedback))
    if sum(counts[f"audio_pairs.{split}"] for split in (TRAIN, EVAL, TEST)) == 0:
        raise no_pairs_left({reason: counts[steps.audio_pairs_excluded(reason)]
                             for reason in (NO_USABLE_AUDIO, NO_USER_EMBEDDING, below_minimum(feedback))})


# ---------------------------------------------------------------------------------------------
# In memory: for tests and notebooks

@dataclasses.dataclass
class IngestedData:
    interactions: Dict[str, Columns]
    user_examples: Dict[str, Columns]
    audio_pairs: Dict[str, Columns]
    counts: Dict[str, int]


def ingest(dataset: Dataset, usable_tracks: Iterable[str], config: IngestionConfig = IngestionConfig(),
           beam_args: Sequence[str] = DIRECT_RUNNER) -> IngestedData:
    """Runs the ingestion job on an in-memory Dataset (any adapter's) and reads back what it wrote."""
    with tempfile.TemporaryDirectory() as out:
        uris = {artifact: str(storage.path(out) / artifact) for artifact in ARTIFACT_SPLITS}
        report = run_ingestion(beam.Pipeline(options=PipelineOptions(list(beam_args))), DatasetTables(dataset),
                               usable_tracks, config, uris)
        read = {artifact: {split: read_examples(uris[artifact], split) for split in splits}
                for artifact, splits in ARTIFACT_SPLITS.items()}
    return IngestedData(read["interactions"], read["user_examples"], read["audio_pairs"], report.counts)


def read_examples(uri, split: str) -> Columns:
    """A split of an Examples artifact the job wrote, as columns (histories as 2-d arrays)."""
    pattern = str(storage.path(uri) / split_folder(split) / "*")
    return tf_examples.read_tf_examples(pattern, list_features=HISTORY_FEATURES)


def write_examples(uri, splits: Mapping[str, Columns]) -> None:
    """Writes columns as the splits of an Examples artifact (`<uri>/Split-<name>/`)."""
    for split, columns in splits.items():
        folder = storage.path(uri) / split_folder(split)
        folder.mkdir(parents=True, exist_ok=True)
        tf_examples.write_tf_examples(columns, folder / f"{EXAMPLES_PREFIX}-00000-of-00001.gz")
