"""The `genre-eval` subcommand; `musicrec.cli` adds it with `register(subparsers)`."""

from __future__ import annotations

import pathlib
import sys

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)


def register(subparsers) -> None:
    from musicrec.genre.datasets import LAYOUTS
    from musicrec.pipeline.table2 import FEATURE_SETS

    parser = subparsers.add_parser(
        "genre-eval",
        help="genre classification with the AE and the musicnn baseline (the paper's Table 2)",
        description="Fits PCA(128) + RBF-SVM(gamma 1/128, C 1) on musicnn features, the AE, and both; prints "
                    "accuracy per feature set and per genre; writes genre_report.json, table2.md, "
                    "confusion_matrices.png and quarantine.csv (see docs/genre.md).",
    )
    parser.add_argument("--dataset", required=True, help="the dataset folder")
    parser.add_argument("--layout", required=True, choices=sorted(LAYOUTS), help="how the dataset is laid out")
    parser.add_argument("--model", help="a pipeline run folder (e.g. runs/demo: its latest AudioTrainer model), an audio "
                                        "encoder SavedModel (signature embed_log_mel), or a folder holding one in "
                                        "audio_encoder/ or a numbered version folder; needed for the AE sets")
    parser.add_argument("--out", help="output folder (default reports/genre-eval/<dataset name>)")
    parser.add_argument("--context-seconds", type=float, default=3.0, help="AE segment length in seconds (default 3)")
    parser.add_argument("--feature-sets", default=",".join(FEATURE_SETS),
                        help=f"comma-separated, among {','.join(FEATURE_SETS)} (default: all three)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the 7:3 per-genre splits (default 0)")
    parser.add_argument("--cache-dir", help="per-track feature cache (default <out>/feature_cache)")
    parser.set_defaults(func=cmd_genre_eval)


def cmd_genre_eval(args) -> int:
    from musicrec.genre.datasets import GenreDatasetError
    from musicrec.genre.musicnn_runner import MusicnnError
    from musicrec.pipeline.table2 import GenreEvalConfig, run_genre_eval

    out = pathlib.Path(args.out or pathlib.Path("reports") / "genre-eval" / pathlib.Path(args.dataset).resolve().name)
    try:
        config = GenreEvalConfig(feature_sets=tuple(s.strip() for s in args.feature_sets.split(",") if s.strip()),
                                 context_seconds=args.context_seconds, seed=args.seed, cache_dir=args.cache_dir)
        result = run_genre_eval(args.dataset, args.layout, args.model, out, config)
    except (GenreDatasetError, MusicnnError, FileNotFoundError, ValueError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 2
    print(result.markdown)
    print(f"Report, table and confusion matrices written to {result.out_dir}")
    return 0
