"""Benchmark: audio-branch training throughput, tf.data input pipeline vs in-memory tensors.

Same model, same compiled training step, same batch shape, same run: (a) the
full pipeline (random crops from the in-memory log-mel store, per-epoch
negative sampling, tf.data prefetch) feeding the step, against (b) the same
number of distinct batches materialised as tensors beforehand, which costs no
input work while training; (b) is measured before and after (a) and averaged. The input
pipeline's cost is 1 - (a)/(b); the target is at most 10%.

Beside them, in the same run:
- (c) log-mels past the memory budget: the same pipeline fed block by block
  from TFRecord shards (trainer/log_mel_shards.py), with a budget of a quarter
  of the features, so block loading is inside the timed steps;
- (d) the CNN recipe (metric_1vs4_genre: the genre head's extra softmax per
  step) through pipeline (a), against Metric-1vs4;
- (e) the musicnn front ends' variants (metric_1vs4_genre_musicnn on MSD
  patch features, 753-d; metric_1vs4_genre_msd_mtt on MSD + MTT ones,
  1506-d; metric_1vs4_genre_msd_mtt_max_mean, the demo's default, on both
  models' max and mean pools, 3012-d: a dense head on stored patch features)
  through pipeline (a), at 3 s (one patch; musicnn's contexts are whole 3 s
  patches). Their features cost CPU once per track, in the feature component
  (benchmarks/frontend.py).

    python benchmarks/audio_training.py --out reports/benchmarks/audio_training.json
    python benchmarks/audio_training.py --features runs/demo/features   # real log-mels instead of random ones
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time
import zlib

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS)
import numpy as np
import pandas as pd
import tensorflow as tf

from musicrec.audio.front_ends import front_end
from musicrec.trainer.audio_branch import AudioBranchConfig, SiameseAudioModel, build_optimizer
from musicrec.names import GENRE
from musicrec.trainer.audio_data import track_classes
from musicrec.trainer.audio_input import Cropper, LogMelStore, training_examples, triplet_dataset
from musicrec.trainer.log_mel_shards import LogMelShards, block_dataset, write_shards

CNN_RECIPE = "metric_1vs4_genre"  # the CNN default before the pretrained front ends
# The last is pipeline/configs/demo.yaml's default.
PRETRAINED_VARIANTS = ("metric_1vs4_genre_musicnn", "metric_1vs4_genre_msd_mtt", "metric_1vs4_genre_msd_mtt_max_mean")
SHARDS = 16


def synthetic_inputs(tracks: int, users: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    store = LogMelStore.from_arrays(
        [f"t{i}" for i in range(tracks)], [rng.normal(-30, 20, (1292, 128)).astype(np.float16) for _ in range(tracks)]
    )
    rows = [(f"u{u}", f"t{t}", int(label)) for u in range(users) for t, label in zip(rng.choice(tracks, 20, replace=False), [1] * 10 + [0] * 10)]
    pairs = pd.DataFrame(rows, columns=["user_id", "track_id", "label"])
    return store, pairs.assign(**{GENRE: pairs["track_id"].map(lambda t: f"g{zlib.crc32(t.encode()) % 8}")})


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


def measure(store: LogMelStore, shard_files: list, pairs: pd.DataFrame, context_seconds: float, steps: int) -> dict:
    config = AudioBranchConfig.variant("metric_1vs4", context_seconds=context_seconds)
    users = {u: i for i, u in enumerate(sorted(pairs["user_id"].unique()))}
    vectors = np.random.default_rng(1).normal(size=(len(users), 40)).astype(np.float32)

    def pipeline(over_pairs, over_store, draw_seed=None):
        return triplet_dataset(training_examples(over_pairs, users, over_store), Cropper(over_store, config.context_frames),
                               config.negatives, config.batch_size, seed=draw_seed or 0, draw_seed=draw_seed)

    in_memory = pipeline(pairs, store).repeat()
    # Distinct batches materialised up front (as many as the timed run uses), so
    # the reference does the same memory traffic with no input work at all.
    materialised = [batch for batch in in_memory.take(steps + 3)]
    shards = LogMelShards.scan(shard_files, budget_bytes=LogMelShards.scan(shard_files, 2**40).block_bytes(range(SHARDS // 4)))
    blocks = block_dataset(shards, pairs, pipeline, seed=0)
    per_step = config.batch_size * (1 + config.negatives)
    classes = track_classes(pairs, store)
    rates = {}
    for name, variant, batches in (("in_memory", "metric_1vs4", materialised), ("tf_data", "metric_1vs4", in_memory),
                                   ("blocks", "metric_1vs4", blocks), ("cnn_recipe", CNN_RECIPE, in_memory),
                                   ("in_memory_again", "metric_1vs4", materialised)):
        variant_config = AudioBranchConfig.variant(variant, context_seconds=context_seconds)
        model = SiameseAudioModel(variant_config, vectors, classes if variant_config.class_weight else None)
        model.compile(optimizer=build_optimizer(variant_config, steps))
        rates[name] = segments_per_second(model, batches, steps, per_step)
    reference = (rates["in_memory"] + rates["in_memory_again"]) / 2  # bracket the pipeline runs against drift
    pretrained = {variant: pretrained_rate(variant, store, pairs, users, vectors, classes, steps)
                  for variant in (PRETRAINED_VARIANTS if context_seconds == 3.0 else ())}
    return {
        "context_seconds": context_seconds,
        "segments_per_second": {"tf_data": rates["tf_data"], "in_memory": reference, "blocks": rates["blocks"],
                                "cnn_recipe": rates["cnn_recipe"], **pretrained},
        "input_pipeline_cost": 1 - rates["tf_data"] / reference,
        "blocks_cost": 1 - rates["blocks"] / reference,
        "blocks_per_pass": len(shards.blocks()),
        "cnn_recipe_vs_metric_1vs4": rates["cnn_recipe"] / rates["tf_data"],
        "parameters": SiameseAudioModel(config, vectors).encoder.count_params(),
    }


def pretrained_rate(variant: str, store: LogMelStore, pairs: pd.DataFrame, users: dict, vectors: np.ndarray, classes,
                    steps: int) -> float:
    """Segments/s of a musicnn front end's variant through the tf.data pipeline, on random patch
    features of the store's tracks (ten 3 s patches each: the first 30 s)."""
    config = AudioBranchConfig.variant(variant)
    front = front_end(config.front_end)
    rng = np.random.default_rng(2)
    features = LogMelStore.from_arrays(store.track_ids, [rng.gamma(2.0, 1.0, (front.max_frames, front.frame_dim)).astype(np.float16)
                                                          for _ in store.track_ids], config.front_end)
    batches = triplet_dataset(training_examples(pairs, users, features), Cropper(features, config.context_frames),
                              config.negatives, config.batch_size, seed=0).repeat()
    model = SiameseAudioModel(config, vectors, classes)
    model.compile(optimizer=build_optimizer(config, steps))
    return segments_per_second(model, batches, steps, config.batch_size * (1 + config.negatives))


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
    with tempfile.TemporaryDirectory() as folder:
        shard_files = write_shards(store, folder, SHARDS)
        results = [measure(store, shard_files, pairs, seconds, args.steps) for seconds in (3.0, 10.0)]
    print(f"{'context':>8s} {'tf.data seg/s':>14s} {'in-memory seg/s':>16s} {'pipeline cost':>14s} "
          f"{'blocks seg/s':>13s} {'blocks cost':>12s} {CNN_RECIPE + ' seg/s':>24s} "
          + " ".join(f"{variant + ' seg/s':>32s}" for variant in PRETRAINED_VARIANTS))
    for r in results:
        s = r["segments_per_second"]
        pretrained = " ".join(f"{s[v]:32.0f}" if v in s else f"{'n/a':>32s}" for v in PRETRAINED_VARIANTS)
        print(f"{r['context_seconds']:7.0f}s {s['tf_data']:14.0f} {s['in_memory']:16.0f} {100 * r['input_pipeline_cost']:13.1f}% "
              f"{s['blocks']:13.0f} {100 * r['blocks_cost']:11.1f}% {s['cnn_recipe']:24.0f} {pretrained}")
    print(f"encoder parameters: {results[0]['parameters']:,}; blocks per pass: {results[0]['blocks_per_pass']}; "
          "target: pipeline cost at most 10%")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results, "target_max_cost": 0.10}, indent=2) + "\n")
    print(f"written to {out}")
    return {"results": results}


if __name__ == "__main__":
    main()
