"""Builds a MIDI arrangement from a genre style and a track's latent style vector.

One builder for every genre: the genre row (genres.py) gives patterns,
instruments and progressions; the track's style vector moves the audible
parameters within it:

  tempo       -> beats per minute within the genre's range
  energy      -> note velocities and melodic density
  brightness  -> register of chords and melody, and the brighter instrument choices
  percussion  -> drum level (and whether drums play at all)
  swing       -> delay of off-beat sixteenths
  valence     -> major vs minor key, and how much the melody rises
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np
import pretty_midi

from musicrec.simulation.genres import STYLE_DIMENSIONS, GenreStyle

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
BASS_STYLES = ("roots", "eighths", "syncopated", "walking", "sustained", "offbeat")
CHORD_STYLES = ("block", "power", "stabs", "comp", "arpeggio", "skank")
KICK, CRASH = 36, 49


def style_value(style: Sequence[float], name: str) -> float:
    return float(style[STYLE_DIMENSIONS.index(name)])


def _pick(options: Sequence[int], position: float) -> int:
    """Chooses from options ordered dark -> bright by a value in [0, 1]."""
    index = min(int(position * len(options)), len(options) - 1)
    return options[index]


class _Grid:
    """Sixteenth-note time grid with swing."""

    def __init__(self, bpm: float, swing: float):
        self.step = 60.0 / bpm / 4
        self.swing = swing

    def time(self, bar: int, step: int) -> float:
        delay = self.swing * self.step if step % 2 == 1 else 0.0
        return (bar * 16 + step) * self.step + delay


def _chord(scale: Sequence[int], root: int, degree: int, sevenths: bool) -> List[int]:
    notes = []
    for offset in (0, 2, 4, 6) if sevenths else (0, 2, 4):
        d = degree + offset
        notes.append(root + scale[d % 7] + 12 * (d // 7))
    return notes


def build_arrangement(genre: GenreStyle, style: Sequence[float], rng: np.random.Generator, seconds: float):
    """Returns a pretty_midi.PrettyMIDI of at least `seconds` of music."""
    bpm = genre.tempo_range[0] + style_value(style, "tempo") * (genre.tempo_range[1] - genre.tempo_range[0])
    energy = style_value(style, "energy")
    brightness = style_value(style, "brightness")
    percussion = style_value(style, "percussion")
    valence = style_value(style, "valence")
    grid = _Grid(bpm, swing=0.45 * style_value(style, "swing"))
    bar_seconds = 16 * grid.step
    n_bars = int(np.ceil(seconds / bar_seconds)) + 1
    scale = MAJOR if valence >= 0.5 else MINOR
    key = int(rng.integers(0, 12))
    register_shift = 12 * int(round(2 * brightness - 1))
    progression = genre.progressions[int(rng.integers(len(genre.progressions)))]
    degrees = [progression[(bar // genre.bars_per_chord) % len(progression)] for bar in range(n_bars)]

    midi = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    if percussion > 0.12:
        midi.instruments.append(_drums(genre, grid, n_bars, percussion, energy, rng))
    # Named by part, so a mix (production.py) can set each part's level.
    bass = pretty_midi.Instrument(program=genre.bass_programs[int(rng.integers(len(genre.bass_programs)))], name="bass")
    _bass_line(bass, genre.bass_style, grid, degrees, scale, 36 + key, energy, rng)
    chords = pretty_midi.Instrument(program=_pick(genre.chord_programs, brightness), name="chords")
    _chords(chords, genre, grid, degrees, scale, 52 + key + register_shift, energy, rng)
    lead = pretty_midi.Instrument(program=_pick(genre.lead_programs, brightness), name="lead")
    _melody(lead, grid, scale, 64 + key + register_shift, energy, valence, n_bars, rng)
    midi.instruments.extend([bass, chords, lead])
    return midi


def _velocity(base: float, energy: float, rng: np.random.Generator) -> int:
    return int(np.clip(base * (0.55 + 0.5 * energy) + rng.normal(0, 5), 20, 127))


def _add(instrument, pitch: int, start: float, end: float, velocity: int) -> None:
    instrument.notes.append(pretty_midi.Note(velocity=velocity, pitch=int(np.clip(pitch, 0, 127)), start=start, end=end))


def _drums(genre, grid, n_bars, percussion, energy, rng):
    drums = pretty_midi.Instrument(program=0, is_drum=True, name="drums")
    level = 40 + 80 * percussion
    for bar in range(n_bars):
        fill = bar % 4 == 3 and rng.random() < 0.5 + 0.4 * energy
        for pattern, key in ((genre.kick, KICK), (genre.snare, genre.snare_key), (genre.hat, genre.hat_key)):
            for step, hit in enumerate(pattern):
                if fill and key == genre.snare_key and step >= 12:
                    hit = "x"
                if hit == ".":
                    continue
                accent = 1.0 if hit == "x" else 0.55
                start = grid.time(bar, step)
                _add(drums, key, start, start + 0.1, _velocity(level * accent, energy, rng))
        if bar % 8 == 0 and percussion > 0.5:
            _add(drums, CRASH, grid.time(bar, 0), grid.time(bar, 0) + 0.5, _velocity(level, energy, rng))
    return drums


def _bass_line(bass, bass_style, grid, degrees, scale, root, energy, rng):
    for bar, degree in enumerate(degrees):
        note = root + scale[degree % 7]
        if bass_style == "sustained":
            hits = [(0, 16, note)]
        elif bass_style == "roots":
            hits = [(s, 4, note if s % 8 == 0 else note + 7) for s in (0, 4, 8, 12)]
        elif bass_style == "eighths":
            hits = [(s, 2, note) for s in range(0, 16, 2)]
        elif bass_style == "syncopated":
            hits = [(s, 2, note + (12 if rng.random() < 0.2 else 0)) for s in (0, 3, 6, 10, 11, 14)]
        elif bass_style == "walking":
            walk = [scale[(degree + i) % 7] + 12 * ((degree + i) // 7) for i in (0, 2, 4, 5)]
            hits = [(4 * i, 4, root + w) for i, w in enumerate(walk)]
        elif bass_style == "offbeat":
            hits = [(s, 3, note + (7 if s == 10 else 0)) for s in (2, 6, 10)]
        else:
            raise ValueError(f"unknown bass style {bass_style!r}; known: {BASS_STYLES}")
        for step, length, pitch in hits:
            start = grid.time(bar, step)
            _add(bass, pitch, start, start + length * grid.step * 0.95, _velocity(95, energy, rng))


def _chords(instrument, genre, grid, degrees, scale, root, energy, rng):
    for bar, degree in enumerate(degrees):
        notes = _chord(scale, root, degree, genre.sevenths)
        style = genre.chord_style
        if style == "power":
            notes = [notes[0], notes[0] + 7, notes[0] + 12]
            hits = [(s, 2, notes) for s in range(0, 16, 2)]
        elif style == "block":
            hits = [(0, 16, notes)]
        elif style == "stabs":
            hits = [(s, 1, notes) for s in (2, 6, 10, 14)]
        elif style == "comp":
            hits = [(s, 2, notes) for s in sorted(rng.choice(16, size=3, replace=False))]
        elif style == "arpeggio":
            hits = [(s, 2, [notes[(s // 2) % len(notes)] + (12 if s >= 8 else 0)]) for s in range(0, 16, 2)]
        elif style == "skank":
            hits = [(s, 1, notes) for s in (4, 12)]
        else:
            raise ValueError(f"unknown chord style {style!r}; known: {CHORD_STYLES}")
        for step, length, pitches in hits:
            start = grid.time(bar, step)
            for pitch in pitches:
                _add(instrument, pitch, start, start + length * grid.step * 0.95, _velocity(70, energy, rng))


def _melody(lead, grid, scale, root, energy, valence, n_bars, rng):
    """A random walk on the scale, denser with energy, rising with valence."""
    notes_per_bar = 2 + int(round(6 * energy))
    position = 7  # scale steps above root
    drift = 0.6 * (valence - 0.5)
    for bar in range(n_bars):
        if bar % 8 >= 6:  # phrase rest
            continue
        steps = np.sort(rng.choice(16, size=notes_per_bar, replace=False))
        for i, step in enumerate(steps):
            position = int(np.clip(position + rng.choice([-2, -1, 1, 2]) + (1 if rng.random() < abs(drift) else 0) * np.sign(drift), 0, 14))
            pitch = root + scale[position % 7] + 12 * (position // 7) - 12
            end_step = steps[i + 1] if i + 1 < len(steps) else 16
            start = grid.time(bar, int(step))
            _add(lead, pitch, start, start + (end_step - step) * grid.step * 0.9, _velocity(85, energy, rng))
