"""Practitioner baselines: what an engineer builds in an afternoon instead of a learned audio embedding.

Every audio-branch evaluation reports these on the same split and the same
test pairs, pooled and per user, so every run on every dataset answers "is
the learned AE worth it?":

- `popularity`: how many training users liked the track. A new release has
  no training events, so under the `cold_tracks` protocol it does not apply
  (reported as such, never as a chance-level number).
- per-user logistic regression on a fixed track representation (one builder,
  `PerUserLogistic`, configured by the track features):
  - `musicnn`: MSD_musicnn's `max_pool` features of the audio (a pretrained
    audio model, the paper's genre baseline), averaged over the track's 3 s
    patches: read from the run's musicnn feature shards when the audio
    model's front end wrote them, else computed in process by the port
    (`musicrec.audio.musicnn`) and cached per file;
  - `metadata`: a one-hot of a categorical track column (`genre` by default),
    which needs no audio at all.
  Each user gets an L2 logistic regression on their training pairs, with C
  chosen by cross-validated AUC over that user's own pairs. Users with too
  few pairs of either label for a fold (and users absent from training, as
  under the `users` protocol) are scored by one model fitted on every
  training pair instead: the count is reported, not hidden.

`evaluate_baselines` runs the configured ones and reports each, one that
does not apply to the dataset or fails included (no AUC; the note says why).

scikit-learn does the fitting (a `StandardScaler` + `LogisticRegressionCV`
pipeline); nothing here is specific to TFX, so `reproduce-table1`, the
pipeline's `PractitionerBaselines` component and tests share it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import musicrec
from musicrec.audio import front_ends, musicnn
from musicrec.trainer.pair_metrics import PairAUC, pair_auc

# Inverse regularisation strengths tried per user (wide: from near-constant to nearly unregularised).
DEFAULT_CS: Tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
MAX_FOLDS = 3


@dataclasses.dataclass
class BaselineResult:
    name: str
    description: str
    auc: Optional[PairAUC]  # None where the baseline does not apply or failed; `note` says why
    note: str = ""
    scores: Optional[np.ndarray] = dataclasses.field(default=None, repr=False)  # per test pair, where it applies

    def as_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "note": self.note,
                **(self.auc.as_dict() if self.auc else {"pooled": None, "per_user": None})}


@dataclasses.dataclass(frozen=True)
class TrackFeatureTable:
    """A fixed representation of every track the baselines may score."""

    track_ids: Sequence[str]
    vectors: np.ndarray  # [tracks, dims]

    def rows(self, track_ids) -> np.ndarray:
        index = {t: i for i, t in enumerate(self.track_ids)}
        return np.array([index.get(t, -1) for t in track_ids], dtype=np.int64)


def one_hot(tracks: pd.DataFrame, column: str) -> TrackFeatureTable:
    """One-hot of a categorical track column; a blank value is its own category ("unknown")."""
    values = tracks[column].fillna("").astype(str).replace("", "(unknown)")
    matrix = pd.get_dummies(values).to_numpy(np.float32)
    return TrackFeatureTable(tracks["track_id"].tolist(), matrix)


def popularity_scores(train: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
    """Number of training users who liked each pair's track (0 for a track with no training pair)."""
    likes = train.loc[train["label"] == 1].groupby("track_id")["user_id"].nunique()
    return pairs["track_id"].map(likes).fillna(0).to_numpy(np.float64)


class PerUserLogistic:
    """An L2 logistic regression per user on fixed track features, C chosen per user by CV AUC.

    Why not one `LogisticRegressionCV` over (user, track) features: the point
    of this baseline is a personal taste model in a pretrained space, which is
    what a practitioner fits per user; a global model learns only which
    tracks are liked in general. The global model is the fallback.
    """

    def __init__(self, features: TrackFeatureTable, cs: Sequence[float] = DEFAULT_CS, seed: int = 0):
        self.features, self.cs, self.seed = features, tuple(cs), seed
        self.models: Dict[str, object] = {}
        self.fallback = None

    def fit(self, train: pd.DataFrame) -> "PerUserLogistic":
        train = self._with_features(train)
        x, y = self._x(train), train["label"].to_numpy()
        self.fallback = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)).fit(x, y)
        for user, rows in train.groupby("user_id").indices.items():
            folds = min(MAX_FOLDS, int(np.bincount(y[rows], minlength=2).min()))
            if folds < 2:
                continue  # too few pairs of one label to choose C: scored by the fallback
            cv = StratifiedKFold(folds, shuffle=True, random_state=self.seed)
            model = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=list(self.cs), cv=cv, scoring="roc_auc",
                                                                         max_iter=2000))
            self.models[user] = model.fit(x[rows], y[rows])
        return self

    def score(self, pairs: pd.DataFrame) -> np.ndarray:
        """P(liked) of each pair; pairs whose track has no features score 0.5."""
        rows = self.features.rows(pairs["track_id"])
        has_features = rows >= 0
        scores = np.full(len(pairs), 0.5)
        users = pairs["user_id"].to_numpy()
        x = self.features.vectors[np.where(has_features, rows, 0)]
        for user, index in pd.Series(np.arange(len(pairs))).groupby(users).indices.items():
            model = self.models.get(user, self.fallback)
            scores[index] = model.predict_proba(x[index])[:, 1]
        return np.where(has_features, scores, 0.5)

    def fallback_users(self, pairs: pd.DataFrame) -> int:
        """Users among `pairs` without a model of their own (scored by the global model)."""
        return len(set(pairs["user_id"]) - set(self.models))

    def _with_features(self, frame: pd.DataFrame) -> pd.DataFrame:
        return frame[self.features.rows(frame["track_id"]) >= 0].reset_index(drop=True)

    def _x(self, frame: pd.DataFrame) -> np.ndarray:
        return self.features.vectors[self.features.rows(frame["track_id"])]


def practitioner_baselines(train: pd.DataFrame, test: pd.DataFrame,
                           track_features: Dict[str, Tuple[str, TrackFeatureTable]],
                           popularity: bool = True) -> List[BaselineResult]:
    """Popularity, and a per-user logistic regression on each named track representation.

    `train` / `test`: (user_id, track_id, label) pairs of one split.
    `track_features`: name -> (description, features), e.g. {"musicnn": ("musicnn MSD max_pool + per-user LR", ...)}.
    """
    results = [_popularity(train, test)] if popularity else []
    return results + [per_user_lr_baseline(name, description, features, train, test)
                      for name, (description, features) in track_features.items()]


def per_user_lr_baseline(name: str, description: str, features: TrackFeatureTable,
                         train: pd.DataFrame, test: pd.DataFrame) -> BaselineResult:
    """`PerUserLogistic` on one track representation, fitted on `train` and scored on `test`."""
    model = PerUserLogistic(features).fit(train)
    scores, fallback = model.score(test), model.fallback_users(test)
    missing = int((features.rows(test["track_id"]) < 0).sum())
    note = f"{fallback} users scored by the global model (too few training pairs of a label)" if fallback else ""
    if missing:
        note = "; ".join(filter(None, [note, f"{missing} test pairs without features scored 0.5"]))
    result = BaselineResult(name, description, pair_auc(test, scores), note, scores)
    logging.info("%s baseline %s: test AUC %.3f pooled, %.3f per user%s", musicrec.LOG_TAG, name,
                 result.auc.pooled, result.auc.per_user, f" ({note})" if note else "")
    return result


def _popularity(train: pd.DataFrame, test: pd.DataFrame) -> BaselineResult:
    if not test["track_id"].isin(set(train["track_id"])).any():
        return BaselineResult("popularity", POPULARITY_DESCRIPTION, None,
                              "does not apply: no test track has training events (new releases)")
    scores = popularity_scores(train, test)
    return BaselineResult("popularity", POPULARITY_DESCRIPTION, pair_auc(test, scores), scores=scores)


def format_baselines(baselines: Sequence[dict]) -> List[str]:
    """Markdown table rows (| description | pooled AUC | per-user AUC | note |) of `BaselineResult.as_dict()`s."""
    return [f"| {b['description']} | " + " | ".join("n/a" if b[k] is None else f"{b[k]:.3f}" for k in ("pooled", "per_user"))
            + f" | {b['note']} |" for b in baselines]


BASELINES = ("popularity", "musicnn", "metadata")
POPULARITY_DESCRIPTION = "popularity (training likes of the track)"
MUSICNN_DESCRIPTION = "musicnn MSD max_pool + per-user LR"
# The front ends whose stored patch features hold the musicnn baseline's (MSD_musicnn max_pool).
MSD_PATCH_FRONT_ENDS = tuple(name for name, front in front_ends.FRONT_ENDS.items()
                             if isinstance(front, front_ends.MusicnnFrontEnd) and musicnn.MODEL in front.models
                             and musicnn.POOL in front.pools)


def check_baseline_names(baselines: Sequence[str]) -> None:
    """A misspelt baseline would otherwise vanish from every report without a word."""
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        raise ValueError(f"unknown practitioner baseline(s) {unknown}: choose from {list(BASELINES)} "
                         "(metadata one-hot encodes each of `metadata_columns`)")


class NotApplicable(ValueError):
    """A baseline that this dataset cannot have (e.g. no such metadata column); the message says why."""


def musicnn_features(audio_files, cache_root, patch_store=None) -> TrackFeatureTable:
    """MSD_musicnn max_pool features of every track: the mean of its stored patch features when
    the run's feature component wrote them (`patch_store`, the `musicnn` front end's features),
    else computed by the in-process port and cached per file under `cache_root`."""
    if patch_store is not None:
        return stored_patch_means(patch_store)
    from musicrec.genre.features import extract_cached
    from musicrec.genre.musicnn_runner import MusicnnPortFeatures

    # Audio is opened only inside the dataset's folders: tracks whose files lie outside score
    # 0.5, counted in the baseline's note.
    inside = [file for file in audio_files if file.inside()]
    extracted = extract_cached(pd.DataFrame(inside, columns=["track_id", "path"]), MusicnnPortFeatures(), cache_root)
    logging.info("%s %s", musicrec.LOG_TAG, extracted.format())
    if not extracted.track_ids:
        raise NotApplicable("no track's audio could be read")
    return TrackFeatureTable(extracted.track_ids, extracted.vectors)


def stored_patch_means(patch_store) -> TrackFeatureTable:
    """Each stored track's mean MSD_musicnn patch feature (the store's MSD columns where its front
    end concatenates several models): a one-patch context averaged over the track's patches by
    the audio branch's own track-embedding loop (in memory or block by block)."""
    import tf_keras as keras

    from musicrec.trainer.audio_evaluation import track_embeddings

    if patch_store.front_end not in MSD_PATCH_FRONT_ENDS:
        raise ValueError(f"the musicnn baseline reads {MSD_PATCH_FRONT_ENDS} patch features, not {patch_store.front_end!r} frames")
    front = front_ends.front_end(patch_store.front_end)
    one_patch = keras.Sequential([keras.layers.InputLayer(input_shape=(None, front.frame_dim)),
                                  keras.layers.GlobalAveragePooling1D()])
    means = track_embeddings(one_patch, patch_store, context_frames=1)
    # Columns go model by model, each model's pools in order.
    start = (front.models.index(musicnn.MODEL) * len(front.pools) + front.pools.index(musicnn.POOL)) * musicnn.FEATURE_DIM
    return TrackFeatureTable(list(patch_store.track_ids), means[:, start:start + musicnn.FEATURE_DIM])


def metadata_features(tracks: pd.DataFrame, column: str) -> TrackFeatureTable:
    """One-hot of a categorical track column that tells tracks apart (two or more values)."""
    if column not in tracks.columns:
        raise NotApplicable(f"the tracks table has no {column!r} column")
    if tracks[column].fillna("").astype(str).str.strip().replace("", np.nan).nunique() < 2:
        raise NotApplicable(f"the {column!r} column has fewer than two distinct values")
    return one_hot(tracks, column)


def _representations(tracks: pd.DataFrame, audio_files, cache_root, baselines: Sequence[str],
                     metadata_columns: Sequence[str], musicnn_store=None) -> List[Tuple[str, str, Callable[[], TrackFeatureTable]]]:
    """(name, description, build) of each configured per-user LR baseline; `build` may raise NotApplicable."""
    check_baseline_names(baselines)
    found = []
    if "musicnn" in baselines:
        found.append(("musicnn", MUSICNN_DESCRIPTION, lambda: musicnn_features(audio_files, cache_root, musicnn_store)))
    for column in metadata_columns if "metadata" in baselines else ():
        found.append((f"metadata_{column}", f"{column} one-hot + per-user LR (no audio)",
                      functools.partial(metadata_features, tracks, column)))
    return found


def evaluate_baselines(train: pd.DataFrame, test: pd.DataFrame, tracks: pd.DataFrame, audio_files, cache_root,
                       baselines: Sequence[str] = BASELINES, metadata_columns: Sequence[str] = ("genre",),
                       musicnn_store=None) -> List[BaselineResult]:
    """Every configured baseline on one split's pairs, one result each, in the order configured.
    `musicnn_store`: the musicnn front end's patch features, where the run has them (read, not recomputed).

    A baseline that does not apply to this dataset, or that fails (e.g. a
    broken musicnn install), is a result without an AUC whose note says why:
    a report never leaves one out silently, and one failure does not stop the others.
    """
    check_baseline_names(baselines)
    results = [_popularity(train, test)] if "popularity" in baselines else []
    for name, description, build in _representations(tracks, audio_files, cache_root, baselines, metadata_columns,
                                                     musicnn_store):
        try:
            results.append(per_user_lr_baseline(name, description, build(), train, test))
        except NotApplicable as reason:
            results.append(BaselineResult(name, description, None, f"does not apply: {reason}"))
        except Exception as error:  # noqa: BLE001  (reported in the table; the traceback goes to the log)
            logging.exception("%s %s baseline failed", musicrec.LOG_TAG, name)
            first_line = (str(error).strip().splitlines() or [""])[0]
            results.append(BaselineResult(name, description, None, f"failed: {type(error).__name__}: {first_line}"))
    return results
