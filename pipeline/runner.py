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
    logging.info("%s pipeline finished in %.0f s", musicrec.LOG_TAG, time.monotonic() - started)
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
