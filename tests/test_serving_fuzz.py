"""The development server under hostile requests: every request gets a status (HTTP or gRPC), the
server stays up, and oversize requests cost no memory.

Regressions first (each was a dropped connection, a 200 with NaN scores, a truncated k or an
unbounded read), then hypothesis fuzzing of the REST and gRPC handlers with random bodies,
headers, dtypes and shapes (derandomized, bounded in examples). Loopback only; the models are
the ones test_serving builds (its `served` fixture, built once per session).
"""

import json
import re
import socket
import threading
import time
import types

import grpc
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from musicrec.serving import dev_server, graphs, warmup
from test_serving import served  # noqa: F401  (the fixture: test_serving's models, built once per session)

HOST = "127.0.0.1"
LIMIT = 1 << 20  # the limited server's --max-request-bytes
MODELS = (graphs.RECOMMENDER, graphs.AUDIO_EMBEDDER, graphs.USER_EMBEDDER, "no_such_model")
SIGNATURES = (graphs.RECOMMEND_WAVEFORM, graphs.RECOMMEND_WAV, graphs.RECOMMEND_EMBEDDING, graphs.EMBED_WAVEFORM,
              graphs.EMBED_WAV, graphs.EMBED_USER, graphs.SERVING_DEFAULT, "", "no_such_signature")
INPUTS = ("waveform", "num_samples", "sample_rate", "k", "wav_bytes", "audio_embedding", "history_track_ids", "age",
          "gender", "unknown_input")
# What a request may be answered with; never 500 / INTERNAL / UNKNOWN (a defect), never silence.
HTTP_ANSWERS = {200, 400, 404, 411, 413, 414, 431, 501}  # 414, 431, 501: http.server's own (long line, headers, method)
GRPC_ANSWERS = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.RESOURCE_EXHAUSTED}
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def dev(served):
    """A development server as `serve-dev` starts it (default limits)."""
    running = dev_server.serve(served.repository, HOST, rest_port=0, grpc_port=0)
    yield connected(running)
    running.stop()


@pytest.fixture(scope="module")
def limited(served):
    """A development server with a 1 MiB request limit and a 2 s read timeout."""
    running = dev_server.serve(served.repository, HOST, rest_port=0, grpc_port=0, max_request_bytes=LIMIT,
                               request_timeout_s=2.0)
    yield connected(running)
    running.stop()


def connected(running):
    channel = grpc.insecure_channel(f"{HOST}:{running.grpc_port}", options=[("grpc.max_send_message_length", 64 << 20)])
    return types.SimpleNamespace(rest_port=running.rest_port, predict=prediction_service_pb2_grpc.PredictionServiceStub(channel),
                                 models=model_service_pb2_grpc.ModelServiceStub(channel))


def exchange(port: int, request: bytes):
    """Sends raw bytes, half-closes, reads the whole answer: (status, body). Fails when no HTTP status comes back."""
    with socket.create_connection((HOST, port), timeout=30) as sock:
        try:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server may answer and stop reading first; its answer is still there
            pass
        chunks = []
        while chunk := sock.recv(1 << 16):
            chunks.append(chunk)
    answer = b"".join(chunks)
    status = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    assert status, f"no HTTP status in the answer {answer[:200]!r} to {request[:200]!r}"
    return int(status[1]), answer.partition(b"\r\n\r\n")[2]


def http_request(method: bytes, path: bytes, body: bytes = b"", headers=None) -> bytes:
    headers = {b"Content-Length": str(len(body)).encode()} if headers is None else headers
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: " + HOST.encode()] + [k + b": " + v for k, v in headers.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


PREDICT = f"/v1/models/{graphs.RECOMMENDER}:predict".encode()


def predict_json(body) -> bytes:
    return http_request(b"POST", PREDICT, json.dumps(body).encode())


def embedding_body(embedding, k) -> dict:
    return {"signature_name": graphs.RECOMMEND_EMBEDDING, "inputs": {"audio_embedding": embedding, "k": k}}


GOOD = embedding_body([[0.5] * 40], [3])


@pytest.mark.parametrize("request_bytes, status, message", [
    (predict_json(GOOD), 200, ""),
    (predict_json({"signature_name": graphs.RECOMMEND_WAV, "inputs": {"wav_bytes": [{"b64": "not*base64!"}], "k": [3]}}),
     400, "invalid base64"),
    (http_request(b"POST", PREDICT, b"{}", {b"Content-Length": b"twelve"}), 400, "Content-Length must be"),
    (http_request(b"POST", PREDICT, b"{}", {b"Content-Length": b"-5"}), 400, "Content-Length must be"),
    (http_request(b"POST", PREDICT, b"{}", {}), 411, "needs a Content-Length"),
    (http_request(b"POST", PREDICT, b'{"inputs": "\xff\xfe"}'), 400, "not UTF-8"),
    (http_request(b"POST", PREDICT, b"[" * 100_000), 400, "not JSON"),
    (http_request(b"POST", PREDICT, b"{}", {b"Content-Length": b"100"}), 400, "ended after 2 of the 100 bytes"),
    (predict_json(embedding_body([[0.5] * 40], [5.5])), 400, "input 'k' must be int32: whole numbers"),
    (predict_json(embedding_body([[0.5] * 40], [True])), 400, "input 'k' must be int32"),
    (predict_json(embedding_body([[0.5] * 40], [2 ** 40])), 400, "input 'k' must be int32"),
    (predict_json(embedding_body([[float("nan")] * 40], [3])), 400, "audio_embedding must hold finite numbers"),
    (predict_json(embedding_body([[1e300] * 40], [3])), 400, "audio_embedding must hold finite numbers"),  # inf as float32
    (predict_json({**GOOD, "signature_name": ["a"]}), 400, '"signature_name" must be a string'),
    (predict_json({"inputs": {"waveform": [[0.1, [0.2]]]}}), 400, "cannot read a tensor"),
    (http_request(b"GET", f"/v1/models/{graphs.RECOMMENDER}/versions/{'9' * 5000}".encode()), 404, "Malformed request"),
    # No HTTP version on the request line (HTTP/0.9 to http.server, which answers it without a status line).
    (b"POST /\n HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n", 400, "Bad HTTP/0.9 request type"),
])
def test_every_malformed_rest_request_gets_a_clear_status(dev, request_bytes, status, message):
    answered, body = exchange(dev.rest_port, request_bytes)
    assert answered == status, body[:500]
    if status == 200:
        assert len(json.loads(body)["outputs"]["user_ids"][0]) == 3
    else:
        assert message in json.loads(body)["error"], body[:500]


def proto_request(model: str, signature: str, **tensors) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = model, signature
    for name, tensor in tensors.items():
        request.inputs[name].CopyFrom(tensor)
    return request


def shaped(dtype: int, dims, **values) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype, **values)
    for size in dims:
        proto.tensor_shape.dim.add(size=size)
    return proto


K3 = tf.make_tensor_proto(np.array([3], np.int32))
HUGE = [1 << 20, 1 << 20]  # 2**40 elements from a few bytes: TF fills a shape by repeating the last value


@pytest.mark.parametrize("request_proto, code, message", [
    (proto_request(graphs.RECOMMENDER, graphs.RECOMMEND_EMBEDDING, k=K3,
                   audio_embedding=tf.make_tensor_proto(np.full((1, 40), np.nan, np.float32))),
     grpc.StatusCode.INVALID_ARGUMENT, "audio_embedding must hold finite numbers"),
    (proto_request(graphs.RECOMMENDER, graphs.RECOMMEND_EMBEDDING, k=K3, audio_embedding=shaped(999, [1, 40])),
     grpc.StatusCode.INVALID_ARGUMENT, "unknown dtype"),
    (proto_request(graphs.RECOMMENDER, graphs.RECOMMEND_EMBEDDING, k=K3, audio_embedding=shaped(types_pb2.DT_RESOURCE, [])),
     grpc.StatusCode.INVALID_ARGUMENT, "dtype resource, which a request cannot carry"),
    (proto_request(graphs.RECOMMENDER, graphs.RECOMMEND_EMBEDDING, k=K3,
                   audio_embedding=shaped(types_pb2.DT_FLOAT, [1, 40], tensor_content=b"\x00" * 7)),
     grpc.StatusCode.INVALID_ARGUMENT, "not a readable float32 tensor"),
    (proto_request(graphs.RECOMMENDER, graphs.RECOMMEND_EMBEDDING, k=K3,
                   audio_embedding=shaped(types_pb2.DT_FLOAT, HUGE, float_val=[1.0])),
     grpc.StatusCode.RESOURCE_EXHAUSTED, "would take"),
    (proto_request(graphs.RECOMMENDER, graphs.RECOMMEND_WAV, k=K3, wav_bytes=shaped(types_pb2.DT_STRING, HUGE, string_val=[b"x"])),
     grpc.StatusCode.RESOURCE_EXHAUSTED, "would take"),
    (proto_request(graphs.RECOMMENDER, graphs.RECOMMEND_EMBEDDING, audio_embedding=tf.make_tensor_proto(np.ones((1, 40), np.float32)),
                   k=tf.make_tensor_proto(np.array([1 << 40], np.int64))),
     grpc.StatusCode.INVALID_ARGUMENT, "input 'k' must be int32"),
])
def test_every_malformed_grpc_request_gets_a_clear_status(dev, request_proto, code, message):
    with pytest.raises(grpc.RpcError) as error:
        dev.predict.Predict(request_proto, timeout=30)
    assert error.value.code() == code and message in error.value.details(), error.value.details()


class PeakRss:
    """The process's largest resident set size while the block runs, sampled every millisecond
    from /proc/self/status (the server runs in this process)."""

    def __enter__(self):
        self.start = self.peak = self._rss()
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._running = False
        self._thread.join()

    def _sample(self):
        while self._running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.001)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def test_oversize_requests_are_refused_unread_and_memory_stays_bounded(limited):
    # 50 MB of valid JSON, which the server once parsed into about 500 MB.
    body = b'{"signature_name": "%s", "inputs": {"k": [1], "audio_embedding": [[' % graphs.RECOMMEND_EMBEDDING.encode()
    body += b"0.5," * (50 << 18) + b"0.5]]}}"
    oversize_message = proto_request(graphs.RECOMMENDER, graphs.RECOMMEND_EMBEDDING, k=K3,
                                     audio_embedding=tf.make_tensor_proto(np.zeros((1, 2 * LIMIT // 4), np.float32)))
    with PeakRss() as rss:
        for _ in range(4):
            status, answer = exchange(limited.rest_port, http_request(b"POST", PREDICT, body))
            assert status == 413 and f"at most {LIMIT}" in json.loads(answer)["error"]
        for request_proto in (oversize_message, proto_request(graphs.RECOMMENDER, graphs.RECOMMEND_EMBEDDING, k=K3,
                                                              audio_embedding=shaped(types_pb2.DT_FLOAT, HUGE, float_val=[1.0]))):
            with pytest.raises(grpc.RpcError) as error:
                limited.predict.Predict(request_proto, timeout=30)
            assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert rss.peak - rss.start < 64 << 20, f"RSS grew by {(rss.peak - rss.start) >> 20} MiB"
    assert exchange(limited.rest_port, predict_json(GOOD))[0] == 200


# --- fuzzing -------------------------------------------------------------------------------------

scalars = st.one_of(st.integers(-(1 << 70), 1 << 70), st.floats(), st.booleans(), st.none(), st.text(max_size=6),
                    st.fixed_dictionaries({"b64": st.text(max_size=12)}))
tensors = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=24)
embeddings = st.lists(st.lists(st.floats(width=32), min_size=40, max_size=40), min_size=1, max_size=3)
ks = st.lists(st.one_of(st.integers(-3, 1200), st.floats(0, 100)), min_size=1, max_size=3)
predict_inputs = st.fixed_dictionaries({}, optional={
    "audio_embedding": st.one_of(embeddings, tensors), "k": st.one_of(ks, tensors),
    **{name: tensors for name in INPUTS if name not in ("audio_embedding", "k")}})


@st.composite
def waveform_bodies(draw) -> dict:
    """Recommendations for audio near the shortest accepted length, sometimes poisoned."""
    samples = draw(st.sampled_from([0, 100, 66048, 70000]))
    waveform = np.sin(np.arange(samples) / 9.0).round(3)
    poison = draw(st.sampled_from([None, np.nan, np.inf, -np.inf]))
    if poison is not None and samples:
        waveform[draw(st.integers(0, samples - 1))] = poison
    inputs = {"waveform": [waveform.tolist()], "num_samples": [draw(st.sampled_from([samples, samples + 1, 0]))],
              "sample_rate": [draw(st.sampled_from([22050, 44100]))], "k": draw(ks)}
    return {"signature_name": graphs.RECOMMEND_WAVEFORM, "inputs": inputs}


bodies = st.one_of(
    st.binary(max_size=300),
    st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                 max_leaves=16).map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries({"inputs": predict_inputs}, optional={"signature_name": st.sampled_from(SIGNATURES) | scalars})
    .map(lambda body: json.dumps(body).encode()),
    st.fixed_dictionaries({"instances": st.lists(predict_inputs, max_size=3)},
                          optional={"signature_name": st.sampled_from(SIGNATURES)}).map(lambda body: json.dumps(body).encode()),
    waveform_bodies().map(lambda body: json.dumps(body).encode()),
)
paths = st.one_of(
    st.builds("/v1/models/{}{}{}".format, st.sampled_from(MODELS), st.sampled_from(["", "/versions/3", "/versions/7"]),
              st.sampled_from([":predict", "", "/metadata", ":classify"])).map(str.encode),
    st.binary(min_size=1, max_size=40).map(lambda raw: b"/" + raw),
)
header_values = st.binary(max_size=30).filter(lambda raw: b"\r" not in raw and b"\n" not in raw)
header_names = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=16).map(str.encode)


@st.composite
def rest_requests(draw) -> bytes:
    body = draw(bodies)
    length = draw(st.sampled_from(["exact", "exact", "exact", "none", "garbage", "negative", "longer", "oversize", "twice"]))
    headers = {name: value for name, value in draw(st.dictionaries(header_names, header_values, max_size=3)).items()
               if name.lower() not in (b"content-length", b"transfer-encoding")}
    headers.update({
        "exact": {b"Content-Length": str(len(body)).encode()}, "none": {},
        "garbage": {b"Content-Length": draw(header_values)}, "negative": {b"Content-Length": b"-1"},
        "longer": {b"Content-Length": str(len(body) + draw(st.integers(1, 50))).encode()},
        "oversize": {b"Content-Length": str(LIMIT + 1).encode()},
        "twice": {b"Content-Length": str(len(body)).encode(), b"content-length": str(len(body) + 1).encode()},
    }[length])
    method = draw(st.sampled_from([b"POST", b"POST", b"GET", b"PUT", b"DELETE", b"BREW"]))
    return http_request(method, draw(paths), body, headers)


@FUZZ
@given(request_bytes=rest_requests())
def test_fuzzed_rest_requests_always_get_a_status(limited, request_bytes):
    status, body = exchange(limited.rest_port, request_bytes)
    assert status in HTTP_ANSWERS, body[:500]


DTYPES = [types_pb2.DT_FLOAT, types_pb2.DT_INT32, types_pb2.DT_INT64, types_pb2.DT_STRING, types_pb2.DT_BOOL,
          types_pb2.DT_DOUBLE, types_pb2.DT_HALF, types_pb2.DT_COMPLEX64, types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT, 0, 999]


@st.composite
def tensor_protos(draw) -> tensor_pb2.TensorProto:
    dims = draw(st.lists(st.one_of(st.integers(0, 4), st.integers(-2, 1 << 40)), max_size=3))
    values = draw(st.fixed_dictionaries({}, optional={
        "tensor_content": st.binary(max_size=64), "float_val": st.lists(st.floats(width=32), max_size=8),
        "int_val": st.lists(st.integers(-(1 << 31), (1 << 31) - 1), max_size=8),
        "int64_val": st.lists(st.integers(-(1 << 63), (1 << 63) - 1), max_size=4),
        "string_val": st.lists(st.binary(max_size=8), max_size=4), "bool_val": st.lists(st.booleans(), max_size=4)}))
    return shaped(draw(st.sampled_from(DTYPES)), dims, **values)


@st.composite
def grpc_requests(draw) -> predict_pb2.PredictRequest:
    inputs = draw(st.dictionaries(st.sampled_from(INPUTS), tensor_protos(), max_size=4))
    request = proto_request(draw(st.sampled_from(MODELS)), draw(st.sampled_from(SIGNATURES)), **inputs)
    if draw(st.booleans()):
        request.model_spec.version.value = draw(st.sampled_from([3, 7, -1]))
    request.output_filter.extend(draw(st.lists(st.sampled_from(["user_ids", "scores", "count", "nope"]), max_size=2)))
    return request


@FUZZ
@given(request_proto=grpc_requests())
def test_fuzzed_grpc_requests_always_get_a_status(limited, request_proto):
    try:
        limited.predict.Predict(request_proto, timeout=30)
        code = grpc.StatusCode.OK
    except grpc.RpcError as error:
        code = error.code()
        assert code in GRPC_ANSWERS, error.details()


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(model=st.sampled_from(MODELS) | st.text(max_size=10), version=st.none() | st.integers(-5, 10),
       fields=st.lists(st.sampled_from(["signature_def", "other"]), max_size=2))
def test_fuzzed_grpc_status_and_metadata_requests_always_get_a_status(limited, model, version, fields):
    status = get_model_status_pb2.GetModelStatusRequest()
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=fields)
    for spec in (status.model_spec, metadata.model_spec):
        spec.name = model
        if version is not None:
            spec.version.value = version
    for call, request in ((limited.models.GetModelStatus, status), (limited.predict.GetModelMetadata, metadata)):
        try:
            call(request, timeout=30)
        except grpc.RpcError as error:
            assert error.code() in GRPC_ANSWERS, error.details()


def test_the_server_is_still_up_after_the_fuzzing(limited):
    assert exchange(limited.rest_port, predict_json(GOOD))[0] == 200
    reply = limited.predict.Predict(warmup.predict_request(graphs.RECOMMENDER, graphs.RECOMMEND_EMBEDDING, {
        "audio_embedding": np.ones((1, 40), np.float32), "k": np.array([2], np.int32)}), timeout=30)
    assert list(tf.make_ndarray(reply.outputs["count"])) == [2]
