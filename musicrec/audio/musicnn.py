"""musicnn's `MSD_musicnn` features (the `max_pool` layer) in core TensorFlow ops, in process.

A port of musicnn's MSD_musicnn front end and network up to `max_pool` (Pons &
Serra, "musicnn: pre-trained convolutional neural networks for music audio
tagging", 2019). The original is a TF1 graph whose import switches the whole
process to graph mode, so `musicrec.genre.musicnn_worker` runs it in a process
of its own. This module computes the same features in eager TF2 / tf_keras
with core ops only, so they can be computed in process, in the Beam feature
transform (`patch_features`) and inside an exported serving graph
(`MusicnnPatchFeatures`) that the stock TF Serving binary runs.

Definition (what `musicnn_worker` computes; `tests/test_musicnn_port.py` checks):
  * input: the first 30 s of a track at 16 kHz (musicnn's rate). The Beam
    transform and serving graphs hold 22050 Hz audio, so
    `resample_to_musicnn_rate` converts in the graph with soxr HQ's own
    filter (the worker's decoder resamples with soxr HQ), measured once as a
    polyphase kernel (320 output phases per 441 inputs), a constant of the
    graph;
  * front end (`musicnn_log_mel`, = `librosa.feature.melspectrogram(y,
    sr=16000, n_fft=512, hop_length=256, n_mels=96)` as musicnn calls it):
    frames centred with 256 zeros at each end (1 + samples // 256 frames),
    periodic Hann, power spectrum, librosa's Slaney mel filterbank (not
    TensorFlow's HTK one), the mel power rounded to float16 as musicnn does
    (without the rounding, max_pool lies 10-20 times further from the
    original), then log10(10000 x + 1) in float32;
  * patches: non-overlapping 187-frame (3 s) patches of the one log-mel of
    the whole excerpt, the trailing partial patch dropped, so a track gives
    floor((1 + n // 256) / 187) patches for n samples at 16 kHz (none under
    2.98 s; the worker refuses tracks under 3 s);
  * network (`build_pooled_network`): MSD_musicnn's timbral and temporal
    convolutions and its mid-end with residuals, then the max over the
    patch's 187 frames of the 753 concatenated features (`max_pool`; and /
    or their mean, musicnn's `mean_pool`), with musicnn's trained weights,
    frozen, batch norm in inference mode.

Agreement with the original (musicnn 0.1.0 run by `musicnn_worker` on 8
rendered tracks of 7-33 s at 22.05, 32 and 44.1 kHz; max_pool values reach
75-150):
  * network alone, on the worker's own log-mel patches: max abs difference
    2e-5 to 4e-5 (5e-7 of the largest value);
  * front end alone, on the worker's 16 kHz samples: log-mel within 4.2e-4,
    one float16 rounding step where float32 sums land on the other side;
  * end to end, from the track decoded at 22050 Hz as the Beam transform and
    the serving client hold it: the same patch counts; per patch relative L2
    error 1e-5 to 8e-5 (tracks at 22.05 and 44.1 kHz) and up to 3.3e-4
    (32 kHz, which the worker resamples once and the port twice); cosine
    >= 0.9999998. Not elementwise-exact: the float16 rounding amplifies
    float32 differences (max abs up to 0.06).

musicnn ships the same network trained on two tag sets, MSD_musicnn (the
Million Song Dataset's tags: genres, moods, eras) and MTT_musicnn
(MagnaTagATune's: instruments, voices, timbre too). `MusicnnPatchFeatures`
runs one or both on the same log-mel patches and concatenates their max_pool
vectors (the `musicnn_msd_mtt` front end); the agreement above was measured
for MSD_musicnn, and MTT_musicnn differs only in its checkpoint.

Licence: musicnn (Jordi Pons, https://github.com/jordipons/musicnn) is under
the ISC licence. Its weights are not copied into this project: they are read
at run time from the installed `musicnn` package's checkpoint
(requirements/nodeps.txt), without importing musicnn.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from typing import Dict, Tuple

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import soxr
import tensorflow as tf
import tf_keras
from tf_keras import layers

from musicrec.audio.decode import SAMPLE_RATE as INPUT_RATE

SAMPLE_RATE = 16000  # musicnn's (configuration.SR)
N_FFT = 512
HOP = 256
N_MELS = 96
# librosa.time_to_frames(3, sr=16000, n_fft=512, hop_length=256) + 1: musicnn's "3 s" input.
PATCH_FRAMES = 187
FEATURE_DIM = 753  # max_pool: 561 front-end + 3 x 64 mid-end features
MAX_SECONDS = 30.0  # as the worker: the first 30 s
MODEL = "MSD_musicnn"  # the baseline's and the `musicnn` front end's model
# musicnn ships the same architecture trained on two tag sets: the Million Song Dataset's 50
# tags (genres, moods, eras) and MagnaTagATune's 50 (instruments, voices, timbre as well).
MODELS = ("MSD_musicnn", "MTT_musicnn")
# musicnn's two poolings of its 753 mid-end features over a patch's 187 frames (its layer names).
POOLS = ("max_pool", "mean_pool")
POOL = "max_pool"  # the baseline's layer, and the pooling every front end reads unless told
MAX_INPUT_SAMPLES = int(MAX_SECONDS * INPUT_RATE)

# 22050 -> 16000 Hz is 320 output samples per 441 input samples.
_UP = SAMPLE_RATE // math.gcd(SAMPLE_RATE, INPUT_RATE)
_DOWN = INPUT_RATE // math.gcd(SAMPLE_RATE, INPUT_RATE)

# tf.compat.v1.layers.batch_normalization's defaults, which musicnn uses everywhere.
_BN = dict(axis=-1, momentum=0.99, epsilon=1e-3)


# ---------------------------------------------------------------------------- front end


@functools.lru_cache(maxsize=1)
def slaney_mel_matrix() -> np.ndarray:
    """[257, 96] float32: librosa.filters.mel(sr=16000, n_fft=512, n_mels=96).T (Slaney scale and area norm)."""
    import librosa  # only to build the constant; the graph holds the numbers

    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS).T.astype(np.float32)


def musicnn_log_mel(waveform_16k: tf.Tensor) -> tf.Tensor:
    """musicnn's log-mel of [batch, samples] float32 at 16 kHz: [batch, 1 + samples // 256, 96]."""
    waveform_16k = tf.convert_to_tensor(waveform_16k, tf.float32)
    half = N_FFT // 2
    paddings = tf.concat([tf.zeros([tf.rank(waveform_16k) - 1, 2], tf.int32), [[half, half]]], axis=0)
    # Zeros, not a reflection: librosa >= 0.10's pad_mode='constant', which the worker runs.
    centred = tf.pad(waveform_16k, paddings)
    stft = tf.signal.stft(centred, frame_length=N_FFT, frame_step=HOP, fft_length=N_FFT,
                          window_fn=tf.signal.hann_window, pad_end=False)
    power = tf.math.square(tf.math.real(stft)) + tf.math.square(tf.math.imag(stft))
    mel = tf.tensordot(power, tf.constant(slaney_mel_matrix()), axes=1)
    # musicnn stores the mel power as float16 before the log (numpy 1.x then promotes
    # 10000 * float16 to float32, so only this rounding happens in half precision).
    mel = tf.cast(tf.cast(mel, tf.float16), tf.float32)
    return tf.math.log(10000.0 * mel + 1.0) / math.log(10.0)


# ---------------------------------------------------------------------------- resampler


@functools.lru_cache(maxsize=1)
def _resample_kernel() -> Tuple[np.ndarray, int]:
    """(kernel [441 + 2 reach, 1, 320], reach): soxr HQ's 22050 -> 16000 Hz filter as a polyphase conv.

    `tf.nn.conv1d(x, kernel, stride=441)` on x padded with `reach` zeros in front gives the 320
    outputs of each block of 441 inputs; kernel[j, 0, p] is the weight of input 441 b - reach + j
    in output 320 b + p. soxr is linear and periodic over 441 inputs (to 4e-8), so the kernel
    is read off its response to one impulse per input phase, spaced so responses do not
    overlap. Measuring rather than designing a filter reproduces the band edge the worker's
    audio has (soxr: flat to 7.55 kHz, -3 dB at 7.6, -52 dB at 7.9 kHz), which musicnn's top mel
    bands see: a close analytic fit still moved max_pool by 3e-3 relative on bright mixes.
    """
    reach = 140  # input samples each side; soxr's response beyond is below -135 dB
    taps = _DOWN + 2 * reach
    spacing = 2 * _DOWN + 1  # > taps, and one more than a multiple of 441: every phase once
    positions = taps + spacing * np.arange(_DOWN)
    impulses = np.zeros(positions[-1] + taps)
    impulses[positions] = 1.0
    response = soxr.resample(impulses, INPUT_RATE, SAMPLE_RATE, quality="HQ")
    kernel = np.zeros((taps, _UP))
    for position in positions:
        for block in range(position // _DOWN - 1, position // _DOWN + 2):  # the blocks whose window holds it
            j = position - _DOWN * block + reach
            if 0 <= j < taps:
                kernel[j] = response[_UP * block: _UP * (block + 1)]
    return kernel[:, None, :].astype(np.float32), reach


def resampled_length(num_samples: tf.Tensor) -> tf.Tensor:
    """Samples at 16 kHz for `num_samples` at 22050 Hz: round(n * 320 / 441), soxr's count."""
    n = tf.cast(num_samples, tf.int64)
    return tf.cast((2 * _UP * n + _DOWN) // (2 * _DOWN), tf.int32)


def max_patches() -> int:
    """Patches in the first 30 s (MAX_INPUT_SAMPLES at 22050 Hz): 10."""
    return (1 + (2 * _UP * MAX_INPUT_SAMPLES + _DOWN) // (2 * _DOWN) // HOP) // PATCH_FRAMES


def shortest_input(patches: int) -> int:
    """The fewest samples at 22050 Hz that give `patches` patches: n samples resample to
    m = round(n * 320 / 441) (`resampled_length`), which give (1 + m // 256) // 187 patches."""
    needed = (patches * PATCH_FRAMES - 1) * HOP  # m must reach this
    return -(-(2 * _DOWN * needed - _DOWN) // (2 * _UP))  # ceil((needed - 1/2) * 441 / 320)


def resample_to_musicnn_rate(waveform: tf.Tensor) -> tf.Tensor:
    """[batch, samples] float32 at 22050 Hz -> [batch, round(samples * 320 / 441)] at 16 kHz, in the graph.

    Equals `soxr.resample(x, 22050, 16000, quality="HQ")` to float32 precision (-120 dB on
    music), except soxr's first two output samples; samples past the end count as zeros, as
    soxr treats the end of a decoded excerpt.
    """
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    kernel, reach = _resample_kernel()
    samples = tf.shape(waveform)[1]
    blocks = tf.maximum((samples + _DOWN - 1) // _DOWN, 1)  # at least one, so that the conv has an input
    padded = tf.pad(waveform, [[0, 0], [reach, reach + _DOWN]])[:, : blocks * _DOWN + 2 * reach]
    phases = tf.nn.conv1d(padded[..., None], tf.constant(kernel), stride=_DOWN, padding="VALID")  # [B, blocks, 320]
    resampled = tf.reshape(phases, [tf.shape(waveform)[0], blocks * _UP])
    return resampled[:, : resampled_length(samples)]


# ---------------------------------------------------------------------------- network


def checkpoint_prefix(model: str = MODEL) -> str:
    """The installed musicnn's checkpoint prefix of `model`, found without importing musicnn.

    Importing musicnn (its extractor) disables eager execution for the whole process.
    The prefix ends in '/': the checkpoint files are the folder's `.index` and `.data-*`;
    its `checkpoint` file names the author's machine, so the prefix is given explicitly.
    """
    if model not in MODELS:
        raise ValueError(f"unknown musicnn model {model!r}; choose one of {MODELS}")
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the musicnn package is not installed: pip install --no-deps musicnn==0.1.0 "
                                "(requirements/nodeps.txt)")
    return os.path.join(spec.submodule_search_locations[0], model) + "/"


@functools.lru_cache(maxsize=len(MODELS))
def _checkpoint_tensors(model: str) -> Dict[str, np.ndarray]:
    """The checkpoint's model variables by name (its Adam slots left out), read once per process."""
    reader = tf.compat.v1.train.NewCheckpointReader(checkpoint_prefix(model))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if "Adam" not in name and "power" not in name}


def _freq_max(tensor, name: str):
    """[B, T, F, C] -> [B, T, C]: musicnn's max_pooling2d over the whole frequency axis, squeezed."""
    freqs, channels = tensor.shape[2], tensor.shape[3]
    tensor = layers.MaxPooling2D((1, freqs), strides=(1, freqs), name=name + "_freq_max")(tensor)
    return layers.Reshape((PATCH_FRAMES, channels), name=name + "_squeeze")(tensor)


def _pooled_architecture(pools: Tuple[str, ...]) -> tf_keras.Model:
    """MSD_musicnn up to its `pools` (musicnn/models.py), concatenated in that order, untrained.

    Each weighted layer is named after its tf.compat.v1 scope in the checkpoint, so
    loading is a copy by name. musicnn applies batch norm after the ReLU throughout.
    """
    log_mel = tf_keras.Input((PATCH_FRAMES, N_MELS), name="log_mel")
    x = layers.Reshape((PATCH_FRAMES, N_MELS, 1), name="expand")(log_mel)
    x = layers.BatchNormalization(name="batch_normalization", **_BN)(x)
    branches = []
    # Timbral filters: 7 frames x 38 or 67 of the 96 bands, time padded 3 + 3, 'valid' in frequency.
    padded = layers.ZeroPadding2D(((3, 3), (0, 0)), name="pad_time")(x)
    for conv, norm, bands in (("conv2d", "batch_normalization_1", 38), ("conv2d_1", "batch_normalization_2", 67)):
        t = layers.Conv2D(204, (7, bands), padding="valid", activation="relu", name=conv)(padded)
        branches.append(_freq_max(layers.BatchNormalization(name=norm, **_BN)(t), conv))
    # Temporal filters: 128, 64, 32 frames x 1 band, 'same' on the unpadded input
    # (TF's 'same' rule for even kernels, which Keras follows too).
    for conv, norm, frames in (("conv2d_2", "batch_normalization_3", 128), ("conv2d_3", "batch_normalization_4", 64),
                               ("conv2d_4", "batch_normalization_5", 32)):
        t = layers.Conv2D(51, (frames, 1), padding="same", activation="relu", name=conv)(x)
        branches.append(_freq_max(layers.BatchNormalization(name=norm, **_BN)(t), conv))
    front = layers.Concatenate(name="frontend")(branches)  # [B, 187, 561]
    # Mid-end: musicnn's [7, C] 'valid' conv on time padded 3 + 3 (and its transposes) is a
    # 1-D conv over time with 'same' padding.
    c1 = layers.Conv1D(64, 7, padding="same", activation="relu", name="conv2d_5")(front)
    c1 = layers.BatchNormalization(name="batch_normalization_6", **_BN)(c1)
    c2 = layers.Conv1D(64, 7, padding="same", activation="relu", name="conv2d_6")(c1)
    r2 = layers.Add(name="res_conv2")([layers.BatchNormalization(name="batch_normalization_7", **_BN)(c2), c1])
    c3 = layers.Conv1D(64, 7, padding="same", activation="relu", name="conv2d_7")(r2)
    r3 = layers.Add(name="res_conv3")([layers.BatchNormalization(name="batch_normalization_8", **_BN)(c3), r2])
    dense = layers.Concatenate(name="midend")([front, c1, r2, r3])  # [B, 187, 753]
    pooling = {"max_pool": layers.GlobalMaxPooling1D, "mean_pool": layers.GlobalAveragePooling1D}
    pooled = [pooling[pool](name=pool)(dense) for pool in pools]
    output = pooled[0] if len(pooled) == 1 else layers.Concatenate(name="pools")(pooled)
    return tf_keras.Model(log_mel, output, name="musicnn_" + "_".join(pools))


def build_pooled_network(model: str = MODEL, pools: Tuple[str, ...] = (POOL,)) -> tf_keras.Model:
    """[batch, 187, 96] log-mel -> [batch, 753 per pool] (max_pool and / or mean_pool), with
    `model`'s weights, frozen.

    Frozen tf_keras batch norm runs in inference mode (moving statistics) even when
    called with training=True, so a trainable head can sit on top without care.
    """
    unknown = set(pools) - set(POOLS)
    if unknown or not pools:
        raise ValueError(f"pools must be some of {POOLS}, not {pools!r}")
    network = _pooled_architecture(tuple(pools))
    tensors = _checkpoint_tensors(model)
    for layer in network.layers:
        if isinstance(layer, layers.BatchNormalization):
            keys = ("gamma", "beta", "moving_mean", "moving_variance")  # Keras's weight order
        elif isinstance(layer, (layers.Conv2D, layers.Conv1D)):
            keys = ("kernel", "bias")
        else:
            continue
        # Conv1D kernels are the checkpoint's [7, C, 1, 64] without the unit axis.
        current = layer.get_weights()
        layer.set_weights([tensors[f"{layer.name}/{key}"].reshape(w.shape) for key, w in zip(keys, current)])
        layer.trainable = False
    network.trainable = False
    return network


# ---------------------------------------------------------------------------- waveform -> patch features


class MusicnnPatchFeatures(tf.Module):
    """Batched 22050 Hz waveforms -> max_pool of each whole 3 s patch of each row's first 30 s.

    Built once (it holds the networks); call it eagerly or inside a tf.function / SavedModel.
    `patch_batch` patches go through the network at a time: a patch's activations take
    about 30 MB, so a batch of long tracks would otherwise need gigabytes.
    """

    def __init__(self, models: Tuple[str, ...] = (MODEL,), pools: Tuple[str, ...] = (POOL,), patch_batch: int = 16,
                 name=None):
        """`models`: the musicnn models (`MODELS`) whose pooled vectors (`pools`, of `POOLS`) of
        each patch are concatenated, model by model and pool by pool in these orders; they share
        the log-mel patches."""
        super().__init__(name=name)
        networks = [build_pooled_network(model, tuple(pools)) for model in models]
        self.models, self.pools = tuple(models), tuple(pools)
        self.feature_dim = FEATURE_DIM * len(networks) * len(self.pools)
        # The weights are tracked (SavedModels and checkpoints hold them), the Keras models are
        # held as plain callables: a tracked Keras model makes tf.saved_model.save trace each
        # layer for Keras's own reloading, 21 s instead of 1.5 s here, for nothing a
        # serving graph uses.
        self.weights = tuple(weight for network in networks for weight in network.weights)
        self._networks = tuple(network.__call__ for network in networks)
        self.patch_batch = int(patch_batch)

    @property
    def trainable_variables(self):
        # Frozen. tf.Module would list the weights: Keras freezes layers, and the variables
        # themselves were created trainable.
        return ()

    def __call__(self, waveform, num_samples) -> Tuple[tf.Tensor, tf.Tensor]:
        """Args:
          waveform: [batch, samples] float32 at 22050 Hz; row i holds num_samples[i] samples and padding.
          num_samples: [batch] int32 or int64.
        Returns:
          features [batch, max patches, feature_dim] float32 (753 per model and pool; zero beyond a row's count) and
          counts [batch] int32: floor((1 + n16 // 256) / 187) for the row's first 30 s resampled
          to n16 = round(n * 320 / 441) samples at 16 kHz (soxr's count, so a 22050 Hz file gets
          the worker's count). The shortest row with c patches has
          ceil((882 * 256 * (187 c - 1) - 441) / 640) samples: 65,621 (2.976 s) for one.
        """
        return self._features(tf.convert_to_tensor(waveform, tf.float32), tf.cast(num_samples, tf.int32))

    # autograph=False: the loop is an explicit tf.while_loop, and autograph converting every
    # Keras call inside it made tracing take 17 s instead of under 1.
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.int32)],
                 autograph=False)
    def _features(self, waveform, num_samples):
        waveform = waveform[:, :MAX_INPUT_SAMPLES]
        width = tf.shape(waveform)[1]
        num_samples = tf.clip_by_value(num_samples, 0, width)
        # Padding is zeroed (whatever it held) before and after resampling: the worker's excerpt
        # ends at its last sample, and both the resampler and the centred STFT read past the end.
        waveform = tf.where(tf.sequence_mask(num_samples, width), waveform, 0.0)
        wave_16k = resample_to_musicnn_rate(waveform)
        samples_16k = resampled_length(num_samples)
        wave_16k = tf.where(tf.sequence_mask(samples_16k, tf.shape(wave_16k)[1]), wave_16k, 0.0)
        patches = tf.signal.frame(musicnn_log_mel(wave_16k), PATCH_FRAMES, PATCH_FRAMES, axis=1)  # [B, P, 187, 96]
        counts = (1 + samples_16k // HOP) // PATCH_FRAMES
        # Only each row's own patches go through the network, patch_batch at a time.
        where = tf.where(tf.sequence_mask(counts, tf.shape(patches)[1]))  # [N, 2] (row, patch)
        features = tf.zeros([tf.shape(patches)[0], tf.shape(patches)[1], self.feature_dim])

        def step(start, features):
            chunk = where[start: start + self.patch_batch]
            inputs = tf.ensure_shape(tf.gather_nd(patches, chunk), [None, PATCH_FRAMES, N_MELS])
            values = tf.concat([network(inputs, training=False) for network in self._networks], axis=-1)
            return start + self.patch_batch, tf.tensor_scatter_nd_update(features, chunk, values)

        _, features = tf.while_loop(lambda start, _: start < tf.shape(where)[0], step, [tf.constant(0), features])
        return features, counts


def shared_patch_features(models: Tuple[str, ...] = (MODEL,), pools: Tuple[str, ...] = (POOL,)) -> MusicnnPatchFeatures:
    """The process's one MusicnnPatchFeatures of `models` and `pools` (building one reads the checkpoints and
    traces the graph). Built eagerly even when first asked for while a tf.function traces (a
    feature transform's or a serving graph's): its weights are set from numpy values."""
    with tf.init_scope():
        return _shared_patch_features(tuple(models), tuple(pools))


@functools.lru_cache(maxsize=None)
def _shared_patch_features(models: Tuple[str, ...], pools: Tuple[str, ...]) -> MusicnnPatchFeatures:
    return MusicnnPatchFeatures(models, pools)


def patch_features(waveform_22k: np.ndarray, models: Tuple[str, ...] = (MODEL,),
                   pools: Tuple[str, ...] = (POOL,)) -> np.ndarray:
    """[patches, 753 per model and pool] float32 for one mono track at 22050 Hz (its first 30 s),
    by `shared_patch_features(models, pools)`."""
    waveform = np.asarray(waveform_22k, np.float32)
    if waveform.ndim != 1:
        raise ValueError(f"expected mono samples [samples], got shape {waveform.shape}")
    waveform = waveform[:MAX_INPUT_SAMPLES]  # the rest is not used; no need to copy it into TensorFlow
    features, counts = shared_patch_features(models, pools)(waveform[None], np.array([len(waveform)], np.int32))
    return features[0, : int(counts[0])].numpy()
