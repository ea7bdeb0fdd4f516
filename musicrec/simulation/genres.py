"""Genre styles of the simulated music service: configuration, not code.

Each genre is a `GenreStyle` row; one arrangement builder (`arrangement.py`)
turns any row plus a track's latent style vector into MIDI. Adding a genre is
adding a row. Program numbers are General MIDI (0-based); drum notes are GM
percussion keys on channel 10.

Patterns are 16 steps per bar (sixteenth notes); 'x' is a hit, 'o' a softer
hit, '.' a rest.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

# Names of the dimensions of a track's latent style vector, each in [0, 1].
# All of them are audible: the arrangement builder maps each to a musical
# parameter (see arrangement.py), so audio carries this part of the taste signal.
STYLE_DIMENSIONS: Tuple[str, ...] = ("tempo", "energy", "brightness", "percussion", "swing", "valence")


@dataclasses.dataclass(frozen=True)
class GenreStyle:
    name: str
    tempo_range: Tuple[float, float]  # beats per minute, spanned by style "tempo"
    # Mean of the style vector for this genre, in STYLE_DIMENSIONS order.
    style_center: Tuple[float, ...]
    kick: str
    snare: str
    hat: str
    hat_key: int  # 42 closed hi-hat, 51 ride, 70 maracas, ...
    snare_key: int  # 38 snare, 39 clap, 37 side stick
    bass_programs: Tuple[int, ...]
    bass_style: str  # see arrangement.BASS_STYLES
    chord_programs: Tuple[int, ...]  # ordered dark -> bright
    chord_style: str  # see arrangement.CHORD_STYLES
    lead_programs: Tuple[int, ...]  # ordered dark -> bright
    # Chord progressions as scale degrees (0-based) of the track's key, one chord per bar.
    progressions: Tuple[Tuple[int, ...], ...]
    sevenths: bool = False
    bars_per_chord: int = 1


GENRES: Tuple[GenreStyle, ...] = (
    GenreStyle(
        name="rock",
        tempo_range=(100, 150),
        style_center=(0.5, 0.7, 0.55, 0.75, 0.05, 0.6),
        kick="x.......x.x.....",
        snare="....x.......x...",
        hat="x.x.x.x.x.x.x.x.",
        hat_key=42,
        snare_key=38,
        bass_programs=(34, 33),
        bass_style="eighths",
        chord_programs=(29, 30, 27),
        chord_style="power",
        lead_programs=(29, 30, 81),
        progressions=((0, 4, 5, 3), (0, 3, 4, 3), (0, 6, 3, 0)),
    ),
    GenreStyle(
        name="metal",
        tempo_range=(140, 190),
        style_center=(0.7, 0.9, 0.4, 0.9, 0.0, 0.2),
        kick="x.x.x.x.x.x.x.x.",
        snare="....x.......x...",
        hat="x.x.x.x.x.x.x.x.",
        hat_key=51,
        snare_key=38,
        bass_programs=(34, 38),
        bass_style="eighths",
        chord_programs=(30, 29),
        chord_style="power",
        lead_programs=(30, 81, 29),
        progressions=((0, 5, 6, 0), (0, 3, 4, 0), (0, 1, 0, 6)),
    ),
    GenreStyle(
        name="electronic",
        tempo_range=(118, 136),
        style_center=(0.6, 0.75, 0.8, 0.8, 0.05, 0.55),
        kick="x...x...x...x...",
        snare="....x.......x...",
        hat="..x...x...x...x.",
        hat_key=42,
        snare_key=39,
        bass_programs=(38, 39),
        bass_style="syncopated",
        chord_programs=(89, 88, 81),
        chord_style="stabs",
        lead_programs=(80, 81, 84),
        progressions=((5, 3, 0, 4), (0, 5, 3, 4), (5, 4, 3, 4)),
    ),
    GenreStyle(
        name="hiphop",
        tempo_range=(80, 98),
        style_center=(0.4, 0.55, 0.35, 0.85, 0.6, 0.4),
        kick="x......x..x.....",
        snare="....x.......x...",
        hat="xxxxxxxxxxxxxxxx",
        hat_key=42,
        snare_key=38,
        bass_programs=(38, 33),
        bass_style="syncopated",
        chord_programs=(4, 0, 11),
        chord_style="block",
        lead_programs=(0, 11, 4),
        progressions=((0, 5, 3, 4), (1, 4, 0, 0), (5, 5, 3, 4)),
        sevenths=True,
    ),
    GenreStyle(
        name="jazz",
        tempo_range=(110, 180),
        style_center=(0.5, 0.45, 0.5, 0.45, 0.9, 0.55),
        kick="x.........x.....",
        snare="......o.......o.",
        hat="x...x.x.x...x.x.",
        hat_key=51,
        snare_key=38,
        bass_programs=(32,),
        bass_style="walking",
        chord_programs=(0, 4, 26),
        chord_style="comp",
        lead_programs=(66, 65, 56),
        progressions=((1, 4, 0, 0), (0, 5, 1, 4), (2, 5, 1, 4)),
        sevenths=True,
    ),
    GenreStyle(
        name="classical",
        tempo_range=(60, 110),
        style_center=(0.35, 0.3, 0.45, 0.0, 0.05, 0.6),
        kick="................",
        snare="................",
        hat="................",
        hat_key=42,
        snare_key=38,
        bass_programs=(42, 43),
        bass_style="sustained",
        chord_programs=(48, 49, 0),
        chord_style="arpeggio",
        lead_programs=(42, 40, 73),
        progressions=((0, 3, 4, 0), (0, 5, 1, 4), (0, 4, 5, 2)),
        bars_per_chord=2,
    ),
    GenreStyle(
        name="reggae",
        tempo_range=(68, 90),
        style_center=(0.35, 0.5, 0.55, 0.55, 0.35, 0.75),
        kick="........x.......",
        snare="........x.......",
        hat="x.x.x.x.x.x.x.x.",
        hat_key=42,
        snare_key=37,
        bass_programs=(33, 32),
        bass_style="offbeat",
        chord_programs=(17, 16, 26),
        chord_style="skank",
        lead_programs=(16, 22, 56),
        progressions=((0, 3, 0, 4), (0, 5, 3, 4), (5, 3, 0, 0)),
    ),
    GenreStyle(
        name="folk",
        tempo_range=(85, 125),
        style_center=(0.45, 0.35, 0.6, 0.2, 0.15, 0.7),
        kick="x.......x.......",
        snare="....o.......o...",
        hat="x.xxx.xxx.xxx.xx",
        hat_key=70,
        snare_key=37,
        bass_programs=(32,),
        bass_style="roots",
        chord_programs=(25, 24, 105),
        chord_style="arpeggio",
        lead_programs=(22, 73, 110),
        progressions=((0, 3, 0, 4), (0, 4, 5, 3), (0, 0, 3, 4)),
    ),
)

GENRES_BY_NAME = {g.name: g for g in GENRES}


def blend(name: str, rhythm: GenreStyle, voice: GenreStyle) -> GenreStyle:
    """A crossover genre: `rhythm`'s drums and harmony, `voice`'s bass line and lead,
    tempo range and style centre halfway between the two, so its styles overlap both."""
    return GenreStyle(
        name=name,
        tempo_range=tuple((a + b) / 2 for a, b in zip(rhythm.tempo_range, voice.tempo_range)),
        style_center=tuple((a + b) / 2 for a, b in zip(rhythm.style_center, voice.style_center)),
        kick=rhythm.kick,
        snare=rhythm.snare,
        hat=rhythm.hat,
        hat_key=rhythm.hat_key,
        snare_key=rhythm.snare_key,
        bass_programs=voice.bass_programs,
        bass_style=voice.bass_style,
        chord_programs=rhythm.chord_programs,
        chord_style=rhythm.chord_style,
        lead_programs=voice.lead_programs,
        progressions=rhythm.progressions + voice.progressions,
        sevenths=rhythm.sevenths or voice.sevenths,
        bars_per_chord=rhythm.bars_per_chord,
    )


# Another service's take on the same eight genres: other instruments (GM
# programs) and tempo ranges, as a catalogue of real recordings would have.
_RESTYLED = {
    "rock": dict(tempo_range=(88, 140), bass_programs=(33, 35), chord_programs=(28, 27, 25), lead_programs=(26, 27, 62)),
    "metal": dict(tempo_range=(120, 210), bass_programs=(33, 34), chord_programs=(18, 30), lead_programs=(87, 30, 18)),
    "electronic": dict(tempo_range=(124, 150), bass_programs=(87, 38), chord_programs=(90, 94, 91), lead_programs=(82, 83, 85)),
    "hiphop": dict(tempo_range=(70, 100), bass_programs=(38, 39), chord_programs=(5, 16, 48), lead_programs=(56, 61, 11)),
    "jazz": dict(tempo_range=(90, 220), bass_programs=(32, 33), chord_programs=(26, 0, 11), lead_programs=(64, 71, 73)),
    "classical": dict(tempo_range=(50, 130), bass_programs=(43, 58), chord_programs=(46, 52, 48), lead_programs=(71, 68, 40)),
    "reggae": dict(tempo_range=(60, 100), bass_programs=(33, 38), chord_programs=(16, 4, 27), lead_programs=(61, 65, 9)),
    "folk": dict(tempo_range=(75, 140), bass_programs=(32, 43), chord_programs=(24, 105, 46), lead_programs=(21, 40, 75)),
}
_RESTYLED_BY_NAME = {g.name: dataclasses.replace(g, **_RESTYLED[g.name]) for g in GENRES}
# 14 style families: the restyled eight plus six crossovers between them.
CROSSOVER_GENRES: Tuple[GenreStyle, ...] = tuple(_RESTYLED_BY_NAME.values()) + tuple(
    blend(name, _RESTYLED_BY_NAME[rhythm], _RESTYLED_BY_NAME[voice])
    for name, rhythm, voice in (
        ("folk_rock", "rock", "folk"),
        ("jazz_rap", "hiphop", "jazz"),
        ("electro_rock", "electronic", "rock"),
        ("chamber_folk", "folk", "classical"),
        ("rap_metal", "metal", "hiphop"),
        ("dubtronica", "reggae", "electronic"),
    )
)
