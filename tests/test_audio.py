"""Audio decoding (formats, rates, channels, every bad-input case) and the log-mel front end."""

import numpy as np
import pandas as pd
import pytest
import soundfile
import tensorflow as tf

from conftest import tone
from musicrec.audio import decode
from musicrec.audio.logmel import DEFAULT, log_mel_spectrogram

FORMATS = [("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS"), ("mp3", "MP3", "MPEG_LAYER_III")]


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("ext, container, subtype", FORMATS)
@pytest.mark.parametrize("rate, channels", [(44100, 2), (16000, 1), (22050, 1)])
def test_decodes_every_format_rate_and_channel_count_to_22050_mono(tmp_path, ext, container, subtype, rate, channels):
    path = tmp_path / f"tone.{ext}"
    soundfile.write(str(path), tone(4.0, rate, freq=440.0, channels=channels), rate, format=container, subtype=subtype)
    audio = decode.load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    # Lossy codecs pad a few milliseconds; the length is 4 s at 22050 Hz within 60 ms.
    assert abs(len(audio) - 4 * 22050) < 0.06 * 22050
    assert dominant_frequency(audio, 22050) == pytest.approx(440.0, abs=3.0)
    assert 0.15 < np.sqrt(np.mean(audio**2)) < 0.26  # a 0.3 sine has RMS 0.21


def test_only_the_first_30_seconds_are_decoded(tmp_path):
    path = tmp_path / "long.flac"
    soundfile.write(str(path), tone(40.0, 44100), 44100)
    assert len(decode.load_audio(path)) == 30 * 22050
    assert len(decode.load_audio(path, max_seconds=None)) == 40 * 22050


@pytest.mark.parametrize(
    "make, error, status",
    [
        (lambda p: None, decode.MissingAudioError, "missing"),
        (lambda p: p.write_bytes(b"RIFF\x00\x00garbage" * 100), decode.UnreadableAudioError, "unreadable"),
        (lambda p: p.write_bytes(b""), decode.UnreadableAudioError, "unreadable"),
        (lambda p: soundfile.write(str(p), np.zeros(0, np.float32), 22050), decode.EmptyAudioError, "empty"),
        (lambda p: soundfile.write(str(p), np.zeros(22050 * 5, np.float32), 22050), decode.SilentAudioError, "silent"),
        (lambda p: soundfile.write(str(p), tone(5.0, 22050, amplitude=1e-4), 22050), decode.SilentAudioError, "silent"),
        (lambda p: soundfile.write(str(p), tone(2.0, 22050), 22050), decode.TooShortAudioError, "too_short"),
    ],
    ids=["missing", "corrupt", "zero-bytes", "no-samples", "digital-silence", "near-silence", "too-short"],
)
def test_each_bad_file_gets_its_own_clear_error(tmp_path, make, error, status):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(error) as raised:
        decode.load_audio(path, min_seconds=3.0)
    assert raised.value.status == status
    assert str(path) in str(raised.value)
    assert type(raised.value) is error  # distinct classes, not one generic error


def test_frame_counts_match_the_context_durations():
    assert (DEFAULT.num_frames(3), DEFAULT.num_frames(10), DEFAULT.max_frames) == (130, 431, 1292)
    for seconds in (3, 10, 30):
        frames = log_mel_spectrogram(np.zeros(seconds * 22050, np.float32)).shape
        assert frames == (DEFAULT.num_frames(seconds), 128)


def test_batches_give_the_same_result_as_single_tracks():
    rng = np.random.default_rng(0)
    batch = rng.normal(0, 0.1, (2, 3 * 22050)).astype(np.float32)
    together = log_mel_spectrogram(batch).numpy()
    assert together.shape == (2, 130, 128)
    np.testing.assert_allclose(together[1], log_mel_spectrogram(batch[1]).numpy(), atol=1e-3)


# Stated tolerance against librosa on the same decoded audio: under 0.1 dB in
# every bin above -60 dB (where music is; observed about 0.05 dB, from float32
# FFTs and float32 vs float64 filterbanks), and in 99% of all bins. Near
# digital silence (-90 to -100 dB) float32 rounding of near-zero power makes
# single bins differ by up to a few dB, which no model can see.
LIBROSA_TOLERANCE_DB = 0.1


def test_log_mel_matches_librosa_on_generated_music(tiny_dataset):
    librosa = pytest.importorskip("librosa")
    tracks = pd.read_csv(tiny_dataset / "tracks.csv")
    for audio_path in tracks["audio_path"].iloc[[0, 40, 80]]:  # three genres, three codecs
        audio = decode.load_audio(tiny_dataset / audio_path)
        ours = log_mel_spectrogram(audio).numpy()
        reference = librosa.power_to_db(
            librosa.feature.melspectrogram(
                y=audio, sr=22050, n_fft=2048, hop_length=512, n_mels=128, htk=True, norm=None, fmin=0.0, fmax=11025.0
            ),
            ref=1.0, amin=1e-10, top_db=None,
        ).T
        assert ours.shape == reference.shape
        difference = np.abs(ours - reference)
        loud = reference > -60
        assert loud.mean() > 0.8
        assert difference[loud].max() < LIBROSA_TOLERANCE_DB
        assert np.percentile(difference, 99) < LIBROSA_TOLERANCE_DB


def test_log_mel_graph_uses_core_tensorflow_ops_only():
    graph = tf.function(log_mel_spectrogram).get_concrete_function(tf.TensorSpec([None], tf.float32)).graph
    op_types = {op.type for op in graph.get_operations()}
    assert {"RFFT", "Log"} <= op_types
    from tensorflow.python.framework import op_def_registry

    assert all(op_def_registry.get(t) is not None for t in op_types)
    assert not any(t.startswith("IO>") for t in op_types)
