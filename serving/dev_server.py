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

Every request gets an answer: a status and, for REST, a JSON {"error": ...}.
Request bodies and gRPC messages over `max_request_bytes` are refused unread
(HTTP 413, RESOURCE_EXHAUSTED), as are gRPC tensors whose shape would expand
past it; a stalled client gives up its thread after `request_timeout_s`
(HTTP 408). What the graphs check (NaN or Inf values, `k`, rates, lengths)
they check themselves, so the real TF Serving refuses the same requests.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import logging
import re
import socket
import threading
import time
from concurrent import futures
from typing import Optional

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from musicrec.serving import DEFAULT_MAX_REQUEST_BYTES, rest
from musicrec.serving.repository import ModelRepository, ServingError

STAND_IN_NOTICE = ("development stand-in for TF Serving, NOT a replacement: no batching, no model reloading, "
                   "no monitoring; serve production traffic with the tensorflow/serving image")
_ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[0-9]{1,18}))?(?P<action>/metadata|:predict)?$")
DEFAULT_REQUEST_TIMEOUT_S = 30.0
# After answering, what the client still sends (a body refused unread: 413, 404, a malformed
# request) is read and dropped for at most this long; see `_LingeringHTTPServer`.
_LINGER_SECONDS = 5.0


def _json_message(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True, including_default_value_fields=True)


class HttpError(Exception):
    """A request refused before it reaches a model (framing, size, timeout), with its HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class RestHandler(http.server.BaseHTTPRequestHandler):
    repository: ModelRepository  # set on the subclass `serve` makes, with the two limits below
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    timeout = DEFAULT_REQUEST_TIMEOUT_S  # the socket's (StreamRequestHandler): a stalled client frees its thread
    server_version = "musicrec-dev-serving"
    # A request line without a version ("POST /") is HTTP/0.9 to http.server, whose answers carry
    # no status line at all. TF Serving speaks HTTP/1.x only: read such a line as HTTP/1.0, so the
    # client gets a status (400 for anything but GET) and the connection closes after it.
    default_request_version = "HTTP/1.0"

    def send_error(self, code, message=None, explain=None):
        """http.server's own rejections (a bad request line, too long a line or headers, an unknown
        method) as JSON {"error": ...}, like every other answer of this server and TF Serving's."""
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        payload = json.dumps({"error": message or http.HTTPStatus(code).phrase}).encode()
        self.send_response(code, message)
        self.send_header("Connection", "close")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def do_GET(self):
        self._answer("GET")

    def do_POST(self):
        self._answer("POST")

    def _answer(self, method: str) -> None:
        try:
            status, body = 200, self._route(method)
        except HttpError as e:
            status, body = e.status, {"error": e.message}
        except ServingError as e:
            status, body = e.http_status, {"error": e.message}
        except rest.BadJson as e:
            status, body = 400, {"error": str(e)}
        except TimeoutError:
            status, body = 408, {"error": f"the request body did not arrive within {self.timeout} s"}
        except Exception as e:  # a defect here, not in the request: still an answer, and the server stays up
            logging.exception("dev server: %s %s failed", method, self.path)
            status, body = 500, {"error": f"internal error: {type(e).__name__}: {e}"}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding") is not None:
            raise HttpError(411, "chunked request bodies are not supported by this stand-in; send Content-Length")
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            raise HttpError(411, "a predict request needs a Content-Length header")
        if len(set(lengths)) > 1 or not re.fullmatch(r"[0-9]+", lengths[0].strip()):
            raise HttpError(400, f"Content-Length must be one non-negative whole number; got {lengths}")
        length = int(lengths[0])
        if length > self.max_request_bytes:
            raise HttpError(413, f"the request body is {length} bytes; this server takes at most {self.max_request_bytes} "
                                 "(serve-dev --max-request-bytes)")
        body = self.rfile.read(length)
        if len(body) < length:
            raise HttpError(400, f"the request body ended after {len(body)} of the {length} bytes its Content-Length announced")
        return body

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
        body = rest.parse_body(self._read_body())
        signature = rest.signature_name(body)
        _, function = self.repository.model(name, version).signature(signature)
        inputs, row_format = rest.parse_predict(body, function.structured_input_signature[1])
        return rest.format_predict(self.repository.predict(name, inputs, signature, version), row_format)

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        logging.debug("dev server: " + format, *args)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, repository: ModelRepository, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
        self.repository = repository
        self.max_request_bytes = max_request_bytes

    def Predict(self, request, context):  # noqa: N802 (gRPC method name)
        return _grpc_call(context, self.repository.predict_proto, request, self.max_request_bytes)

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
        context.abort(getattr(grpc.StatusCode, e.code, grpc.StatusCode.UNKNOWN), e.message)
    except Exception as e:  # a defect here, not in the request: still a status, and the server stays up
        logging.exception("dev server: gRPC %s failed", getattr(fn, "__name__", fn))
        context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}: {e}")


class _LingeringHTTPServer(http.server.ThreadingHTTPServer):
    """Closes connections as HTTP servers must when a request may be left unread (an early 413 or
    404, a malformed request): the answer is sent and the sending side shut, then what the client
    still sends is read and dropped until it closes (at most _LINGER_SECONDS, in small reads).
    Closing a socket with unread data resets the connection, and the client may lose the answer."""

    def shutdown_request(self, request):
        try:
            request.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + _LINGER_SECONDS
            while deadline > time.monotonic():
                request.settimeout(deadline - time.monotonic())
                if not request.recv(1 << 16):
                    break
        except OSError:  # the client is gone, or the time is up
            pass
        self.close_request(request)


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


def serve(repository: ModelRepository, host: str = "127.0.0.1", rest_port: int = 8501, grpc_port: int = 8500,
          max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
          request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S) -> DevServer:
    """Starts both APIs in background threads (port 0 picks a free port) and returns at once.
    `max_request_bytes` bounds a REST body and a gRPC message (and what a gRPC tensor expands to)."""
    if max_request_bytes < 1:
        raise ValueError(f"max_request_bytes must be positive; got {max_request_bytes}")
    limits = {"repository": repository, "max_request_bytes": max_request_bytes, "timeout": request_timeout_s}
    http_server = _LingeringHTTPServer((host, rest_port), type("Handler", (RestHandler,), limits))
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                              options=[("grpc.max_receive_message_length", max_request_bytes)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(repository, max_request_bytes), grpc_server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(repository), grpc_server)
    bound = grpc_server.add_insecure_port(f"{host}:{grpc_port}")
    grpc_server.start()
    return DevServer(http_server.server_address[1], bound, http_server, grpc_server)
