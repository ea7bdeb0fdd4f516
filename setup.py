"""musicrec: cold-start music recommendation from audio anchored on user embeddings.

Dependencies are pinned in requirements/lock.txt (compiled from
requirements/base.in with `make lock`); `make` installs that lock first, so
install_requires below only states what the code imports, unpinned.
"""

from setuptools import find_packages, setup

# The pipeline's layers keep their top-level folders (pipeline/, components/, trainer/, serving/:
# the layout TFX templates use) but install and import under the `musicrec.` namespace, so that
# nothing generic (a `trainer` or `pipeline` package) lands in site-packages, and TFX resolves
# module paths such as `musicrec.trainer.user_module.run_fn` unambiguously in shared containers.
LAYERS = ("pipeline", "components", "trainer", "serving")
PACKAGE_DIR = {f"musicrec.{layer}": layer for layer in LAYERS}
PACKAGES = find_packages(include=["musicrec", "musicrec.*"]) + [
    f"musicrec.{layer}{'.' + sub if sub else ''}" for layer in LAYERS for sub in [""] + find_packages(layer)
]

setup(
    name="musicrec",
    version="0.1.0",
    description="Audio embeddings learned from user listening data for cold-start music recommendation (TFX).",
    python_requires=">=3.10,<3.11",
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    install_requires=[
        "tfx",
        "tensorflow",
        "tf-keras",
        "tensorflow-recommenders",
        "tensorflow-io",
        "apache-beam",
        "scikit-learn",
        "soundfile",
        "soxr",
        "pretty-midi",
        "pandas",
        "pyarrow",
        "pyyaml",
        "tqdm",
        "matplotlib",
        "librosa",  # musicnn's front end (genre-eval); also the log-mel reference in tests
        "tensorflow-serving-api",
        "tensorflow-model-analysis",
        "tensorflow-transform",
        "kfp",
    ],
    # ScaNN is optional (in-process approximate search for large user bases); the lock installs it.
    extras_require={"test": ["pytest", "pytest-timeout"], "scann": ["scann"]},
    package_data={
        "musicrec.genre": ["splits/gtzan/*.txt", "splits/gtzan/README.md"],
        "musicrec.pipeline": ["configs/*.yaml"],
        "musicrec.serving": ["*.yml", "*.yaml"],
    },
    entry_points={"console_scripts": ["musicrec=musicrec.cli:console_main"]},
)
