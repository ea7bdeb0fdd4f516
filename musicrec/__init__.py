"""musicrec: cold-start music recommendation from audio, anchored on user embeddings.

Importing this package prepares the process for the TFX 1.16 stack: TFRS, TFT
and TFMA are Keras 2 libraries, so `TF_USE_LEGACY_KERAS=1` must be set before
TensorFlow is first imported. Every package of the project imports `musicrec`
first, so no user has to remember the variable.
"""

import os
import sys
import warnings

__version__ = "0.1.0"

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    warnings.warn(
        "TensorFlow was imported before musicrec with TF_USE_LEGACY_KERAS unset; "
        "tf.keras will be Keras 3, which TFRS/TFT/TFMA do not support. Import "
        "musicrec first or export TF_USE_LEGACY_KERAS=1.",
        RuntimeWarning,
        stacklevel=2,
    )
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ start-up chatter (CUDA plugin registration on CPU machines)
# hides the progress lines users need; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# google-api-core warns on every import that Python 3.10 support is ending;
# TFX 1.16 requires 3.10, so the warning is noise for our users.
warnings.filterwarnings("ignore", message=".*non-supported Python version.*", category=FutureWarning)
