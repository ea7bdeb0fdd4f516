"""TF Serving warm-up requests: `assets.extra/tf_serving_warmup_requests`, a TFRecord of PredictionLog.

TF Serving replays these when it loads a version, so the first real request
does not pay for graph initialisation. The records are TF Serving's own
protos (tensorflow-serving-api), so the real server and the development
server read the same file.
"""

from __future__ import annotations

from typing import Dict, List, Mapping

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf
from etils import epath
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from musicrec import storage
from musicrec.audio.logmel import DEFAULT
from musicrec.serving import graphs

WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"


def warmup_waveform(samples: int) -> np.ndarray:
    """`samples` of a fixed A-major chord at 22050 Hz: pass the shortest audio the embedder takes
    (`TrackEmbedding.min_samples`: one context segment)."""
    t = np.arange(samples) / DEFAULT.sample_rate
    return sum(0.1 * np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)).astype(np.float32)


def waveform_inputs(waveforms: List[np.ndarray]) -> Dict[str, np.ndarray]:
    """Inputs of the waveform signatures: rows zero-padded to the longest, with their lengths."""
    longest = max(len(w) for w in waveforms)
    batch = np.zeros((len(waveforms), longest), np.float32)
    for row, wave in enumerate(waveforms):
        batch[row, : len(wave)] = wave
    return {
        "waveform": batch,
        "num_samples": np.asarray([len(w) for w in waveforms], np.int32),
        "sample_rate": np.full(len(waveforms), DEFAULT.sample_rate, np.int32),
    }


def wav_bytes(waveform: np.ndarray, sample_rate: int = DEFAULT.sample_rate) -> bytes:
    """16-bit PCM WAV file contents (tf.audio.encode_wav: what `embed_wav` decodes)."""
    return tf.audio.encode_wav(tf.constant(waveform, tf.float32)[:, None], sample_rate).numpy()


def predict_request(model: str, signature: str, inputs: Mapping[str, np.ndarray]) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def audio_requests(model: str, audio: np.ndarray, extra: Mapping[str, np.ndarray] = None,
                   signatures=(graphs.EMBED_WAVEFORM, graphs.EMBED_WAV)) -> List[predict_pb2.PredictRequest]:
    extra = dict(extra or {})
    return [
        predict_request(model, signatures[0], {**waveform_inputs([audio]), **extra}),
        predict_request(model, signatures[1], {"wav_bytes": np.asarray([wav_bytes(audio)], object), **extra}),
    ]


def recommender_requests(audio: np.ndarray, dim: int, k: int) -> List[predict_pb2.PredictRequest]:
    ks = {"k": np.asarray([k], np.int32)}
    embedding = {"audio_embedding": np.ones((1, dim), np.float32), **ks}
    return audio_requests(graphs.RECOMMENDER, audio, ks, (graphs.RECOMMEND_WAVEFORM, graphs.RECOMMEND_WAV)) + [
        predict_request(graphs.RECOMMENDER, graphs.RECOMMEND_EMBEDDING, embedding)]


def user_requests(specs: Mapping[str, tf.TensorSpec]) -> List[predict_pb2.PredictRequest]:
    """One user with an empty history and blank demographics (every id maps to the OOV row)."""
    inputs = {}
    for name, spec in specs.items():
        shape = [1] + [d or 1 for d in spec.shape[1:]]
        inputs[name] = np.full(shape, b"", object) if spec.dtype == tf.string else np.zeros(shape, spec.dtype.as_numpy_dtype)
    return [predict_request(graphs.USER_EMBEDDER, graphs.EMBED_USER, inputs)]


def write(version_dir, requests: List[predict_pb2.PredictRequest]) -> epath.Path:
    path = storage.path(version_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def read(version_dir) -> List[predict_pb2.PredictRequest]:
    """The warm-up PredictRequests of a version folder (none when it has no warm-up file)."""
    path = storage.path(version_dir) / WARMUP_FILE
    if not path.exists():
        return []
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]
    return [log.predict_log.request for log in logs]
