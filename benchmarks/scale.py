"""Benchmark: how each stage grows with the data, and what the paper's size would take.

Synthetic inputs, no audio rendered. Each (stage, size) runs in its own
process, so its peak RSS (that process and any worker it starts) is its own:

  ingestion  the Beam ingestion job (components/listening_data/ingest.py) on a
             plain-layout dataset of N interactions (users = N / 84, tracks =
             N / 145: the paper's ratios), every track with usable audio.
             Runner: DirectRunner in_memory (this machine's); on Dataflow the
             same job streams, here the runner holds each stage's output.
  audio      log-mel shards of N tracks (30 s, float16, 64 shards) read
             through the streaming input (trainer/log_mel_shards.py) with a
             fixed memory budget (1 GB; 16 MB with --quick): the shard index
             scan, a fixed number of Metric-1vs4 training steps fed block by
             block, and every track's AE, block by block.
  retrieval  the exported recommender's user index (serving/graphs.UserIndex:
             cosine + blocked exact top-k) over N users: the top-100 users of
             new tracks, in batches.

For each stage the growth table gives, from one size to the next, the data
ratio beside the time and peak-memory ratios: time should grow about like the
data, memory stay flat (bounded by the configuration) where the stage streams.
From the largest size's rates it projects the paper's size (160M interactions,
1.1M tracks, 1.9M users) on N workers, assuming linear scaling across workers,
and writes the table (`--doc`).

    python benchmarks/scale.py --out reports/benchmarks/scale.json --doc docs/scale.md
    python benchmarks/scale.py --quick          # small sizes: checks the script, not the growth
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile
import time

SIZES = {"ingestion": (1_000_000, 3_000_000, 10_000_000), "audio": (5_000, 20_000, 50_000),
         "retrieval": (100_000, 1_000_000, 2_000_000)}
QUICK = {"ingestion": (20_000, 60_000), "audio": (200, 600), "retrieval": (10_000, 30_000)}
UNITS = {"ingestion": "interactions", "audio": "tracks", "retrieval": "users"}
PAPER = {"interactions": 160_000_000, "tracks": 1_100_000, "users": 1_900_000}
USERS_PER_INTERACTION, TRACKS_PER_INTERACTION = 1 / 84, 1 / 145  # the paper: 1.9M users, 1.1M tracks, 160M events
AUDIO_MEMORY_MB = {"full": 1024, "quick": 16}  # the streaming input's budget in the audio stage
AUDIO_SHARDS = 64
TRAIN_STEPS = 150
NEW_TRACKS, TOP_USERS, QUERY_BATCH = 2000, 100, 100
WORKERS = (10, 50, 200)  # the projection's worker / replica counts


def peak_rss_mb() -> float:
    """The largest resident set of this process or any child it waited for (Beam workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024  # Linux reports KiB


# --- stages (each runs in a child process) ---------------------------------------------------

def ingestion_stage(size: int, work: pathlib.Path, memory_mb: float) -> dict:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    users, tracks = max(int(size * USERS_PER_INTERACTION), 10), max(int(size * TRACKS_PER_INTERACTION), 10)
    data = work / "data"
    data.mkdir()
    pd.DataFrame({"user_id": [f"u{i:07d}" for i in range(users)], "age": rng.integers(16, 70, users),
                  "gender": rng.choice(["female", "male"], users), "country": rng.choice(["US", "GB", "JP", "BR"], users)}
                 ).to_csv(data / "users.csv", index=False)
    track_ids = np.array([f"t{i:07d}" for i in range(tracks)])
    pd.DataFrame({"track_id": track_ids, "artist_id": [f"ar{i // 12:06d}" for i in range(tracks)],
                  "album_id": [f"al{i // 6:07d}" for i in range(tracks)], "audio_path": [f"audio/{t}.ogg" for t in track_ids],
                  "genre": rng.choice([f"g{i}" for i in range(12)], tracks)}).to_csv(data / "tracks.csv", index=False)
    chunk = 1_000_000
    for start in range(0, size, chunk):  # written in chunks: the generator stays small too
        n = min(chunk, size - start)
        frame = pd.DataFrame({
            "user_id": np.char.add("u", np.char.zfill(rng.integers(0, users, n).astype(str), 7)),
            "track_id": track_ids[rng.integers(0, tracks, n)],
            "timestamp": 1_700_000_000 + np.arange(start, start + n) * 2,
            "event": rng.choice(["play", "like", "complete", "skip", "dislike"], n, p=[0.4, 0.15, 0.15, 0.25, 0.05]),
        })
        frame.to_csv(data / "interactions.csv", index=False, header=start == 0, mode="a")
    (work / "index.jsonl").write_text("".join(json.dumps({"track_id": t, "frames": 1292}) + "\n" for t in track_ids))

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from musicrec.components.listening_data import ingest
    from musicrec.components.listening_data.tables import PlainTables

    uris = {artifact: str(work / "out" / artifact) for artifact in ingest.ARTIFACT_SPLITS}
    started = time.perf_counter()
    report = ingest.run_ingestion(beam.Pipeline(options=PipelineOptions(list(ingest.DIRECT_RUNNER))), PlainTables(data),
                                  ingest.AudioIndex(str(work / "index.jsonl"), 130), ingest.IngestionConfig(), uris)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rate": size / seconds, "rate_unit": "interactions/s",
            "details": {"users": users, "tracks": tracks, "interactions_loaded": report.counts.get("interactions")}}


def audio_stage(size: int, work: pathlib.Path, memory_mb: float) -> dict:
    import numpy as np
    import pandas as pd
    import tensorflow as tf

    from musicrec.audio.records import encode_example
    from musicrec.trainer.audio_branch import AudioBranchConfig, SiameseAudioModel, build_optimizer
    from musicrec.trainer.audio_evaluation import track_embeddings
    from musicrec.trainer.audio_input import Cropper, training_examples, triplet_dataset
    from musicrec.trainer.log_mel_shards import LogMelShards, block_dataset

    rng = np.random.default_rng(0)
    pool = [rng.normal(-40, 15, (1292, 128)).astype(np.float16) for _ in range(32)]  # the bytes are what counts
    files = [str(work / f"log_mel-{i:05d}-of-{AUDIO_SHARDS:05d}.tfrecord") for i in range(AUDIO_SHARDS)]
    writers = [tf.io.TFRecordWriter(f) for f in files]
    for i in range(size):
        writers[i % AUDIO_SHARDS].write(encode_example(f"t{i:07d}", pool[i % len(pool)]))
    for writer in writers:
        writer.close()
    del pool

    started = time.perf_counter()
    shards = LogMelShards.scan(files, int(memory_mb * 2**20))  # blocks at every size, even one that would fit
    scan_seconds = time.perf_counter() - started
    users = max(size // 5, 10)
    picks = rng.integers(0, size, (users, 20))
    pairs = pd.DataFrame({"user_id": np.repeat([f"u{u}" for u in range(users)], 20), "track_id": shards.track_ids[picks.ravel()],
                          "label": np.tile([1] * 10 + [0] * 10, users)})
    config = AudioBranchConfig.variant("metric_1vs4")
    user_index = {f"u{u}": u for u in range(users)}
    model = SiameseAudioModel(config, rng.normal(size=(users, 40)).astype(np.float32))
    model.compile(optimizer=build_optimizer(config, TRAIN_STEPS))

    def pipeline(block_pairs, block, draw_seed):
        return triplet_dataset(training_examples(block_pairs, user_index, block), Cropper(block, config.context_frames),
                               config.negatives, config.batch_size, seed=draw_seed, draw_seed=draw_seed)

    started = time.perf_counter()
    model.fit(block_dataset(shards, pairs, pipeline, seed=0), epochs=1, steps_per_epoch=TRAIN_STEPS, verbose=0)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    track_embeddings(model.encoder, shards, config.context_frames)
    embed_seconds = time.perf_counter() - started
    # What grows with the catalogue is the index scan and the AE pass; training runs a fixed
    # number of steps, so its rate (segments/s, block loads included) should stay flat.
    return {"seconds": scan_seconds + embed_seconds, "rate": size / (scan_seconds + embed_seconds),
            "rate_unit": "tracks/s (index scan + AEs)",
            "details": {"scan_seconds": scan_seconds, "train_seconds": train_seconds, "embed_seconds": embed_seconds,
                        "training_segments_per_second": TRAIN_STEPS * config.batch_size * 5 / train_seconds,
                        "memory_budget_mb": memory_mb, "shards": AUDIO_SHARDS, "blocks_per_pass": len(shards.blocks())}}


def retrieval_stage(size: int, work: pathlib.Path, memory_mb: float) -> dict:
    import numpy as np
    import tensorflow as tf

    from musicrec.serving.graphs import UserIndex
    from musicrec.serving.scann_index import clustered_vectors

    index = UserIndex(np.char.add("u", np.arange(size).astype(str)), clustered_vectors(size), max_k=TOP_USERS)
    queries = clustered_vectors(NEW_TRACKS, seed=1)
    top_k = tf.function(index.top_k)
    k = tf.fill([QUERY_BATCH], TOP_USERS)
    top_k(tf.constant(queries[:QUERY_BATCH]), k)  # trace
    started = time.perf_counter()
    for start in range(0, NEW_TRACKS, QUERY_BATCH):
        top_k(tf.constant(queries[start:start + QUERY_BATCH]), k)["count"].numpy()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rate": NEW_TRACKS * size / seconds, "rate_unit": "user scores/s",
            "details": {"new_tracks_per_second": NEW_TRACKS / seconds, "top_users": TOP_USERS}}


STAGES = {"ingestion": ingestion_stage, "audio": audio_stage, "retrieval": retrieval_stage}


# --- the parent: runs every size in a child, prints growth and projection --------------------

def run_child(stage: str, size: int, memory_mb: float) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"scale-{stage}-") as work:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, "--child", stage, str(size), work, str(memory_mb)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{stage} at {size:,} failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result.update(stage=stage, size=size, wall_seconds=time.perf_counter() - started)
        print(f"  {stage:9s} {size:>12,} {UNITS[stage]:12s} {result['seconds']:9.1f} s  "
              f"{result['rate']:14,.0f} {result['rate_unit']:28s} peak RSS {result['peak_rss_mb']:8,.0f} MB", flush=True)
        return result


def growth(results: list) -> list:
    rows = []
    for small, large in zip(results, results[1:]):
        rows.append({"stage": large["stage"], "from": small["size"], "to": large["size"],
                     "data_ratio": large["size"] / small["size"], "time_ratio": large["seconds"] / small["seconds"],
                     "memory_ratio": large["peak_rss_mb"] / small["peak_rss_mb"]})
    return rows


def projection(largest: dict) -> dict:
    """Hours at the paper's size on each worker count, from the largest size's rate, assuming
    linear scaling across workers (each worker this machine's 2 cores)."""
    stage, unit = largest["stage"], UNITS[largest["stage"]]
    if stage == "retrieval":  # one week of new releases scored against the paper's users
        work = NEW_TRACKS * PAPER["users"]
    else:
        work = PAPER[unit]
    single = work / largest["rate"] / 3600
    return {"stage": stage, "work": f"{work:,.0f} {largest['rate_unit'].split('/')[0]}",
            "hours_one_worker": single, "hours_by_workers": {n: single / n for n in WORKERS}}


def write_doc(path: pathlib.Path, results: list, rows: list, projections: list) -> None:
    stages = "\n".join(line[2:] for line in __doc__.split("\n\n")[2].splitlines())  # the docstring's stage list
    lines = ["# Scale: growth and projection", "",
             f"Written by `benchmarks/scale.py` on {platform.machine()}, {os.cpu_count()} cores, "
             f"{time.strftime('%Y-%m-%d')}; each size in its own process. The stages:", "", "```", stages, "```", "",
             "| stage | size | time (s) | rate | peak RSS (MB) |", "|---|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['size']:,} {UNITS[r['stage']]} | {r['seconds']:.1f} | {r['rate']:,.0f} {r['rate_unit']} "
              f"| {r['peak_rss_mb']:,.0f} |" for r in results]
    lines += ["", "Growth from one size to the next:", "", "| stage | sizes | data x | time x | memory x |", "|---|---|---|---|---|"]
    lines += [f"| {g['stage']} | {g['from']:,} -> {g['to']:,} | {g['data_ratio']:.1f} | {g['time_ratio']:.2f} | "
              f"{g['memory_ratio']:.2f} |" for g in rows]
    lines += ["", "Projection to the paper's size (160M interactions, 1.1M tracks, 1.9M users; retrieval: "
              f"{NEW_TRACKS:,} new tracks against every user), linear in workers:", "",
              "| stage | work | one worker (h) | " + " | ".join(f"{n} workers (h)" for n in WORKERS) + " |",
              "|---|---|---|" + "---|" * len(WORKERS)]
    lines += [f"| {p['stage']} | {p['work']} | {p['hours_one_worker']:.3g} | "
              + " | ".join(f"{p['hours_by_workers'][n]:.3g}" for n in WORKERS) + " |" for p in projections]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the script, not the growth")
    parser.add_argument("--sizes", nargs="+", default=[], metavar="STAGE=N,N,N",
                        help="other sizes for a stage, e.g. ingestion=100000,300000,1000000")
    parser.add_argument("--out", default="reports/benchmarks/scale.json")
    parser.add_argument("--doc", help="also write the tables as Markdown here (e.g. docs/scale.md)")
    parser.add_argument("--child", nargs=4, metavar=("STAGE", "SIZE", "WORKDIR", "MEMORY_MB"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        stage, size, work, memory_mb = args.child
        result = STAGES[stage](int(size), pathlib.Path(work), float(memory_mb))
        print(json.dumps({**result, "peak_rss_mb": peak_rss_mb()}))
        return result
    sizes = {**(QUICK if args.quick else SIZES),
             **{stage: tuple(int(n) for n in ns.split(",")) for stage, ns in (a.split("=", 1) for a in args.sizes)}}
    results, rows, projections = [], [], []
    for stage in args.stages:
        memory_mb = AUDIO_MEMORY_MB["quick" if args.quick else "full"]
        measured = [run_child(stage, size, memory_mb) for size in sizes[stage]]
        results += measured
        rows += growth(measured)
        projections.append(projection(measured[-1]))
    print(f"\n{'stage':9s} {'sizes':>24s} {'data x':>7s} {'time x':>7s} {'memory x':>9s}")
    for g in rows:
        print(f"{g['stage']:9s} {g['from']:>11,} -> {g['to']:<10,} {g['data_ratio']:7.1f} {g['time_ratio']:7.2f} {g['memory_ratio']:9.2f}")
    print("\nprojection to the paper's size, hours on " + ", ".join(map(str, WORKERS)) + " workers:")
    for p in projections:
        print(f"  {p['stage']:9s} {p['work']:>28s}: " + ", ".join(f"{p['hours_by_workers'][n]:.3g}" for n in WORKERS))
    summary = {"results": results, "growth": rows, "projection": projections, "sizes": {s: sizes[s] for s in args.stages}}
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    if args.doc:
        write_doc(pathlib.Path(args.doc), results, rows, projections)
    print(f"written to {out}" + (f" and {args.doc}" if args.doc else ""))
    return summary


if __name__ == "__main__":
    main()
