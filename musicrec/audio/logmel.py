"""The one log-mel front end, in core TensorFlow ops (`tf.signal`).

Training features (the Beam feature component) and the serving graphs (the
exported audio embedder) call this same function, so they cannot drift. Only
core ops are used, so the stock TF Serving binary can run it.

Definition (matches `librosa.power_to_db(librosa.feature.melspectrogram(y,
sr=22050, n_fft=2048, hop_length=512, n_mels=128, htk=True, norm=None),
ref=1.0, amin=1e-10, top_db=None)`, which `tests/test_logmel.py` checks):
  * frames centred like librosa (`center=True`): n_fft/2 zeros padded on both
    ends, so T seconds give 1 + floor(T * 22050 / 512) frames (3 s -> 130,
    10 s -> 431, 30 s -> 1292);
  * periodic Hann window, power spectrum |STFT|^2;
  * 128 triangular mel bands on the HTK mel scale from 0 Hz to 11025 Hz,
    unnormalised (TensorFlow's `linear_to_mel_weight_matrix`);
  * log compression: decibels, 10 * log10(max(power, 1e-10)), no reference
    scaling and no top-dB clipping, so values are absolute and comparable
    across tracks (-100 dB is the floor for digital silence).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf

from musicrec.audio.decode import SAMPLE_RATE


@dataclasses.dataclass(frozen=True)
class LogMelConfig:
    sample_rate: int = SAMPLE_RATE
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    fmin: float = 0.0
    amin: float = 1e-10
    # Only the first `max_seconds` of each track is used (the paper's protocol).
    max_seconds: float = 30.0

    @property
    def fmax(self) -> float:
        return self.sample_rate / 2.0

    @property
    def max_samples(self) -> int:
        return int(round(self.max_seconds * self.sample_rate))

    def num_frames(self, seconds: float) -> int:
        """Frames of log-mel for an excerpt of `seconds` (centred framing)."""
        return 1 + int(math.floor(seconds * self.sample_rate / self.hop_length))

    @property
    def max_frames(self) -> int:
        return self.num_frames(self.max_seconds)


DEFAULT = LogMelConfig()


@functools.lru_cache(maxsize=8)
def mel_filterbank(config: LogMelConfig = DEFAULT) -> np.ndarray:
    """[n_fft // 2 + 1, n_mels] HTK mel weights (TensorFlow's definition), as a numpy constant."""
    with tf.init_scope():  # evaluate eagerly even when first called while tracing a tf.function
        return tf.signal.linear_to_mel_weight_matrix(
            num_mel_bins=config.n_mels,
            num_spectrogram_bins=config.n_fft // 2 + 1,
            sample_rate=config.sample_rate,
            lower_edge_hertz=config.fmin,
            upper_edge_hertz=config.fmax,
        ).numpy()


def log_mel_spectrogram(waveform: tf.Tensor, config: LogMelConfig = DEFAULT) -> tf.Tensor:
    """Log-mel spectrogram of float32 waveforms at `config.sample_rate`.

    Args:
      waveform: [..., samples] float32 in [-1, 1]. Callers cut it to the first
        `config.max_seconds` (decoding does); this function does not crop, so
        it also serves short serving requests.
    Returns:
      [..., frames, n_mels] float32 decibels.
    """
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    half = config.n_fft // 2
    paddings = tf.concat([tf.zeros([tf.rank(waveform) - 1, 2], tf.int32), [[half, half]]], axis=0)
    centred = tf.pad(waveform, paddings)
    stft = tf.signal.stft(
        centred,
        frame_length=config.n_fft,
        frame_step=config.hop_length,
        fft_length=config.n_fft,
        window_fn=tf.signal.hann_window,
        pad_end=False,
    )
    power = tf.math.square(tf.math.real(stft)) + tf.math.square(tf.math.imag(stft))
    # The filterbank is sparse (each bin feeds at most two adjacent bands), so
    # it is applied band group by band group, each group to the bins it spans:
    # about a tenth of the multiply-adds of the dense [1025, 128] product.
    mel = tf.concat(
        [tf.tensordot(power[..., start:stop], weights, axes=1) for start, stop, weights in _band_groups(config)],
        axis=-1,
    )
    return (10.0 / math.log(10.0)) * tf.math.log(tf.maximum(mel, config.amin))


BANDS_PER_GROUP = 8


@functools.lru_cache(maxsize=8)
def _band_groups(config: LogMelConfig):
    """[(first bin, last bin + 1, weights [bins, bands])] covering all bands in order."""
    weights = mel_filterbank(config)
    groups = []
    for first_band in range(0, config.n_mels, BANDS_PER_GROUP):
        block = weights[:, first_band : first_band + BANDS_PER_GROUP]
        bins = np.flatnonzero(block.any(axis=1))
        start, stop = (int(bins[0]), int(bins[-1]) + 1) if len(bins) else (0, 1)
        groups.append((start, stop, block[start:stop]))
    return tuple(groups)
