"""A development stand-in for TF Serving: REST predict/status/metadata and gRPC PredictionService/ModelService.

NOT a replacement for TF Serving. It exists because the `tensorflow_model_server`
binary cannot be installed on the development machines: it lets you and the
client tests talk to the exported models locally, with TF Serving's URLs,
protos (tensorflow-serving-api), JSON formats and status codes. It has no
batching, no version policy beyond "latest", no model reloading, no
monitoring and no performance tuning. Serve production traffic with the
official `tensorflow/serving` image (serving/docker-compose.yml,
serving/kubernetes.yaml, docs/serving.md).

The HTTP side is Python's standard `http.server` (no web-framework
dependency for a stand-in); the gRPC side is grpcio with TF Serving's generated
service stubs.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import logging
import re
import threading
from concurrent import futures
from typing import Optional

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving import rest
from serving.repository import ModelRepository, ServingError

STAND_IN_NOTICE = ("development stand-in for TF Serving, NOT a replacement: no batching, no model reloading, "
                   "no monitoring; serve production traffic with the tensorflow/serving image")
_ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?(?P<action>/metadata|:predict)?$")


def _json_message(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True, including_default_value_fields=True)


class RestHandler(http.server.BaseHTTPRequestHandler):
    repository: ModelRepository  # set on the subclass `serve` makes
    server_version = "musicrec-dev-serving"

    def do_GET(self):
        self._answer("GET")

    def do_POST(self):
        self._answer("POST")

    def _answer(self, method: str) -> None:
        try:
            status, body = 200, self._route(method)
        except ServingError as e:
            status, body = e.http_status, {"error": e.message}
        except rest.BadJson as e:
            status, body = 400, {"error": str(e)}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _route(self, method: str) -> dict:
        match = _ROUTE.match(self.path.split("?")[0])
        if not match or (method == "POST") != (match["action"] == ":predict"):
            raise ServingError("NOT_FOUND", f"Malformed request: {method} {self.path}")
        name, version = match["name"], int(match["version"]) if match["version"] else None
        if match["action"] == "/metadata":
            return _json_message(self.repository.metadata(name, version))
        if match["action"] is None:
            return _json_message(self.repository.status(name, version))
        return self._predict(name, version)

    def _predict(self, name: str, version: Optional[int]) -> dict:
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
        except json.JSONDecodeError as e:
            raise rest.BadJson(f"the request body is not JSON: {e}") from None
        signature = body.get("signature_name", "") if isinstance(body, dict) else ""
        _, function = self.repository.model(name, version).signature(signature)
        dtypes = {key: spec.dtype.as_numpy_dtype for key, spec in function.structured_input_signature[1].items()}
        inputs, row_format = rest.parse_predict(body, dtypes)
        return rest.format_predict(self.repository.predict(name, inputs, signature, version), row_format)

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        logging.debug("dev server: " + format, *args)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, repository: ModelRepository):
        self.repository = repository

    def Predict(self, request, context):  # noqa: N802 (gRPC method name)
        return _grpc_call(context, self.repository.predict_proto, request)

    def GetModelMetadata(self, request, context):  # noqa: N802
        if list(request.metadata_field) != ["signature_def"]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, 'Metadata field must be "signature_def"')
        version = request.model_spec.version.value if request.model_spec.HasField("version") else None
        return _grpc_call(context, self.repository.metadata, request.model_spec.name, version)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, repository: ModelRepository):
        self.repository = repository

    def GetModelStatus(self, request, context):  # noqa: N802
        version = request.model_spec.version.value if request.model_spec.HasField("version") else None
        return _grpc_call(context, self.repository.status, request.model_spec.name, version)


def _grpc_call(context, fn, *args):
    try:
        return fn(*args)
    except ServingError as e:
        context.abort(getattr(grpc.StatusCode, e.code), e.message)


@dataclasses.dataclass
class DevServer:
    rest_port: int
    grpc_port: int
    _http: http.server.ThreadingHTTPServer
    _grpc: grpc.Server

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._grpc.stop(grace=None)


def serve(repository: ModelRepository, host: str = "127.0.0.1", rest_port: int = 8501, grpc_port: int = 8500) -> DevServer:
    """Starts both APIs in background threads (port 0 picks a free port) and returns at once."""
    handler = type("Handler", (RestHandler,), {"repository": repository})
    http_server = http.server.ThreadingHTTPServer((host, rest_port), handler)
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                              options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(repository), grpc_server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(repository), grpc_server)
    bound = grpc_server.add_insecure_port(f"{host}:{grpc_port}")
    grpc_server.start()
    return DevServer(http_server.server_address[1], bound, http_server, grpc_server)
