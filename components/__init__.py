"""Custom TFX components of the musicrec pipeline (component spec + executor + Beam transforms)."""

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
