"""The user branch's loss (as `tfrs.tasks`): in-batch softmax with log-Q correction,
accidental-hit removal and optional hard negatives, on top of `tfrs.tasks.Retrieval`."""

from __future__ import annotations

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf

from musicrec.data.user_examples import PAD


def retrieval_loss(task, queries, positives, positive_ids, positive_probability=None, negatives=None, negative_ids=None):
    """Softmax cross-entropy of each query's positive against the batch's other
    positives and (optionally) every example's hard negative.

    Logits are dot products; positives are log-Q corrected by their sampling
    probability when given (hard negatives were not drawn by popularity, so
    they get p = 1, no correction); accidental hits (a candidate with the
    query's positive id) and absent hard negatives (id '') are masked out.
    """
    candidates, candidate_ids, probability, score_mask = positives, positive_ids, positive_probability, None
    if negatives is not None:
        candidates = tf.concat([positives, negatives], axis=0)
        candidate_ids = tf.concat([positive_ids, negative_ids], axis=0)
        if probability is not None:
            probability = tf.concat([probability, tf.ones_like(probability)], axis=0)
        present = tf.concat([tf.ones_like(negative_ids, tf.bool), tf.not_equal(negative_ids, PAD)], axis=0)
        score_mask = tf.tile(present[None, :], [tf.shape(queries)[0], 1])
    return task(
        queries,
        candidates,
        candidate_sampling_probability=probability,
        candidate_ids=candidate_ids,
        compute_metrics=False,
        score_mask=score_mask,
    )
