"""Cosine similarity (Eq. 2 of the paper): the one score between a user vector and an audio embedding.

The training losses, the exported pair scorer, the evaluation and the serving
graphs all call `cosine`, so a model is trained, evaluated and served on the
same score. A zero vector has cosine 0 with everything (the scorer's fallback
for unknown users and tracks).
"""

from __future__ import annotations

import tensorflow as tf


def unit_vectors(vectors) -> tf.Tensor:
    """Vectors scaled to length 1 along the last axis (a zero vector stays zero)."""
    return tf.math.l2_normalize(tf.cast(vectors, tf.float32), axis=-1)


def cosine(a, b, all_pairs: bool = False, b_is_unit: bool = False) -> tf.Tensor:
    """cos(a, b) over the last axis.

    a [B, d] with b [B, d] -> [B] (paired rows), or with b [B, n, d] -> [B, n]
    (n candidates per row); `all_pairs`: b [N, d] -> [B, N] (every row of a
    with every row of b, one matmul). `b_is_unit`: b holds `unit_vectors`
    already (a large table normalised once, when it is exported), so it is not
    normalised again on every call.
    """
    a = unit_vectors(a)
    b = b if b_is_unit else unit_vectors(b)
    if all_pairs:
        return tf.matmul(a, b, transpose_b=True)
    if b.shape.rank == 3:
        return tf.einsum("bd,bnd->bn", a, b)
    return tf.reduce_sum(a * b, axis=-1)
