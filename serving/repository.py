"""Exported serving models loaded in this process, answering TF Serving's requests as TF Serving does.

One home for in-process serving: the development server (`serving.dev_server`)
and the no-server client (`musicrec.serving.client.LocalClient`) both call
`ModelRepository`. Requests and responses are TF Serving's own protos
(PredictRequest, GetModelStatusResponse, GetModelMetadataResponse), and
errors carry TF Serving's status codes, so a client cannot tell the
development server from the real one.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Dict, Iterable, Mapping, Optional

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf
from etils import epath
from tensorflow.core.protobuf import error_codes_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

from musicrec import storage
from musicrec.serving import graphs, warmup
from musicrec.serving.export import MODEL_NAMES, latest_version

# gRPC status code name -> HTTP status of TF Serving's REST API.
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400, "NOT_FOUND": 404,
               "RESOURCE_EXHAUSTED": 429, "UNIMPLEMENTED": 501, "INTERNAL": 500, "UNAVAILABLE": 503}


class ServingError(Exception):
    """A request TF Serving would refuse: `code` is the gRPC status name (INVALID_ARGUMENT, NOT_FOUND...)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)


@dataclasses.dataclass
class LoadedModel:
    name: str
    version: int
    path: epath.Path
    module: object
    signature_defs: Mapping[str, object]  # name -> tensorflow.SignatureDef proto, as in saved_model.pb

    @classmethod
    def load(cls, name: str, version_dir: epath.Path) -> "LoadedModel":
        saved = saved_model_pb2.SavedModel.FromString((version_dir / "saved_model.pb").read_bytes())
        return cls(name, int(version_dir.name), version_dir, tf.saved_model.load(str(version_dir)),
                   dict(saved.meta_graphs[0].signature_def))

    def signature(self, name: str):
        name = name or graphs.SERVING_DEFAULT
        if name not in self.signature_defs:
            raise ServingError("INVALID_ARGUMENT", f'Serving signature name: "{name}" not found in signature def; '
                                                   f"{self.name} has {sorted(self.signature_defs)}")
        return name, self.module.signatures[name]


class ModelRepository:
    """The latest version of each model under a TF Serving base path (`<base>/<model>/<version>/`)."""

    def __init__(self, base_path, names: Iterable[str] = MODEL_NAMES, run_warmup: bool = True):
        self.base_path = storage.path(base_path)
        self.models: Dict[str, LoadedModel] = {}
        for name in names:
            model = LoadedModel.load(name, latest_version(self.base_path / name))
            self.models[name] = model
            if run_warmup:  # as TF Serving does on load; also proves the warm-up records are valid
                for request in warmup.read(model.path):
                    self.predict_proto(request)

    def model(self, name: str, version: Optional[int] = None) -> LoadedModel:
        model = self.models.get(name)
        if model is None:
            raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({name})")
        if version not in (None, 0, model.version):
            raise ServingError("NOT_FOUND", f"Servable not found for request: Specific({name}, {version})")
        return model

    def predict(self, name: str, inputs: Mapping[str, np.ndarray], signature: str = "",
                version: Optional[int] = None, output_filter: Iterable[str] = ()) -> Dict[str, np.ndarray]:
        model = self.model(name, version)
        signature, function = model.signature(signature)
        specs = function.structured_input_signature[1]
        feed = {key: _checked_input(key, value, specs) for key, value in inputs.items()}
        missing = sorted(set(specs) - set(feed))
        if missing:
            raise ServingError("INVALID_ARGUMENT", f"signature {signature} of {name} needs inputs {sorted(specs)}; "
                                                   f"missing {missing}")
        try:
            outputs = function(**feed)
        except tf.errors.OpError as e:  # the graph's checks are INVALID_ARGUMENT; other op errors keep their code
            raise ServingError(error_codes_pb2.Code.Name(e.error_code), readable(e.message)) from None
        wanted = list(output_filter) or sorted(outputs)
        unknown = sorted(set(wanted) - set(outputs))
        if unknown:
            raise ServingError("INVALID_ARGUMENT", f"output_filter names unknown outputs {unknown}; {signature} has {sorted(outputs)}")
        return {key: outputs[key].numpy() for key in wanted}

    def predict_proto(self, request: predict_pb2.PredictRequest,
                      max_tensor_bytes: Optional[int] = None) -> predict_pb2.PredictResponse:
        """`max_tensor_bytes`: the most bytes one input may expand to (None: no limit, for trusted
        requests such as the warm-up records)."""
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        inputs = {key: array_from_proto(key, proto, max_tensor_bytes) for key, proto in request.inputs.items()}
        outputs = self.predict(spec.name, inputs, spec.signature_name, version, request.output_filter)
        response = predict_pb2.PredictResponse()
        self._fill_spec(response.model_spec, spec.name, version, spec.signature_name or graphs.SERVING_DEFAULT)
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response

    def status(self, name: str, version: Optional[int] = None) -> get_model_status_pb2.GetModelStatusResponse:
        model = self.model(name, version)
        response = get_model_status_pb2.GetModelStatusResponse()
        entry = response.model_version_status.add(version=model.version)
        entry.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        entry.status.SetInParent()  # error_code OK, as TF Serving reports it
        return response

    def metadata(self, name: str, version: Optional[int] = None) -> get_model_metadata_pb2.GetModelMetadataResponse:
        model = self.model(name, version)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        self._fill_spec(response.model_spec, name, model.version, "")
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for key, definition in model.signature_defs.items():
            signatures.signature_def[key].CopyFrom(definition)
        response.metadata["signature_def"].Pack(signatures)
        return response

    def _fill_spec(self, spec, name: str, version: Optional[int], signature: str) -> None:
        spec.name = name
        spec.version.value = self.model(name, version).version
        spec.signature_name = signature


def array_from_proto(key: str, proto, max_bytes: Optional[int] = None) -> np.ndarray:
    """A request's TensorProto -> numpy array. A proto may give fewer values than its shape holds
    (the last one repeats), so a few bytes can declare gigabytes: with `max_bytes`, an input that
    would expand past it is refused (RESOURCE_EXHAUSTED) before anything is allocated."""
    try:
        dtype = tf.dtypes.as_dtype(proto.dtype)
    except TypeError:
        raise ServingError("INVALID_ARGUMENT", f"input '{key}' has an unknown dtype ({proto.dtype})") from None
    if not dtype.is_numpy_compatible:
        raise ServingError("INVALID_ARGUMENT", f"input '{key}' has dtype {dtype.name}, which a request cannot carry")
    dims = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in dims):
        raise ServingError("INVALID_ARGUMENT", f"input '{key}' has a negative dimension in its shape {dims}")
    element_bytes = max(map(len, proto.string_val), default=0) + 8 if dtype == tf.string else max(dtype.size, 1)
    if max_bytes is not None and math.prod(dims) * element_bytes > max_bytes:
        raise ServingError("RESOURCE_EXHAUSTED", f"input '{key}' of shape {dims} would take {math.prod(dims) * element_bytes} "
                                                 f"bytes; this server takes at most {max_bytes} bytes per request")
    try:
        return tf.make_ndarray(proto)
    except (TypeError, ValueError) as e:
        raise ServingError("INVALID_ARGUMENT", f"input '{key}' is not a readable {dtype.name} tensor of shape {dims}: {e}") from None


def _checked_input(key: str, value, specs: Mapping[str, tf.TensorSpec]) -> tf.Tensor:
    if key not in specs:
        raise ServingError("INVALID_ARGUMENT", f"unknown input '{key}'; the signature takes {sorted(specs)}")
    spec = specs[key]
    array = np.asarray(value)
    if not _holds(array, spec.dtype):
        raise ServingError("INVALID_ARGUMENT", f"input '{key}' must be {_dtype_words(spec.dtype)}; got {_values_words(array)}")
    if not spec.shape.is_compatible_with(array.shape):
        dims = ", ".join("?" if d is None else str(d) for d in spec.shape.as_list())
        raise ServingError("INVALID_ARGUMENT", f"input '{key}' must have shape [{dims}] (? = any size); got {list(array.shape)}")
    if spec.dtype == tf.string:
        return tf.constant(array.astype(object))
    with np.errstate(over="ignore"):  # numbers past float32 become Inf, which the graphs refuse with a clear message
        return tf.constant(array.astype(spec.dtype.as_numpy_dtype))


def _holds(array: np.ndarray, dtype: tf.DType) -> bool:
    """Whether the values sent are `dtype` values as they are: an int32 input takes whole numbers
    in its range (5.5 is refused, not truncated to 5; 2**40 is refused, not wrapped), a float
    input any numbers, a string input strings. Empty arrays (JSON `[]` reads as float64) fit any."""
    kind = array.dtype.kind
    if dtype == tf.string:
        return kind in "SU" or (kind == "O" and all(isinstance(v, (bytes, str)) for v in array.reshape(-1)))
    if array.size == 0:
        return kind in "biuf"
    if dtype.is_integer:
        limits = np.iinfo(dtype.as_numpy_dtype)
        return kind in "iu" and limits.min <= array.min() and array.max() <= limits.max
    if dtype.is_floating:
        return kind in "iuf"
    return dtype.is_bool and kind == "b"


def _dtype_words(dtype: tf.DType) -> str:
    if dtype == tf.string:
        return "strings"
    if dtype.is_integer:
        limits = np.iinfo(dtype.as_numpy_dtype)
        return f"{dtype.name}: whole numbers from {limits.min} to {limits.max}"
    return f"{dtype.name} numbers" if dtype.is_floating else dtype.name


def _values_words(array: np.ndarray) -> str:
    if array.dtype.kind in "iuf" and array.size:
        return f"{array.dtype.name} values from {array.min()} to {array.max()}"
    if array.dtype.kind in "OSU":
        return "strings" if _holds(array, tf.string) else "values that are not all numbers or all strings"
    return f"{array.dtype.name} values"


def readable(message: str) -> str:
    """A TF runtime error's message as a sentence: no graph-node names or trace, and an
    assertion's bracketed pieces ("assertion failed: [k must be ...; got] [5000]") joined."""
    first = re.sub(r"\{\{[^}]*\}\}", "", message.strip().split("\n")[0]).strip()
    if first.startswith("assertion failed:"):
        first = " ".join(re.findall(r"\[([^\]]*)\]", first[len("assertion failed:"):]))
    return first
