"""Serving: exported models against the in-memory ones, core ops only (fresh process), warm-up, config,
the client over REST and gRPC against the development server, the CLI, bad requests, and the
pushed UE table covering every user (the held-out new users included)."""

import argparse
import io
import json
import subprocess
import sys
import types
import urllib.request

import numpy as np
import pytest
import soundfile
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import get_model_metadata_pb2, prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from musicrec.components.listening_data.ingest import ingest, write_examples
from musicrec.audio.decode import load_audio
from musicrec.audio.logmel import DEFAULT, log_mel_spectrogram
from musicrec.data.audio_pairs import build_audio_pairs
from musicrec.data.loading import load_dataset
from musicrec.data.user_examples import branch_data_from_examples, build_user_examples, read_user_examples
from musicrec.serving import cli, client, dev_server, graphs, warmup
from musicrec.serving.export import BATCHING_PARAMETERS, MODEL_NAMES, MODELS_CONFIG, export_serving_models
from musicrec.serving.repository import ModelRepository, ServingError
from musicrec.serving.scann_index import recommender_table
from musicrec.trainer import user_module
from musicrec.trainer.audio_branch import AudioBranchConfig
from musicrec.audio.front_ends import LOG_MEL_FRONT_END
from musicrec.trainer.audio_export import export_audio_encoder
from musicrec.trainer.audio_training import train_audio_branch
from musicrec.trainer.user_export import read_embeddings, table_queries
from musicrec.names import USER_EMBEDDINGS_FILE, USER_TOWER_DIR

CONTEXT = 130  # 3 s
_BUILT = {}  # pytest session (its base temp folder) -> the served models; test_serving_fuzz serves the same ones


@pytest.fixture(scope="module")
def served(tiny_dataset, tiny_log_mels, tiny_user_vectors, tmp_path_factory):
    """The serving models as the pipeline pushes them: a briefly trained 3 s audio branch, the user
    branch trained by the UserTrainer's run_fn on the ingestion's user examples, and the export with
    the pusher's defaults. Built once per session (test_serving_fuzz imports this fixture)."""
    session = tmp_path_factory.getbasetemp()
    if session not in _BUILT:
        _BUILT[session] = _build_served(tiny_dataset, tiny_log_mels, tiny_user_vectors, tmp_path_factory)
    return _BUILT[session]


def _build_served(tiny_dataset, tiny_log_mels, tiny_user_vectors, tmp_path_factory):
    dataset = load_dataset(tiny_dataset)
    pairs = build_audio_pairs(dataset.interactions, tiny_user_vectors.user_ids, tiny_log_mels.usable(CONTEXT))
    config = AudioBranchConfig.variant("metric_1vs4", epochs=1, steps_per_epoch=3)
    trained = train_audio_branch(pairs, tiny_log_mels, tiny_user_vectors, config)
    out = tmp_path_factory.mktemp("serving")
    encoder_dir = export_audio_encoder(trained, out / "audio_branch")
    model_dir, user_data = pipeline_user_branch(dataset, out / "user_branch")
    dirs = export_serving_models(encoder_dir, model_dir / USER_TOWER_DIR, model_dir / USER_EMBEDDINGS_FILE,
                                 out / "models", version=3, context_frames=CONTEXT)
    tracks = dataset.tracks.dropna(subset=["audio_path"])
    audio = [load_audio(tiny_dataset / p, max_seconds=None) for p in tracks["audio_path"].iloc[:2]]
    audio.append(np.concatenate(audio * 2)[: 40 * DEFAULT.sample_rate])  # longer than 30 s: only the first 30 s count
    return types.SimpleNamespace(
        encoder=trained.model.encoder, dirs=dirs, base=out / "models", out=out, audio=audio,
        users=read_embeddings(model_dir / USER_EMBEDDINGS_FILE, "user_id"), dataset=dataset, user_data=user_data,
        audio_file=tiny_dataset / tracks["audio_path"].iloc[0], repository=ModelRepository(out / "models"),
    )


def pipeline_user_branch(dataset, out):
    """The user branch as the pipeline trains it: the ingestion's user examples written as TFRecords,
    and the UserTrainer's run_fn (short training) on them. Returns (model folder, the data it read)."""
    write_examples(out / "examples", ingest(dataset, dataset.tracks["track_id"]).user_examples)
    splits = {name: [str(out / "examples" / f"Split-{name}" / "*")] for name in ("train", "eval")}
    fn_args = types.SimpleNamespace(
        custom_config={"user_branch": {"epochs": 3, "early_stopping_patience": 0}}, train_files=splits["train"],
        eval_files=splits["eval"], transform_graph_path=None, serving_model_dir=str(out / "model"),
        model_run_dir=str(out / "report"))
    user_module.run_fn(fn_args)
    data = branch_data_from_examples(read_user_examples(splits["train"]), read_user_examples(splits["eval"]))
    return out / "model", data


def reference_embedding(encoder, waveform: np.ndarray) -> np.ndarray:
    """The training-side definition: mean encoder AE over segment_offsets of the first 30 s."""
    log_mel = log_mel_spectrogram(waveform[: DEFAULT.max_samples]).numpy()
    crops = np.stack([log_mel[s : s + CONTEXT] for s in LOG_MEL_FRONT_END.segment_offsets(len(log_mel), CONTEXT)])
    return encoder(crops, training=False).numpy().mean(axis=0)


def wav_reference(encoder, contents: bytes) -> np.ndarray:
    """The reference AE of WAV bytes: of their 16-bit samples (quantisation moves quiet log-mel bins)."""
    samples, _ = soundfile.read(io.BytesIO(contents), dtype="float32")
    return reference_embedding(encoder, samples)


def reference_top_k(users, embedding: np.ndarray, k: int):
    table = np.stack(users["embedding"].to_numpy())
    scores = graphs.normalised(table) @ (embedding / np.linalg.norm(embedding))
    order = np.argsort(-scores, kind="stable")[:k]
    return users["user_id"].to_numpy()[order].tolist(), scores[order]


def test_segment_counts_match_the_training_segments():
    track = graphs.TrackEmbedding(None, CONTEXT)
    samples = np.array([66048, 66560, 12 * 22050, 30 * 22050, 45 * 22050], np.int32)
    frames = [DEFAULT.num_frames(n / DEFAULT.sample_rate) for n in samples]
    counts = track.segment_counts_of_frames(tf.constant(frames)).numpy().tolist()
    assert counts == [len(LOG_MEL_FRONT_END.segment_offsets(f, CONTEXT)) for f in frames]
    assert track.min_samples == 66048 and DEFAULT.num_frames(66048 / 22050) == CONTEXT


def test_audio_embedder_matches_the_in_memory_encoder(served):
    expected = np.stack([reference_embedding(served.encoder, w) for w in served.audio])
    # One padded batch of three lengths (12 s, 12 s, 40 s) gives each track its own AE, whatever
    # the padding holds (NaN included: only samples before num_samples are checked and used).
    inputs = warmup.waveform_inputs(served.audio)
    for row, length in enumerate(inputs["num_samples"]):
        inputs["waveform"][row, length:] = np.nan
    batch = served.repository.predict(graphs.AUDIO_EMBEDDER, inputs, graphs.EMBED_WAVEFORM)
    np.testing.assert_allclose(batch["audio_embedding"], expected, rtol=1e-4, atol=1e-4)
    wavs = np.asarray([warmup.wav_bytes(w) for w in served.audio], object)
    from_wav = served.repository.predict(graphs.AUDIO_EMBEDDER, {"wav_bytes": wavs}, graphs.EMBED_WAV)["audio_embedding"]
    np.testing.assert_allclose(from_wav, [wav_reference(served.encoder, w) for w in wavs], rtol=1e-4, atol=1e-4)
    assert not np.allclose(expected[0], expected[1], atol=1e-2)  # different tracks, different AEs


def test_user_embedder_reproduces_the_ue_table(served):
    """Every row of the table, the held-out new users' included, is the served user tower's UE of
    the user's history and demographics."""
    queries = table_queries(served.user_data)
    specs = served.repository.model(graphs.USER_EMBEDDER).module.signatures[graphs.EMBED_USER].structured_input_signature[1]
    inputs = {name: queries.columns[name].astype(object if spec.dtype == tf.string else np.float32)
              for name, spec in specs.items()}
    ue = served.repository.predict(graphs.USER_EMBEDDER, inputs, graphs.EMBED_USER)["user_embedding"]
    table = served.users.set_index("user_id").loc[queries.columns["user_id"].astype(str), "embedding"]
    np.testing.assert_allclose(ue, np.stack(table.to_numpy()), atol=1e-5)
    assert len(served.users) == len(queries) == len(set(served.users["user_id"]))


def test_held_out_new_users_are_in_the_pushed_recommender_and_can_be_recommended(served):
    new_users = sorted(set(served.user_data.new_users.columns["user_id"].astype(str)))
    trained_users = set(served.user_data.train.columns["user_id"].astype(str))
    assert new_users and not set(new_users) & trained_users  # held out of training altogether
    table_ids, table = recommender_table(served.base)
    every_user_with_a_like = build_user_examples(served.dataset).latest.columns["user_id"].astype(str)
    assert sorted(table_ids) == sorted(every_user_with_a_like)
    # A track whose AE points where a new user's UE does is recommended to that user first.
    rows = [table_ids.tolist().index(user) for user in new_users]
    inputs = {"audio_embedding": table[rows], "k": np.full(len(rows), 3, np.int32)}
    out = served.repository.predict(graphs.RECOMMENDER, inputs, graphs.RECOMMEND_EMBEDDING)
    assert [ids[0].decode() for ids in out["user_ids"]] == new_users


def test_recommender_returns_the_exact_top_k_with_per_request_k(served):
    ae = reference_embedding(served.encoder, served.audio[0])
    inputs = {**warmup.waveform_inputs([served.audio[0]] * 3), "k": np.array([1, 7, 50], np.int32)}
    out = served.repository.predict(graphs.RECOMMENDER, inputs, graphs.RECOMMEND_WAVEFORM)
    ids, scores = reference_top_k(served.users, ae, 50)
    assert out["user_ids"].shape == (3, 50) and out["count"].tolist() == [1, 7, 50]
    for row, k in enumerate((1, 7, 50)):
        assert [u.decode() for u in out["user_ids"][row, :k]] == ids[:k]
        np.testing.assert_allclose(out["scores"][row, :k], scores[:k], atol=1e-4)
        assert set(out["user_ids"][row, k:]) <= {b""}  # narrower rows are padded
    # k above the number of users (within max_k): every user, ranked, and the count says so.
    everyone = served.repository.predict(graphs.RECOMMENDER, {**inputs, "k": np.array([1, 100, 7], np.int32)},
                                         graphs.RECOMMEND_WAVEFORM)
    assert everyone["count"].tolist() == [1, len(served.users), 7]
    assert [u.decode() for u in everyone["user_ids"][1]] == reference_top_k(served.users, ae, len(served.users))[0]
    random_ae = np.random.default_rng(1).normal(size=(4, 40)).astype(np.float32)
    out = served.repository.predict(graphs.RECOMMENDER, {"audio_embedding": random_ae, "k": np.full(4, 20, np.int32)},
                                    graphs.RECOMMEND_EMBEDDING)
    for row in range(4):
        assert [u.decode() for u in out["user_ids"][row]] == reference_top_k(served.users, random_ae[row], 20)[0]


FRESH_PROCESS_CHECK = r"""
import json, sys, numpy as np, tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry
base, inputs = sys.argv[1], np.load(sys.argv[2], allow_pickle=True).item()
assert op_def_registry.get("MatMul") is not None and op_def_registry.get("ScannSearchBatched") is None  # the check can fail
report = {}
for name in %(models)r:
    path = f"{base}/{name}/3"
    graph = saved_model_pb2.SavedModel.FromString(open(f"{path}/saved_model.pb", "rb").read()).meta_graphs[0].graph_def
    ops = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    model = tf.saved_model.load(path)
    outputs = {sig: {k: v.numpy().tolist() if v.dtype != tf.string else v.numpy().astype(str).tolist()
                     for k, v in model.signatures[sig](**{k: tf.constant(v) for k, v in feed.items()}).items()}
               for sig, feed in inputs[name].items()}
    report[name] = {"ops": len(ops), "unknown": sorted(op for op in ops if op_def_registry.get(op) is None), "outputs": outputs}
banned = ("tensorflow_io", "tensorflow_recommenders", "tensorflow_transform", "scann", "musicrec", "tf_keras", "serving")
report["imported"] = sorted(m for m in sys.modules if m.split(".")[0] in banned)
print(json.dumps(report))
"""


def test_every_model_runs_on_core_ops_in_a_fresh_process(served):
    audio = warmup.waveform_inputs(served.audio[:1])
    wav = {"wav_bytes": np.asarray([warmup.wav_bytes(served.audio[1])], object)}
    user_request = warmup.read(served.dirs[graphs.USER_EMBEDDER])[0]
    history = {k: tf.make_ndarray(v) for k, v in user_request.inputs.items()}
    k = {"k": np.array([10], np.int32)}
    inputs = {
        graphs.AUDIO_EMBEDDER: {graphs.EMBED_WAVEFORM: audio, graphs.EMBED_WAV: wav},
        graphs.RECOMMENDER: {graphs.RECOMMEND_WAVEFORM: {**audio, **k}, graphs.RECOMMEND_WAV: {**wav, **k}},
        graphs.USER_EMBEDDER: {graphs.EMBED_USER: history},
    }
    np.save(served.out / "inputs.npy", inputs, allow_pickle=True)
    script = FRESH_PROCESS_CHECK % {"models": MODEL_NAMES}
    env = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"}  # no TF_USE_LEGACY_KERAS, no PYTHONPATH: plain TF
    result = subprocess.run([sys.executable, "-c", script, str(served.base), str(served.out / "inputs.npy")],
                            capture_output=True, text=True, timeout=300, env=env, cwd=str(served.out))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["imported"] == []
    for name in MODEL_NAMES:
        assert report[name]["ops"] > 5 and report[name]["unknown"] == [], name
    expected = [reference_embedding(served.encoder, served.audio[0]), wav_reference(served.encoder, wav["wav_bytes"][0])]
    audio_out = report[graphs.AUDIO_EMBEDDER]["outputs"]
    np.testing.assert_allclose(audio_out[graphs.EMBED_WAVEFORM]["audio_embedding"][0], expected[0], atol=1e-4)
    np.testing.assert_allclose(audio_out[graphs.EMBED_WAV]["audio_embedding"][0], expected[1], rtol=1e-4, atol=1e-4)
    top = report[graphs.RECOMMENDER]["outputs"]
    assert top[graphs.RECOMMEND_WAVEFORM]["user_ids"][0] == reference_top_k(served.users, expected[0], 10)[0]
    assert top[graphs.RECOMMEND_WAV]["user_ids"][0] == reference_top_k(served.users, expected[1], 10)[0]
    user_out = served.repository.predict(graphs.USER_EMBEDDER, history, graphs.EMBED_USER)["user_embedding"]
    np.testing.assert_allclose(report[graphs.USER_EMBEDDER]["outputs"][graphs.EMBED_USER]["user_embedding"], user_out, atol=1e-5)


def test_warmup_files_are_prediction_logs_for_real_signatures(served):
    for name, path in served.dirs.items():
        records = list(tf.data.TFRecordDataset(str(path / warmup.WARMUP_FILE)))
        assert records, name
        for record in records:
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            assert log.WhichOneof("log_type") == "predict_log"
            request = log.predict_log.request
            assert request.model_spec.name == name
            response = served.repository.predict_proto(request)
            assert response.outputs and response.model_spec.version.value == 3


def test_models_config_batching_parameters_and_versions(served, tmp_path):
    config = text_format.Parse((served.base / MODELS_CONFIG).read_text(), model_server_config_pb2.ModelServerConfig())
    entries = {c.name: (c.base_path, c.model_platform) for c in config.model_config_list.config}
    assert entries == {name: (f"/models/{name}", "tensorflow") for name in MODEL_NAMES}
    assert served.dirs == {name: served.base / name / "3" for name in MODEL_NAMES}
    batching = (served.base / BATCHING_PARAMETERS).read_text()
    assert "max_batch_size { value: 32 }" in batching and "pad_variable_length_inputs: true" in batching
    with pytest.raises(FileExistsError, match="immutable"):
        export_serving_models(served.out / "audio_branch" / "audio_encoder", served.dirs[graphs.USER_EMBEDDER],
                              served.out / "missing.parquet", served.base, 3, CONTEXT)


def test_an_interrupted_export_leaves_no_version_and_the_next_export_cleans_up(served, tmp_path, monkeypatch, caplog):
    """A push stopped after part of its files are written (here: after the first warm-up file) must
    not leave a numbered folder TF Serving would serve; the next export removes the leftover."""
    from musicrec.serving import export

    args = (served.out / "audio_branch" / "audio_encoder", served.dirs[graphs.USER_EMBEDDER],
            served.out / "user_branch" / "model" / USER_EMBEDDINGS_FILE, tmp_path)
    real_write = warmup.write

    def write_then_stop(*write_args):
        real_write(*write_args)
        raise KeyboardInterrupt  # SIGINT mid-push

    monkeypatch.setattr(export.warmup, "write", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        export_serving_models(*args, export.next_version(tmp_path), CONTEXT)
    left = sorted(p for name in MODEL_NAMES for p in (tmp_path / name).iterdir())
    assert left and all(p.name.startswith(export.STAGING_PREFIX) for p in left)
    assert export.next_version(tmp_path) == 1
    with pytest.raises(FileNotFoundError, match="no SavedModel versions"):
        export.latest_version(tmp_path / graphs.AUDIO_EMBEDDER)

    monkeypatch.setattr(export.warmup, "write", real_write)
    dirs = export_serving_models(*args, export.next_version(tmp_path), CONTEXT)
    assert sorted(p for name in MODEL_NAMES for p in (tmp_path / name).iterdir()) == sorted(dirs.values())
    assert all(export.latest_version(path.parent) == path and (path / "assets.extra" / "tf_serving_warmup_requests").is_file()
               for path in dirs.values())
    assert all(f"removed {p}, left by an interrupted push" in caplog.text for p in left)


@pytest.fixture(scope="module")
def server(served):
    running = dev_server.serve(served.repository, rest_port=0, grpc_port=0)
    yield running
    running.stop()


@pytest.fixture(scope="module", params=["rest", "grpc", "local"])
def any_client(request, served, server):
    if request.param == "local":
        return client.connect(None, served.base)
    url = f"http://127.0.0.1:{server.rest_port}" if request.param == "rest" else f"grpc://127.0.0.1:{server.grpc_port}"
    return client.connect(url)


def test_client_embeds_and_recommends_the_same_everywhere(served, any_client):
    expected = reference_embedding(served.encoder, load_audio(served.audio_file))
    np.testing.assert_allclose(client.embed_track(any_client, served.audio_file), expected, atol=1e-4)
    users = client.recommend_users(any_client, served.audio_file, k=12)
    ids, scores = reference_top_k(served.users, expected, 12)
    assert [u for u, _ in users] == ids
    np.testing.assert_allclose([s for _, s in users], scores, atol=1e-4)
    status = any_client.status(graphs.RECOMMENDER).model_version_status
    assert [(s.version, s.state) for s in status] == [(3, 30)]  # 30 = AVAILABLE
    signatures = get_model_metadata_pb2.SignatureDefMap()
    any_client.metadata(graphs.RECOMMENDER).metadata["signature_def"].Unpack(signatures)
    assert set(signatures.signature_def["recommend_users"].inputs) == {"waveform", "num_samples", "sample_rate", "k"}


def poisoned(values: np.ndarray, index, value: float) -> np.ndarray:
    values = values.copy()
    values[index] = value
    return values


@pytest.mark.parametrize("case, message", [
    ("wrong_shape", "must have shape [?, ?]"),
    ("wrong_rate", "sample_rate must be 22050 Hz"),
    ("empty_audio", "empty audio"),
    ("too_short", "audio too short"),
    ("k_too_large", "k must be between 1 and 1000"),
    ("k_zero", "k must be between 1 and 1000"),
    ("not_wav", "RIFF"),
    ("nan_waveform", "waveform samples must hold finite numbers (no NaN or Inf); rows with others: 0"),
    ("inf_embedding", "audio_embedding must hold finite numbers (no NaN or Inf); rows with others: 1"),
])
def test_bad_requests_get_clear_errors(served, any_client, case, message):
    good = {**warmup.waveform_inputs(served.audio[:1]), "k": np.array([5], np.int32)}
    embeddings = np.ones((2, 40), np.float32)
    signature, inputs = {
        "wrong_shape": (graphs.RECOMMEND_WAVEFORM, {**good, "waveform": good["waveform"][0]}),
        "wrong_rate": (graphs.RECOMMEND_WAVEFORM, {**good, "sample_rate": np.array([44100], np.int32)}),
        "empty_audio": (graphs.RECOMMEND_WAVEFORM, {**good, "waveform": np.zeros((1, 0), np.float32),
                                                    "num_samples": np.array([0], np.int32)}),
        "too_short": (graphs.RECOMMEND_WAVEFORM, {**warmup.waveform_inputs([served.audio[0][:22050]]), "k": good["k"]}),
        "k_too_large": (graphs.RECOMMEND_WAVEFORM, {**good, "k": np.array([1001], np.int32)}),
        "k_zero": (graphs.RECOMMEND_WAVEFORM, {**good, "k": np.array([0], np.int32)}),
        "not_wav": (graphs.RECOMMEND_WAV, {"wav_bytes": np.array([b"definitely not a wav file"], object), "k": good["k"]}),
        "nan_waveform": (graphs.RECOMMEND_WAVEFORM, {**good, "waveform": poisoned(good["waveform"], (0, 1000), np.nan)}),
        "inf_embedding": (graphs.RECOMMEND_EMBEDDING, {"audio_embedding": poisoned(embeddings, (1, 3), np.inf),
                                                      "k": np.array([5, 5], np.int32)}),
    }[case]
    with pytest.raises(ServingError) as error:
        any_client.predict(graphs.RECOMMENDER, inputs, signature)
    assert error.value.code == "INVALID_ARGUMENT" and message in error.value.message, error.value.message
    with pytest.raises(ServingError) as missing:
        any_client.predict("no_such_model", good, signature)
    assert missing.value.code == "NOT_FOUND"


def test_rest_row_format_and_http_status_as_tf_serving(served, server):
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/{graphs.RECOMMENDER}/versions/3:predict"
    ae = np.random.default_rng(2).normal(size=(2, 40)).round(3)
    body = {"signature_name": graphs.RECOMMEND_EMBEDDING, "instances": [{"audio_embedding": a.tolist(), "k": 3} for a in ae]}
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    predictions = json.loads(urllib.request.urlopen(request).read())["predictions"]
    assert [p["user_ids"] for p in predictions] == [reference_top_k(served.users, a.astype(np.float32), 3)[0] for a in ae]
    bad = urllib.request.Request(url, b'{"instances": [1], "inputs": {}}', {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(bad)
    assert error.value.code == 400 and "exactly one of" in json.loads(error.value.read())["error"]
    status = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{server.rest_port}/v1/models/{graphs.AUDIO_EMBEDDER}").read())
    assert status == {"model_version_status": [{"version": "3", "state": "AVAILABLE",
                                                "status": {"error_code": "OK", "error_message": ""}}]}


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="musicrec")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args) or 0


def test_cli_recommends_in_process_and_over_rest(served, server, tmp_path, capsys):
    assert run_cli(["recommend-users", str(served.audio_file), "--top", "5", "--models", str(served.base), "--json"]) == 0
    local = json.loads(capsys.readouterr().out)
    url = f"http://127.0.0.1:{server.rest_port}"
    assert run_cli(["recommend-users", str(served.audio_file), "--top", "5", "--server", url, "--json"]) == 0
    remote = json.loads(capsys.readouterr().out)
    expected = reference_top_k(served.users, reference_embedding(served.encoder, load_audio(served.audio_file)), 5)[0]
    assert [r["user_id"] for r in local] == [r["user_id"] for r in remote] == expected
    assert run_cli(["embed-track", str(served.audio_file), "--server", url]) == 0
    assert len(json.loads(capsys.readouterr().out)["audio_embedding"]) == 40
    soundfile.write(str(tmp_path / "short.wav"), served.audio[0][:11025], 22050)
    assert run_cli(["recommend-users", str(tmp_path / "short.wav"), "--server", url]) == 2
    assert "audio too short" in capsys.readouterr().err
    assert run_cli(["recommend-users", str(served.audio_file), "--top", "1001", "--models", str(served.base)]) == 2
    assert "k must be between 1 and 1000" in capsys.readouterr().err
    # The README's --top 100 on the tiny dataset's 60 users: all of them, ranked, and the count said.
    assert run_cli(["recommend-users", str(served.audio_file), "--top", "100", "--server", url, "--json"]) == 0
    output = capsys.readouterr()
    assert len(json.loads(output.out)) == len(served.users) == 60
    assert "the recommender holds 60 users; all 60 are listed (--top asked for 100)" in output.err
    with pytest.raises(SystemExit):
        run_cli(["serve-dev", "--help"])
    assert "NOT a replacement for TF Serving" in capsys.readouterr().out.replace("\n", " ").replace("  ", " ")
