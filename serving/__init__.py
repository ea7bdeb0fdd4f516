"""TF Serving export, configuration, warm-up, clients and the cold-start recommender."""

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
