"""TF Serving's REST JSON encoding of tensors, used by both the client and the development server.

As TF Serving's REST API (https://www.tensorflow.org/tfx/serving/api_rest):
numbers and strings are plain JSON, binary strings travel as {"b64": ...}
(outputs whose name ends in `_bytes` always do), a predict request carries
either "instances" (row format; answered with "predictions") or "inputs"
(columnar format; answered with "outputs"), and errors are {"error": message}.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Dict, Iterable, Mapping, Tuple

import numpy as np


class BadJson(ValueError):
    """The request body is not a TF Serving predict request."""


# What JSON decoding and numpy raise on values that cannot form a tensor (ragged lists,
# nesting deeper than the parser or numpy allow, integers too long to convert).
_UNREADABLE = (ValueError, TypeError, OverflowError, RecursionError)


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
    """JSON value -> numpy array; {"b64": ...} and strings become bytes.

    With `numpy_dtype` (the client reading outputs of known dtypes) numbers are
    converted to it; without (the server reading a request) they keep the type
    JSON gave them (int64, float64, bool), so the signature's dtype check sees
    a 5.5 sent for an int32 input instead of a silently truncated 5."""
    try:
        decoded = _map_strings(value, _string_from_json)
        if numpy_dtype is not None and np.dtype(numpy_dtype).kind not in "OSU":
            return np.asarray(decoded, dtype=numpy_dtype)
        array = np.asarray(decoded, dtype=object if _has_bytes(decoded) else None)
    except BadJson:
        raise
    except _UNREADABLE as e:
        raise BadJson(f"cannot read a tensor from the JSON value: {e}") from None
    if array.dtype == object and array.size and not all(isinstance(v, bytes) for v in array.reshape(-1)):
        raise BadJson("ragged or mixed JSON lists cannot form a tensor")
    return array


def _string_from_json(value):
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise BadJson(f'a JSON object inside a tensor must be {{"b64": "<base64 text>"}}; got {_excerpt(value)}')
        try:
            return base64.b64decode(value["b64"], validate=True)
        except binascii.Error as e:
            raise BadJson(f'{{"b64": ...}} holds invalid base64 ({e}): {_excerpt(value["b64"])}') from None
    return value.encode("utf-8") if isinstance(value, str) else value


def _excerpt(value, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


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


def parse_body(payload: bytes):
    """The request body's bytes -> JSON value; BadJson unless it is UTF-8 JSON."""
    if not payload:
        raise BadJson("the request body is empty; a predict request is a JSON object")
    try:
        return json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise BadJson(f"the request body is not UTF-8 text: {e}") from None
    except _UNREADABLE as e:  # JSONDecodeError is a ValueError; nesting too deep, a RecursionError
        raise BadJson(f"the request body is not JSON: {e}") from None


def signature_name(body) -> str:
    """The request's "signature_name" ('' when absent: the default signature)."""
    name = body.get("signature_name", "") if isinstance(body, dict) else ""
    if not isinstance(name, str):
        raise BadJson(f'"signature_name" must be a string; got {_excerpt(name)}')
    return name


def parse_predict(body, input_names: Iterable[str]) -> Tuple[Dict[str, np.ndarray], bool]:
    """A predict request body -> (inputs, row format?). `input_names`: the signature's inputs.
    Numbers keep their JSON type; the signature's dtype check is the server's."""
    if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
        raise BadJson('a predict request is a JSON object with exactly one of "instances" or "inputs"')
    row_format = "instances" in body
    data = body["instances"] if row_format else body["inputs"]
    names = sorted(input_names)
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
    return {key: from_json(value) for key, value in data.items()}, row_format


def format_predict(outputs: Mapping[str, np.ndarray], row_format: bool) -> dict:
    if not row_format:
        encoded = {key: to_json(value, key) for key, value in outputs.items()}
        return {"outputs": next(iter(encoded.values())) if len(encoded) == 1 else encoded}
    rows = len(next(iter(outputs.values())))
    if len(outputs) == 1:
        key, value = next(iter(outputs.items()))
        return {"predictions": [to_json(value[i], key) for i in range(rows)]}
    return {"predictions": [{key: to_json(value[i], key) for key, value in outputs.items()} for i in range(rows)]}
