"""Runners: the local DAG runner (SQLite MLMD, caching) and the Kubeflow V2 / Vertex compiler."""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import time
from typing import Any, Dict, Optional, Set

from tfx import v1 as tfx
from tfx.orchestration import metadata

import musicrec
from musicrec.components.serving_pusher.component import push_serving_models
from musicrec.pipeline.config import PipelineConfig
from musicrec.pipeline.pipeline import create_pipeline
from musicrec.pipeline.runs import Event, PipelineRun, abandon_interrupted, find_run, one_run_at_a_time

PUSHER = "ServingPusher"
SERVED_VERSION = "served_version"  # pusher execution properties: what the run serves
REPUSHED_FROM = "repushed_from_version"


def run_local(config: PipelineConfig) -> Dict[str, Any]:
    """Runs the pipeline with TFX's LocalDagRunner; returns the run's id, where its outputs are,
    what it serves and what an earlier, interrupted run had left behind.

    Before the run, executions an interrupted run left RUNNING are marked CANCELED and their
    partial folders removed; after it, the run's pushed model is made the served one. The run
    folder takes one run at a time (training or release).
    """
    with one_run_at_a_time(config.run_dir):
        return _run_local(config)


def _run_local(config: PipelineConfig) -> Dict[str, Any]:
    pathlib.Path(config.run_dir).mkdir(parents=True, exist_ok=True)
    interrupted = abandon_interrupted(config.run_dir, config.pipeline_root)
    for execution in interrupted:
        logging.warning("%s %s", musicrec.LOG_TAG, execution.describe())
    pipeline = create_pipeline(
        config, metadata_connection_config=metadata.sqlite_metadata_connection_config(str(config.metadata_path)),
    )
    started = time.monotonic()
    logging.info("%s pipeline %s: %d components, root %s", musicrec.LOG_TAG, config.pipeline_name,
                 len(pipeline.components), config.pipeline_root)
    tfx.orchestration.LocalDagRunner().run(pipeline)
    run = find_run(config.run_dir, pipeline_name=config.pipeline_name)  # one run at a time per run folder: the latest is this one
    states = run.states()
    cached = sorted(node for node, state in states.items() if state == "CACHED")
    logging.info("%s pipeline finished in %.0f s: %d components ran, %d reused from the cache%s", musicrec.LOG_TAG,
                 time.monotonic() - started, len(states) - len(cached), len(cached), f" ({', '.join(cached)})" if cached else "")
    served = make_served(run, config.serving_path)
    logging.info("%s %s", musicrec.LOG_TAG, served.describe())
    return {"run_id": run.run_id, "pipeline_root": str(config.pipeline_root), "metadata": str(config.metadata_path),
            "serving": str(config.serving_path), "served": dataclasses.asdict(served),
            "interrupted": [dataclasses.asdict(execution) for execution in interrupted]}


@dataclasses.dataclass
class Served:
    """What TF Serving serves after a run, as far as the run's own model is concerned."""

    pushed: bool  # the run's model was blessed and pushed
    version: Optional[int] = None  # the served (newest) version holding the run's model
    repushed_from: Optional[int] = None  # the version the cached push wrote, when pushed again

    def describe(self) -> str:
        if not self.pushed:
            return "Serving: this run's model was not blessed, so not pushed (TF Serving keeps its newest version)"
        if self.repushed_from is not None:
            return (f"Serving: version {self.version}, this run's model (its cached push, version {self.repushed_from}, "
                    f"was no longer the newest and was pushed again)")
        return f"Serving: version {self.version}, this run's model"


def make_served(run: PipelineRun, serving_base_path) -> Served:
    """Makes the model the run pushed the newest version under the serving base path (TF Serving's
    default version policy serves the newest), pushing it again when a cached push is not, and
    records the served version on the run's pusher execution (`served_version`, `repushed_from_version`)."""
    from musicrec.serving.export import next_version

    pushed = run.output(PUSHER, "pushed_model")
    if not pushed.custom_properties["pushed"].int_value:
        return Served(pushed=False)
    newest = next_version(serving_base_path) - 1
    if newest in _versions_holding(run.store, pushed):
        return Served(pushed=True, version=newest)
    model_uri = {key: run.artifacts(PUSHER, key, Event.INPUT)[0].uri for key in ("audio_model", "user_model")}
    version, _ = push_serving_models(model_uri["audio_model"], model_uri["user_model"], str(serving_base_path))
    served = Served(pushed=True, version=version, repushed_from=pushed.custom_properties["pushed_version"].int_value)
    execution = run.execution(PUSHER)
    execution.custom_properties[SERVED_VERSION].int_value = served.version
    execution.custom_properties[REPUSHED_FROM].int_value = served.repushed_from
    run.store.put_executions([execution])
    return served


def _versions_holding(store, pushed) -> Set[int]:
    """The serving versions holding a PushedModel's model: the version its push wrote and every
    version a later run pushed it again as (recorded on the executions that reused it)."""
    executions = store.get_executions_by_id([e.execution_id for e in store.get_events_by_artifact_ids([pushed.id])])
    again = {e.custom_properties[SERVED_VERSION].int_value for e in executions if SERVED_VERSION in e.custom_properties}
    return {pushed.custom_properties["pushed_version"].int_value} | again


def compile_kubeflow(config: PipelineConfig, output_file) -> pathlib.Path:
    """Compiles the same pipeline to a Kubeflow Pipelines / Vertex AI Pipelines JSON spec.

    Every component runs in `config.image` (this project installed); the pipeline
    root is `config.remote_pipeline_root`, and the dataset folder and serving base
    path must be reachable from the cluster (e.g. gs:// or a mounted volume).
    """
    output_file = pathlib.Path(output_file)
    output_file.parent.mkdir(parents=True, exist_ok=True)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=config.image),
        output_dir=str(output_file.parent), output_filename=output_file.name,
    )
    runner.run(create_pipeline(config, pipeline_root=config.remote_pipeline_root), write_out=True)
    return output_file


def last_run_states(config: PipelineConfig) -> Dict[str, str]:
    """Component id -> state (COMPLETE, CACHED, FAILED, ...) in the latest local run, from MLMD."""
    return find_run(config.run_dir, pipeline_name=config.pipeline_name).states()
