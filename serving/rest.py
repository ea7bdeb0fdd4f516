"""TF Serving's REST JSON encoding of tensors, used by both the client and the development server.

As TF Serving's REST API (https://www.tensorflow.org/tfx/serving/api_rest):
numbers and strings are plain JSON, binary strings travel as {"b64": ...}
(outputs whose name ends in `_bytes` always do), a predict request carries
either "instances" (row format; answered with "predictions") or "inputs"
(columnar format; answered with "outputs"), and errors are {"error": message}.
"""

from __future__ import annotations

import base64
from typing import Dict, Mapping, Tuple

import numpy as np


class BadJson(ValueError):
    """The request body is not a TF Serving predict request."""


def to_json(value: np.ndarray, name: str = ""):
    array = np.asarray(value)
    if array.dtype.kind not in "OSU":
        return array.tolist()
    binary = name.endswith("_bytes")
    return _map_strings(array.tolist(), lambda s: _string_to_json(s, binary))


def _string_to_json(value, binary: bool):
    if isinstance(value, str):
        return value
    if not binary:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(value).decode("ascii")}


def from_json(value, numpy_dtype=None) -> np.ndarray:
    """JSON value -> numpy array; {"b64": ...} and strings become bytes."""
    decoded = _map_strings(value, _string_from_json)
    if numpy_dtype is not None and np.dtype(numpy_dtype).kind not in "OSU":
        try:
            return np.asarray(decoded, dtype=numpy_dtype)
        except (TypeError, ValueError) as e:
            raise BadJson(f"cannot read a {np.dtype(numpy_dtype).name} tensor from the JSON value: {e}") from None
    array = np.asarray(decoded, dtype=object if _has_bytes(decoded) else None)
    if array.dtype == object and array.size and not all(isinstance(v, bytes) for v in array.reshape(-1)):
        raise BadJson("ragged or mixed JSON lists cannot form a tensor")
    return array


def _string_from_json(value):
    if isinstance(value, dict):
        if set(value) != {"b64"}:
            raise BadJson(f'a JSON object inside a tensor must be {{"b64": ...}}; got keys {sorted(value)}')
        return base64.b64decode(value["b64"])
    return value.encode("utf-8") if isinstance(value, str) else value


def _map_strings(value, fn):
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    return fn(value) if isinstance(value, (str, bytes, dict)) else value


def _has_bytes(value) -> bool:
    if isinstance(value, list):
        return any(_has_bytes(v) for v in value)
    return isinstance(value, bytes)


def predict_body(inputs: Mapping[str, np.ndarray], signature: str = "") -> dict:
    """A columnar ("inputs") predict request."""
    body = {"inputs": {key: to_json(value, key) for key, value in inputs.items()}}
    if signature:
        body["signature_name"] = signature
    return body


def parse_predict(body, dtypes: Mapping[str, np.dtype]) -> Tuple[Dict[str, np.ndarray], bool]:
    """A predict request body -> (inputs, row format?). `dtypes`: the signature's input dtypes."""
    if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
        raise BadJson('a predict request is a JSON object with exactly one of "instances" or "inputs"')
    row_format = "instances" in body
    data = body["instances"] if row_format else body["inputs"]
    names = sorted(dtypes)
    if row_format:
        if not isinstance(data, list) or not data:
            raise BadJson('"instances" must be a non-empty list')
        if all(isinstance(row, dict) and "b64" not in row for row in data):
            data = {key: [row.get(key) for row in data] for key in {k for row in data for k in row}}
        elif len(names) == 1:
            data = {names[0]: data}
        else:
            raise BadJson(f"this signature takes several inputs {names}: each instance must be an object naming them")
    elif not isinstance(data, dict):
        if len(names) != 1:
            raise BadJson(f'this signature takes several inputs {names}: "inputs" must be an object naming them')
        data = {names[0]: data}
    return {key: from_json(value, dtypes.get(key)) for key, value in data.items()}, row_format


def format_predict(outputs: Mapping[str, np.ndarray], row_format: bool) -> dict:
    if not row_format:
        encoded = {key: to_json(value, key) for key, value in outputs.items()}
        return {"outputs": next(iter(encoded.values())) if len(encoded) == 1 else encoded}
    rows = len(next(iter(outputs.values())))
    if len(outputs) == 1:
        key, value = next(iter(outputs.items()))
        return {"predictions": [to_json(value[i], key) for i in range(rows)]}
    return {"predictions": [{key: to_json(value[i], key) for key, value in outputs.items()} for i in range(rows)]}
