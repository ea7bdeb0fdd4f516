"""Model code run by TFX's Trainer (`run_fn`): the user branch and the audio branch.

Nothing here knows about pipelines; every module is also callable directly.
"""

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
