"""World presets: simulated services that differ from the default where real services differ.

A model tuned on one simulated world can fit that world's quirks. Each preset
is configuration only (a ServiceModel for catalogue, users and listening, an
AudioSpec for production and delivery), consumed by the one generator, so
every modelling choice can be measured on several worlds:

  default         the embedded demo service
  sparse_popular  5x fewer labelled pairs per track, exposure dominated by
                  popularity, a median of about 10 liked tracks per user
  crossover       14 genres with overlapping styles (8 restyled + 6 blends),
                  other instruments and tempo ranges, varied loudness and
                  mixing, low-bitrate codecs at 8-48 kHz
  sparse_crossover  both at once, as a held-out real service would differ
"""

from __future__ import annotations

import dataclasses
from typing import Dict

from musicrec.simulation.genres import CROSSOVER_GENRES
from musicrec.simulation.production import AudioFormat, AudioSpec, MixSpec
from musicrec.simulation.world import Activity, ServiceModel, TasteWeights


@dataclasses.dataclass(frozen=True)
class WorldPreset:
    name: str
    summary: str  # the axes it varies, for `--help` and the README
    service: ServiceModel = ServiceModel()
    audio: AudioSpec = AudioSpec()


SPARSE_POPULAR_SERVICE = ServiceModel(
    # Fewer users, each hearing fewer tracks (heavy-tailed), most of it plain
    # plays: about a fifth of the default's labelled pairs per track.
    users_scale=0.35,
    activity=Activity(median=40, sigma=0.7),
    weights=TasteWeights(liked_share=0.25, disliked_share=0.3),
    # A top-heavy catalogue, and exposure that follows popularity far more than taste.
    popularity_sigma=1.3,
    popularity_exposure=1.5,
    preference_exposure=0.15,
)

CROSSOVER_SERVICE = ServiceModel(
    genres=CROSSOVER_GENRES,
    # Wider spreads, so neighbouring genres' style ranges overlap.
    artist_style_spread=0.18,
    track_style_spread=0.1,
)

CROSSOVER_AUDIO = AudioSpec(
    formats=(
        # Low bitrates: constant-rate mp3 and low-quality Vorbis, about 15-60 kbit/s by sample rate.
        # (Vorbis at compression level 1.0 drops whole bands of some tracks, 10 dB of their level.)
        AudioFormat("mp3", "MP3", "MPEG_LAYER_III", 0.45, compression_level=0.9, bitrate_mode="CONSTANT"),
        AudioFormat("ogg", "OGG", "VORBIS", 0.35, compression_level=0.9),
        AudioFormat("flac", "FLAC", "PCM_16", 0.1),
        AudioFormat("wav", "WAV", "PCM_16", 0.1),
    ),
    sample_rates=((8000, 0.2), (11025, 0.2), (16000, 0.2), (22050, 0.15), (44100, 0.15), (48000, 0.1)),
    stereo_share=0.6,
    mix=MixSpec(),
)

WORLDS: Dict[str, WorldPreset] = {
    preset.name: preset
    for preset in (
        WorldPreset("default", "the embedded demo service"),
        WorldPreset(
            "sparse_popular",
            "5x fewer labelled pairs per track, exposure dominated by popularity, median ~10 liked tracks per user",
            service=SPARSE_POPULAR_SERVICE,
        ),
        WorldPreset(
            "crossover",
            "14 overlapping genres, other instruments and tempo ranges, varied loudness and mixing, low-bitrate codecs",
            service=CROSSOVER_SERVICE,
            audio=CROSSOVER_AUDIO,
        ),
        WorldPreset(
            "sparse_crossover",
            "sparse_popular's listening with crossover's catalogue and audio",
            service=dataclasses.replace(SPARSE_POPULAR_SERVICE, genres=CROSSOVER_SERVICE.genres,
                                        artist_style_spread=CROSSOVER_SERVICE.artist_style_spread,
                                        track_style_spread=CROSSOVER_SERVICE.track_style_spread),
            audio=CROSSOVER_AUDIO,
        ),
    )
}


def get_world(name: str) -> WorldPreset:
    if name not in WORLDS:
        raise ValueError(f"unknown world {name!r}; choose one of {sorted(WORLDS)}")
    return WORLDS[name]
