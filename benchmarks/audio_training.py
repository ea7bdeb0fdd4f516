"""Benchmark: audio-branch training throughput, tf.data input pipeline vs in-memory tensors.

Same model, same compiled training step, same batch shape, same run: (a) the
full pipeline (random crops from the in-memory log-mel store, per-epoch
negative sampling, tf.data prefetch) feeding the step, against (b) the same
number of distinct batches materialised as tensors beforehand, which costs no
input work while training; (b) is measured before and after (a) and averaged. The input
pipeline's cost is 1 - (a)/(b); the target is at most 10%.

    python benchmarks/audio_training.py --out reports/benchmarks/audio_training.json
    python benchmarks/audio_training.py --features runs/demo/features   # real log-mels instead of random ones
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS)
import numpy as np
import pandas as pd
import tensorflow as tf

from musicrec.trainer.audio_branch import AudioBranchConfig, SiameseAudioModel, build_optimizer
from musicrec.trainer.audio_input import Cropper, LogMelStore, training_examples, triplet_dataset


def synthetic_inputs(tracks: int, users: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    store = LogMelStore.from_arrays(
        [f"t{i}" for i in range(tracks)], [rng.normal(-30, 20, (1292, 128)).astype(np.float16) for _ in range(tracks)]
    )
    rows = [(f"u{u}", f"t{t}", int(label)) for u in range(users) for t, label in zip(rng.choice(tracks, 20, replace=False), [1] * 10 + [0] * 10)]
    return store, pd.DataFrame(rows, columns=["user_id", "track_id", "label"])


def segments_per_second(model, batches, steps: int, segments_per_step: int) -> float:
    """Runs the model's compiled training step on `steps` batches from the iterable `batches`."""
    step = tf.function(model.train_step)
    iterator = iter(batches)
    for _ in range(3):  # trace and warm up
        step(next(iterator))
    started = time.perf_counter()
    for _ in range(steps):
        step(next(iterator))
    float(model.loss_tracker.result())  # wait for the last step
    return steps * segments_per_step / (time.perf_counter() - started)


def measure(store: LogMelStore, pairs: pd.DataFrame, context_seconds: float, steps: int) -> dict:
    config = AudioBranchConfig.variant("metric_1vs4", context_seconds=context_seconds)
    users = {u: i for i, u in enumerate(sorted(pairs["user_id"].unique()))}
    vectors = np.random.default_rng(1).normal(size=(len(users), 40)).astype(np.float32)
    pipeline = triplet_dataset(training_examples(pairs, users, store), Cropper(store, config.context_frames),
                               config.negatives, config.batch_size, seed=0).repeat()
    # Distinct batches materialised up front (as many as the timed run uses), so
    # the reference does the same memory traffic with no input work at all.
    materialised = [batch for batch in pipeline.take(steps + 3)]
    per_step = config.batch_size * (1 + config.negatives)
    rates = {}
    for name, batches in (("in_memory", materialised), ("tf_data", pipeline), ("in_memory_again", materialised)):
        model = SiameseAudioModel(config, vectors)
        model.compile(optimizer=build_optimizer(config, steps))
        rates[name] = segments_per_second(model, batches, steps, per_step)
    reference = (rates["in_memory"] + rates["in_memory_again"]) / 2  # bracket the pipeline run against drift
    return {
        "context_seconds": context_seconds,
        "segments_per_second": {"tf_data": rates["tf_data"], "in_memory": reference},
        "input_pipeline_cost": 1 - rates["tf_data"] / reference,
        "parameters": SiameseAudioModel(config, vectors).encoder.count_params(),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", help="folder of log-mel TFRecords (default: random log-mels)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", default="reports/benchmarks/audio_training.json")
    args = parser.parse_args(argv)
    store, pairs = synthetic_inputs(tracks=300, users=200)
    if args.features:
        real = LogMelStore.from_tfrecords([str(pathlib.Path(args.features) / "log_mel-*")])
        rng = np.random.default_rng(0)
        pairs = pairs.assign(track_id=rng.choice(real.track_ids, len(pairs)))
        store = real
    results = [measure(store, pairs, seconds, args.steps) for seconds in (3.0, 10.0)]
    print(f"{'context':>8s} {'tf.data seg/s':>14s} {'in-memory seg/s':>16s} {'pipeline cost':>14s}")
    for r in results:
        s = r["segments_per_second"]
        print(f"{r['context_seconds']:7.0f}s {s['tf_data']:14.0f} {s['in_memory']:16.0f} {100 * r['input_pipeline_cost']:13.1f}%")
    print(f"encoder parameters: {results[0]['parameters']:,}; target: pipeline cost at most 10%")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results, "target_max_cost": 0.10}, indent=2) + "\n")
    print(f"written to {out}")
    return {"results": results}


if __name__ == "__main__":
    main()
