"""The pipeline's configuration: one YAML file, every field documented here with its default.

    musicrec run --config pipeline/configs/demo.yaml

Relative paths are taken from the current directory. Unknown keys are an
error (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
from typing import Any, Dict, List, Optional

import yaml

from musicrec.data.contract import FeedbackConfig
from musicrec.pipeline.runs import METADATA_FILE
from musicrec.storage import absolute
from musicrec.trainer.audio_branch import VARIANTS
from musicrec.trainer.practitioner_baselines import BASELINES as PRACTITIONER_BASELINES, check_baseline_names

BASELINES = ("dcue", "latest_blessed", "none")


@dataclasses.dataclass
class PipelineConfig:
    # --- data -----------------------------------------------------------
    dataset_dir: str = "data/demo"  # a plain-layout dataset folder (see musicrec.data.contract)
    # How the folder is read: "plain", or your own adapter "package.module:function"
    # returning a musicrec.data.loading.Dataset (see musicrec.data.adapters).
    dataset_adapter: str = "plain"
    # Split protocol of the audio pairs: per_user (the paper's), users, cold_tracks.
    split_protocol: str = "per_user"
    liked_events: List[str] = dataclasses.field(default_factory=lambda: list(FeedbackConfig.liked_events))
    disliked_events: List[str] = dataclasses.field(default_factory=lambda: list(FeedbackConfig.disliked_events))
    min_liked: int = 10  # users with fewer liked / disliked tracks leave the audio branch (counted)
    min_disliked: int = 10
    # A curated schema (schema.pbtxt) to validate against; empty: SchemaGen infers one from
    # this run's data (then pin it: `musicrec run` prints where it is).
    schema_file: Optional[str] = None

    # --- models ---------------------------------------------------------
    variant: str = "metric_1vs4"  # the audio-branch model (trainer.audio_branch.VARIANTS)
    context_seconds: float = 3.0  # audio segment length; shorter audio is quarantined
    negatives: Optional[int] = None  # disliked tracks per liked one; empty: the variant's own
    audio_epochs: int = 10
    audio_steps_per_epoch: Optional[int] = 150  # empty: one pass over the training triplets
    # Log-mels up to this size train in memory; larger ones are read from their shards in blocks
    # of this size (negatives then come from the liked track's block).
    audio_memory_mb: float = 4096.0
    user_epochs: int = 40  # the most; early stopping on validation recall@10 picks the number
    user_hidden: List[int] = dataclasses.field(default_factory=lambda: [128, 64])
    # Rank a seeded sample of this many users in the user branch's ranking metrics (early stopping
    # and report) instead of every user: for services with millions of users. Empty: every user.
    user_ranking_max_users: Optional[int] = None

    # --- evaluation and blessing (TFMA) ---------------------------------
    # The model is blessed only if its test AUC (all test pairs) >= min_auc and, against the
    # baseline, AUC - baseline AUC >= min_auc_gain. Slices are reported, not gated. baseline: dcue (train DCUE-1vs1 on the same data,
    # the paper's baseline), latest_blessed (the last blessed model; none on a first run),
    # or none (value threshold only).
    baseline: str = "dcue"
    min_auc: float = 0.6
    min_auc_gain: float = 0.0
    slices: List[str] = dataclasses.field(default_factory=lambda: ["gender", "age_bucket", "country", "popularity_bucket", "genre"])
    # Practitioner baselines reported beside the audio models on the same test pairs, pooled and
    # per user (PractitionerBaselines component; reported, not gated): popularity (training likes;
    # n/a under cold_tracks), musicnn (MSD max_pool features + per-user logistic regression, C by
    # per-user CV; the features are cached under <pipeline root>/feature_cache), metadata (one-hot
    # of each metadata_columns track column + per-user LR; a column the tracks table lacks is
    # reported as not applicable). Empty: no baselines.
    practitioner_baselines: List[str] = dataclasses.field(default_factory=lambda: list(PRACTITIONER_BASELINES))
    metadata_columns: List[str] = dataclasses.field(default_factory=lambda: ["genre"])

    # --- where things go --------------------------------------------------
    pipeline_name: str = "musicrec"
    run_dir: str = "runs/pipeline"  # metadata.sqlite (MLMD), and by default the pipeline root and serving models
    # Where the artifacts go: a local folder or a bucket (gs://, s3://); empty: <run_dir>/pipeline_root.
    pipeline_root_uri: Optional[str] = None
    serving_base_path: Optional[str] = None  # TF Serving model base path; empty: <run_dir>/serving
    enable_cache: bool = True

    # --- Beam -----------------------------------------------------------------
    # Args for every Beam-based component (StatisticsGen, Transform, Evaluator, ...), e.g.
    # ["--runner=DataflowRunner", "--project=P", "--region=R", "--temp_location=gs://B/tmp"]
    # or ["--runner=FlinkRunner", "--flink_master=HOST:8081", "--environment_type=EXTERNAL"].
    beam_args: List[str] = dataclasses.field(default_factory=lambda: ["--direct_running_mode=in_memory"])
    # Extra args for the audio feature component only (decoding dominates: use every core).
    audio_beam_args: List[str] = dataclasses.field(
        default_factory=lambda: ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    )

    # --- Kubeflow / Vertex (musicrec compile) ------------------------------------
    # The project's container image (the Dockerfile: `make image IMAGE=REGISTRY/musicrec:TAG`, then
    # push it); give the Dataflow workers the same one (--sdk_container_image in beam_args).
    image: str = "musicrec:latest"
    remote_pipeline_root: str = "gs://YOUR_BUCKET/musicrec"

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, not {self.variant!r}")
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, not {self.baseline!r}")
        check_baseline_names(self.practitioner_baselines)
        FeedbackConfig(liked_events=tuple(self.liked_events), disliked_events=tuple(self.disliked_events))

    @classmethod
    def from_yaml(cls, path) -> "PipelineConfig":
        raw = yaml.safe_load(pathlib.Path(path).read_text()) or {}
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> "PipelineConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown configuration keys {unknown}; known keys: {sorted(known)}")
        return cls(**raw)

    @property
    def pipeline_root(self) -> str:
        """The artifacts' root: a local folder made absolute, or a URI (gs://, s3://) as given."""
        return absolute(self.pipeline_root_uri or pathlib.Path(self.run_dir) / "pipeline_root")

    @property
    def metadata_path(self) -> pathlib.Path:
        return pathlib.Path(self.run_dir).resolve() / METADATA_FILE

    @property
    def serving_path(self) -> str:
        """The serving base path: a local folder made absolute, or a URI (gs://, s3://) as given."""
        return absolute(self.serving_base_path or pathlib.Path(self.run_dir) / "serving")

    @property
    def feedback(self) -> FeedbackConfig:
        return FeedbackConfig(
            liked_events=tuple(self.liked_events), disliked_events=tuple(self.disliked_events),
            min_liked=self.min_liked, min_disliked=self.min_disliked,
        )


# The packages whose code the components run: a change to any of them reruns the pipeline
# (TFX's cache key covers parameters and inputs, not code imported by module path).
COMPONENT_CODE = ("musicrec", "components", "trainer", "serving")


def code_fingerprint() -> str:
    """A digest of the source of the packages the components run."""
    root = pathlib.Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for package in COMPONENT_CODE:
        for source in sorted((root / package).rglob("*.py")):
            digest.update(str(source.relative_to(root)).encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:16]
