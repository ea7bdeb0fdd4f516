"""The release job's components: ReleaseInference (Beam batch inference) and ReleaseReport.

TFX's BulkInferrer runs a model over Examples and writes PredictionLogs; the
release needs more than one prediction per track (an AE, then a top-k over the
served user table, then lists regrouped by user), so ReleaseInference runs
`transforms.RankUsers` and `transforms.write_lists` in its own Beam pipeline.
It scores with the pushed `cold_start_recommender`, found either through the
PushedModel that the release pipeline's resolver took from MLMD (the latest
blessed and pushed model of the training pipeline) or as a named version under
the serving base path (what TF Serving serves; Kubeflow / Vertex runs).
"""

# No `from __future__ import annotations`: TFX reads the function's annotations as types.
import dataclasses
import json
import logging
import time

import apache_beam as beam
from etils import epath
from tfx.dsl.component.experimental.annotations import BeamComponentParameter, InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types.artifact import Artifact
from tfx.types.standard_artifacts import PushedModel

import musicrec
from musicrec import storage
from musicrec.components.artifacts import AudioQuarantine, LogMelFeatures
from musicrec.components.release import transforms
from musicrec.data.adapters import load_with_adapter

RELEASE_FILE = "release.json"  # what the release used and produced: model version, settings, counts
NO_PUSHED_MODEL = ("no blessed, pushed model of the training pipeline: run it until a model is blessed and pushed, "
                   "or name a pushed version (--model-version)")


class ReleaseLists(Artifact):
    """A release's lists: `track_embeddings/`, `track_users/`, `user_inbox/` (Parquet folders, see
    `transforms`) and `release.json`. Custom properties: model_version, tracks, users_reached."""

    TYPE_NAME = "musicrec.ReleaseLists"


class ReleaseReport(Artifact):
    """A release's report: `report.md`, `index.html`, `report.json` and PNG plots."""

    TYPE_NAME = "musicrec.ReleaseReport"


def recommender_version(pushed_model, serving_base_path: str, model_version: int) -> epath.Path:
    """The `cold_start_recommender` version folder to score with: the PushedModel's, or version
    `model_version` (0: the newest) under `serving_base_path`."""
    from musicrec.serving.export import latest_version
    from musicrec.serving.graphs import RECOMMENDER

    if pushed_model is not None:
        if not pushed_model.get_int_custom_property("pushed"):
            raise ValueError(f"the resolved model {pushed_model.uri} was not pushed (not blessed)")
        pushed = json.loads((storage.path(pushed_model.uri) / "pushed.json").read_text())
        return storage.path(pushed[RECOMMENDER])
    if not serving_base_path:
        raise ValueError(NO_PUSHED_MODEL)
    models = storage.path(serving_base_path) / RECOMMENDER
    if not model_version:
        return latest_version(models)
    version_dir = models / str(model_version)
    if not (version_dir / "saved_model.pb").exists():
        found = sorted(int(p.name) for p in models.glob("*") if p.name.isdigit()) if models.exists() else []
        raise ValueError(f"no pushed version {model_version} under {models} (versions there: {found or 'none'})")
    return version_dir


@component(use_beam=True)
def ReleaseInference(
    features: InputArtifact[LogMelFeatures],
    tracks_dir: Parameter[str],
    dataset_adapter: Parameter[str],
    lists_config: Parameter[str],
    code_fingerprint: Parameter[str],
    release: OutputArtifact[ReleaseLists],
    pushed_model: InputArtifact[PushedModel] = None,
    serving_base_path: Parameter[str] = "",
    model_version: Parameter[int] = 0,
    scann_index: Parameter[str] = "",
    beam_pipeline: BeamComponentParameter[beam.Pipeline] = None,
) -> None:
    """Embeds every new track with the pushed model, picks its top users and builds the inboxes."""
    del code_fingerprint  # only in the cache key: changed code reruns the release
    config = transforms.ListsConfig(**json.loads(lists_config))
    version_dir = recommender_version(pushed_model, serving_base_path, model_version)
    model = transforms.PushedRecommender(version_dir, scann_index)
    model.check(config)
    tracks = load_with_adapter(tracks_dir, dataset_adapter).tracks
    artists = dict(zip(tracks["track_id"], tracks["artist_id"]))
    logging.info("%s release: ranking %s users for the new tracks with %s (%s ranking)", musicrec.LOG_TAG,
                 f"{model.num_users:,}", version_dir, model.ranking)
    started = time.monotonic()
    with beam_pipeline as pipeline:
        records = pipeline | "ReadFeatures" >> beam.io.ReadFromTFRecord(model_features(features.uri, model.front_end))
        ranked = records | "RankUsers" >> transforms.RankUsers(str(version_dir), config.top_users, scann_index)
        transforms.write_lists(ranked, artists, config, release.uri)
    seconds = time.monotonic() - started
    counts = {name: transforms.counted(pipeline.result, name) for name in (transforms.TRACKS_RANKED, transforms.USERS_REACHED)}
    summary = release_summary(counts, version_dir, model, config, seconds)
    (storage.path(release.uri) / RELEASE_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    release.set_int_custom_property("model_version", summary["model_version"])
    release.set_int_custom_property("tracks", summary["tracks_ranked"])
    release.set_int_custom_property("users_reached", summary["users_reached"])
    logging.info("%s release: %d tracks ranked in %.1f s (%.1f tracks/min); %d of %d users have new tracks",
                 musicrec.LOG_TAG, summary["tracks_ranked"], seconds, summary["tracks_per_minute"],
                 summary["users_reached"], model.num_users)


def model_features(features_uri: str, front_end: str) -> str:
    """The pattern of the release features the pushed model reads (its front end's frames)."""
    import tensorflow as tf

    from musicrec.trainer.log_mel_shards import feature_files

    pattern = feature_files(features_uri, front_end)
    if not tf.io.gfile.glob(pattern):
        raise ValueError(f"the release features in {features_uri} hold no {front_end} frames, which the pushed model "
                         "reads: the release pipeline extracts the front ends of the training config's variant, so "
                         "release with the training config the model was trained with")
    return pattern


def release_summary(counts: dict, version_dir: epath.Path, model: transforms.PushedRecommender,
                    config: transforms.ListsConfig, seconds: float) -> dict:
    tracks = counts[transforms.TRACKS_RANKED]
    return {
        "model_version": int(version_dir.name), "model_dir": str(version_dir), "ranking": model.ranking,
        "users_in_model": model.num_users, "tracks_ranked": tracks, "users_reached": counts[transforms.USERS_REACHED],
        "lists": dataclasses.asdict(config), "seconds": round(seconds, 2),
        "tracks_per_minute": round(60 * tracks / seconds, 1) if seconds else 0.0,
        # Exact ranking scores every user in the table; with ScaNN this is the table's size per second.
        "users_scored_per_second": round(tracks * model.num_users / seconds, 1) if seconds else 0.0,
    }


@component
def ReleaseReportGen(
    release: InputArtifact[ReleaseLists],
    quarantine: InputArtifact[AudioQuarantine],
    tracks_dir: Parameter[str],
    dataset_adapter: Parameter[str],
    users_dir: Parameter[str],
    users_adapter: Parameter[str],
    code_fingerprint: Parameter[str],
    report: OutputArtifact[ReleaseReport],
) -> None:
    """The release report: coverage, score distributions, genre and demographic slices, model
    version and quarantined files, as Markdown, HTML and plots."""
    del code_fingerprint  # only in the cache key
    from musicrec.components.release.report import build_report, load_users

    tracks = load_with_adapter(tracks_dir, dataset_adapter)
    users = load_users(users_dir, users_adapter) if users_dir else None
    built = build_report(release.uri, quarantine.uri, tracks, users)
    built.write(report.uri)
    logging.info("%s release report written to %s", musicrec.LOG_TAG, report.uri)
