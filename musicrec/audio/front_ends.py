"""The audio branch's front ends: what turns a waveform into the frames its encoder reads.

A front end maps the first 30 s of a 22050 Hz waveform to a sequence of
feature frames. The feature component stores those frames per track, the
trainer crops context-length segments of them, and the serving graphs
compute them from the request's waveform, all through this one definition:

| name      | frame                                             | dim | frames in 30 s | 3 s context |
|-----------|---------------------------------------------------|-----|----------------|-------------|
| `log_mel` | one 23 ms log-mel frame (`musicrec.audio.logmel`) | 128 | 1292           | 130 frames  |
| `musicnn` | musicnn's MSD max_pool vector of one 3 s patch,   | 753 | 10             | 1 patch     |
|           | pretrained and frozen (`musicrec.audio.musicnn`)  |     |                |             |
| `musicnn_msd_mtt` | the MSD and the MTT model's max_pool  | 1506 | 10            | 1 patch     |
|           | vectors of the same patch, concatenated           |     |                |             |
| `musicnn_msd_mtt_max_mean` | as `musicnn_msd_mtt`, each model's | 3012 | 10    | 1 patch     |
|           | max_pool then mean_pool                           |     |                |             |

Centred log-mel frames put one frame on each end of an excerpt, so
consecutive segments share their boundary frame (30 s holds exactly ten 3 s
segments); musicnn's patches do not overlap, so its segments do not either.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, Sequence, Tuple

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf

from musicrec.audio import musicnn
from musicrec.audio.logmel import DEFAULT as LOG_MEL, log_mel_spectrogram


@dataclasses.dataclass(frozen=True)
class FrontEnd:
    """What is shared: contexts and segments from the frame grid. Each front end adds how
    frames come from a waveform (`frames`), the shortest audio for a context (`min_samples`)
    and the module holding its weights (`module`)."""

    name: str
    frame_dim: int
    max_frames: int  # frames of the first 30 s
    seconds_per_frame: float  # the hop between frames
    # Whether consecutive segments share their boundary frame (centred framing) or abut.
    shared_boundary: bool
    # Frames in stored features are prefixed with this in their shard names (`<prefix>-*`).
    shard_prefix: str

    def num_frames(self, seconds: float) -> int:
        """Frames of a context of `seconds`."""
        if self.shared_boundary:
            return 1 + int(math.floor(seconds / self.seconds_per_frame))
        frames = int(round(seconds / self.seconds_per_frame))
        if frames < 1 or not math.isclose(frames * self.seconds_per_frame, seconds, rel_tol=1e-6):
            raise ValueError(f"the {self.name} front end takes contexts of whole {self.seconds_per_frame:g} s frames, "
                             f"not {seconds:g} s")
        return frames

    def segment_stride(self, context_frames: int) -> int:
        return max(context_frames - 1, 1) if self.shared_boundary else context_frames

    def segment_offsets(self, length: int, context_frames: int) -> np.ndarray:
        """Starts of the back-to-back context-length segments within a track's first 30 s."""
        count = self.segment_counts(np.asarray(length), context_frames)
        return np.arange(int(count), dtype=np.int32) * self.segment_stride(context_frames)

    def segment_counts(self, frames, context_frames: int):
        """Back-to-back segments in the first 30 s of `frames` frames (numpy or a tensor): at least one."""
        maximum = tf.maximum if isinstance(frames, tf.Tensor) else np.maximum
        minimum = tf.minimum if isinstance(frames, tf.Tensor) else np.minimum
        usable = minimum(frames, self.max_frames)
        return maximum((usable - int(self.shared_boundary)) // self.segment_stride(context_frames), 1)

    def track_frames(self):
        """A traced graph: one mono 22050 Hz track [samples] -> its frames [frames, dim]; build it
        once per worker and call it per track."""

        def frames(waveform):
            batch, counts = self.frames(waveform[None], tf.shape(waveform)[:1])
            return batch[0, : counts[0]]

        return tf.function(frames, input_signature=[tf.TensorSpec([None], tf.float32)])

    def frames(self, waveform: tf.Tensor, num_samples: tf.Tensor):
        """[batch, samples] float32 at 22050 Hz (each row zero past its num_samples, cut to the
        first 30 s) -> (frames [batch, max frames in the batch, frame_dim], frames per row [batch])."""
        raise NotImplementedError

    def min_samples(self, context_frames: int) -> int:
        """The shortest 22050 Hz audio that gives `context_frames` frames (one segment)."""
        raise NotImplementedError

    def module(self):
        """The tf.Module holding the front end's weights, for a SavedModel to track; None if none."""
        return None


class LogMelFrontEnd(FrontEnd):
    def frames(self, waveform, num_samples):
        return log_mel_spectrogram(waveform, LOG_MEL), 1 + num_samples // LOG_MEL.hop_length

    def min_samples(self, context_frames: int) -> int:
        return (context_frames - 1) * LOG_MEL.hop_length  # centred frames: 1 + samples // hop


@dataclasses.dataclass(frozen=True)
class MusicnnFrontEnd(FrontEnd):
    models: Tuple[str, ...] = (musicnn.MODEL,)  # whose pooled vectors, concatenated model by model
    pools: Tuple[str, ...] = (musicnn.POOL,)  # each model's poolings of a patch (musicnn.POOLS), in this order

    def frames(self, waveform, num_samples):
        return self.module()(waveform, num_samples)

    def min_samples(self, context_frames: int) -> int:
        return musicnn.shortest_input(context_frames)  # a frame is a patch

    def module(self):
        return musicnn.shared_patch_features(self.models, self.pools)  # musicnn's frozen networks, one set per process

    def columns_in(self, wider: "MusicnnFrontEnd") -> np.ndarray:
        """Where this front end's frame columns sit in `wider`'s frames (model by model, pool by
        pool, as `MusicnnPatchFeatures` concatenates them); `wider` holds each of its models and pools."""
        blocks = [wider.models.index(model) * len(wider.pools) + wider.pools.index(pool)
                  for model in self.models for pool in self.pools]
        return np.concatenate([np.arange(b * musicnn.FEATURE_DIM, (b + 1) * musicnn.FEATURE_DIM) for b in blocks])


def _musicnn_front_end(name: str, models: Tuple[str, ...], pools: Tuple[str, ...] = (musicnn.POOL,)) -> MusicnnFrontEnd:
    # musicnn's patch is 187 frames of 256 samples at 16 kHz (2.992 s); 3 s contexts take one patch.
    return MusicnnFrontEnd(name, musicnn.FEATURE_DIM * len(models) * len(pools), musicnn.max_patches(), 3.0,
                           shared_boundary=False, shard_prefix=name, models=models, pools=pools)


LOG_MEL_FRONT_END = LogMelFrontEnd("log_mel", LOG_MEL.n_mels, LOG_MEL.max_frames, LOG_MEL.hop_length / LOG_MEL.sample_rate,
                                   shared_boundary=True, shard_prefix="log_mel")
MUSICNN_FRONT_END = _musicnn_front_end("musicnn", (musicnn.MODEL,))
MUSICNN_MSD_MTT_FRONT_END = _musicnn_front_end("musicnn_msd_mtt", musicnn.MODELS)
MUSICNN_MSD_MTT_MAX_MEAN_FRONT_END = _musicnn_front_end("musicnn_msd_mtt_max_mean", musicnn.MODELS, musicnn.POOLS)
FRONT_ENDS: Dict[str, FrontEnd] = {f.name: f for f in (LOG_MEL_FRONT_END, MUSICNN_FRONT_END, MUSICNN_MSD_MTT_FRONT_END,
                                                       MUSICNN_MSD_MTT_MAX_MEAN_FRONT_END)}


def track_frames_of(names: Sequence[str]) -> Callable[[tf.Tensor], Dict[str, np.ndarray]]:
    """One track's frames [frames, dim] by each named front end, as each one's `track_frames`
    gives them; the musicnn front ends among them share one run of musicnn's networks.

    A musicnn front end's frames are columns of those of one holding every model and pool in the
    set, so the set runs that one and slices it: a campaign comparing musicnn front ends would
    otherwise run the MSD network once per front end, for the same values."""
    ends = [front_end(name) for name in names]
    graphs = {f.name: f.track_frames() for f in ends if not isinstance(f, MusicnnFrontEnd)}
    musicnn_ends = [f for f in ends if isinstance(f, MusicnnFrontEnd)]
    if musicnn_ends:
        widest = _musicnn_front_end(
            "musicnn_shared", tuple(m for m in musicnn.MODELS if any(m in f.models for f in musicnn_ends)),
            tuple(p for p in musicnn.POOLS if any(p in f.pools for f in musicnn_ends)))
        widest_frames = widest.track_frames()
        columns = {f.name: f.columns_in(widest) for f in musicnn_ends}

    def frames(waveform) -> Dict[str, np.ndarray]:
        result = {name: graph(waveform).numpy() for name, graph in graphs.items()}
        if musicnn_ends:
            wide = widest_frames(waveform).numpy()
            result.update({name: np.ascontiguousarray(wide[:, cols]) for name, cols in columns.items()})
        return {name: result[name] for name in names}

    return frames


def front_end(name: str) -> FrontEnd:
    if name not in FRONT_ENDS:
        raise ValueError(f"unknown front end {name!r}; choose one of {sorted(FRONT_ENDS)}")
    return FRONT_ENDS[name]
