"""The tiny pipeline with its dataset, pipeline root and serving base path in an S3 bucket.

The bucket is served by a real S3 API server (moto's standalone server, started here) over HTTP;
tensorflow-io's S3 file system (TensorFlow, the components) and Beam's (StatisticsGen, Transform,
TFMA) reach it through S3_ENDPOINT and the pipeline's Beam args. Only MLMD stays on local disk.

Everything that touches the bucket through TensorFlow runs in a `musicrec` subprocess: that is how
users run it, and tensorflow-io's S3 file system would abort this process's exit otherwise
(`musicrec.storage.exit_process`). This process reads the bucket with boto3.
"""

import dataclasses
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import boto3
import numpy as np
import pandas as pd
import pytest
import yaml

from musicrec import storage
from musicrec.audio.decode import load_audio
from musicrec.pipeline.runs import LOCK_FILE as RUN_LOCK, find_run
from musicrec.serving import graphs, warmup
from musicrec.serving.repository import ModelRepository
from musicrec.serving.scann_index import recommender_table
from test_pipeline import COMPONENTS

BUCKET = "musicrec-test"
DATA, ROOT, SERVING = (f"s3://{BUCKET}/{prefix}" for prefix in ("data", "pipeline-root", "serving"))


@dataclasses.dataclass
class S3Server:
    endpoint: str
    env: dict  # what a process needs to reach it: credentials, tensorflow-io's S3 settings

    def client(self):
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def beam_args(self):
        """Beam's own S3 file system (boto3) reads the same server."""
        return [f"--s3_endpoint_url={self.endpoint}", "--s3_disable_ssl", "--s3_region_name=us-east-1",
                "--s3_access_key_id=testing", "--s3_secret_access_key=testing"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "server.log"
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log.open("w"), stderr=subprocess.STDOUT)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "S3_ENDPOINT": endpoint, "S3_USE_HTTPS": "0", "S3_VERIFY_SSL": "0"}
    server = S3Server(endpoint, env)
    deadline = time.monotonic() + 60
    while True:
        try:
            server.client().list_buckets()
            break
        except Exception:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto's S3 server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)
    yield server
    process.terminate()
    process.wait(timeout=30)


def _upload(client, folder: pathlib.Path, prefix: str) -> int:
    files = [f for f in folder.rglob("*") if f.is_file()]
    for f in files:
        client.upload_file(str(f), BUCKET, f"{prefix}/{f.relative_to(folder).as_posix()}")
    return len(files)


def _download(client, prefix: str, folder: pathlib.Path) -> pathlib.Path:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix.rstrip("/") + "/")
    for item in (item for page in pages for item in page.get("Contents", [])):
        target = folder / item["Key"][len(prefix.rstrip("/")) + 1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(BUCKET, item["Key"], str(target))
    return folder


def _key(uri: str) -> str:
    return uri[len(f"s3://{BUCKET}/"):]


@pytest.fixture(scope="module")
def bucket_run(s3_server, tiny_dataset, tmp_path_factory):
    """`musicrec run` of the tiny dataset, with the dataset, the pipeline root and the serving base
    path in the bucket (short training, as test_pipeline's shared run)."""
    client = s3_server.client()
    client.create_bucket(Bucket=BUCKET)
    _upload(client, tiny_dataset, "data")
    run_dir = tmp_path_factory.mktemp("bucket_run")
    config = {
        "dataset_dir": DATA, "pipeline_root_uri": ROOT, "serving_base_path": SERVING, "run_dir": str(run_dir),
        "user_epochs": 3, "audio_epochs": 2, "audio_steps_per_epoch": 5, "min_auc": 0.0, "min_auc_gain": -1.0,
        "practitioner_baselines": ["popularity", "metadata"],
        "beam_args": ["--direct_running_mode=in_memory", *s3_server.beam_args()],
    }
    config_file = run_dir / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    done = subprocess.run([sys.executable, "-m", "musicrec.cli", "run", "--config", str(config_file)],
                          env={**os.environ, **s3_server.env}, capture_output=True, text=True, timeout=1800)
    return run_dir, done, client


def test_the_tiny_pipeline_runs_end_to_end_in_the_bucket(bucket_run):
    run_dir, done, client = bucket_run
    assert done.returncode == 0, done.stderr[-5000:]
    assert "pure virtual method called" not in done.stderr  # tensorflow-io's exit abort is avoided
    run = find_run(run_dir)
    assert run.states() == {component: "COMPLETE" for component in COMPONENTS}
    uris = [a.uri for a in run.store.get_artifacts()]
    assert uris and all(uri.startswith(ROOT + "/") for uri in uris)
    assert f"Artifacts: {ROOT}" in done.stdout and f"Serving models: {SERVING}" in done.stdout
    # Only the run record (MLMD and the run folder's lock) and the printed reports are local.
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml", "evaluation", "metadata.sqlite", RUN_LOCK,
                                                         "summary.json"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["outputs"]["served"]["version"] == 1 and summary["evaluation"]["blessed"]
    served = client.list_objects_v2(Bucket=BUCKET, Prefix="serving/")["Contents"]
    names = {item["Key"] for item in served}
    for model in (graphs.AUDIO_EMBEDDER, graphs.USER_EMBEDDER, graphs.RECOMMENDER):
        assert f"serving/{model}/1/saved_model.pb" in names and f"serving/{model}/1/{warmup.WARMUP_FILE}" in names
    assert not any("/.tmp-" in name for name in names)  # no staging folder left behind


def test_audio_read_from_the_bucket_gives_the_local_extraction(bucket_run, tiny_features_dir):
    """Decoding through the object store changes nothing: the same tracks, frames and quarantine."""
    run_dir, done, client = bucket_run
    assert done.returncode == 0, done.stderr[-5000:]
    run = find_run(run_dir)
    read = lambda uri, name: [json.loads(line) for line in client.get_object(  # noqa: E731
        Bucket=BUCKET, Key=f"{_key(uri)}/{name}")["Body"].read().decode().splitlines() if line.strip()]
    local = lambda name: [json.loads(line) for line in (tiny_features_dir / name).read_text().splitlines() if line.strip()]  # noqa: E731
    index = read(run.output("AudioFeatures", "features").uri, "index.jsonl")
    assert sorted((r["track_id"], r["frames"]) for r in index) == sorted((r["track_id"], r["frames"]) for r in local("index.jsonl"))
    quarantine = read(run.output("AudioFeatures", "quarantine").uri, "quarantine.jsonl")
    assert quarantine  # the generator plants broken files
    assert sorted((r["track_id"], r["status"]) for r in quarantine) == sorted(
        (r["track_id"], r["status"]) for r in local("quarantine.jsonl"))


def test_the_models_served_from_the_bucket_load_and_recommend(bucket_run, tiny_dataset, tiny_log_mels, tmp_path):
    """The pushed version, copied out of the bucket as TF Serving's S3 source would read it: every model
    loads and answers its warm-up requests, and the recommender ranks users by the cosine of the audio
    embedder's AE with its own table."""
    run_dir, done, client = bucket_run
    assert done.returncode == 0, done.stderr[-5000:]
    base = _download(client, "serving", tmp_path / "serving")
    repository = ModelRepository(base)  # runs every model's warm-up requests
    tracks = pd.read_csv(tiny_dataset / "tracks.csv", dtype=str).set_index("track_id")
    waveform = load_audio(tiny_dataset / tracks.loc[tiny_log_mels.track_ids[0], "audio_path"], max_seconds=30.0)
    inputs = warmup.waveform_inputs([waveform])
    embedding = repository.predict(graphs.AUDIO_EMBEDDER, inputs, graphs.EMBED_WAVEFORM)["audio_embedding"][0]
    top = repository.predict(graphs.RECOMMENDER, {**inputs, "k": np.array([5], np.int32)}, graphs.RECOMMEND_WAVEFORM)
    user_ids, vectors = recommender_table(base)
    cosine = vectors @ (embedding / np.linalg.norm(embedding))
    expected = user_ids[np.argsort(-cosine, kind="stable")[:5]]
    assert [u.decode() if isinstance(u, bytes) else u for u in top["user_ids"][0]] == list(expected)
    assert set(expected) <= set(pd.read_csv(tiny_dataset / "users.csv", dtype=str)["user_id"])


@pytest.mark.parametrize("location, root, inside", [
    ("s3://b/data/audio/t1.ogg", "s3://b/data", True),
    ("s3://b/data/../secrets/t1.ogg", "s3://b/data", False),
    ("s3://b/database/t1.ogg", "s3://b/data", False),
    ("gs://b/data/t1.ogg", "s3://b/data", False),
])
def test_audio_outside_a_bucket_dataset_is_recognised_without_reading_it(location, root, inside):
    assert storage.is_inside(location, root) is inside
