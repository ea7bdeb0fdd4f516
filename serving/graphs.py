"""The serving graphs, in core TensorFlow ops only (the stock `tensorflow/serving` binary runs them).

Audio goes through the training front end (`musicrec.audio.front_ends`: the
tf.signal log-mel, or musicnn's network) and the trained encoder, so serving
features cannot drift from training ones.
A track-level AE is the mean of the encoder's AEs of the back-to-back
context-length segments of the first 30 s, as `musicrec.trainer.audio_evaluation.track_embeddings`.

Bad requests fail inside the graph with `tf.debugging` assertions, so the real
TF Serving answers them with the same clear INVALID_ARGUMENT messages as the
development server: value checks (rate, lengths, `k`, NaN or Inf samples and
embeddings) live here, not in a server.
"""

from __future__ import annotations

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf

from musicrec.audio.front_ends import LOG_MEL_FRONT_END, FrontEnd
from musicrec.audio.logmel import DEFAULT
from musicrec.names import EMBED_USER_SIGNATURE
from musicrec.trainer.similarity import cosine, unit_vectors

# Model and signature names: the public interface of the exported models.
AUDIO_EMBEDDER = "audio_embedder"
USER_EMBEDDER = "user_embedder"
RECOMMENDER = "cold_start_recommender"
EMBED_WAVEFORM = "embed_waveform"
EMBED_WAV = "embed_wav"
RECOMMEND_WAVEFORM = "recommend_users"
RECOMMEND_WAV = "recommend_users_wav"
RECOMMEND_EMBEDDING = "recommend_users_for_embedding"
EMBED_USER = EMBED_USER_SIGNATURE  # the user tower's own signature, kept as exported by the user branch
SERVING_DEFAULT = "serving_default"

# Candidate blocks of the exact top-k (see `exact_top_k`).
TOP_K_BLOCK = 128


def waveform_spec():
    """Inputs of the waveform signatures. `num_samples` gives each row's real length, so rows
    padded to a common length (TF Serving's batching pads variable-length inputs) embed exactly
    as they would alone."""
    return {
        "waveform": tf.TensorSpec([None, None], tf.float32, name="waveform"),
        "num_samples": tf.TensorSpec([None], tf.int32, name="num_samples"),
        "sample_rate": tf.TensorSpec([None], tf.int32, name="sample_rate"),
    }


def wav_spec():
    return {"wav_bytes": tf.TensorSpec([None], tf.string, name="wav_bytes")}


def k_spec():
    return {"k": tf.TensorSpec([None], tf.int32, name="k")}


def _fail_unless(condition, *message) -> tf.Operation:
    return tf.debugging.Assert(tf.reduce_all(condition), list(message), summarize=8)


def _finite_rows(values: tf.Tensor, name: str, considered=None) -> tf.Operation:
    """Refuses NaN and Inf, which would otherwise score every user NaN and rank them arbitrarily.
    `considered`: where values count (True) as the row's real content; the rest is ignored."""
    finite = tf.math.is_finite(values) if considered is None else tf.math.is_finite(values) | ~considered
    bad_rows = tf.where(~tf.reduce_all(finite, axis=1))[:, 0]
    return _fail_unless(finite, f"{name} must hold finite numbers (no NaN or Inf); rows with others:", bad_rows)


class TrackEmbedding:
    """Waveforms -> track-level AE with the exported audio encoder (`embed_log_mel` signature: the
    front end's frames -> AE) behind its front end (`musicrec.audio.front_ends`)."""

    def __init__(self, embed_log_mel, context_frames: int, front_end: FrontEnd = LOG_MEL_FRONT_END):
        self._embed_log_mel = embed_log_mel
        self.context_frames = context_frames
        self.front_end = front_end
        self.config = DEFAULT  # the waveform's rate and the 30 s cut are the project's, whatever the front end
        # Shortest audio that gives one full segment.
        self.min_samples = front_end.min_samples(context_frames)

    def segment_counts_of_frames(self, frames: tf.Tensor) -> tf.Tensor:
        """Back-to-back segments in the first 30 s of `frames` frames; the graph form of
        `FrontEnd.segment_offsets` (a test checks they agree)."""
        return self.front_end.segment_counts(frames, self.context_frames)

    def from_waveform(self, waveform, num_samples, sample_rate) -> tf.Tensor:
        """[batch, samples] float32 at 22050 Hz (rows padded past num_samples) -> [batch, d]."""
        samples = tf.shape(waveform)[1]
        real = tf.sequence_mask(num_samples, samples)  # each row's samples before its padding
        checks = [
            _fail_unless(tf.equal(sample_rate, self.config.sample_rate), f"sample_rate must be {self.config.sample_rate} Hz "
                         "(resample before sending; the musicrec client does); got", sample_rate),
            _fail_unless(tf.equal(tf.shape(num_samples)[0], tf.shape(waveform)[0]) &
                         tf.equal(tf.shape(sample_rate)[0], tf.shape(waveform)[0]),
                         "waveform, num_samples and sample_rate must have the same batch size"),
            _fail_unless(num_samples > 0, "empty audio: num_samples must be positive; got", num_samples),
            _fail_unless(num_samples <= samples, "num_samples cannot exceed the waveform's length of", samples, "; got", num_samples),
            _fail_unless(num_samples >= self.min_samples, f"audio too short: at least {self.min_samples} samples "
                         f"({self.context_frames} {self.front_end.name} frames, one context segment) are needed; got",
                         num_samples),
            _finite_rows(waveform, "waveform samples", considered=real),
        ]
        with tf.control_dependencies(checks):
            real = real[:, : self.config.max_samples]
            waveform = waveform[:, : self.config.max_samples]
            # Zero what lies past each row's end: exactly the zeros of centred framing,
            # whatever the padding held (NaN included, hence a select and not a product).
            waveform = tf.where(real, waveform, 0.0)
            num_samples = tf.minimum(num_samples, self.config.max_samples)
        frames, frame_counts = self.front_end.frames(waveform, num_samples)
        return self.from_log_mel(frames, self.segment_counts_of_frames(frame_counts))

    def from_log_mel(self, log_mel, counts) -> tf.Tensor:
        """[batch, frames, dim] front-end frames (rows padded past their own frames) and each row's
        segment count -> [batch, d]: the mean AE of the row's first `count` segments."""
        most = tf.reduce_max(counts)
        stride = self.front_end.segment_stride(self.context_frames)
        frames = tf.range(most)[:, None] * stride + tf.range(self.context_frames)  # [most, ctx]
        segments = tf.gather(log_mel, frames, axis=1)  # [batch, most, ctx, dim]
        flat = tf.reshape(segments, [-1, self.context_frames, self.front_end.frame_dim])
        embeddings = self._embed_log_mel(log_mel=flat)["audio_embedding"]
        embeddings = tf.reshape(embeddings, [tf.shape(log_mel)[0], most, -1])
        weights = tf.sequence_mask(counts, most, tf.float32)[..., None]
        return tf.reduce_sum(embeddings * weights, axis=1) / tf.reduce_sum(weights, axis=1)

    def from_wav(self, wav_bytes) -> tf.Tensor:
        """[batch] WAV file contents (any channels, 22050 Hz) -> [batch, d]; core TF decodes only WAV."""

        def one(contents):
            audio, rate = tf.audio.decode_wav(contents)
            mono = tf.reduce_mean(audio, axis=1)[None, : self.config.max_samples]
            return self.from_waveform(mono, tf.shape(mono)[1:2], rate[None])[0]

        dim = self._embed_log_mel.structured_outputs["audio_embedding"].shape[-1]
        return tf.map_fn(one, wav_bytes, fn_output_signature=tf.TensorSpec([dim], tf.float32))


def exact_top_k(scores: tf.Tensor, k: tf.Tensor, block: int = TOP_K_BLOCK):
    """Same result as `tf.math.top_k(scores, k)` (ties to the lower index), faster for millions of
    scores: `top_k` over a 2M row costs most of what the matmul that made it costs, so a whole
    query runs about 1.4x faster this way (one core).

    The k best scores lie in the k blocks with the best maxima, so only those
    k * block candidates are ranked; blocks are kept in index order so ties
    break as top_k's. scores: [batch, n]; k: scalar <= n.
    """
    batch, n = tf.shape(scores)[0], tf.shape(scores)[1]
    blocks = (n + block - 1) // block
    padded = tf.pad(scores, [[0, 0], [0, blocks * block - n]], constant_values=float("-inf"))
    grouped = tf.reshape(padded, [batch, blocks, block])
    _, best_blocks = tf.math.top_k(tf.reduce_max(grouped, axis=2), k=tf.minimum(k, blocks))
    best_blocks = tf.sort(best_blocks, axis=1)
    candidates = tf.reshape(tf.gather(grouped, best_blocks, batch_dims=1), [batch, -1])
    values, positions = tf.math.top_k(candidates, k=k)
    return values, tf.gather(best_blocks, positions // block, batch_dims=1) * block + positions % block


def normalised(vectors: np.ndarray) -> np.ndarray:
    """Unit-length rows as a numpy array: the cosine's normalisation (`similarity.unit_vectors`)."""
    return unit_vectors(vectors).numpy()


class UserIndex(tf.Module):
    """Every UE, L2-normalised, as variables (a 2M-user table would not fit a GraphDef constant);
    ranks users by cosine with a track's AE.

    Hand-written rather than TFRS BruteForce: BruteForce fixes k when the graph
    is traced, and here k is a request input (up to `max_k`).

    `max_k` bounds the response size and is a request error past it; a k
    within it but above the number of users returns every user, ranked, with
    `count` saying how many (as top-k search APIs do: asking for more than
    there is is not a mistake the client could have avoided without knowing
    the table's size).
    """

    def __init__(self, user_ids, user_vectors: np.ndarray, max_k: int):
        super().__init__()
        if len(user_ids) != len(user_vectors) or not len(user_ids):
            raise ValueError(f"need one UE per user id and at least one user; got {len(user_ids)} ids, {len(user_vectors)} UEs")
        if int(max_k) < 1:
            raise ValueError(f"max_k must be at least 1; got {max_k}")
        self.user_ids = tf.Variable(np.asarray(user_ids).astype(str).astype(object), trainable=False, name="user_ids")
        self.user_vectors = tf.Variable(normalised(user_vectors), trainable=False, name="user_vectors")
        self.max_k = int(max_k)
        self.num_users = len(user_ids)

    def top_k(self, audio_embedding, k):
        """[batch, d] AEs, [batch] k -> user_ids, scores [batch, width] (cosines, best first) and
        count [batch] = min(k, users): the row's real entries. width = the batch's largest count;
        rows with fewer are padded with '' ids and zero scores."""
        checks = [
            _fail_unless((k >= 1) & (k <= self.max_k), f"k must be between 1 and {self.max_k} "
                         "(this recommender returns at most that many users); got", k),
            _fail_unless(tf.equal(tf.shape(k)[0], tf.shape(audio_embedding)[0]), "k needs one value per audio input"),
            _finite_rows(audio_embedding, "audio_embedding"),
        ]
        with tf.control_dependencies(checks):
            count = tf.minimum(k, self.num_users)
            widest = tf.reduce_max(count)
        scores = cosine(audio_embedding, self.user_vectors, all_pairs=True, b_is_unit=True)
        values, indices = exact_top_k(scores, widest)
        keep = tf.sequence_mask(count, widest)
        return {
            "user_ids": tf.where(keep, tf.gather(self.user_ids, indices), ""),
            "scores": tf.where(keep, values, 0.0),
            "count": count,
        }
