"""Runners: the local DAG runner (SQLite MLMD, caching) and the Kubeflow V2 / Vertex compiler."""

from __future__ import annotations

import logging
import pathlib
import time
from typing import Dict

from tfx import v1 as tfx
from tfx.orchestration import metadata

import musicrec
from pipeline.config import PipelineConfig
from pipeline.pipeline import create_pipeline


def run_local(config: PipelineConfig) -> Dict[str, str]:
    """Runs the pipeline with TFX's LocalDagRunner; returns where its outputs are."""
    pathlib.Path(config.run_dir).mkdir(parents=True, exist_ok=True)
    pipeline = create_pipeline(
        config, metadata_connection_config=metadata.sqlite_metadata_connection_config(str(config.metadata_path)),
    )
    started = time.monotonic()
    logging.info("%s pipeline %s: %d components, root %s", musicrec.LOG_TAG, config.pipeline_name,
                 len(pipeline.components), config.pipeline_root)
    tfx.orchestration.LocalDagRunner().run(pipeline)
    states = last_run_states(config)
    cached = sorted(node for node, state in states.items() if state == "CACHED")
    logging.info("%s pipeline finished in %.0f s: %d components ran, %d reused from the cache%s", musicrec.LOG_TAG,
                 time.monotonic() - started, len(states) - len(cached), len(cached), f" ({', '.join(cached)})" if cached else "")
    return {"pipeline_root": str(config.pipeline_root), "metadata": str(config.metadata_path),
            "serving": str(config.serving_path)}


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


def latest_output(config: PipelineConfig, component_id: str, output_key: str) -> pathlib.Path:
    """The newest artifact folder a component wrote for an output (LocalDagRunner's layout:
    <pipeline_root>/<component>/<output>/<execution id>)."""
    folder = config.pipeline_root / component_id / output_key
    runs = sorted((p for p in folder.glob("*") if p.name.isdigit()), key=lambda p: int(p.name))
    if not runs:
        raise FileNotFoundError(f"{component_id} has written no {output_key} under {folder}")
    return runs[-1]


def last_run_states(config: PipelineConfig) -> Dict[str, str]:
    """Component id -> state (COMPLETE, CACHED, FAILED, ...) of the latest local run, from MLMD."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(str(config.metadata_path)))
    runs = store.get_contexts_by_type("pipeline_run")
    if not runs:
        return {}
    states = {}
    for execution in store.get_executions_by_context(max(runs, key=lambda c: c.id).id):
        nodes = [c.name for c in store.get_contexts_by_execution(execution.id) if c.type_id == _node_type(store)]
        node = nodes[0].split(".", 1)[-1] if nodes else execution.type
        states[node] = metadata_store_pb2.Execution.State.Name(execution.last_known_state)
    return states


def _node_type(store) -> int:
    return store.get_context_type("node").id
