"""The `musicrec` command. Subcommands parse arguments and call into the packages."""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import re
import sys

import musicrec


def _feedback_config(args):
    from musicrec.data.contract import FeedbackConfig

    kwargs = {}
    if args.liked_events:
        kwargs["liked_events"] = tuple(args.liked_events.split(","))
    if args.disliked_events:
        kwargs["disliked_events"] = tuple(args.disliked_events.split(","))
    return FeedbackConfig(min_liked=args.min_liked, min_disliked=args.min_disliked, **kwargs)


def _add_feedback_args(parser):
    parser.add_argument("--liked-events", help="comma-separated events that count as liked (default: like,playlist_add,complete)")
    parser.add_argument("--disliked-events", help="comma-separated events that count as disliked (default: dislike,skip)")
    parser.add_argument("--min-liked", type=int, default=10, help="users with fewer liked tracks are excluded (default 10)")
    parser.add_argument("--min-disliked", type=int, default=10, help="users with fewer disliked tracks are excluded (default 10)")


def cmd_generate_demo(args):
    from musicrec.simulation.generator import generate_demo

    out = generate_demo(
        args.out, size=args.size, seed=args.seed, faults=not args.no_faults, overwrite=args.overwrite, world=args.world
    )
    print(f"Wrote the {args.size} dataset of world {args.world} (seed {args.seed}) to {out}")


def cmd_validate_data(args):
    from musicrec.data.validation import validate_dataset

    report = validate_dataset(
        args.dataset, _feedback_config(args), min_audio_seconds=args.context_seconds, check_audio=not args.skip_audio
    )
    report_dir = report.write(args.report_dir or pathlib.Path("reports") / "validate-data" / pathlib.Path(args.dataset).name)
    print(report.format())
    print(f"Reports written to {report_dir}")
    if not report.usable:
        print("ERROR: the dataset cannot be used: " + "; ".join(report.fatal), file=sys.stderr)
        return 2
    return 0


def cmd_extract_features(args):
    from musicrec.components.audio_features.transforms import extract_features
    from musicrec.data.loading import load_dataset

    dataset = load_dataset(args.dataset)
    tracks = dataset.audio_files()
    report = extract_features(tracks, args.out, min_seconds=args.context_seconds, beam_args=args.beam_arg)
    print(report.format())
    return 0 if report.extracted else 2


def cmd_user_branch(args):
    from musicrec.trainer.user_config import UserBranchConfig
    from musicrec.trainer.user_module import run_on_dataset

    config = UserBranchConfig() if args.epochs is None else UserBranchConfig(epochs=args.epochs)
    result = run_on_dataset(args.dataset, args.out, config, _feedback_config(args))
    print(result["report"].table())
    print(f"Report, SavedModels (user_tower/, retrieval/) and embedding tables written to {args.out}")


def _table1_config(args, **fields):
    """The audio-branch recipe of reproduce-table1 and robustness: rows and training options."""
    from musicrec.pipeline.table1 import Table1Config, parse_rows

    if args.variants:
        fields["rows"] = parse_rows(args.variants)
    if args.baselines is not None:
        fields["baselines"] = tuple(filter(None, args.baselines.split(",")))
    return Table1Config(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch or None,
                        early_stopping_patience=args.early_stopping_patience, lr_schedule=args.lr_schedule, **fields)


def _add_recipe_args(p, default_variants: str):
    p.add_argument("--variants", default=default_variants,
                   help="comma-separated variants, each NAME or NAME@SECONDS (context; default 3 s)"
                        + (f" (default {default_variants})" if default_variants else " (default: the paper's Table 1 rows)"))
    from musicrec.trainer.practitioner_baselines import BASELINES

    p.add_argument("--baselines", help=f"comma-separated practitioner baselines on the same test pairs (default {','.join(BASELINES)}; "
                                       "musicnn averages the musicnn front end's patch features when a variant trained on them, "
                                       "else computes them, about 1 s of one core per track, cached per file)")
    p.add_argument("--epochs", type=int, default=10, help="the most epochs per variant (default 10)")
    p.add_argument("--steps-per-epoch", type=int, default=150,
                   help="training steps per epoch; 0 = one pass over the liked training pairs (default 150)")
    p.add_argument("--early-stopping-patience", type=int, default=0,
                   help="stop after this many epochs without a better validation AUC and keep the best epoch (0: off)")
    p.add_argument("--lr-schedule", choices=["inverse_time", "cosine"], default="inverse_time",
                   help="the paper's inverse-time decay, or a cosine decay over the whole budget")


def cmd_reproduce_table1(args):
    from musicrec.pipeline.table1 import format_table1, reproduce_table1

    config = _table1_config(args, protocol=args.protocol)
    report = reproduce_table1(args.dataset, args.out, config, _feedback_config(args), args.features, args.user_branch)
    print(format_table1(report))
    print(f"Written to {args.out}/table1.md and table1.json")


def cmd_robustness(args):
    from musicrec.pipeline.robustness import RobustnessConfig, format_robustness, run_robustness

    config = RobustnessConfig(worlds=tuple(args.worlds.split(",")), protocols=tuple(args.protocols.split(",")),
                              size=args.size, seed=args.seed, table1=_table1_config(args))
    report = run_robustness(args.out, config, args.datasets, _feedback_config(args))
    print(format_robustness(report))
    print(f"Written to {args.out}/robustness.md and robustness.json")


def _pipeline_config(args):
    from musicrec.pipeline.config import PipelineConfig

    config = PipelineConfig.from_yaml(args.config)
    overrides = {key: value for key, value in (("dataset_dir", args.dataset), ("run_dir", args.run_dir)) if value}
    return PipelineConfig.from_dict({**config.__dict__, **overrides})


def _add_pipeline_args(parser, default_config=None):
    parser.add_argument("--config", required=default_config is None, default=default_config,
                        help="pipeline configuration YAML (keys and defaults: pipeline/config.py)")
    parser.add_argument("--dataset", help="override the configuration's dataset_dir")
    parser.add_argument("--run-dir", help="override the configuration's run_dir")


def cmd_demo(args):
    from musicrec.pipeline.demo import run_demo

    run_demo(_pipeline_config(args), size=args.size, seed=args.seed)


def cmd_run(args):
    from musicrec.pipeline.demo import summarize
    from musicrec.pipeline.runner import run_local

    config = _pipeline_config(args)
    summarize(config, run_local(config))


def cmd_compile(args):
    if args.pipeline == "release":
        from musicrec.pipeline.release import compile_release

        if not args.tracks:
            raise ValueError("--pipeline release needs --tracks (the folder or bucket prefix of the new releases)")
        path = compile_release(_pipeline_config(args), _release_config(args), args.out)
    else:
        from musicrec.pipeline.runner import compile_kubeflow

        path = compile_kubeflow(_pipeline_config(args), args.out)
    print(f"Kubeflow V2 pipeline spec written to {path} (submit it to Kubeflow Pipelines or Vertex AI Pipelines)")


def _release_config(args):
    from musicrec.pipeline.release import ReleaseConfig

    return ReleaseConfig(tracks_dir=args.tracks, name=args.name or "", top_users=args.top_users, inbox_size=args.inbox,
                         artist_cap=args.artist_cap, model_version=args.model_version, scann_index=args.scann_index or "",
                         enable_cache=not args.no_cache)


def _add_list_args(parser, top_users: int, inbox: int):
    parser.add_argument("--top-users", type=int, default=top_users, help=f"users picked per new track (default {top_users})")
    parser.add_argument("--inbox", type=int, default=inbox, help=f"the most new tracks in one user's inbox (default {inbox})")
    parser.add_argument("--artist-cap", type=int, default=2, help="the most tracks of one artist in an inbox (default 2)")


def _add_release_args(parser, tracks_required: bool):
    parser.add_argument("--tracks", required=tracks_required,
                        help="the new releases: a folder or bucket prefix with tracks.csv (or .parquet) and their audio")
    parser.add_argument("--name", help="the release's name, e.g. 2026-W48 (default: the --tracks folder's name)")
    _add_list_args(parser, top_users=1000, inbox=20)
    parser.add_argument("--model-version", type=int, default=0,
                        help="score with this pushed version (default 0: the latest blessed, pushed model)")
    parser.add_argument("--scann-index", help="rank users with this ScaNN index (build-scann-index) instead of exactly")
    parser.add_argument("--no-cache", action="store_true", help="recompute every step, even unchanged ones")


def cmd_release_check(args):
    from musicrec.pipeline.release_check import ReleaseCheckConfig, format_release_check, run_release_check

    from musicrec.components.release.transforms import ListsConfig

    config = ReleaseCheckConfig(holdout=args.holdout, lists=ListsConfig(args.top_users, args.inbox, args.artist_cap))
    report = run_release_check(args.dataset, args.out, _pipeline_config(args), config, _feedback_config(args))
    print(format_release_check(report))
    print(f"Written to {args.out}/release_check.md and release_check.json")


def cmd_release(args):
    from musicrec.pipeline.release import run_release

    result = run_release(_pipeline_config(args), _release_config(args))
    summary = result["summary"]
    print(f"Release {result['published']}: {summary['tracks_ranked']} tracks ranked with model version "
          f"{summary['model_version']}; {summary['users_reached']} of {summary['users_in_model']} users have new tracks "
          f"({summary['tracks_per_minute']:.0f} tracks/min). Report: {result['published']}/report/index.html")


def cmd_show_eval(args):
    from musicrec.pipeline.evaluation import find_evaluation, write_report

    evaluation = find_evaluation(args.run)
    print(f"Evaluation {evaluation.source()}\n{evaluation.table()}\n{evaluation.decision()}")
    out = write_report(evaluation, args.out or pathlib.Path(args.run) / "evaluation")
    print(f"Plots and an HTML page written to {out} (open {out / 'index.html'})")


def cmd_oracle(args):
    from musicrec.data.feedback import feedback_labels
    from musicrec.data.loading import load_dataset
    from musicrec.simulation.oracle import GroundTruth, oracle_auc

    dataset = load_dataset(args.dataset)
    labels = feedback_labels(dataset.interactions, _feedback_config(args)).labels
    print(json.dumps({"pairs": len(labels), "oracle_auc": oracle_auc(GroundTruth.load(args.dataset), labels)}))


class _QuietLogFilter(logging.Filter):
    """Beam relays every worker's log chatter as protobuf text, and TFX logs every
    component's IR: keep warnings, errors, TFX's component progress and our own
    progress lines, and show relayed ones as plain messages."""

    _RELAYED = re.compile(r'message: "(.*?)" (?:instruction_id|log_location|transform_id)')
    # TFX's runner logs each component's whole IR at INFO; keep its one-line progress.
    _TFX_PROGRESS = re.compile(r"^Component \S+ is (running|finished)")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "absl" and record.levelno < logging.WARNING:
            text = record.getMessage()
            return bool(self._TFX_PROGRESS.search(text)) or musicrec.LOG_TAG in text
        if not record.name.startswith("apache_beam"):
            return True
        text = record.getMessage()
        if record.levelno < logging.ERROR and musicrec.LOG_TAG not in text:
            return False
        relayed = self._RELAYED.search(text)
        if relayed:
            record.msg, record.args = relayed.group(1).replace("\\'", "'"), None
        return True


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # Set absl's verbosity flag explicitly: a component that parses absl flags
    # (TFX's Transform does) would otherwise reset it to WARNING mid-run and
    # hide TFX's component progress lines.
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietLogFilter())


def _demo_config() -> str:
    """pipeline/configs/demo.yaml, wherever the musicrec.pipeline package is (installed or editable)."""
    import musicrec.pipeline

    return str(pathlib.Path(musicrec.pipeline.__file__).resolve().parent / "configs" / "demo.yaml")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musicrec", description=__doc__)
    parser.add_argument("--version", action="version", version=musicrec.__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate-demo", help="write the simulated music service as a plain-layout dataset")
    p.add_argument("--size", choices=["tiny", "demo", "bench"], default="demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-faults", action="store_true", help="do not add the deliberately broken files and rows")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    from musicrec.simulation.worlds import WORLDS

    p.add_argument(
        "--world", choices=list(WORLDS), default="default",
        help="world preset: " + "; ".join(f"{name}: {preset.summary}" for name, preset in WORLDS.items()),
    )
    p.set_defaults(func=cmd_generate_demo)

    p = sub.add_parser("validate-data", help="check a dataset against the data contract and report")
    p.add_argument("dataset", help="dataset folder (users, tracks, interactions + audio)")
    p.add_argument("--report-dir", help="where to write the report files (default reports/validate-data/<name>)")
    p.add_argument("--context-seconds", type=float, default=3.0, help="audio shorter than this is 'too short' (default 3)")
    p.add_argument("--skip-audio", action="store_true", help="check the tables only, not the audio files")
    _add_feedback_args(p)
    p.set_defaults(func=cmd_validate_data)

    p = sub.add_parser("extract-features", help="log-mel features of every track (Beam), with a quarantine report")
    p.add_argument("dataset")
    p.add_argument("--out", required=True, help="output folder for TFRecords and quarantine.jsonl")
    p.add_argument("--context-seconds", type=float, default=3.0)
    p.add_argument(
        "--beam-arg", action="append", default=[],
        help="Beam pipeline option, repeatable (e.g. --beam-arg=--direct_num_workers=2 --beam-arg=--direct_running_mode=multi_processing)",
    )
    p.set_defaults(func=cmd_extract_features)

    p = sub.add_parser("oracle", help="oracle AUC of a generated dataset on all its feedback pairs")
    p.add_argument("dataset")
    _add_feedback_args(p)
    p.set_defaults(func=cmd_oracle)

    p = sub.add_parser("user-branch", help="train the two-tower user branch; print hit rate/recall beside the baselines")
    p.add_argument("dataset")
    p.add_argument("--out", required=True, help="output folder: report, SavedModels, embedding tables")
    p.add_argument("--epochs", type=int, default=None,
                   help="the most epochs (default 40); early stopping on validation recall@10 picks the number")
    _add_feedback_args(p)
    p.set_defaults(func=cmd_user_branch)

    p = sub.add_parser("reproduce-table1", help="train the six audio-branch variants (3 s, and 10 s) and print the paper's Table 1")
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", default="runs/table1", help="output folder (default runs/table1)")
    p.add_argument("--features", help="folder of log-mel TFRecords (default: extracted into OUT/features)")
    p.add_argument("--user-branch", help="output folder of `musicrec user-branch` (default: trained into OUT/user_branch)")
    p.add_argument("--protocol", choices=["per_user", "users", "cold_tracks"], default="per_user")
    _add_recipe_args(p, "")
    _add_feedback_args(p)
    p.set_defaults(func=cmd_reproduce_table1)

    p = sub.add_parser("robustness", help="measure audio-branch variants on every world preset and split protocol, "
                                          "beside the practitioner baselines and the oracle")
    p.add_argument("--out", default="runs/robustness", help="output folder (default runs/robustness)")
    p.add_argument("--datasets", help="folder of the generated worlds, one subfolder each (generated there if missing; "
                                      "default OUT/datasets)")
    p.add_argument("--worlds", default=",".join(WORLDS), help=f"comma-separated world presets (default {','.join(WORLDS)})")
    p.add_argument("--protocols", default="per_user,cold_tracks", help="comma-separated split protocols (default per_user,cold_tracks)")
    p.add_argument("--size", choices=["tiny", "demo", "bench"], default="demo")
    p.add_argument("--seed", type=int, default=0)
    _add_recipe_args(p, "metric_1vs4,dcue_1vs1")
    _add_feedback_args(p)
    p.set_defaults(func=cmd_robustness)

    p = sub.add_parser("demo", help="the main job: the TFX pipeline on the embedded default dataset (generated if missing)")
    _add_pipeline_args(p, default_config=_demo_config())
    p.add_argument("--size", choices=["tiny", "demo", "bench"], default="demo", help="size of the generated dataset")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="run the TFX pipeline locally (LocalDagRunner, SQLite MLMD, caching)")
    _add_pipeline_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("release", help="the weekly release job: embed new tracks with the pushed model, pick each "
                                       "track's users and every user's inbox; Parquet lists and a report")
    _add_pipeline_args(p, default_config=_demo_config())
    _add_release_args(p, tracks_required=True)
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("release-check", help="offline check of the release loop: hold back the newest tracks, train on "
                                             "the rest, release them, score the inboxes beside baselines")
    p.add_argument("--config", default=_demo_config(), help="training pipeline configuration (default: the demo's)")
    p.add_argument("--dataset", required=True, help="a plain-layout service with release dates (e.g. data/demo)")
    p.add_argument("--out", default="runs/release-check", help="output folder (default runs/release-check)")
    p.add_argument("--holdout", type=float, default=0.1, help="newest share of tracks held back (default 0.1)")
    _add_list_args(p, top_users=100, inbox=10)
    p.set_defaults(func=cmd_release_check, run_dir=None)
    _add_feedback_args(p)

    p = sub.add_parser("compile", help="compile the pipeline for Kubeflow Pipelines / Vertex AI (Kubeflow V2 JSON)")
    _add_pipeline_args(p)
    p.add_argument("--pipeline", choices=["training", "release"], default="training",
                   help="the training pipeline, or the release job (then give --tracks and the release options)")
    _add_release_args(p, tracks_required=False)
    p.add_argument("--target", choices=["kubeflow"], default="kubeflow")
    p.add_argument("--out", default="pipeline.json", help="output JSON file (default pipeline.json)")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("show-eval", help="print the TFMA metrics per slice of a run and write plots + HTML")
    p.add_argument("run", nargs="?", default="runs/demo", help="run folder (its latest evaluation) or an Evaluator output folder")
    p.add_argument("--out", help="where to write the plots and HTML (default RUN/evaluation)")
    p.set_defaults(func=cmd_show_eval)

    from musicrec.cli.genre import register as register_genre_eval
    from musicrec.serving.cli import register as register_serving

    register_serving(sub)  # export-serving, embed-track, recommend-users, serve-dev, build-scann-index
    register_genre_eval(sub)  # genre-eval
    return parser


def console_main() -> None:
    """The `musicrec` command (setup.py's entry point): `main`, then the process's exit."""
    from musicrec import storage

    storage.exit_process(main())


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    from musicrec.data.loading import DatasetError
    from musicrec.pipeline.runs import RunRecordError

    try:
        return args.func(args) or 0
    except (DatasetError, FileExistsError, ValueError, RunRecordError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # One line, no traceback; a pipeline run's next start marks the interrupted execution.
        print(f"Interrupted: musicrec {args.command} stopped", file=sys.stderr)
        return 130

