"""Serving subcommands of `musicrec`; `register(subparsers)` adds them to the main parser.

  export-serving      write the three TF Serving models, models.config and batching parameters
  embed-track FILE    the track's AE (against a server, or in-process from the pushed models)
  recommend-users FILE --top 100   the users closest to a new track
  serve-dev           development stand-in for TF Serving (REST + gRPC), NOT a replacement
  build-scann-index   optional ScaNN index over the pushed UE table, for recommend-users --scann-index
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from musicrec.serving import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MODELS_DIR

SERVE_DEV_HELP = ("development stand-in for TF Serving (REST :predict/status/metadata + gRPC PredictionService) over "
                  "the pushed models; NOT a replacement for TF Serving: no batching, reloading or monitoring")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number; got {text}")
    return value


def _fail(message: str) -> int:
    print(f"ERROR: {message}", file=sys.stderr)
    return 2


def _serving_call(fn):
    """Runs fn(args), turning serving and audio errors into one clear line and exit status 2."""

    def run(args):
        from musicrec.audio.decode import AudioError
        from musicrec.serving.repository import ServingError

        try:
            return fn(args)
        except ServingError as e:
            return _fail(f"{e.code}: {e.message}")
        except (AudioError, FileNotFoundError, ValueError) as e:
            return _fail(str(e))
        except ImportError as e:  # the optional ScaNN package is not installed
            return _fail(f"{e}; ScaNN is optional: `pip install scann==1.3.*` to use --scann-index / build-scann-index")

    return run


def cmd_export_serving(args):
    from musicrec.audio.front_ends import front_end
    from musicrec.serving.export import export_serving_models, next_version
    from musicrec.trainer.audio_export import audio_model_front_end

    version = args.version or next_version(args.out)
    name = audio_model_front_end(args.audio_encoder)
    dirs = export_serving_models(
        args.audio_encoder, f"{args.user_branch}/user_tower", f"{args.user_branch}/user_embeddings.parquet", args.out,
        version, front_end(name).num_frames(args.context_seconds), args.max_k, args.container_base_path, name)
    for name, path in dirs.items():
        print(f"{name}: {path}")
    print(f"models.config and batching_parameters.txt written to {args.out}")


def cmd_embed_track(args):
    from musicrec.serving.client import connect, embed_track

    embedding = embed_track(connect(args.server, args.models), args.file)
    print(json.dumps({"file": args.file, "audio_embedding": [round(float(v), 6) for v in embedding]}))


def cmd_recommend_users(args):
    from musicrec.serving.client import connect, embed_track, recommend_users

    client = connect(args.server, args.models)
    if args.scann_index:
        from musicrec.serving.scann_index import ScannUserIndex

        users = ScannUserIndex.load(args.scann_index).recommend(embed_track(client, args.file), args.top)
    else:
        users = recommend_users(client, args.file, args.top)
    if len(users) < args.top:
        print(f"note: the recommender holds {len(users)} users; all {len(users)} are listed (--top asked for {args.top})",
              file=sys.stderr)
    if args.json:
        print(json.dumps([{"rank": i + 1, "user_id": u, "score": s} for i, (u, s) in enumerate(users)]))
        return
    print(f"{'rank':>4}  {'user_id':<20} cosine")
    for rank, (user, score) in enumerate(users, 1):
        print(f"{rank:>4}  {user:<20} {score:.4f}")


def cmd_serve_dev(args):
    from musicrec.serving.dev_server import STAND_IN_NOTICE, serve
    from musicrec.serving.repository import ModelRepository

    repository = ModelRepository(args.models)
    server = serve(repository, args.host, args.rest_port, args.grpc_port, args.max_request_bytes)
    print(f"musicrec serve-dev: {STAND_IN_NOTICE}.")
    for name, model in repository.models.items():
        print(f"  {name} version {model.version} ({model.path})")
    print(f"REST on http://{args.host}:{server.rest_port}, gRPC on {args.host}:{server.grpc_port}; Ctrl-C stops.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


def cmd_build_scann_index(args):
    from musicrec.serving.scann_index import ScannUserIndex, recommender_table

    user_ids, vectors = recommender_table(args.models)
    path = ScannUserIndex.build(user_ids, vectors, k=args.top).save(args.out)
    print(f"ScaNN index over {len(user_ids)} users written to {path}")


def register(subparsers) -> None:
    p = subparsers.add_parser("export-serving", help="write the TF Serving models (audio_embedder, user_embedder, "
                                                     "cold_start_recommender), models.config and batching parameters")
    p.add_argument("--audio-encoder", required=True, help="the audio branch's audio_encoder SavedModel")
    p.add_argument("--user-branch", required=True, help="the user branch's model folder (user_tower/, user_embeddings.parquet)")
    p.add_argument("--out", default=DEFAULT_MODELS_DIR, help=f"TF Serving base path (default {DEFAULT_MODELS_DIR})")
    p.add_argument("--version", type=int, help="model version (default: one more than the highest under --out)")
    p.add_argument("--context-seconds", type=float, default=3.0, help="the encoder's context duration (default 3)")
    p.add_argument("--max-k", type=int, default=1000, help="most users one request may ask for (default 1000)")
    p.add_argument("--container-base-path", default="/models", help="where the serving container mounts --out (default /models)")
    p.set_defaults(func=_serving_call(cmd_export_serving))

    for name, fn, text in (("embed-track", cmd_embed_track, "print a track's audio embedding (AE) as JSON"),
                           ("recommend-users", cmd_recommend_users, "the users who should hear a new track, best first")):
        p = subparsers.add_parser(name, help=text)
        p.add_argument("file", help="audio file (wav, flac, ogg or mp3; any rate, mono or stereo)")
        p.add_argument("--server", help="TF Serving: http://host:8501 (REST) or grpc://host:8500; default: in-process")
        p.add_argument("--models", default=DEFAULT_MODELS_DIR, help=f"pushed models for in-process use (default {DEFAULT_MODELS_DIR})")
        if name == "recommend-users":
            p.add_argument("--top", type=int, default=100, help="how many users (default 100)")
            p.add_argument("--json", action="store_true", help="print JSON instead of a table")
            p.add_argument("--scann-index", help="rank with this ScaNN index (build-scann-index) instead of exact brute force")
        p.set_defaults(func=_serving_call(fn))

    p = subparsers.add_parser("serve-dev", help=SERVE_DEV_HELP, description=SERVE_DEV_HELP + ".")
    p.add_argument("--models", default=DEFAULT_MODELS_DIR, help=f"TF Serving base path (default {DEFAULT_MODELS_DIR})")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--rest-port", type=int, default=8501)
    p.add_argument("--grpc-port", type=int, default=8500)
    p.add_argument("--max-request-bytes", type=_positive_int, default=DEFAULT_MAX_REQUEST_BYTES,
                   help="REST bodies and gRPC messages over this size are refused (HTTP 413, gRPC RESOURCE_EXHAUSTED); "
                        f"default {DEFAULT_MAX_REQUEST_BYTES} (32 MiB: 30 s of audio is about 14 MB of JSON)")
    p.set_defaults(func=_serving_call(cmd_serve_dev))

    p = subparsers.add_parser("build-scann-index", help="optional ScaNN index over the pushed UE table (in-process only)")
    p.add_argument("--models", default=DEFAULT_MODELS_DIR)
    p.add_argument("--out", required=True, help="index folder")
    p.add_argument("--top", type=int, default=100, help="the k the index is tuned for (default 100)")
    p.set_defaults(func=_serving_call(cmd_build_scann_index))
