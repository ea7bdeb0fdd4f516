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
# Prefix of progress lines logged inside Beam workers, which the CLI keeps when
# it filters Beam's own relayed worker logs.
LOG_TAG = "[musicrec]"

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    warnings.warn(
        "TensorFlow was imported before musicrec with TF_USE_LEGACY_KERAS unset; "
        "tf.keras will be Keras 3, which TFRS/TFT/TFMA do not support. Import "
        "musicrec first or export TF_USE_LEGACY_KERAS=1.",
        RuntimeWarning,
        stacklevel=2,
    )
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ start-up chatter (CUDA plugin "errors" logged on every
# import on CPU machines) hides the progress lines users need. Real failures
# still surface as Python exceptions; export TF_CPP_MIN_LOG_LEVEL=0 to see all.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# google-api-core warns on every import that Python 3.10 support is ending;
# TFX 1.16 requires 3.10, so the warning is noise for our users.
_PY310_NOTICE = "You are using a non-supported Python version"
warnings.filterwarnings("ignore", message=_PY310_NOTICE, category=FutureWarning)
# The same for Beam's worker processes, which import google libraries before ours.
if _PY310_NOTICE not in os.environ.get("PYTHONWARNINGS", ""):
    os.environ["PYTHONWARNINGS"] = ",".join(
        filter(None, [os.environ.get("PYTHONWARNINGS"), f"ignore:{_PY310_NOTICE}:FutureWarning"])
    )
