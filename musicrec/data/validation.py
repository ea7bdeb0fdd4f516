"""`musicrec validate-data`: loads a dataset, checks it against the contract, reports everything.

The report counts what the models will see and, separately, every row, value,
user and audio file that will be left out or changed and why: per table file,
rows read = rows loaded + malformed rows (by fault kind) + interactions naming
unknown users or tracks. It is printed as a summary and written as files (JSON
summary, plus CSV lists of malformed rows, changed values, excluded users and
quarantined audio). `ValidationReport.fatal` lists the reasons the
dataset cannot be used at all; the CLI exits non-zero when there are any.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from typing import Dict, List, Optional, Union

import numpy as np
import pandas as pd
from etils import epath
from tqdm import tqdm

from musicrec import storage
from musicrec.audio import decode
from musicrec.data import contract
from musicrec.data.feedback import feedback_labels
from musicrec.data.loading import Dataset, DatasetError, load_dataset


@dataclasses.dataclass
class AudioCheck:
    track_id: str
    audio_path: str
    status: str  # "ok" or one of decode.AUDIO_STATUSES
    detail: str = ""


@dataclasses.dataclass
class ValidationReport:
    dataset: str
    counts: Dict[str, int]
    events_by_type: Dict[str, int]
    feedback_per_user: Dict[str, Dict[str, float]]
    conflicting_feedback_pairs: int
    eligible_users: int
    excluded_users: pd.DataFrame  # user_id, liked, disliked, reason
    malformed_rows: pd.DataFrame  # file, line, reason, kind
    changed_values: pd.DataFrame  # file, line, reason, kind: rows loaded with a value set to missing or normalised
    rows: Dict[str, Dict[str, int]]  # per table file: read, loaded, malformed (+ unknown_user, unknown_track)
    unknown_ids: Dict[str, object]
    missing_values: Dict[str, int]  # "table.column": loaded rows with the optional value missing
    audio: Optional[List[AudioCheck]]  # None when audio was not checked
    missing_demographics: List[str]
    fatal: List[str]

    @property
    def audio_counts(self) -> Dict[str, int]:
        counts = collections.Counter(a.status for a in self.audio or [])
        return {status: counts.get(status, 0) for status in ("ok",) + decode.AUDIO_STATUSES}

    @property
    def usable(self) -> bool:
        return not self.fatal

    def summary(self) -> dict:
        return {
            "dataset": self.dataset,
            "counts": self.counts,
            "events_by_type": self.events_by_type,
            "feedback_per_user": self.feedback_per_user,
            "conflicting_feedback_pairs": self.conflicting_feedback_pairs,
            "eligible_users": self.eligible_users,
            "excluded_users": len(self.excluded_users),
            "rows": self.rows,
            "malformed_rows": len(self.malformed_rows),
            "malformed_rows_by_kind": contract.count_by_kind(self.malformed_rows["kind"]),
            "changed_values": len(self.changed_values),
            "changed_values_by_kind": contract.count_by_kind(self.changed_values["kind"]),
            "missing_values": self.missing_values,
            "unknown_ids": self.unknown_ids,
            "audio": self.audio_counts if self.audio is not None else "not checked",
            "missing_demographics": self.missing_demographics,
            "fatal": self.fatal,
        }

    def write(self, report_dir) -> epath.Path:
        report_dir = storage.path(report_dir)
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / "validation_summary.json").write_text(json.dumps(self.summary(), indent=2) + "\n")
        quarantined = [dataclasses.asdict(a) for a in self.audio or [] if a.status != "ok"]
        tables = {
            "malformed_rows.csv": self.malformed_rows, "changed_values.csv": self.changed_values,
            "excluded_users.csv": self.excluded_users,
            "audio_quarantine.csv": pd.DataFrame(quarantined, columns=["track_id", "audio_path", "status", "detail"]),
        }
        for name, table in tables.items():
            (report_dir / name).write_text(table.to_csv(index=False))
        return report_dir

    def format(self) -> str:
        c = self.counts
        lines = [
            f"Dataset {self.dataset}",
            f"  users {c['users']}, tracks {c['tracks']}, artists {c['artists']}, albums {c['albums']}, "
            f"interactions {c['interactions']}",
            "  events: " + ", ".join(f"{k} {v}" for k, v in self.events_by_type.items()),
        ]
        for kind, stats in self.feedback_per_user.items():
            lines.append(f"  {kind} per user: min {stats['min']:.0f}, median {stats['median']:.0f}, max {stats['max']:.0f}")
        lines.append(
            f"  users eligible for the audio branch: {self.eligible_users}; excluded: {len(self.excluded_users)} "
            f"(below the minimum liked/disliked counts)"
        )
        lines.append(f"  (user, track) pairs with conflicting feedback, resolved: {self.conflicting_feedback_pairs}")
        for file, n in self.rows.items():
            unknown = f" + {n['unknown_user']} unknown user + {n['unknown_track']} unknown track" if "unknown_user" in n else ""
            lines.append(f"  {file}: {n['read']} rows read = {n['loaded']} loaded + {n['malformed']} malformed{unknown}")
        lines += _listed("malformed rows (not loaded)", self.malformed_rows, "malformed_rows.csv")
        lines += _listed("values changed, rows kept", self.changed_values, "changed_values.csv")
        missing = {k: v for k, v in self.missing_values.items() if v}
        if missing:
            lines.append("  missing values: " + ", ".join(f"{k} {v}" for k, v in missing.items()))
        u = self.unknown_ids
        lines.append(
            f"  interactions with unknown ids (skipped): {u['unknown_user_rows']} unknown user, "
            f"{u['unknown_track_rows']} unknown track"
        )
        if self.audio is not None:
            lines.append("  audio: " + ", ".join(f"{k} {v}" for k, v in self.audio_counts.items()))
            for check in [a for a in self.audio if a.status != "ok"][:10]:
                lines.append(f"    {check.track_id} [{check.status}] {check.detail}")
        if self.missing_demographics:
            lines.append(f"  demographic columns absent: {', '.join(self.missing_demographics)}")
        for reason in self.fatal:
            lines.append(f"  UNUSABLE: {reason}")
        return "\n".join(lines)


def validate_dataset(
    dataset: Union[Dataset, storage.Location],
    feedback: contract.FeedbackConfig = contract.FeedbackConfig(),
    min_audio_seconds: float = 3.0,
    max_audio_seconds: float = 30.0,
    check_audio: bool = True,
) -> ValidationReport:
    """Checks a dataset (loaded, or a folder). Raises DatasetError only when it cannot even be loaded."""
    if not isinstance(dataset, Dataset):
        dataset = load_dataset(dataset)
    labels = feedback_labels(dataset.interactions, feedback)
    counts = labels.counts_per_user().reindex(dataset.users["user_id"], fill_value=0)
    eligible = labels.eligible_users(feedback)
    excluded = counts[~counts.index.isin(eligible)].reset_index()
    excluded["reason"] = (
        f"fewer than {feedback.min_liked} liked or {feedback.min_disliked} disliked tracks"
    )
    audio = check_all_audio(dataset, min_audio_seconds, max_audio_seconds) if check_audio else None
    report = ValidationReport(
        dataset=str(dataset.root),
        counts={
            "users": len(dataset.users),
            "tracks": len(dataset.tracks),
            "artists": int(dataset.tracks["artist_id"].nunique()),
            "albums": int(dataset.tracks["album_id"].nunique()),
            "interactions": len(dataset.interactions),
        },
        events_by_type=_events_by_type(dataset.interactions["event"]),
        feedback_per_user={k: _stats(counts[k]) for k in ("liked", "disliked")},
        conflicting_feedback_pairs=labels.conflicts,
        eligible_users=len(eligible),
        excluded_users=excluded,
        malformed_rows=_reports_frame(dataset.malformed),
        changed_values=_reports_frame(dataset.changed_values),
        rows=_row_accounting(dataset),
        unknown_ids={
            "unknown_user_rows": dataset.unknown_user_rows,
            "unknown_track_rows": dataset.unknown_track_rows,
            "unknown_user_examples": list(dataset.unknown_user_examples),
            "unknown_track_examples": list(dataset.unknown_track_examples),
        },
        missing_values=_missing_values(dataset),
        audio=audio,
        missing_demographics=[c for c in contract.STANDARD_DEMOGRAPHICS if c not in dataset.users.columns],
        fatal=[],
    )
    report.fatal = _fatal_problems(report, feedback)
    return report


def _stats(values: pd.Series) -> Dict[str, float]:
    if values.empty:
        return {"min": 0.0, "median": 0.0, "max": 0.0}
    return {"min": float(values.min()), "median": float(np.median(values)), "max": float(values.max())}


def check_all_audio(dataset: Dataset, min_seconds: float, max_seconds: Optional[float]) -> List[AudioCheck]:
    """Decodes the first `max_seconds` of every track, classifying the unusable ones."""
    checks = []
    files = zip(dataset.tracks["audio_path"], dataset.audio_files())
    for audio_path, file in tqdm(files, total=len(dataset.tracks), desc="checking audio", unit="file", mininterval=5):
        try:
            file.load(max_seconds=max_seconds, min_seconds=min_seconds)
            checks.append(AudioCheck(file.track_id, audio_path, "ok"))
        except decode.AudioError as e:
            checks.append(AudioCheck(file.track_id, audio_path, e.status, e.detail))
    return checks


def _reports_frame(reports) -> pd.DataFrame:
    return pd.DataFrame([dataclasses.asdict(r) for r in reports], columns=["file", "line", "reason", "kind"])


def _listed(title: str, reports: pd.DataFrame, file_name: str, limit: int = 10) -> List[str]:
    kinds = ", ".join(f"{k} {n}" for k, n in contract.count_by_kind(reports["kind"]).items())
    lines = [f"  {title}: {len(reports)}" + (f" ({kinds})" if kinds else "")]
    lines += [f"    {r.file}:{r.line}: {r.reason}" for r in reports.head(limit).itertuples()]
    if len(reports) > limit:
        lines.append(f"    ... {len(reports) - limit} more in {file_name}")
    return lines


def _row_accounting(dataset: Dataset) -> Dict[str, Dict[str, int]]:
    """Per table file whose rows the adapter counted: read = loaded + malformed (+ unknown ids)."""
    malformed = collections.Counter(m.file for m in dataset.malformed)
    rows = {}
    for name, file in dataset.table_files.items():
        if name not in dataset.rows_read:
            continue
        loaded = len(getattr(dataset, name))
        rows[file] = {"read": dataset.rows_read[name], "loaded": loaded, "malformed": malformed[file]}
        if name == "interactions":
            rows[file].update(unknown_user=dataset.unknown_user_rows, unknown_track=dataset.unknown_track_rows)
    return rows


def _missing_values(dataset: Dataset) -> Dict[str, int]:
    """Loaded rows whose optional value is missing (blank, or set to missing as invalid), per column."""
    optional = {
        "users": dataset.demographic_columns,
        "tracks": [c.name for c in contract.TRACKS.columns if not c.required and c.name in dataset.tracks],
    }
    return {
        f"{table}.{name}": int((getattr(dataset, table)[name].isna() | (getattr(dataset, table)[name] == "")).sum())
        for table, names in optional.items() for name in names
    }


def _events_by_type(events: pd.Series) -> Dict[str, int]:
    """Counts of every known event type, then of each unknown one (named `unknown:<type>`)."""
    counts = events.value_counts()
    known = {e: int(counts.get(e, 0)) for e in contract.EVENT_TYPES}
    return {**known, **{f"unknown:{e}": int(n) for e, n in counts.items() if e not in contract.EVENT_TYPES}}


def no_eligible_users(feedback: contract.FeedbackConfig) -> str:
    """Why a dataset without a user with enough feedback cannot be used."""
    return (
        f"no user has at least {feedback.min_liked} liked and {feedback.min_disliked} disliked tracks "
        f"(liked events: {', '.join(feedback.liked_events)}; disliked: {', '.join(feedback.disliked_events)})"
    )


def _fatal_problems(report: ValidationReport, feedback: contract.FeedbackConfig) -> List[str]:
    fatal = []
    if report.eligible_users == 0:
        fatal.append(no_eligible_users(feedback))
    if report.audio is not None and report.audio_counts["ok"] == 0:
        fatal.append("no track has usable audio (see audio_quarantine.csv)")
    return fatal


__all__ = ["ValidationReport", "validate_dataset", "check_all_audio", "no_eligible_users", "DatasetError", "AudioCheck"]
