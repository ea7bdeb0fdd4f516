"""The release report: what a week's release did, for the people who ship it.

  report.md / index.html   the model version used; coverage (users with new tracks, tracks that
                           reach nobody); score distributions; counts per genre and per
                           demographic slice; the quarantined files
  report.json              the same figures, for dashboards and tests
  scores.png, inbox_sizes.png, genres.png
"""

from __future__ import annotations

import dataclasses
import html
import json
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from musicrec import storage
from musicrec.components.audio_features.transforms import QUARANTINE_FILE, read_jsonl
from musicrec.components.listening_data.steps import age_bucket
from musicrec.components.release import transforms
from musicrec.data import contract
from musicrec.data.loading import Dataset
from musicrec.names import GENRE, UNKNOWN

# Demographic columns with more distinct values than this are not sliced (ids, free text).
MAX_SLICE_VALUES = 30
QUANTILES = (0.0, 0.1, 0.5, 0.9, 1.0)


@dataclasses.dataclass
class ReleaseReportContent:
    summary: dict  # release.json of the lists
    figures: dict  # coverage and counts
    tables: Dict[str, pd.DataFrame]  # titled tables, in report order
    quarantined: List[dict]
    rejected: List[dict]  # rows of the tracks table that were not loaded: line, kind, reason
    plots: Dict[str, object]  # file name -> function(path) drawing it

    def summary_lines(self) -> List[str]:
        s, f = self.summary, self.figures
        return [
            f"Model: `cold_start_recommender` version {s['model_version']} ({s['model_dir']}), {s['ranking']} ranking "
            f"over {s['users_in_model']:,} users; top {s['lists']['top_users']} users per track, inboxes of at most "
            f"{s['lists']['inbox_size']} tracks, at most {s['lists']['artist_cap']} per artist.",
            f"Tracks: {f['rows_read']:,} rows in the release's tracks table, {f['rows_rejected']:,} rejected, "
            f"{f['tracks_ranked']:,} tracks ranked, {f['tracks_quarantined']:,} quarantined; "
            f"{f['tracks_in_no_inbox']:,} ranked tracks reach nobody (in no inbox).",
            f"Coverage: {f['users_reached']:,} of {s['users_in_model']:,} users ({f['coverage']:.1%}) have at least one "
            f"new track; inbox sizes: mean {f['inbox_size_mean']:.1f}, median {f['inbox_size_median']:.0f}.",
            f"Throughput: {s['tracks_per_minute']:,.1f} tracks/min, {s['users_scored_per_second']:,.0f} users scored/s "
            f"({s['seconds']:.1f} s).",
        ]

    def item_sections(self) -> Dict[str, List[str]]:
        """The lists of files and rows that did not make it, one line each."""
        return {
            "Rejected rows of the tracks table": [f"line {r['line']}: {r['reason']}" for r in self.rejected],
            "Quarantined files": [f"{q['track_id']} [{q['status']}] {q['path']}: {q['detail']}" for q in self.quarantined],
        }

    def markdown(self) -> str:
        lines = ["# Release report\n"] + [line + "\n" for line in self.summary_lines()]
        for title, table in self.tables.items():
            lines += [f"## {title}\n", table.to_markdown(index=False, floatfmt=".3f") + "\n"]
        for title, items in self.item_sections().items():
            lines += [f"## {title}\n"] + ([f"- {item}" for item in items] or ["none"]) + [""]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        body = ["<h1>Release report</h1>"] + [f"<p>{html.escape(line)}</p>" for line in self.summary_lines()]
        body += [f"<img src='{name}' alt='{name}'>" for name in self.plots]
        for title, table in self.tables.items():
            body.append(f"<h2>{html.escape(title)}</h2>" + table.to_html(index=False, float_format="%.3f"))
        for title, items in self.item_sections().items():
            entries = "".join(f"<li>{html.escape(item)}</li>" for item in items) or "<li>none</li>"
            body.append(f"<h2>{html.escape(title)}</h2><ul>{entries}</ul>")
        return "<html><head><meta charset='utf-8'><title>musicrec release</title></head><body>" + "".join(body) + "</body></html>"

    def write(self, out_dir) -> None:
        out = storage.path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(self.markdown())
        (out / "index.html").write_text(self.html())
        tables = {title: table.to_dict(orient="records") for title, table in self.tables.items()}
        (out / "report.json").write_text(json.dumps(
            {"summary": self.summary, "figures": self.figures, "tables": tables, "quarantined": self.quarantined,
             "rejected_rows": self.rejected},
            indent=2, default=_json_value) + "\n")
        for name, draw in self.plots.items():
            draw(out / name)


def _json_value(value):
    return value.item() if isinstance(value, np.generic) else str(value)


def load_users(root, adapter: str) -> pd.DataFrame:
    """The users table of the training dataset (for demographic slices): only that table for the
    plain layout; the whole dataset through another adapter."""
    from musicrec.data.adapters import PLAIN, load_with_adapter
    from musicrec.data.loading import read_table, table_path

    if adapter == PLAIN:
        return read_table(table_path(storage.path(root), contract.USERS.name), contract.USERS).frame
    return load_with_adapter(root, adapter).users


def build_report(release_uri: str, quarantine_uri: str, release: Dataset,
                 users: Optional[pd.DataFrame]) -> ReleaseReportContent:
    """`release`: the new tracks as loaded (its rejected rows are reported); `users`: the training
    dataset's users table, for the demographic slices (None: no slices)."""
    tracks = release.tracks
    rejected = [{"line": r.line, "kind": r.kind, "reason": r.reason} for r in release.malformed]
    summary = json.loads((storage.path(release_uri) / "release.json").read_text())
    ranked = transforms.read_output(release_uri, transforms.TRACK_USERS)
    inbox = transforms.read_output(release_uri, transforms.USER_INBOX)
    embedded = set(transforms.read_output(release_uri, transforms.TRACK_EMBEDDINGS)["track_id"])
    quarantined = sorted(read_jsonl(storage.path(quarantine_uri) / QUARANTINE_FILE), key=lambda q: q["track_id"])
    sizes = inbox.groupby("user_id").size()
    in_no_inbox = sorted(embedded - set(inbox["track_id"]))
    figures = {
        "rows_read": int(release.rows_read.get("tracks", len(tracks) + len(rejected))), "rows_rejected": len(rejected),
        "tracks_in_table": len(tracks), "tracks_ranked": len(embedded), "tracks_quarantined": len(quarantined),
        "tracks_in_no_inbox": len(in_no_inbox), "tracks_in_no_inbox_examples": in_no_inbox[:20],
        "users_reached": int(len(sizes)), "coverage": len(sizes) / max(summary["users_in_model"], 1),
        "inbox_size_mean": float(sizes.mean()) if len(sizes) else 0.0,
        "inbox_size_median": float(sizes.median()) if len(sizes) else 0.0,
    }
    tables = {"Score distributions (cosine)": _score_table(ranked, inbox)}
    if GENRE in tracks.columns:
        tables["Per genre"] = _genre_table(tracks, embedded, ranked, inbox)
    if users is not None:
        from musicrec.serving.scann_index import version_table

        tables["Per demographic slice"] = _demographic_table(users, version_table(summary["model_dir"])[0], sizes)
    plots = {"scores.png": lambda path: _plot_scores(ranked, inbox, path),
             "inbox_sizes.png": lambda path: _plot_inbox_sizes(sizes, summary["lists"]["inbox_size"], path)}
    if "Per genre" in tables:
        plots["genres.png"] = lambda path: _plot_genres(tables["Per genre"], path)
    return ReleaseReportContent(summary, figures, tables, quarantined, rejected, plots)


def _score_table(ranked: pd.DataFrame, inbox: pd.DataFrame) -> pd.DataFrame:
    top = ranked[ranked["rank"] == 1]["score"]
    rows = [("picked users (every track's top users)", ranked["score"]), ("best user per track", top),
            ("inbox entries", inbox["score"])]
    return pd.DataFrame([{"scores": name, "count": len(values),
                          **{f"q{int(q * 100)}": float(values.quantile(q)) if len(values) else np.nan for q in QUANTILES}}
                         for name, values in rows])


def _genre_table(tracks: pd.DataFrame, embedded, ranked: pd.DataFrame, inbox: pd.DataFrame) -> pd.DataFrame:
    genre = tracks.set_index("track_id")[GENRE].fillna(UNKNOWN).replace("", UNKNOWN)
    frame = pd.DataFrame({"genre": genre})
    frame["ranked"] = frame.index.isin(list(embedded))
    placements = inbox.groupby("track_id").size()
    frame["inbox_entries"] = placements.reindex(frame.index).fillna(0).astype(int)
    frame["in_no_inbox"] = frame["ranked"] & (frame["inbox_entries"] == 0)
    best = ranked[ranked["rank"] == 1].set_index("track_id")["score"]
    frame["best_score"] = best.reindex(frame.index)
    table = frame.groupby("genre").agg(tracks=("ranked", "size"), ranked=("ranked", "sum"),
                                       inbox_entries=("inbox_entries", "sum"), tracks_in_no_inbox=("in_no_inbox", "sum"),
                                       median_best_score=("best_score", "median"))
    return table.reset_index()


def _demographic_table(users: pd.DataFrame, model_users: np.ndarray, sizes: pd.Series) -> pd.DataFrame:
    """Coverage per value of each demographic column, over the users the model can reach (those in
    its user table; a user the table lacks cannot get new tracks, and is not counted)."""
    users = users.set_index("user_id").reindex(model_users)
    reached = sizes.reindex(users.index).fillna(0)
    rows = []
    for column in users.columns:
        if column == "age":
            values = pd.to_numeric(users[column], errors="coerce").astype(float).map(age_bucket)
        else:
            values = users[column].astype(object).where(users[column].notna(), UNKNOWN)
        if values.nunique() > MAX_SLICE_VALUES:
            continue
        for value, members in values.groupby(values).groups.items():
            got = reached.loc[members]
            rows.append({"column": "age_bucket" if column == "age" else column, "value": str(value), "users": len(members),
                         "with_new_tracks": int((got > 0).sum()), "coverage": float((got > 0).mean()),
                         "mean_inbox_size": float(got.mean())})
    return pd.DataFrame(rows, columns=["column", "value", "users", "with_new_tracks", "coverage", "mean_inbox_size"])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> None:
    with storage.path(path).open("wb") as f:
        fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)


def _plot_scores(ranked: pd.DataFrame, inbox: pd.DataFrame, path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, values in (("picked users", ranked["score"]), ("inbox entries", inbox["score"])):
        if len(values):
            ax.hist(values, bins=40, alpha=0.6, label=name)
    ax.set_xlabel("cosine(AE, UE)")
    ax.set_ylabel("pairs")
    ax.legend()
    _save(fig, path)


def _plot_inbox_sizes(sizes: pd.Series, inbox_size: int, path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(sizes, bins=np.arange(0.5, inbox_size + 1.5))
    ax.set_xlabel("new tracks in the inbox (users with at least one)")
    ax.set_ylabel("users")
    _save(fig, path)


def _plot_genres(table: pd.DataFrame, path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(table["genre"], table["inbox_entries"])
    ax.set_ylabel("inbox entries")
    ax.tick_params(axis="x", rotation=45)
    _save(fig, path)
