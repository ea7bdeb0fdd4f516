"""Optional approximate nearest neighbours over the UEs with ScaNN (scann 1.3), served in-process.

Stock TF Serving has no ScaNN ops, so the exported cold_start_recommender is
exact brute force; for user bases in the millions this index answers the same
question ("which users are closest to this track's AE?") in-process, at a
recall@k you measure against brute force (`recall_at_k`,
`benchmarks/serving.py`). It uses ScaNN's pybind searcher (numpy in, numpy
out), so no TensorFlow custom op is involved.

Vectors are L2-normalised, so dot product = cosine, as in the exported model.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Tuple

import numpy as np
from etils import epath

from musicrec import storage
from musicrec.serving.graphs import normalised

USER_IDS_FILE = "user_ids.npy"


@dataclasses.dataclass(frozen=True)
class ScannConfig:
    """Tree (k-means partitions) + anisotropic hashing + exact re-scoring of the best candidates.
    None: chosen from the number of users: no tree under `tree_from` users (hashing every user
    is already fast), else about sqrt(n) leaves, a 25th of them searched."""

    num_leaves: Optional[int] = None
    leaves_to_search: Optional[int] = None
    reorder: Optional[int] = None  # candidates re-scored exactly; None: 10 * k (recall@100 0.90 at 4 * k, 0.99 at 10 * k)
    training_sample: int = 250_000
    dims_per_block: int = 2
    anisotropic_threshold: float = 0.2
    tree_from: int = 100_000

    def leaves(self, n: int) -> Tuple[int, int]:
        leaves = self.num_leaves or (1 if n < self.tree_from else int(math.sqrt(n)))
        return leaves, self.leaves_to_search or max(1, min(leaves, int(math.ceil(leaves / 25))))


class ScannUserIndex:
    def __init__(self, searcher, user_ids: np.ndarray):
        self.searcher = searcher
        self.user_ids = np.asarray(user_ids).astype(str)

    @classmethod
    def build(cls, user_ids, vectors: np.ndarray, k: int = 100, config: ScannConfig = ScannConfig()) -> "ScannUserIndex":
        import scann  # imported here: only this optional path needs it

        table = normalised(vectors)
        builder = scann.scann_ops_pybind.builder(table, k, "dot_product")
        leaves, to_search = config.leaves(len(table))
        if leaves > 1:
            builder = builder.tree(num_leaves=leaves, num_leaves_to_search=to_search,
                                   training_sample_size=min(config.training_sample, len(table)))
        searcher = builder.score_ah(config.dims_per_block, anisotropic_quantization_threshold=config.anisotropic_threshold) \
            .reorder(max(config.reorder or 10 * k, k)).build()
        return cls(searcher, user_ids)

    def search(self, audio_embeddings: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """[batch, d] AEs -> (row indices, cosines) [batch, min(k, users)], best first: as the
        exported recommender, a k above the number of users returns every user."""
        if k < 1:
            raise ValueError(f"k must be at least 1; got {k}")
        k = min(k, len(self.user_ids))
        queries = normalised(np.atleast_2d(audio_embeddings))
        if len(queries) == 1:
            rows, scores = self.searcher.search(queries[0], final_num_neighbors=k)
            return rows[None].astype(np.int64), scores[None]
        rows, scores = self.searcher.search_batched(queries, final_num_neighbors=k)
        return rows.astype(np.int64), scores

    def recommend(self, audio_embedding: np.ndarray, k: int):
        """[(user_id, cosine)] for one track, best first."""
        rows, scores = self.search(audio_embedding, k)
        return list(zip(self.user_ids[rows[0]].tolist(), scores[0].astype(float).tolist()))

    def save(self, directory) -> epath.Path:
        path = storage.path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self.searcher.serialize(str(path))  # ScaNN writes through tf.io.gfile
        with (path / USER_IDS_FILE).open("wb") as f:
            np.save(f, self.user_ids)
        return path

    @classmethod
    def load(cls, directory) -> "ScannUserIndex":
        import scann

        path = storage.path(directory)
        if not (path / USER_IDS_FILE).exists():
            raise FileNotFoundError(f"{path} holds no ScaNN user index (no {USER_IDS_FILE}); build one with build-scann-index")
        return cls(scann.scann_ops_pybind.load_searcher(str(path)), np.load(storage.local_or_bytes(path / USER_IDS_FILE)))


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of the exact top-k rows that the approximate search found, over queries ([batch, k] each)."""
    found, exact = np.atleast_2d(found), np.atleast_2d(exact)
    return float(np.mean([len(np.intersect1d(f, e)) / len(e) for f, e in zip(found, exact)]))


def recommender_table(models_dir) -> Tuple[np.ndarray, np.ndarray]:
    """(user ids, normalised UEs) baked into the latest pushed cold_start_recommender, read from its checkpoint."""
    from musicrec.serving.export import latest_version
    from musicrec.serving.graphs import RECOMMENDER

    return version_table(latest_version(storage.path(models_dir) / RECOMMENDER))


def version_table(version_dir) -> Tuple[np.ndarray, np.ndarray]:
    """(user ids, normalised UEs) of one cold_start_recommender version folder, from its checkpoint."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(storage.path(version_dir) / "variables" / "variables"))
    value = lambda name: reader.get_tensor(f"index/{name}/.ATTRIBUTES/VARIABLE_VALUE")  # noqa: E731
    return value("user_ids").astype(str), value("user_vectors")


def clustered_vectors(n: int, dim: int = 40, clusters: int = 1000, spread: float = 0.35, seed: int = 0) -> np.ndarray:
    """Synthetic UEs for measuring recall and speed: unit vectors around `clusters` random centres
    (real UEs cluster by taste; uniform random vectors are the worst case for any ANN index)."""
    rng = np.random.default_rng(seed)
    centres = normalised(rng.standard_normal((clusters, dim), dtype=np.float32))
    vectors = centres[rng.integers(0, clusters, n)]
    vectors += rng.standard_normal((n, dim), dtype=np.float32) * (spread / np.sqrt(dim))
    return normalised(vectors)
