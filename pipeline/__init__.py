"""Pipeline definitions, configuration and runners of musicrec."""

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
