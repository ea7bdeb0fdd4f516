"""The release pipeline: this week's new tracks -> the users each should reach, and every user's inbox.

  ReleaseAudioFeatures (AudioFeatures on the release folder: same log-mels, same quarantine) ─┐
  LatestPushedModel (resolver: the training pipeline's latest blessed and pushed model) ──────┼─ ReleaseInference
                                                                                              │        │
                                                       ReleaseReport (Markdown, HTML, plots) ─┴────────┘

It shares the training pipeline's run folder, so the resolver reads the
training runs' PushedModels from the same MLMD store (its node ids differ from
the training pipeline's, its pipeline name is `<pipeline_name>-release`). A
named version (`model_version`) scores with that version under the serving
base path instead; so does a compiled (Kubeflow / Vertex) release with version
0, the newest, which is what TF Serving serves: the Kubeflow V2 compiler
compiles no resolver functions.

`run_release` runs it locally, then publishes the run's outputs as a new
version of the release, `<run_dir>/releases/<name>/<version>/`, written in a
temporary sibling and renamed whole: a rerun of the same week adds a version
and never leaves a half-written one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import posixpath
import time
import types
from typing import Any, Dict, Optional

from tfx import v1 as tfx
from tfx.dsl.input_resolution import canned_resolver_functions
from tfx.orchestration import metadata
from tfx.orchestration.data_types import RuntimeParameter
from tfx.types import channel as channel_types
from tfx.types.standard_artifacts import PushedModel
from tfx.utils import io_utils

import musicrec
from musicrec import storage
from musicrec.components.audio_features.component import AudioFeatures
from musicrec.components.release.component import NO_PUSHED_MODEL, ReleaseInference, ReleaseReportGen
from musicrec.components.release.transforms import ListsConfig
from musicrec.data.adapters import RELEASE_TRACKS
from musicrec.pipeline.config import PipelineConfig, code_fingerprint
from musicrec.pipeline.pipeline import audio_front_ends
from musicrec.pipeline.runner import PUSHER
from musicrec.pipeline.runs import (PIPELINE_CONTEXT, RunRecordError, abandon_interrupted, find_run, one_run_at_a_time,
                                    open_store)

RELEASE_SUFFIX = "-release"
RELEASES_DIR = "releases"  # under the run folder: <name>/<version>/
LISTS_DIR, REPORT_DIR = "lists", "report"
STAGING_PREFIX = ".tmp-"
TRACKS_PARAMETER = "tracks_dir"  # the compiled release's run-time parameter


@dataclasses.dataclass
class ReleaseConfig:
    tracks_dir: str  # the new tracks: tracks.csv (or .parquet) and their audio, no interactions
    name: str = ""  # the release's name, e.g. 2026-W48 (default: the folder's name)
    dataset_adapter: str = RELEASE_TRACKS  # or "package.module:function" for another layout
    top_users: int = 1000
    inbox_size: int = 20
    artist_cap: int = 2
    # 0: the latest blessed, pushed model of the training pipeline; N: the model it pushed as version N.
    # Both from MLMD; a version MLMD does not record as pushed (pushed again after a cached run, or
    # exported by hand), and every compiled run, is taken from the serving base path.
    model_version: int = 0
    scann_index: str = ""  # a ScaNN index over the same version's users (build-scann-index); empty: exact
    enable_cache: bool = True

    def __post_init__(self):
        ListsConfig(self.top_users, self.inbox_size, self.artist_cap)  # checks the list sizes
        if self.model_version < 0:
            raise ValueError(f"model_version must be 0 (the latest) or a pushed version; got {self.model_version}")

    @property
    def lists(self) -> ListsConfig:
        return ListsConfig(self.top_users, self.inbox_size, self.artist_cap)

    @property
    def release_name(self) -> str:
        name = self.name or posixpath.basename(str(self.tracks_dir).rstrip("/"))
        if not name or name in (".", "..") or "/" in name or name.startswith(STAGING_PREFIX):
            raise ValueError(f"a release name must be one plain folder name, e.g. 2026-W48; got {name!r}")
        return name


def release_pipeline_name(training: PipelineConfig) -> str:
    return training.pipeline_name + RELEASE_SUFFIX


class _OtherPipelineOutput(channel_types.PipelineOutputChannel):
    """An output of another pipeline recorded in the same MLMD store: the resolver queries it by
    that pipeline's name and the producing node. TFX's ExternalPipelineChannel names an MLMD
    service (a different store), so it does not fit a store shared by two pipelines."""

    def __init__(self, pipeline_name: str, component_id: str, output_key: str, artifact_type):
        produced = channel_types.Channel(type=artifact_type, producer_component_id=component_id, output_key=output_key)
        super().__init__(produced, pipeline=types.SimpleNamespace(id=pipeline_name), output_key=output_key)

    def get_data_dependent_node_ids(self):
        return set()  # its producer is not a node of this pipeline


def latest_pushed_model(training: PipelineConfig, version: int = 0):
    """The training pipeline's latest PushedModel that was pushed (its model was blessed); with a
    version, the one pushed as that version."""
    pushed = canned_resolver_functions.filter_custom_property_equal(
        _OtherPipelineOutput(training.pipeline_name, PUSHER, "pushed_model", PushedModel), key="pushed", value=1)
    if version:
        pushed = canned_resolver_functions.filter_custom_property_equal(pushed, key="pushed_version", value=version)
    return canned_resolver_functions.latest_created(pushed)


def create_release_pipeline(training: PipelineConfig, release: ReleaseConfig, pipeline_root: Optional[str] = None,
                            metadata_connection_config=None, resolve_from_mlmd: bool = True) -> tfx.dsl.Pipeline:
    code = code_fingerprint()
    tracks_dir = release.tracks_dir
    if not isinstance(tracks_dir, RuntimeParameter):  # a compiled pipeline's run-time input
        tracks_dir = storage.absolute(tracks_dir)
    features = AudioFeatures(
        dataset_dir=tracks_dir, dataset_adapter=release.dataset_adapter, code_fingerprint=code,
        min_seconds=training.context_seconds, extra_front_ends=",".join(audio_front_ends(training)),
    ).with_beam_pipeline_args(training.audio_beam_args).with_id("ReleaseAudioFeatures")
    model = {"model_version": release.model_version, "serving_base_path": training.serving_path}
    if resolve_from_mlmd:
        model["pushed_model"] = latest_pushed_model(training, release.model_version)
    inference = ReleaseInference(
        features=features.outputs["features"], tracks_dir=tracks_dir, dataset_adapter=release.dataset_adapter,
        lists_config=json.dumps(dataclasses.asdict(release.lists), sort_keys=True), scann_index=release.scann_index,
        code_fingerprint=code, **model,
    )
    report = ReleaseReportGen(
        release=inference.outputs["release"], quarantine=features.outputs["quarantine"], tracks_dir=tracks_dir,
        dataset_adapter=release.dataset_adapter, users_dir=storage.absolute(training.dataset_dir),
        users_adapter=training.dataset_adapter, code_fingerprint=code,
    ).with_id("ReleaseReport")
    return tfx.dsl.Pipeline(
        pipeline_name=release_pipeline_name(training),
        pipeline_root=pipeline_root or training.pipeline_root,
        components=[features, inference, report],
        enable_cache=release.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(training.beam_args),
    )


def run_release(training: PipelineConfig, release: ReleaseConfig) -> Dict[str, Any]:
    """Runs the release pipeline with the training run folder's MLMD store, then publishes its
    lists and report as a new version of the release; returns where they are and the summary."""
    name = release.release_name  # a bad name fails now, not after the run
    check_pushed_model(training, release.model_version)
    with one_run_at_a_time(training.run_dir):
        for execution in abandon_interrupted(training.run_dir, training.pipeline_root):
            logging.warning("%s %s", musicrec.LOG_TAG, execution.describe())
        return _run_and_publish(training, release, name)


def _run_and_publish(training: PipelineConfig, release: ReleaseConfig, name: str) -> Dict[str, Any]:
    pipeline = create_release_pipeline(
        training, release, metadata_connection_config=metadata.sqlite_metadata_connection_config(str(training.metadata_path)))
    started = time.monotonic()
    logging.info("%s release %s: new tracks in %s", musicrec.LOG_TAG, name, release.tracks_dir)
    tfx.orchestration.LocalDagRunner().run(pipeline)
    run = find_run(training.run_dir, pipeline_name=release_pipeline_name(training))
    published = publish(run, pathlib.Path(training.run_dir) / RELEASES_DIR / name)
    summary = json.loads((published / LISTS_DIR / "release.json").read_text())
    logging.info("%s release %s published as %s in %.0f s", musicrec.LOG_TAG, name, published,
                 time.monotonic() - started)
    return {"run_id": run.run_id, "published": str(published), "states": run.states(), "summary": summary}


def check_pushed_model(training: PipelineConfig, version: int = 0) -> None:
    """A clear error before the run when the training pipeline has pushed no model in this run
    folder (a named version may also come from the serving base path: the component checks it)."""
    store = open_store(training.run_dir)
    context = store.get_context_by_type_and_name(PIPELINE_CONTEXT, training.pipeline_name)
    artifacts = store.get_artifacts_by_context(context.id) if context else []
    pushed = [a for a in artifacts if a.type == PushedModel.TYPE_NAME and a.custom_properties["pushed"].int_value == 1]
    if not pushed and not version:
        raise RunRecordError(f"{NO_PUSHED_MODEL} (pipeline {training.pipeline_name} in {training.run_dir})")


def publish(run, release_dir: pathlib.Path) -> pathlib.Path:
    """Copies the run's lists and report into `release_dir/<next version>/`, whole or not at all."""
    release_dir.mkdir(parents=True, exist_ok=True)
    for leftover in release_dir.glob(STAGING_PREFIX + "*"):
        io_utils.delete_dir(str(leftover))  # an interrupted publish: never a version
    version = max((int(p.name) for p in release_dir.iterdir() if p.name.isdigit()), default=0) + 1
    staging = release_dir / f"{STAGING_PREFIX}{version}-{os.getpid()}"
    io_utils.copy_dir(str(run.output_path("ReleaseInference", "release")), str(staging / LISTS_DIR))
    io_utils.copy_dir(str(run.output_path("ReleaseReport", "report")), str(staging / REPORT_DIR))
    final = release_dir / str(version)
    staging.rename(final)
    return final


def compile_release(training: PipelineConfig, release: ReleaseConfig, output_file) -> pathlib.Path:
    """The release pipeline as a Kubeflow V2 / Vertex spec, to schedule as a recurring run: each run
    takes the week's folder as its `tracks_dir` parameter and scores with the newest (or the named)
    version under the serving base path."""
    output_file = pathlib.Path(output_file)
    output_file.parent.mkdir(parents=True, exist_ok=True)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=training.image),
        output_dir=str(output_file.parent), output_filename=output_file.name,
    )
    # Each recurring run names its week's folder: --tracks is only the default of this run-time parameter.
    # No cache: the model is found by version under the serving base path, so a new push would not
    # change the cache key, and a rerun would return the old model's lists.
    weekly = dataclasses.replace(release, enable_cache=False, tracks_dir=RuntimeParameter(
        name=TRACKS_PARAMETER, ptype=str, default=release.tracks_dir))
    runner.run(create_release_pipeline(training, weekly, pipeline_root=training.remote_pipeline_root,
                                       resolve_from_mlmd=False), write_out=True)
    return output_file
