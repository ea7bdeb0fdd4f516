"""The offline check of the whole release loop, on a generated (or any plain-layout) service.

  1. Hold back the newest tracks by release date as "this week's releases": their rows leave the
     training folder, their tracks table and audio form a release folder, and their feedback is
     kept aside as the outcomes nobody has seen.
  2. Train, evaluate and push with the training pipeline on the rest.
  3. Run the release job on the held-back tracks.
  4. Score the inboxes against the outcomes, beside two baselines whose lists go through the same
     list builder (`components/release/transforms.Inboxes`, same top-users and artist cap):
       popularity by genre: a track's users ranked by the share of their training likes in its genre
       random: users in random order
     Metrics, over the users the model can reach and the outcomes' (user, track) labels:
       inbox hit rate   share of users with a liked new track whose inbox holds one
       inbox recall     liked new tracks in the inbox / liked new tracks, averaged over those users
       track AUC        per new track, liked vs disliked users ranked by score, averaged over tracks
                        with both (for the model: cos(AE, UE) over the served user table)
     on the outcome pairs of ranked tracks and of users in the model's table; the others (pairs on
     quarantined tracks, users the model does not know) are counted and left out of every metric.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import pathlib
import shutil
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

import musicrec
from musicrec.components.release import transforms
from musicrec.data.contract import FeedbackConfig
from musicrec.data.feedback import feedback_labels
from musicrec.data.loading import load_dataset, load_release_tracks
from musicrec.names import GENRE, UNKNOWN
from musicrec.pipeline.config import PipelineConfig
from musicrec.pipeline.release import LISTS_DIR, ReleaseConfig, run_release
from musicrec.pipeline.runner import run_local

TRAIN_DIR, RELEASE_DIR, OUTCOMES_FILE, RUN_DIR = "train", "release", "outcomes.csv", "run"
METHODS = ("musicrec", "popularity_by_genre", "random")


@dataclasses.dataclass(frozen=True)
class ReleaseCheckConfig:
    holdout: float = 0.1  # the newest share of tracks, by release date, held back as the releases
    lists: transforms.ListsConfig = transforms.ListsConfig(top_users=100, inbox_size=10, artist_cap=2)
    seed: int = 0  # the random baseline's draw and the baselines' tie-breaks

    def __post_init__(self):
        if not 0 < self.holdout < 1:
            raise ValueError(f"holdout must be a share between 0 and 1; got {self.holdout}")


def newest_tracks(tracks: pd.DataFrame, share: float) -> List[str]:
    """The newest `share` of tracks by release date (ties and undated tracks: by track id, undated last)."""
    if "release_date" not in tracks.columns or tracks["release_date"].isna().all():
        raise ValueError("the release check holds back the newest tracks, but the tracks table has no release dates")
    ordered = tracks.assign(date=pd.to_datetime(tracks["release_date"], errors="coerce")).sort_values(
        ["date", "track_id"], ascending=[False, True], na_position="last")
    return ordered["track_id"].head(max(1, int(round(share * len(tracks))))).tolist()


def split_service(dataset_dir, out_dir, share: float) -> Tuple[pathlib.Path, pathlib.Path, pd.DataFrame]:
    """Writes `out/train` (the service without the newest tracks' rows) and `out/release` (their
    tracks table and audio); returns both folders and the held-back interactions. Table lines are
    copied as written (malformed ones included, so the training run quarantines what it would have);
    audio is hard-linked where the file system allows (the pipeline opens no audio outside a
    dataset folder, so links across would be quarantined)."""
    source, out = pathlib.Path(dataset_dir), pathlib.Path(out_dir)
    dataset = load_dataset(source)
    held = set(newest_tracks(dataset.tracks, share))
    train, release = out / TRAIN_DIR, out / RELEASE_DIR
    for folder in (train, release):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    shutil.copy(source / "users.csv", train / "users.csv")
    _split_lines(source / "tracks.csv", "track_id", held, keep=train / "tracks.csv", held_to=release / "tracks.csv")
    _split_lines(source / "interactions.csv", "track_id", held, keep=train / "interactions.csv")
    audio = dict(zip(dataset.tracks["track_id"], dataset.tracks["audio_path"]))
    for track_id, audio_path in audio.items():
        _link(source / audio_path, (release if track_id in held else train) / audio_path)
    outcomes = dataset.interactions[dataset.interactions["track_id"].isin(held)]
    return train, release, outcomes.reset_index(drop=True)


def _split_lines(path: pathlib.Path, key: str, held: set, keep: pathlib.Path, held_to: Optional[pathlib.Path] = None):
    lines = path.read_bytes().split(b"\n")
    header = [name.strip() for name in next(csv.reader([lines[0].decode("utf-8-sig")]))]
    column = header.index(key)
    kept, moved = [lines[0]], [lines[0]]
    for line in lines[1:]:
        if not line:
            continue
        fields = next(csv.reader(io.StringIO(line.decode("utf-8", "replace"))), [])
        (moved if len(fields) > column and fields[column] in held else kept).append(line)
    keep.write_bytes(b"\n".join(kept) + b"\n")
    if held_to is not None:
        held_to.write_bytes(b"\n".join(moved) + b"\n")


def _link(source: pathlib.Path, target: pathlib.Path) -> None:
    if not source.exists():
        return  # a missing file stays missing: the pipeline quarantines it
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy(source, target)


def run_release_check(dataset_dir, out_dir, training: PipelineConfig, config: ReleaseCheckConfig = ReleaseCheckConfig(),
                      feedback: FeedbackConfig = FeedbackConfig()) -> dict:
    """Splits, trains, releases and scores; writes release_check.json and .md into `out_dir`."""
    out = pathlib.Path(out_dir)
    train_dir, release_dir, outcomes = split_service(dataset_dir, out, config.holdout)
    logging.info("%s release check: %d tracks held back as the releases, %d of their interactions as outcomes",
                 musicrec.LOG_TAG, len(load_release_tracks(release_dir).tracks), len(outcomes))
    training = dataclasses.replace(training, dataset_dir=str(train_dir), run_dir=str(out / RUN_DIR))
    trained = run_local(training)
    if not trained["served"]["pushed"]:
        raise ValueError("the trained model was not blessed, so there is no pushed model to release with; "
                         "see the evaluation in " + str(training.run_dir))
    released = run_release(training, ReleaseConfig(tracks_dir=str(release_dir), name="check",
                                                   **dataclasses.asdict(config.lists)))
    report = score_release(pathlib.Path(released["published"]) / LISTS_DIR, train_dir, release_dir, outcomes,
                           config, feedback)
    report["run"] = {"published": released["published"], "model_version": released["summary"]["model_version"]}
    (out / "release_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "release_check.md").write_text(format_release_check(report) + "\n")
    return report


def score_release(lists_dir: pathlib.Path, train_dir, release_dir, outcomes: pd.DataFrame, config: ReleaseCheckConfig,
                  feedback: FeedbackConfig = FeedbackConfig()) -> dict:
    """Scores the release's inboxes and per-track rankings against the outcomes, beside the baselines."""
    from musicrec.serving.graphs import normalised
    from musicrec.serving.scann_index import version_table

    summary = json.loads((lists_dir / "release.json").read_text())
    user_ids, user_vectors = version_table(summary["model_dir"])
    embeddings = transforms.read_output(lists_dir, transforms.TRACK_EMBEDDINGS)
    track_ids = embeddings["track_id"].tolist()
    tracks = load_release_tracks(release_dir).tracks.set_index("track_id").loc[track_ids]
    model_scores = normalised(np.stack(embeddings["audio_embedding"].to_numpy())) @ user_vectors.T
    scores = {"musicrec": model_scores,
              "popularity_by_genre": genre_affinity(load_dataset(train_dir), tracks, user_ids, feedback),
              "random": np.random.default_rng(config.seed).random(model_scores.shape)}
    labels, left_out = scorable_outcomes(feedback_labels(outcomes, feedback).labels, track_ids, user_ids)
    rng = np.random.default_rng(config.seed)
    inboxes = {"musicrec": transforms.read_output(lists_dir, transforms.USER_INBOX)}
    for name in METHODS[1:]:
        inboxes[name] = baseline_inbox(scores[name], track_ids, user_ids, dict(zip(track_ids, tracks["artist_id"])),
                                       config.lists, rng)
    rows = {name: {**inbox_metrics(inboxes[name], labels),
                   "track_auc": mean_track_auc(scores[name], track_ids, user_ids, labels)} for name in METHODS}
    return {"config": dataclasses.asdict(config), "tracks": len(track_ids), "users": len(user_ids),
            "outcome_pairs": len(labels), "outcome_pairs_left_out": left_out, "methods": rows}


def scorable_outcomes(labels: pd.DataFrame, track_ids: List[str], user_ids: np.ndarray) -> Tuple[pd.DataFrame, dict]:
    """The outcome pairs every method can be scored on (a ranked track, a user in the model's
    table), and how many were left out for each reason."""
    ranked = labels["track_id"].isin(track_ids)
    known = labels["user_id"].isin(user_ids)
    left_out = {"on_tracks_not_ranked (quarantined audio)": int((~ranked).sum()),
                "of_users_not_in_the_model": int((ranked & ~known).sum())}
    return labels[ranked & known].reset_index(drop=True), left_out


def genre_affinity(train, tracks: pd.DataFrame, user_ids: np.ndarray, feedback: FeedbackConfig) -> np.ndarray:
    """[tracks, users]: each user's share of training likes in each new track's genre (0 without a genre)."""
    liked = feedback_labels(train.interactions, feedback).labels.query("label == 1")
    genre_of = train.tracks.set_index("track_id")[GENRE] if GENRE in train.tracks.columns else pd.Series(dtype=object)
    # Likes of tracks without a genre count in the denominator, as their own "unknown" genre.
    shares = pd.crosstab(liked["user_id"], liked["track_id"].map(genre_of).fillna(UNKNOWN), normalize="index")
    shares = shares.reindex(index=user_ids, fill_value=0.0)
    track_genres = tracks[GENRE] if GENRE in tracks.columns else pd.Series(np.nan, index=tracks.index)
    return np.stack([shares[g].to_numpy() if g in shares.columns else np.zeros(len(user_ids)) for g in track_genres])


def baseline_inbox(scores: np.ndarray, track_ids: List[str], user_ids: np.ndarray, artists: Dict[str, str],
                   lists: transforms.ListsConfig, rng: np.random.Generator) -> pd.DataFrame:
    """A baseline's inboxes: its top users per track (ties in random order, not the table's),
    through the release job's own list builder."""
    import tempfile

    import apache_beam as beam

    k = min(lists.top_users, len(user_ids))
    top = np.lexsort((rng.random(scores.shape), -scores), axis=1)[:, :k]
    ranked = [{"track_id": t, "user_ids": user_ids[rows].tolist(), "scores": scores[i, rows].tolist()}
              for i, (t, rows) in enumerate(zip(track_ids, top))]
    with tempfile.TemporaryDirectory() as folder:
        with beam.Pipeline() as pipeline:
            transforms.write_lists(pipeline | beam.Create(ranked), artists, lists, folder, embeddings=False)
        return transforms.read_output(folder, transforms.USER_INBOX)


def inbox_metrics(inbox: pd.DataFrame, labels: pd.DataFrame) -> dict:
    """Hit rate and recall of the inboxes over the users with a liked pair in `labels` (scorable ones)."""
    liked = labels[labels["label"] == 1]
    hits = liked.merge(inbox[["user_id", "track_id"]], on=["user_id", "track_id"], how="left", indicator=True)
    per_user = hits.assign(hit=hits["_merge"] == "both").groupby("user_id")["hit"].agg(["any", "mean"])
    return {"users_with_liked_new_tracks": len(per_user), "inbox_hit_rate": float(per_user["any"].mean()),
            "inbox_recall": float(per_user["mean"].mean()), "users_with_inbox": int(inbox["user_id"].nunique())}


def mean_track_auc(scores: np.ndarray, track_ids: List[str], user_ids: np.ndarray, labels: pd.DataFrame) -> float:
    column = {u: i for i, u in enumerate(user_ids)}
    row = {t: i for i, t in enumerate(track_ids)}
    aucs = []
    for track, pairs in labels.groupby("track_id"):
        if pairs["label"].nunique() == 2:
            aucs.append(roc_auc_score(pairs["label"], scores[row[track], pairs["user_id"].map(column).to_numpy()]))
    return float(np.mean(aucs)) if aucs else float("nan")


def format_release_check(report: dict) -> str:
    c, lists = report["config"], report["config"]["lists"]
    left_out = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in report["outcome_pairs_left_out"].items())
    lines = [f"Release check: {report['tracks']} new tracks (newest {c['holdout']:.0%} by release date), "
             f"{report['users']} users, {report['outcome_pairs']} held-back feedback pairs scored (left out: {left_out}); "
             f"top {lists['top_users']} users per track, inboxes of {lists['inbox_size']}, at most "
             f"{lists['artist_cap']} per artist.", "",
             "| method | inbox hit rate | inbox recall | track AUC | users with an inbox |", "|---|---|---|---|---|"]
    for name, m in report["methods"].items():
        lines.append(f"| {name} | {m['inbox_hit_rate']:.3f} | {m['inbox_recall']:.3f} | {m['track_auc']:.3f} | "
                     f"{m['users_with_inbox']} |")
    return "\n".join(lines)
