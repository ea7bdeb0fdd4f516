"""Audio decoding for bulk feature extraction: any of wav/flac/ogg/mp3, any rate, to 22050 Hz mono.

Backend: soundfile (libsndfile 1.2, which reads all four formats) + soxr for
resampling. `benchmarks/frontend.py` measures it against tensorflow-io's
decoders side by side; soundfile + soxr is the faster, so it does the bulk
work. Serving graphs never decode compressed audio (core TF has only WAV), so
tensorflow-io is not needed at run time.

Every way a file can be unusable has its own exception, so batch extraction can
count each kind in its quarantine report.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence, Tuple

import numpy as np
import soundfile
import soxr

from musicrec import storage

SAMPLE_RATE = 22050
# RMS below this (in dB relative to full scale) over the decoded excerpt counts
# as silent: -60 dBFS is below the noise floor of any real recording.
SILENCE_DBFS = -60.0


class AudioError(Exception):
    """Base class: the audio file cannot be used. `status` names the kind."""

    status = "unusable"

    def __init__(self, path, detail: str):
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{self.path}: {detail}")


class MissingAudioError(AudioError):
    status = "missing"


class UnreadableAudioError(AudioError):
    status = "unreadable"


class EmptyAudioError(AudioError):
    status = "empty"


class SilentAudioError(AudioError):
    status = "silent"


class TooShortAudioError(AudioError):
    status = "too_short"


class OutsideDatasetAudioError(AudioError):
    status = "outside_dataset"


AUDIO_ERRORS = (
    MissingAudioError, UnreadableAudioError, EmptyAudioError, SilentAudioError, TooShortAudioError, OutsideDatasetAudioError,
)
AUDIO_STATUSES = tuple(e.status for e in AUDIO_ERRORS)


@dataclasses.dataclass(frozen=True)
class AudioFile:
    """A track's audio file and the folders it must resolve inside (the dataset folder and any
    audio root its adapter declares); `load_audio` refuses it anywhere else."""

    track_id: str
    path: str
    roots: Tuple[str, ...]

    def __iter__(self):
        # Unpacks as the (track_id, path) pair that callers took before the roots came along.
        return iter((self.track_id, self.path))

    def load(self, **options) -> np.ndarray:
        """`load_audio` of this file inside its roots; `options` as load_audio's."""
        return load_audio(self.path, roots=self.roots, **options)

    def inside(self) -> bool:
        """Whether the file resolves inside its roots: what a reader that opens paths itself
        (a worker process, another library) checks first."""
        try:
            check_inside(self.path, self.roots)
        except OutsideDatasetAudioError:
            return False
        return True


def check_inside(path, roots: Sequence) -> None:
    """Raises OutsideDatasetAudioError unless `path`, symbolic links followed, lies inside one of `roots`."""
    if not any(storage.is_inside(path, root) for root in roots):
        raise OutsideDatasetAudioError(
            path, f"outside the dataset: resolves to {storage.resolved(path)}, not inside {' or '.join(str(r) for r in roots)}"
        )


def load_audio(
    path,
    sample_rate: int = SAMPLE_RATE,
    max_seconds: Optional[float] = 30.0,
    min_seconds: float = 0.0,
    roots: Optional[Sequence] = None,
) -> np.ndarray:
    """Decodes the first `max_seconds` of `path` as float32 mono at `sample_rate`.

    Raises a subclass of AudioError when the file lies outside `roots` (when
    given: a dataset's audio is opened only inside its folders), is missing,
    cannot be decoded, holds no samples, is shorter than `min_seconds` (for
    example the training context duration), or is silent.
    """
    if roots is not None:
        check_inside(path, roots)
    if not storage.path(path).is_file():
        raise MissingAudioError(path, "file not found")
    try:
        with soundfile.SoundFile(storage.local_or_bytes(path)) as f:
            native_rate = f.samplerate
            total_frames = f.frames
            wanted = total_frames if max_seconds is None else min(total_frames, math.ceil(max_seconds * native_rate))
            # 16-bit PCM is read as integers and scaled here: libsndfile's own
            # int-to-float conversion is about ten times slower than numpy's.
            pcm16 = f.subtype == "PCM_16"
            audio = f.read(frames=wanted, dtype="int16" if pcm16 else "float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as e:
        # libsndfile's own message names what it opened, which for an object is an in-memory buffer.
        reason = getattr(e, "error_string", None) or e
        raise UnreadableAudioError(path, f"not a decodable wav/flac/ogg/mp3 file (libsndfile: {reason})") from None
    if audio.size == 0:
        raise EmptyAudioError(path, "file holds no audio samples")
    duration = total_frames / native_rate
    if duration < min_seconds:
        raise TooShortAudioError(path, f"{duration:.2f} s long; at least {min_seconds:.2f} s is needed")
    channels = audio.shape[1]
    # Scale and down-mix in one matrix-vector product: numpy's mean over a
    # 2-wide axis is several times slower on long audio.
    scale = (1.0 / 32768 if pcm16 else 1.0) / channels
    mono = audio.astype(np.float32, copy=False) @ np.full(channels, scale, np.float32)
    rms = float(np.sqrt(np.dot(mono, mono) / len(mono)))
    if not np.isfinite(rms):  # NaN or infinity anywhere propagates into the sum
        raise UnreadableAudioError(path, "decoded samples contain NaN or infinity")
    if rms <= 10 ** (SILENCE_DBFS / 20):
        level = "digital silence" if rms == 0 else f"{20 * math.log10(rms):.1f} dBFS RMS"
        raise SilentAudioError(path, f"silent ({level}, threshold {SILENCE_DBFS:.0f} dBFS)")
    if native_rate != sample_rate:
        mono = soxr.resample(mono, native_rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)
