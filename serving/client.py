"""Clients of the serving models: TF Serving's REST and gRPC APIs, or in-process from a pushed base path.

All three speak the same interface (`predict`, `status`, `metadata`), so the
cold-start calls (`embed_track`, `recommend_users`) work the same against
`tensorflow/serving`, the development server, or the SavedModels on disk:

    client = connect("http://localhost:8501")   # REST; "grpc://localhost:8500" for gRPC; None: in-process
    for user_id, score in recommend_users(client, "new_track.mp3", k=100):
        ...

Audio is decoded and resampled to 22050 Hz here (soundfile + soxr, any
wav/flac/ogg/mp3), since the serving graphs take only 22050 Hz waveforms or WAV.
"""

from __future__ import annotations

import json
import pathlib
import urllib.error
import urllib.request
from typing import Dict, List, Mapping, Optional, Tuple

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     prediction_service_pb2_grpc)

from musicrec.audio.decode import load_audio
from musicrec.serving import DEFAULT_MODELS_DIR, graphs, rest, warmup
from musicrec.serving.repository import ModelRepository, ServingError, readable

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # 30 s of float32 audio is 2.6 MB; leave room for batches


class RestClient:
    """TF Serving's REST API (`http://host:8501`). urllib from the standard library: a few JSON POSTs need no more."""

    def __init__(self, url: str, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._outputs: Dict[Tuple[str, str], Dict[str, np.dtype]] = {}

    def predict(self, model: str, inputs: Mapping[str, np.ndarray], signature: str = "") -> Dict[str, np.ndarray]:
        body = self._call(f"/v1/models/{model}:predict", rest.predict_body(inputs, signature))
        dtypes = self._output_dtypes(model, signature or graphs.SERVING_DEFAULT)
        outputs = body["outputs"]
        if not isinstance(outputs, dict) or set(outputs) != set(dtypes):  # a single output comes back bare
            outputs = {next(iter(dtypes)): outputs}
        return {key: rest.from_json(value, dtypes[key]) for key, value in outputs.items()}

    def _output_dtypes(self, model: str, signature: str) -> Dict[str, np.dtype]:
        """Output names and dtypes from the model's metadata (JSON carries neither for a bare output)."""
        if (model, signature) not in self._outputs:
            signatures = get_model_metadata_pb2.SignatureDefMap()
            self.metadata(model).metadata["signature_def"].Unpack(signatures)
            if signature not in signatures.signature_def:
                raise ServingError("INVALID_ARGUMENT", f'Serving signature name: "{signature}" not found in signature def')
            outputs = signatures.signature_def[signature].outputs
            self._outputs[model, signature] = {k: tf.dtypes.as_dtype(v.dtype).as_numpy_dtype for k, v in outputs.items()}
        return self._outputs[model, signature]

    def status(self, model: str) -> get_model_status_pb2.GetModelStatusResponse:
        return json_format.ParseDict(self._call(f"/v1/models/{model}"), get_model_status_pb2.GetModelStatusResponse())

    def metadata(self, model: str) -> get_model_metadata_pb2.GetModelMetadataResponse:
        return json_format.ParseDict(self._call(f"/v1/models/{model}/metadata"),
                                     get_model_metadata_pb2.GetModelMetadataResponse())

    def _call(self, path: str, body: Optional[dict] = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise ServingError(_http_code(e.code), readable(_error_text(e.read()))) from None
        except urllib.error.URLError as e:
            raise ServingError("UNAVAILABLE", f"cannot reach TF Serving at {self.url}: {e.reason}") from None


def _http_code(status: int) -> str:
    return {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 413: "RESOURCE_EXHAUSTED", 429: "RESOURCE_EXHAUSTED",
            501: "UNIMPLEMENTED", 503: "UNAVAILABLE"}.get(status, "INTERNAL")


def _error_text(payload: bytes) -> str:
    try:
        return json.loads(payload)["error"]
    except (ValueError, KeyError, TypeError):
        return payload.decode("utf-8", "replace")


class GrpcClient:
    """TF Serving's gRPC API (`host:8500`), with tensorflow-serving-api's PredictionService and ModelService stubs."""

    def __init__(self, target: str, timeout: float = 60.0):
        options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES), ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        self.target = target
        self.timeout = timeout
        self._channel = grpc.insecure_channel(target, options=options)
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def predict(self, model: str, inputs: Mapping[str, np.ndarray], signature: str = "") -> Dict[str, np.ndarray]:
        request = warmup.predict_request(model, signature, inputs)
        response = self._call(self._predictions.Predict, request)
        return {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}

    def status(self, model: str) -> get_model_status_pb2.GetModelStatusResponse:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        return self._call(self._models.GetModelStatus, request)

    def metadata(self, model: str) -> get_model_metadata_pb2.GetModelMetadataResponse:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = model
        return self._call(self._predictions.GetModelMetadata, request)

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            code = e.code().name if e.code() else "UNKNOWN"
            raise ServingError(code, readable(e.details() or str(e))) from None

    def close(self) -> None:
        self._channel.close()


class LocalClient:
    """No server: the pushed SavedModels loaded in this process (the development server's repository)."""

    def __init__(self, models_dir=DEFAULT_MODELS_DIR, names=(graphs.AUDIO_EMBEDDER, graphs.RECOMMENDER)):
        self.repository = ModelRepository(models_dir, names, run_warmup=False)

    def predict(self, model: str, inputs: Mapping[str, np.ndarray], signature: str = "") -> Dict[str, np.ndarray]:
        return self.repository.predict(model, inputs, signature)

    def status(self, model: str):
        return self.repository.status(model)

    def metadata(self, model: str):
        return self.repository.metadata(model)


def connect(server: Optional[str] = None, models_dir=DEFAULT_MODELS_DIR):
    """`http(s)://host:port` -> REST; `grpc://host:port` -> gRPC; None -> in-process from `models_dir`."""
    if not server:
        return LocalClient(models_dir)
    if server.startswith(("http://", "https://")):
        return RestClient(server)
    if server.startswith("grpc://"):
        return GrpcClient(server[len("grpc://"):])
    raise ValueError(f"server must start with http://, https:// (REST) or grpc:// (gRPC); got {server!r}")


def audio_inputs(path) -> Dict[str, np.ndarray]:
    """The waveform signatures' inputs for an audio file: its first 30 s, mono, 22050 Hz."""
    return warmup.waveform_inputs([load_audio(pathlib.Path(path), max_seconds=30.0)])


def embed_track(client, path) -> np.ndarray:
    """The track-level AE [d] of an audio file."""
    return client.predict(graphs.AUDIO_EMBEDDER, audio_inputs(path), graphs.EMBED_WAVEFORM)["audio_embedding"][0]


def recommend_users(client, path, k: int = 100) -> List[Tuple[str, float]]:
    """The k users whose UE is closest (cosine) to the track's AE, best first: [(user_id, cosine)].
    Fewer than k (every user, ranked) when the recommender holds fewer users."""
    inputs = {**audio_inputs(path), "k": np.asarray([k], np.int32)}
    outputs = client.predict(graphs.RECOMMENDER, inputs, graphs.RECOMMEND_WAVEFORM)
    count = int(outputs["count"][0])
    ids = [u.decode() if isinstance(u, bytes) else str(u) for u in outputs["user_ids"][0][:count]]
    return list(zip(ids, outputs["scores"][0][:count].astype(float).tolist()))
