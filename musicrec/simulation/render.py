"""Renders MIDI arrangements to audio with a General MIDI soundfont.

pretty-midi ships a GM soundfont (TimGM6mb.sf2) and tinysoundfont (a C
synthesiser with Python bindings) renders it, so no system package is needed.
tinysoundfont's own sequencer plays in real time through pyaudio; here the note
events are fed between fixed-size `generate_simple` calls instead, which
renders faster than real time and is deterministic. With a `Mix`, each part's
channel gets its own volume and pan and the result is mastered
(production.master); without one, the synthesiser's balance is kept.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Optional

import numpy as np
import pretty_midi
import tinysoundfont

from musicrec.simulation.production import Mix, master

SOUNDFONT = pathlib.Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
DRUM_CHANNEL = 9
VOLUME_CC, PAN_CC = 7, 10


@functools.lru_cache(maxsize=None)
def _check_soundfont() -> pathlib.Path:
    if not SOUNDFONT.is_file():
        raise FileNotFoundError(f"General MIDI soundfont not found at {SOUNDFONT}; reinstall pretty-midi")
    return SOUNDFONT


def render(
    midi: pretty_midi.PrettyMIDI, sample_rate: int, seconds: float, stereo: bool = False, mix: Optional[Mix] = None
) -> np.ndarray:
    """Renders the first `seconds` of `midi`: float32 [samples] or [samples, 2], peak 0.9 (or mastered by `mix`)."""
    synth = tinysoundfont.Synth(samplerate=sample_rate, gain=-3.0)
    font = synth.sfload(str(_check_soundfont()))
    events = []
    melodic_channels = iter(c for c in range(16) if c != DRUM_CHANNEL)
    for instrument in midi.instruments:
        channel = DRUM_CHANNEL if instrument.is_drum else next(melodic_channels)
        synth.program_select(channel, font, 128 if instrument.is_drum else 0, 0 if instrument.is_drum else instrument.program, instrument.is_drum)
        if mix is not None:
            _mix_channel(synth, channel, mix, instrument.name)
        for note in instrument.notes:
            events.append((note.start, 1, channel, note.pitch, note.velocity))
            events.append((note.end, 0, channel, note.pitch, 0))
    events.sort()  # by time; at equal times note-offs (0) before note-ons (1)
    total = int(round(seconds * sample_rate))
    chunks, position = [], 0
    for time, is_on, channel, pitch, velocity in events:
        sample = min(int(round(time * sample_rate)), total)
        if sample > position:
            chunks.append(_generate(synth, sample - position))
            position = sample
        if position >= total:
            break
        if is_on:
            synth.noteon(channel, pitch, velocity)
        else:
            synth.noteoff(channel, pitch)
    if position < total:
        chunks.append(_generate(synth, total - position))
    audio = np.concatenate(chunks).reshape(-1, 2)
    if mix is not None:
        audio = master(audio, sample_rate, mix)
    else:
        peak = float(np.abs(audio).max())
        if peak > 0:
            audio *= 0.9 / peak
    return audio if stereo else np.ascontiguousarray(audio.mean(axis=1))


def _mix_channel(synth: tinysoundfont.Synth, channel: int, mix: Mix, part: str) -> None:
    if part not in mix.gains_db:
        raise ValueError(f"instrument part {part!r} has no level in the mix; parts: {sorted(mix.gains_db)}")
    synth.control_change(channel, VOLUME_CC, int(round(127 * 10 ** (mix.gains_db[part] / 20))))
    synth.control_change(channel, PAN_CC, int(round(64 + 63 * mix.pans[part])))


def _generate(synth: tinysoundfont.Synth, samples: int) -> np.ndarray:
    return np.frombuffer(bytes(synth.generate_simple(samples)), dtype=np.float32)
