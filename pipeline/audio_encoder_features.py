"""The AE of a trained audio encoder as a genre feature set (`genre-eval --features ae`).

It finds the encoder a pipeline run trained (from MLMD) or an exported one, and
embeds tracks with it: this reaches into the trainer, the serving export and
the run records, so it lives here, above the base package's generic feature
extraction (`musicrec.genre.features`), which it plugs into as an Extractor.
"""

from __future__ import annotations

import hashlib
import pathlib
from typing import Iterator, List, Tuple

import numpy as np

from musicrec.audio.decode import AudioError
from musicrec.genre.features import Result
from musicrec.names import AUDIO_ENCODER_DIR, EMBED_LOG_MEL_SIGNATURE


def find_audio_encoder(model_dir) -> pathlib.Path:
    """The audio encoder SavedModel in `model_dir`: a pipeline run folder (the AudioTrainer model
    of its newest run that trained or reused one, from MLMD), the dir itself, its `audio_encoder/`,
    or the highest numbered version below either (TF Serving's `<base>/<version>/` layout)."""
    from musicrec.serving.export import latest_version

    model_dir = pathlib.Path(model_dir)
    candidates = [model_dir, model_dir / AUDIO_ENCODER_DIR]
    if (model_dir / "metadata.sqlite").is_file():
        from musicrec.pipeline.runs import runs_newest_first

        run = next((r for r in runs_newest_first(model_dir) if r.succeeded("AudioTrainer")), None)
        if run is not None:
            candidates.insert(0, run.output_path("AudioTrainer", "model") / "Format-Serving")
    for base in candidates:
        if (base / "saved_model.pb").is_file():
            return base
        try:
            return latest_version(base)
        except FileNotFoundError:
            continue
    raise FileNotFoundError(
        f"no audio encoder SavedModel in {model_dir}: expected a pipeline run folder, saved_model.pb there, "
        f"in {AUDIO_ENCODER_DIR}/, or in a numbered version folder (the audio branch's export)"
    )


def _model_fingerprint(saved_model: pathlib.Path) -> str:
    digest = hashlib.sha1()
    for file in sorted(p for p in saved_model.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(saved_model)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


class _SignatureEncoder:
    """Lets `track_embeddings` (written for a Keras encoder) call the SavedModel signature."""

    def __init__(self, signature):
        self._signature = signature

    def __call__(self, log_mel, training=False):
        return self._signature(log_mel=log_mel)["audio_embedding"]


class AudioEncoderFeatures:
    """Track-level AE from an exported audio encoder; decodes and computes the encoder's front-end
    frames (log-mels, or musicnn's patch features) in chunks of tracks."""

    def __init__(self, model_dir, context_seconds: float = 3.0, chunk: int = 32):
        from musicrec.audio.front_ends import front_end
        from musicrec.trainer.audio_export import audio_model_front_end

        self.saved_model = find_audio_encoder(model_dir)
        self.front_end = front_end(audio_model_front_end(self.saved_model))
        self.context_seconds = context_seconds
        self.context_frames = self.front_end.num_frames(context_seconds)  # the audio branch's own conversion
        self.chunk = chunk
        self.name = "AE"
        self.cache_id = f"ae-{_model_fingerprint(self.saved_model)}-{context_seconds:g}s"
        self._embed = None

    def _load(self):
        import tensorflow as tf

        loaded = tf.saved_model.load(str(self.saved_model))
        if EMBED_LOG_MEL_SIGNATURE not in loaded.signatures:
            raise ValueError(f"{self.saved_model} has no {EMBED_LOG_MEL_SIGNATURE!r} signature (it has {sorted(loaded.signatures)}); "
                             "pass the audio branch's exported audio_encoder")
        self._loaded = loaded  # keeps the signature's variables alive
        self._embed = _SignatureEncoder(loaded.signatures[EMBED_LOG_MEL_SIGNATURE])
        self._frames = self.front_end.track_frames()

    def extract(self, tracks: List[Tuple[str, str]]) -> Iterator[Tuple[str, Result]]:
        if self._embed is None:
            self._load()
        for start in range(0, len(tracks), self.chunk):
            yield from self._extract_chunk(tracks[start : start + self.chunk])

    def _extract_chunk(self, tracks: List[Tuple[str, str]]) -> Iterator[Tuple[str, Result]]:
        from musicrec.audio.decode import load_audio
        from musicrec.trainer.audio_input import LogMelStore
        from musicrec.trainer.audio_evaluation import track_embeddings

        ids, frames = [], []
        for track_id, path in tracks:
            try:
                waveform = load_audio(path, max_seconds=30.0, min_seconds=self.context_seconds)
            except AudioError as error:
                yield track_id, error
                continue
            ids.append(track_id)
            frames.append(self._frames(waveform).numpy().astype(np.float16))  # float16 as the feature store
        if ids:
            store = LogMelStore.from_arrays(ids, frames, self.front_end.name)
            vectors = track_embeddings(self._embed, store, self.context_frames)
            yield from zip(ids, vectors)
