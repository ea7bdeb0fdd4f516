"""Benchmark: the cold-start question (top-100 users for one new track) and the audio embedder's latency.

One run, one thread, side by side for N = 10k, 100k and 2M user embeddings
(40-d, clustered synthetic UEs, `musicrec.serving.scann_index.clustered_vectors`):

  brute force (TF)     the exported recommender's own graph code (`musicrec.serving.graphs.UserIndex`:
                       matmul + blocked exact top-k), one query at a time
  brute force (numpy)  matvec + argpartition, the textbook reference
  ScaNN                tree + anisotropic hashing + re-ranking, in-process, with recall@100
                       against brute force
  bandwidth reference  a numpy sum over the same N x 40 float32 array: the memory-bandwidth
                       ceiling of any exact scan, in "queries"/s

Targets (serving issue): brute force >= 80% of the bandwidth reference at 2M,
ScaNN >= 2000 queries/s at recall@100 >= 0.95. Then the audio_embedder
signature's latency (p50, p99) for 3 s and 30 s of audio, on a freshly
exported audio embedder (an untrained encoder: latency does not depend on
the weights) or on `--models DIR`'s pushed one.

    python benchmarks/serving.py --out reports/benchmarks/serving.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile
import time
import types

# Run as a script, this file's folder comes first on sys.path and its name would shadow the
# `serving` package: look the packages up from the repository root instead.
_HERE = pathlib.Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if pathlib.Path(p or ".").resolve() != _HERE]

# One thread everywhere, so the figures are per core; set before numpy/TF load.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import musicrec  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

from musicrec.audio.logmel import DEFAULT  # noqa: E402
from musicrec.serving import graphs, warmup  # noqa: E402
from musicrec.serving.scann_index import ScannUserIndex, clustered_vectors, recall_at_k  # noqa: E402

K = 100
SIZES = (10_000, 100_000, 2_000_000)
BRUTE_FORCE_SHARE = 0.8
SCANN_QPS, SCANN_RECALL = 2000.0, 0.95
ROUNDS = 3


def rate(fn, queries: np.ndarray, min_seconds: float = 2.0) -> float:
    """Queries per second of fn(query), cycling through the queries for at least min_seconds (and 20 calls)."""
    fn(queries[0])
    done, started = 0, time.perf_counter()
    while True:
        fn(queries[done % len(queries)])
        done += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds and done >= min(len(queries), 20):
            return done / elapsed


def numpy_top_k(table: np.ndarray, query: np.ndarray) -> np.ndarray:
    scores = table @ query
    best = np.argpartition(-scores, K)[:K]
    return best[np.argsort(-scores[best], kind="stable")]


def bench_size(n: int, queries_count: int, seed: int) -> dict:
    vectors = clustered_vectors(n + queries_count, clusters=min(1000, n // 10), seed=seed)
    users, queries = vectors[:n], vectors[n:]
    ids = np.char.add("u", np.arange(n).astype(str))
    index = graphs.UserIndex(ids, users, max_k=K)
    brute = tf.function(lambda q: index.top_k(q, tf.constant([K]))["scores"])
    scores = tf.function(lambda q: graphs.exact_top_k(tf.matmul(q, index.user_vectors, transpose_b=True), K)[1])
    exact = np.concatenate([scores(tf.constant(queries[i : i + 50])).numpy() for i in range(0, len(queries), 50)])
    started = time.perf_counter()
    scann = ScannUserIndex.build(ids, users, k=K)
    row = {"users": n, "scann_build_seconds": time.perf_counter() - started}
    contenders = {
        "bandwidth_reference_qps": lambda q: users.sum(),
        "brute_force_tf_qps": lambda q: brute(tf.constant(q[None])),
        "brute_force_numpy_qps": lambda q: numpy_top_k(users, q),
        "scann_qps": lambda q: scann.searcher.search(q, final_num_neighbors=K),
    }
    # Rounds interleave the contenders and the best round counts, so a busy moment on a
    # shared machine does not land on one contender only.
    for _ in range(ROUNDS):
        for key, fn in contenders.items():
            row[key] = max(row.get(key, 0.0), rate(fn, queries, min_seconds=1.0))
    found = np.stack([scann.searcher.search(q, final_num_neighbors=K)[0] for q in queries])
    row["scann_recall_at_100"] = recall_at_k(found, exact)
    row["brute_force_share_of_bandwidth"] = row["brute_force_tf_qps"] / row["bandwidth_reference_qps"]
    return row


def audio_embedder(models_dir):
    """The pushed audio_embedder's signature, or one exported here from an untrained encoder."""
    if models_dir:
        from musicrec.serving.export import latest_version

        return tf.saved_model.load(str(latest_version(pathlib.Path(models_dir) / graphs.AUDIO_EMBEDDER)))
    from musicrec.serving.export import AudioEmbedder, save_model
    from musicrec.trainer.audio_branch import AudioBranchConfig
    from musicrec.trainer.audio_export import export_untrained_encoder

    config = AudioBranchConfig()
    out = pathlib.Path(tempfile.mkdtemp(prefix="serving_bench_"))
    encoder = tf.saved_model.load(str(export_untrained_encoder(out, config)))
    save_model(AudioEmbedder(encoder, config.context_frames), out / graphs.AUDIO_EMBEDDER)
    return tf.saved_model.load(str(out / graphs.AUDIO_EMBEDDER))


def latency(models_dir, runs: int) -> dict:
    embed = audio_embedder(models_dir).signatures[graphs.EMBED_WAVEFORM]
    rng = np.random.default_rng(0)
    result = {}
    for seconds in (3, 30):
        audio = (0.1 * rng.standard_normal(seconds * DEFAULT.sample_rate)).astype(np.float32)
        feed = {k: tf.constant(v) for k, v in warmup.waveform_inputs([audio]).items()}
        embed(**feed)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            embed(**feed)["audio_embedding"].numpy()
            times.append(1000 * (time.perf_counter() - started))
        result[f"{seconds}s"] = {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99)), "runs": runs}
    return result


def report(rows, audio) -> str:
    lines = [f"top-{K} users for one new track, one thread (queries/s)",
             f"{'users':>10} {'bandwidth ref':>13} {'brute TF':>9} {'(share)':>7} {'brute numpy':>11} "
             f"{'ScaNN':>8} {'recall@100':>10} {'ScaNN build s':>13}"]
    for r in rows:
        lines.append(f"{r['users']:>10,} {r['bandwidth_reference_qps']:>13.0f} {r['brute_force_tf_qps']:>9.0f} "
                     f"{r['brute_force_share_of_bandwidth']:>7.0%} {r['brute_force_numpy_qps']:>11.0f} "
                     f"{r['scann_qps']:>8.0f} {r['scann_recall_at_100']:>10.3f} {r['scann_build_seconds']:>13.1f}")
    lines.append("audio_embedder latency (embed_waveform, one thread): " + ", ".join(
        f"{s}: p50 {v['p50_ms']:.0f} ms, p99 {v['p99_ms']:.0f} ms" for s, v in audio.items()))
    return "\n".join(lines)


def targets(rows) -> dict:
    largest = max(rows, key=lambda r: r["users"])
    return {
        f"brute force >= {BRUTE_FORCE_SHARE:.0%} of the bandwidth reference at {largest['users']:,}":
            largest["brute_force_share_of_bandwidth"] >= BRUTE_FORCE_SHARE,
        f"ScaNN >= {SCANN_QPS:.0f} queries/s at recall@100 >= {SCANN_RECALL} at every size":
            all(r["scann_qps"] >= SCANN_QPS and r["scann_recall_at_100"] >= SCANN_RECALL for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="reports/benchmarks/serving.json")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--latency-runs", type=int, default=30)
    parser.add_argument("--models", help="time this pushed audio_embedder instead of a fresh export")
    args = parser.parse_args()
    rows = [bench_size(n, args.queries, seed=i) for i, n in enumerate(args.sizes)]
    audio = latency(args.models, args.latency_runs)
    met = targets(rows)
    print(report(rows, audio))
    for target, ok in met.items():
        print(f"  {'MET    ' if ok else 'NOT MET'}  {target}")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                               "k": K, "sizes": rows, "audio_embedder_latency": audio, "targets_met": met}, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
