"""TF Serving export, configuration, warm-up, clients and the cold-start recommender (docs/serving.md).

  graphs        the serving graphs in core TF ops: track AE from audio, exact top-k over the UE table
  export        export_serving_models: the three TF Serving models, models.config, batching parameters
  warmup        TF Serving warm-up requests (PredictionLog records)
  repository    exported models loaded in-process, answering TF Serving's requests and errors
  rest          TF Serving's REST JSON encoding
  client        REST, gRPC and in-process clients; embed_track, recommend_users
  dev_server    development stand-in for TF Serving (REST + gRPC), not a replacement
  scann_index   optional ScaNN index over the UEs, in-process
  cli           the serving subcommands of `musicrec` (register)
"""

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# Where the pushed TF Serving base path is looked for by default (the CLI's --models):
# where `make demo` (pipeline/configs/demo.yaml) pushes.
DEFAULT_MODELS_DIR = "runs/demo/serving"
# The most bytes serve-dev takes in one REST body or gRPC message (the CLI's --max-request-bytes).
# 30 s of audio is about 14 MB as REST JSON (2.6 MB as a gRPC tensor); parsing JSON costs about
# ten times its size in memory, so this bounds one request to a few hundred MB.
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
