"""The recommender's exact top-k against numpy (ties included), and the optional ScaNN index's recall."""

import numpy as np
import pytest
import tensorflow as tf

from musicrec.serving.graphs import UserIndex, exact_top_k, normalised
from musicrec.serving.scann_index import ScannUserIndex, clustered_vectors, recall_at_k


@pytest.mark.parametrize("n, k", [(5, 5), (127, 3), (128, 128), (1000, 1), (3001, 100), (20000, 1000)])
def test_blocked_top_k_is_numpy_exact_with_ties(n, k):
    rng = np.random.default_rng(n)
    scores = rng.integers(-50, 50, size=(3, n)).astype(np.float32) / 10  # many ties
    values, indices = exact_top_k(tf.constant(scores), tf.constant(k))
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # ties: lower index first, as tf.math.top_k
    np.testing.assert_array_equal(indices.numpy(), expected)
    np.testing.assert_array_equal(values.numpy(), np.take_along_axis(scores, expected, axis=1))


def test_user_index_ranks_by_cosine_and_refuses_bad_k():
    vectors = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32) * np.arange(1, 301)[:, None]
    index = UserIndex([f"u{i}" for i in range(300)], vectors, max_k=50)
    query = np.random.default_rng(1).normal(size=(1, 8)).astype(np.float32)
    out = index.top_k(tf.constant(query), tf.constant([10]))
    cosines = normalised(vectors) @ normalised(query)[0]  # not the dot product: long UEs do not win
    assert [u.decode() for u in out["user_ids"].numpy()[0]] == [f"u{i}" for i in np.argsort(-cosines, kind="stable")[:10]]
    np.testing.assert_allclose(out["scores"].numpy()[0], np.sort(cosines)[::-1][:10], atol=1e-5)
    for k in (0, 51):
        with pytest.raises(tf.errors.InvalidArgumentError, match="k must be between 1 and 50"):
            index.top_k(tf.constant(query), tf.constant([k]))
    with pytest.raises(ValueError, match="one UE per user id"):
        UserIndex(["a"], vectors, 5)


def test_k_above_the_number_of_users_returns_every_user_and_says_how_many():
    vectors = np.random.default_rng(2).normal(size=(30, 8)).astype(np.float32)
    index = UserIndex([f"u{i}" for i in range(30)], vectors, max_k=1000)
    queries = np.random.default_rng(3).normal(size=(2, 8)).astype(np.float32)
    out = index.top_k(tf.constant(queries), tf.constant([100, 4]))
    assert out["count"].numpy().tolist() == [30, 4] and out["user_ids"].shape == (2, 30)
    ranked = np.argsort(-(normalised(vectors) @ normalised(queries).T).T, axis=1, kind="stable")
    assert [u.decode() for u in out["user_ids"].numpy()[0]] == [f"u{i}" for i in ranked[0]]
    assert [u.decode() for u in out["user_ids"].numpy()[1]] == [f"u{i}" for i in ranked[1, :4]] + [""] * 26
    with pytest.raises(tf.errors.InvalidArgumentError, match="k must be between 1 and 1000"):
        index.top_k(tf.constant(queries), tf.constant([1001, 4]))  # max_k still bounds the response


def test_user_index_refuses_nan_and_inf_embeddings():
    index = UserIndex(["a", "b"], np.eye(2, dtype=np.float32), max_k=2)
    for bad in (np.nan, np.inf):
        with pytest.raises(tf.errors.InvalidArgumentError, match="audio_embedding must hold finite numbers"):
            index.top_k(tf.constant([[1.0, 0.0], [bad, 0.0]]), tf.constant([1, 1]))


def test_scann_recall_at_100_on_clustered_users(tmp_path):
    users = clustered_vectors(30_000, clusters=100, seed=3)
    queries = clustered_vectors(50, clusters=100, seed=3)[:50] + 0.05  # near the same clusters
    exact = np.argsort(-(users @ normalised(queries).T).T, axis=1, kind="stable")[:, :100]
    index = ScannUserIndex.build([f"u{i}" for i in range(len(users))], users, k=100)
    found, scores = index.search(queries, 100)
    assert recall_at_k(found, exact) >= 0.95
    assert recall_at_k(found[:, ::-1][:, :50], exact) < 0.6  # the measure can fail: half the list, half the recall
    loaded = ScannUserIndex.load(index.save(tmp_path / "scann"))
    assert loaded.recommend(queries[0], 5) == index.recommend(queries[0], 5)
    few = ScannUserIndex.build([f"v{i}" for i in range(40)], users[:40], k=10)
    assert [u for u, _ in few.recommend(queries[0], 100)] == [f"v{i}" for i in exact_top(users[:40], queries[0])]
    with pytest.raises(ValueError, match="k must be at least 1"):
        index.search(queries[:1], 0)


def exact_top(users: np.ndarray, query: np.ndarray) -> np.ndarray:
    return np.argsort(-(users @ normalised(query[None])[0]), kind="stable")
