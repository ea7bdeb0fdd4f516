"""The latent world of the simulated music service: catalogue, users, taste, listening.

Preference of user u for track t is

    U(u, t) = A(u, t)                              audio-derivable part
            + w_artist * affinity(u, artist(t))    artist loyalty (not in the audio)
            + w_popularity * z(popularity(t))      popularity (not in the audio)

    A(u, t) = taste(u) . (2 * style(t) - 1) + genre_preference(u, genre(t))

`style(t)` is the track's latent style vector (genres.STYLE_DIMENSIONS); the
arrangement builder turns it, and the genre, into the audio, so A is what an
audio model can learn. Taste and genre preferences are linear in the
demographics plus individual noise, so demographics predict taste in part.
Users hear tracks drawn by popularity and preference (a recommender's
exposure), and each exposure's outcome is decided by U plus noise: the top of
a user's exposures are liked, the bottom disliked, the middle merely played.

How the catalogue, users and listening behave is one `ServiceModel`; its
defaults are the embedded demo's service, and the world presets (worlds.py)
change it where real services differ.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from musicrec.simulation.genres import GENRES, STYLE_DIMENSIONS, GenreStyle

COUNTRIES: Tuple[str, ...] = ("US", "BR", "DE", "JP", "IN", "SE")
COUNTRY_SHARES = (0.3, 0.15, 0.15, 0.15, 0.15, 0.1)
GENDERS: Tuple[str, ...] = ("female", "male", "nonbinary")
GENDER_SHARES = (0.48, 0.48, 0.04)


@dataclasses.dataclass(frozen=True)
class ServiceSize:
    artists: int  # spread evenly over the world's genres
    albums_per_artist: int
    tracks_per_album: int
    users: int
    exposures_per_user: Tuple[int, int]  # min, max heard tracks per user
    track_seconds: Tuple[float, float]  # min, max rendered duration


SIZES: Dict[str, ServiceSize] = {
    # Seconds to generate; for tests.
    "tiny": ServiceSize(16, 2, 3, users=60, exposures_per_user=(40, 50), track_seconds=(11.0, 12.0)),
    # The embedded default: the whole pipeline runs on it in minutes on 2 cores.
    "demo": ServiceSize(48, 2, 6, users=1500, exposures_per_user=(50, 90), track_seconds=(30.0, 32.0)),
    # For benchmarks.
    "bench": ServiceSize(160, 3, 6, users=20000, exposures_per_user=(50, 120), track_seconds=(30.0, 32.0)),
}


@dataclasses.dataclass(frozen=True)
class TasteWeights:
    artist_loyalty: float = 1.4
    popularity: float = 0.5
    # Noise of each listening outcome: what no model can predict.
    outcome_noise: float = 1.0
    # Share of a user's exposures that end liked / disliked.
    liked_share: float = 0.35
    disliked_share: float = 0.35


@dataclasses.dataclass(frozen=True)
class Activity:
    """Heard tracks per user drawn log-normally around `median`, whatever the size:
    real listening is heavy-tailed, most users hear few tracks and a few hear many."""

    median: float
    sigma: float


@dataclasses.dataclass(frozen=True)
class ServiceModel:
    """How one simulated service's catalogue, users and listening behave.

    The defaults are the embedded demo's service; changing any of them changes
    the generated data, so the default world stays byte-identical only while
    they stay as they are.
    """

    genres: Tuple[GenreStyle, ...] = GENRES
    artist_style_spread: float = 0.12  # std of an artist's style around its genre's centre
    track_style_spread: float = 0.08  # std of a track's style around its artist's
    popularity_sigma: float = 1.0  # std of log artist popularity: larger, a more top-heavy catalogue
    users_scale: float = 1.0  # users = size.users * users_scale
    activity: Optional[Activity] = None  # None: heard tracks uniform in size.exposures_per_user
    # Exposure logit = popularity_exposure * log popularity + preference_exposure * U(u, t).
    popularity_exposure: float = 0.5
    preference_exposure: float = 0.5
    weights: TasteWeights = TasteWeights()


@dataclasses.dataclass
class World:
    """Everything latent. Tables are indexed 0..n-1 in id order."""

    tracks: pd.DataFrame  # track_id, artist_id, album_id, genre, style_*, popularity, seconds
    users: pd.DataFrame  # user_id, age, gender, country, taste_*, pref_<genre>
    artist_affinity: np.ndarray  # [users, artists]
    artist_ids: np.ndarray
    model: ServiceModel

    @property
    def weights(self) -> TasteWeights:
        return self.model.weights

    @property
    def style(self) -> np.ndarray:
        return self.tracks[[f"style_{d}" for d in STYLE_DIMENSIONS]].to_numpy()


def sample_world(size: ServiceSize, rng: np.random.Generator, model: ServiceModel = ServiceModel()) -> World:
    tracks, artist_ids = _sample_catalogue(size, model, rng)
    users = _sample_users(max(1, round(size.users * model.users_scale)), [g.name for g in model.genres], rng)
    affinity = rng.normal(0.0, 1.0, size=(len(users), len(artist_ids)))
    return World(tracks=tracks, users=users, artist_affinity=affinity, artist_ids=artist_ids, model=model)


def _artists_per_genre(artists: int, genres: int) -> Sequence[int]:
    """`artists` spread as evenly as it goes, the first genres taking the remainder."""
    return [artists // genres + (i < artists % genres) for i in range(genres)]


def _sample_catalogue(size: ServiceSize, model: ServiceModel, rng: np.random.Generator) -> Tuple[pd.DataFrame, np.ndarray]:
    rows, artist_ids = [], []
    for genre, n_artists in zip(model.genres, _artists_per_genre(size.artists, len(model.genres))):
        center = np.asarray(genre.style_center)
        for _ in range(n_artists):
            artist_id = f"ar{len(artist_ids) + 1:04d}"
            artist_ids.append(artist_id)
            artist_style = np.clip(center + rng.normal(0, model.artist_style_spread, len(center)), 0, 1)
            artist_popularity = rng.lognormal(0.0, model.popularity_sigma)
            for album in range(size.albums_per_artist):
                album_id = f"al{len(artist_ids):04d}{album + 1:02d}"
                release = pd.Timestamp("2015-01-01") + pd.Timedelta(days=int(rng.integers(0, 3000)))
                for _ in range(size.tracks_per_album):
                    style = np.clip(artist_style + rng.normal(0, model.track_style_spread, len(center)), 0, 1)
                    rows.append(
                        dict(
                            track_id=f"t{len(rows) + 1:05d}",
                            artist_id=artist_id,
                            album_id=album_id,
                            genre=genre.name,
                            release_date=release.strftime("%Y-%m-%d"),
                            popularity=artist_popularity * rng.lognormal(0.0, 0.5),
                            seconds=rng.uniform(*size.track_seconds),
                            **{f"style_{d}": v for d, v in zip(STYLE_DIMENSIONS, style)},
                        )
                    )
    return pd.DataFrame(rows), np.asarray(artist_ids)


def demographic_features(users: pd.DataFrame) -> np.ndarray:
    """The demographic vector taste is drawn from: standardised age, gender and country one-hots."""
    age = ((users["age"].to_numpy(float) - 35.0) / 12.0)[:, None]
    gender = (users["gender"].to_numpy()[:, None] == np.asarray(GENDERS[:2])[None, :]).astype(float)
    country = (users["country"].to_numpy()[:, None] == np.asarray(COUNTRIES)[None, :]).astype(float)
    return np.concatenate([age, gender, country], axis=1)


def _sample_users(n: int, genre_names: Sequence[str], rng: np.random.Generator) -> pd.DataFrame:
    users = pd.DataFrame(
        dict(
            user_id=[f"u{i + 1:05d}" for i in range(n)],
            age=np.clip(np.round(rng.gamma(6.0, 5.5, n) + 12), 14, 80).astype(int),
            gender=rng.choice(GENDERS, size=n, p=GENDER_SHARES),
            country=rng.choice(COUNTRIES, size=n, p=COUNTRY_SHARES),
        )
    )
    demo = demographic_features(users)
    # Demographics explain part of taste; the rest is individual.
    taste = demo @ rng.normal(0, 0.45, (demo.shape[1], len(STYLE_DIMENSIONS))) + rng.normal(0, 0.6, (n, len(STYLE_DIMENSIONS)))
    prefs = demo @ rng.normal(0, 0.5, (demo.shape[1], len(genre_names))) + rng.normal(0, 0.7, (n, len(genre_names)))
    for i, d in enumerate(STYLE_DIMENSIONS):
        users[f"taste_{d}"] = taste[:, i]
    for i, name in enumerate(genre_names):
        users[f"pref_{name}"] = prefs[:, i]
    return users


def audio_utility(users: pd.DataFrame, tracks: pd.DataFrame) -> np.ndarray:
    """A(u, t) for every user (rows) and track (columns): the audio-derivable preference."""
    taste = users[[f"taste_{d}" for d in STYLE_DIMENSIONS]].to_numpy()
    style = tracks[[f"style_{d}" for d in STYLE_DIMENSIONS]].to_numpy()
    # Each user's preference for each track's genre: [users, tracks], whatever the world's genres.
    genre_preference = users[[f"pref_{genre}" for genre in tracks["genre"]]].to_numpy()
    return taste @ (2.0 * style - 1.0).T + genre_preference


def full_utility(world: World) -> np.ndarray:
    """U(u, t): audio part plus artist loyalty and popularity (no outcome noise)."""
    artist_index = pd.Index(world.artist_ids).get_indexer(world.tracks["artist_id"])
    log_pop = np.log(world.tracks["popularity"].to_numpy())
    pop_z = (log_pop - log_pop.mean()) / log_pop.std()
    w = world.weights
    return (
        audio_utility(world.users, world.tracks)
        + w.artist_loyalty * world.artist_affinity[:, artist_index]
        + w.popularity * pop_z[None, :]
    )


def simulate_listening(world: World, size: ServiceSize, rng: np.random.Generator) -> pd.DataFrame:
    """The interaction log: user_id, track_id, timestamp (unix s), event."""
    utility = full_utility(world)
    popularity = world.tracks["popularity"].to_numpy()
    model, w = world.model, world.weights
    track_ids = world.tracks["track_id"].to_numpy()
    rows = []
    start = pd.Timestamp("2024-01-01", tz="UTC").timestamp()
    for u, user_id in enumerate(world.users["user_id"]):
        n = min(_heard_count(model, size, rng), len(track_ids))
        # Exposure: what the service played to this user, biased to popular
        # tracks and (like any recommender) to what the user tends to like.
        logits = model.popularity_exposure * np.log(popularity) + model.preference_exposure * utility[u]
        p = np.exp(logits - logits.max())
        heard = rng.choice(len(track_ids), size=n, replace=False, p=p / p.sum())
        outcome = utility[u, heard] + rng.normal(0, w.outcome_noise, n)
        order = np.argsort(-outcome)
        n_liked, n_disliked = int(round(w.liked_share * n)), int(round(w.disliked_share * n))
        label = np.full(n, "neutral", dtype=object)
        label[order[:n_liked]] = "liked"
        label[order[n - n_disliked:]] = "disliked"
        times = np.sort(start + rng.uniform(0, 180 * 86400, n)) + rng.uniform(0, 150 * 86400)
        listen_order = rng.permutation(n)
        for k, i in enumerate(listen_order):
            rows.extend(_events(user_id, track_ids[heard[i]], float(times[k]), label[i], rng))
    log = pd.DataFrame(rows, columns=["user_id", "track_id", "timestamp", "event"])
    return log.sort_values(["timestamp", "user_id", "track_id"], kind="stable").reset_index(drop=True)


def _heard_count(model: ServiceModel, size: ServiceSize, rng: np.random.Generator) -> int:
    if model.activity is None:
        return int(rng.integers(size.exposures_per_user[0], size.exposures_per_user[1] + 1))
    return max(1, int(round(model.activity.median * rng.lognormal(0.0, model.activity.sigma))))


def _events(user_id, track_id, time, label, rng):
    """The events one exposure leaves in the log."""
    t = int(time)
    if label == "neutral":
        return [(user_id, track_id, t, "play")]
    if label == "disliked":
        return [(user_id, track_id, t, "skip" if rng.random() < 0.7 else "dislike")]
    events = [(user_id, track_id, t, "play")]
    if rng.random() < 0.05:  # a skip first, then came back and liked it: a resolved conflict
        events.append((user_id, track_id, t + 30, "skip"))
    r = rng.random()
    final = "like" if r < 0.4 else ("playlist_add" if r < 0.6 else "complete")
    events.append((user_id, track_id, t + 200 + int(rng.integers(0, 3600)), final))
    return events
