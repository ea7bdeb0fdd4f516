"""How a simulated service's tracks are produced and delivered: mix, master, codec.

Services differ in more than their catalogue: how loud parts sit in the mix,
how tracks are mastered (quiet and dynamic, or driven loud), and which codec,
bitrate and sample rate the files come in. An `AudioSpec` holds one service's
choices; each track draws its own from it. The default is the embedded demo's:
the synthesiser's own balance, peak-normalised, in ordinary codecs.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, NamedTuple, Optional, Tuple

import numpy as np
from scipy import signal

# The arrangement's parts (instrument names set by arrangement.build_arrangement).
PARTS: Tuple[str, ...] = ("drums", "bass", "chords", "lead")
LIMITER_CEILING = 0.9  # peak level a master's limiter allows, linear (about -1 dBFS)


class AudioFormat(NamedTuple):
    ext: str
    container: str  # soundfile format
    subtype: str
    share: float  # relative frequency in the catalogue
    # soundfile's compression level (0 best quality .. 1 smallest file) and
    # bitrate mode for lossy codecs; None: libsndfile's default.
    compression_level: Optional[float] = None
    bitrate_mode: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Mix:
    """One track's mix and master, drawn from a MixSpec."""

    gains_db: Dict[str, float]  # per part, <= 0
    pans: Dict[str, float]  # per part, -1 left .. 1 right
    highpass_hz: float
    lowpass_hz: float
    reverb_wet: float
    reverb_seconds: float
    reverb_seed: int
    rms: float  # loudness the master is brought to, linear RMS


@dataclasses.dataclass(frozen=True)
class MixSpec:
    """Ranges each track's mix is drawn from, uniformly."""

    part_gain_db: Tuple[float, float] = (-12.0, 0.0)
    pan_width: float = 0.7
    highpass_hz: Tuple[float, float] = (20.0, 200.0)
    lowpass_hz: Tuple[float, float] = (2500.0, 16000.0)
    reverb_wet: Tuple[float, float] = (0.0, 0.4)
    reverb_seconds: Tuple[float, float] = (0.2, 2.5)
    # Master loudness (dBFS RMS): quiet, dynamic masters to loud, limited ones.
    loudness_dbfs: Tuple[float, float] = (-28.0, -9.0)

    def draw(self, rng: np.random.Generator) -> Mix:
        return Mix(
            gains_db={part: float(rng.uniform(*self.part_gain_db)) for part in PARTS},
            pans={part: float(rng.uniform(-self.pan_width, self.pan_width)) for part in PARTS},
            highpass_hz=float(rng.uniform(*self.highpass_hz)),
            lowpass_hz=float(rng.uniform(*self.lowpass_hz)),
            reverb_wet=float(rng.uniform(*self.reverb_wet)),
            reverb_seconds=float(rng.uniform(*self.reverb_seconds)),
            reverb_seed=int(rng.integers(2**31)),
            rms=float(10 ** (rng.uniform(*self.loudness_dbfs) / 20)),
        )


# The embedded demo's delivery: real catalogues mix containers, rates and channel counts.
DEFAULT_FORMATS: Tuple[AudioFormat, ...] = (
    AudioFormat("ogg", "OGG", "VORBIS", 0.45),
    AudioFormat("mp3", "MP3", "MPEG_LAYER_III", 0.35),
    AudioFormat("flac", "FLAC", "PCM_16", 0.12),
    AudioFormat("wav", "WAV", "PCM_16", 0.08),
)
DEFAULT_SAMPLE_RATES: Tuple[Tuple[int, float], ...] = ((22050, 0.55), (44100, 0.25), (16000, 0.1), (32000, 0.1))


@dataclasses.dataclass(frozen=True)
class AudioSpec:
    formats: Tuple[AudioFormat, ...] = DEFAULT_FORMATS
    sample_rates: Tuple[Tuple[int, float], ...] = DEFAULT_SAMPLE_RATES  # (Hz, share)
    stereo_share: float = 0.3
    mix: Optional[MixSpec] = None  # None: the synthesiser's balance, peak-normalised to 0.9


def master(audio: np.ndarray, sample_rate: int, mix: Mix) -> np.ndarray:
    """Applies the mix's EQ, reverb and loudness to float32 [samples, 2] audio."""
    nyquist = sample_rate / 2
    sos = [signal.butter(2, mix.highpass_hz, "highpass", fs=sample_rate, output="sos")]
    if mix.lowpass_hz < 0.9 * nyquist:  # a cutoff near Nyquist would do nothing audible
        sos.append(signal.butter(4, mix.lowpass_hz, "lowpass", fs=sample_rate, output="sos"))
    audio = signal.sosfilt(np.concatenate(sos), audio, axis=0)
    audio = (1 - mix.reverb_wet) * audio + mix.reverb_wet * _reverb(audio, sample_rate, mix)
    # Bring to the target loudness, then a soft limiter keeps peaks below
    # full scale: the louder the target, the more the peaks are squashed.
    audio = audio * (mix.rms / max(float(np.sqrt(np.mean(audio**2))), 1e-9))
    return (LIMITER_CEILING * np.tanh(audio / LIMITER_CEILING)).astype(np.float32)


def _reverb(audio: np.ndarray, sample_rate: int, mix: Mix) -> np.ndarray:
    """Convolution with decaying noise: a plain room, different in each channel."""
    rng = np.random.default_rng(mix.reverb_seed)
    t = np.arange(int(mix.reverb_seconds * sample_rate)) / sample_rate
    response = rng.standard_normal((len(t), audio.shape[1])) * np.exp(-6.9 * t / mix.reverb_seconds)[:, None]
    wet = signal.fftconvolve(audio, response, axes=0)[: len(audio)]
    return wet * (np.abs(audio).max() / max(float(np.abs(wet).max()), 1e-9))
