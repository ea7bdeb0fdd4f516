"""musicrec: cold-start music recommendation from audio anchored on user embeddings.

Dependencies are pinned in requirements/lock.txt (compiled from
requirements/base.in with `make lock`); `make` installs that lock first, so
install_requires below only states what the code imports, unpinned.
"""

from setuptools import find_packages, setup

setup(
    name="musicrec",
    version="0.1.0",
    description="Audio embeddings learned from user listening data for cold-start music recommendation (TFX).",
    python_requires=">=3.10,<3.11",
    packages=find_packages(include=["musicrec", "musicrec.*", "components", "components.*", "pipeline", "pipeline.*", "trainer", "trainer.*", "serving", "serving.*"]),
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
        "pipeline": ["configs/*.yaml"],
        "serving": ["*.yml", "*.yaml"],
    },
    entry_points={"console_scripts": ["musicrec=musicrec.cli:main"]},
)
