"""The musicrec TFX pipeline: one definition for the local runner and for Kubeflow / Vertex.

  AudioFeatures ─┐
                 ├─ ListeningDataGen ─ interactions ─ StatisticsGen ─ SchemaGen (or ImportSchemaGen)
                 │                         │                               │
                 │                         └──────────── ExampleValidator ─┴─ AnomaliesGate
                 │                                                                 │
                 │                         interactions ─ Transform (vocabularies, statistics)
                 │                   user_examples ─ Trainer (user branch, trainer.user_module)
                 └──── audio_pairs ─ AudioTrainer (audio branch, trainer.audio_module)
                                │    [AudioTrainer DCUE-1vs1 baseline | latest blessed model]
                                │    Evaluator (TFMA: test split, slices, thresholds -> blessing)
                                │    ServingPusher (blessed -> TF Serving base path)
                                └─── PractitionerBaselines (popularity, musicnn, metadata: same test pairs)
"""

from __future__ import annotations

import posixpath
from typing import List, Optional, Tuple

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import LatestBlessedModelStrategy

from musicrec.components.anomalies_gate import AnomaliesGate
from musicrec.components.audio_features.component import AudioFeatures
from musicrec.components.audio_trainer.component import AudioTrainer
from musicrec.components.listening_data.component import ListeningDataGen
from musicrec.components.listening_data.ingest import IngestionConfig
from musicrec.components.practitioner_baselines.component import PractitionerBaselines, baselines_config
from musicrec.components.serving_pusher.component import ServingPusher
from musicrec.data.audio_pairs import SplitConfig
from musicrec.pipeline.config import PipelineConfig, code_fingerprint
from musicrec.trainer.audio_branch import AudioBranchConfig
from musicrec.storage import absolute
from musicrec.names import SCORE_EXAMPLES_SIGNATURE

USER_RUN_FN = "musicrec.trainer.user_module.run_fn"
AUDIO_RUN_FN = "musicrec.trainer.audio_module.run_fn"
PREPROCESSING_FN = "musicrec.trainer.user_transform.preprocessing_fn"
BASELINE_VARIANT = "dcue_1vs1"
# Under the pipeline root: per-file musicnn features, kept across runs (keyed by file and model).
FEATURE_CACHE_DIR = "feature_cache"


def dataset_readers(config: PipelineConfig, code: str) -> Tuple[AudioFeatures, ListeningDataGen]:
    """The two components that read the dataset folder: audio features, then the listening data.

    Nothing here reads the dataset: their drivers fingerprint it at run time, so the pipeline
    builds and compiles where the data cannot be read (e.g. a gs:// folder from a laptop).
    """
    dataset_dir = absolute(config.dataset_dir)
    features = AudioFeatures(
        dataset_dir=dataset_dir, dataset_adapter=config.dataset_adapter, code_fingerprint=code,
        min_seconds=config.context_seconds, extra_front_ends=",".join(audio_front_ends(config)),
    ).with_beam_pipeline_args(config.audio_beam_args)  # added to the pipeline's beam_args
    ingestion = ListeningDataGen(
        dataset_dir=dataset_dir, dataset_adapter=config.dataset_adapter, code_fingerprint=code,
        ingestion_config=IngestionConfig(feedback=config.feedback, split=SplitConfig(protocol=config.split_protocol)).to_json(),
        context_seconds=config.context_seconds, log_mel_features=features.outputs["features"],
    )
    return features, ingestion


def audio_front_ends(config: PipelineConfig) -> List[str]:
    """The front ends the run's audio models read besides log-mels (the features must hold them)."""
    variants = [config.variant] + ([BASELINE_VARIANT] if config.baseline == "dcue" else [])
    return sorted({AudioBranchConfig.variant(v).front_end for v in variants} - {"log_mel"})


def create_pipeline(config: PipelineConfig, pipeline_root: Optional[str] = None,
                    metadata_connection_config=None) -> tfx.dsl.Pipeline:
    code = code_fingerprint()
    features, ingestion = dataset_readers(config, code)
    interactions = ingestion.outputs["interactions"]
    statistics = tfx.components.StatisticsGen(examples=interactions)
    if config.schema_file:
        schema = tfx.components.ImportSchemaGen(schema_file=absolute(config.schema_file))
    else:
        schema = tfx.components.SchemaGen(statistics=statistics.outputs["statistics"], infer_feature_shape=True)
    validator = tfx.components.ExampleValidator(statistics=statistics.outputs["statistics"], schema=schema.outputs["schema"])
    gate = AnomaliesGate(anomalies=validator.outputs["anomalies"])
    transform = tfx.components.Transform(
        examples=interactions, schema=schema.outputs["schema"], preprocessing_fn=PREPROCESSING_FN,
        splits_config=tfx.proto.SplitsConfig(analyze=["train"], transform=[]), materialize=False,
        disable_statistics=True, custom_config={"liked_events": list(config.liked_events), "code": code},
    )
    transform.add_upstream_node(gate)
    user_trainer = tfx.components.Trainer(
        run_fn=USER_RUN_FN, examples=ingestion.outputs["user_examples"], transform_graph=transform.outputs["transform_graph"],
        train_args=tfx.proto.TrainArgs(splits=["train"]), eval_args=tfx.proto.EvalArgs(splits=["eval"]),
        custom_config={"user_branch": {"epochs": config.user_epochs, "hidden_units": list(config.user_hidden),
                                       "ranking_max_users": config.user_ranking_max_users}, "code": code},
    ).with_id("UserTrainer")
    audio_trainer = _audio_trainer(config, ingestion, features, user_trainer, config.variant, code).with_id("AudioTrainer")
    components = [features, ingestion, statistics, schema, validator, gate, transform, user_trainer, audio_trainer]

    baseline_model = None
    if config.baseline == "dcue":
        baseline = _audio_trainer(config, ingestion, features, user_trainer, BASELINE_VARIANT, code).with_id("BaselineTrainer")
        components.append(baseline)
        baseline_model = baseline.outputs["model"]
    elif config.baseline == "latest_blessed":
        resolver = tfx.dsl.Resolver(
            strategy_class=LatestBlessedModelStrategy,
            model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
            model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
        ).with_id("LatestBlessedModelResolver")
        components.append(resolver)
        baseline_model = resolver.outputs["model"]
    evaluator = tfx.components.Evaluator(
        examples=ingestion.outputs["audio_pairs"], model=audio_trainer.outputs["model"], baseline_model=baseline_model,
        eval_config=eval_config(config), example_splits=["test"],
    )
    pusher = ServingPusher(
        audio_model=audio_trainer.outputs["model"], user_model=user_trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"], serving_base_path=str(config.serving_path), code_fingerprint=code,
    )
    components += [evaluator, pusher]
    if config.practitioner_baselines:
        components.append(PractitionerBaselines(
            dataset_dir=absolute(config.dataset_dir), dataset_adapter=config.dataset_adapter,
            baselines_config=baselines_config(config.practitioner_baselines, config.metadata_columns),
            feature_cache_dir=posixpath.join(pipeline_root or str(config.pipeline_root), FEATURE_CACHE_DIR),
            code_fingerprint=code, audio_pairs=ingestion.outputs["audio_pairs"], audio_features=features.outputs["features"],
        ))
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=pipeline_root or str(config.pipeline_root),
        components=components,
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(config.beam_args),
    )


def _audio_trainer(config: PipelineConfig, ingestion, features, user_trainer, variant: str, code: str) -> AudioTrainer:
    branch = {"variant": variant, "context_seconds": config.context_seconds, "epochs": config.audio_epochs,
              "steps_per_epoch": config.audio_steps_per_epoch, "log_mel_memory_mb": config.audio_memory_mb}
    if config.negatives is not None and variant != BASELINE_VARIANT:
        branch["negatives"] = config.negatives
    return AudioTrainer(
        examples=ingestion.outputs["audio_pairs"], log_mel_features=features.outputs["features"],
        base_model=user_trainer.outputs["model"], run_fn=AUDIO_RUN_FN, custom_config={"audio_branch": branch, "code": code},
    )


def eval_config(config: PipelineConfig) -> tfma.EvalConfig:
    """TFMA: liked/disliked prediction on the test pairs, overall and per slice; AUC thresholds."""
    auc_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": config.min_auc}),
    )
    if config.baseline != "none":
        auc_threshold.change_threshold.CopyFrom(tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": config.min_auc_gain},
        ))
    # The thresholds decide on the whole test split; per-slice figures are reported, not gated
    # (a small slice's AUC moves by chance, and TFMA would otherwise apply them to every slice).
    overall_auc = tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=auc_threshold)
    metrics = [
        tfma.MetricConfig(class_name="ExampleCount"),
        tfma.MetricConfig(class_name="AUC", per_slice_thresholds=[overall_auc]),
        tfma.MetricConfig(class_name="Precision"),
        tfma.MetricConfig(class_name="Recall"),
        tfma.MetricConfig(class_name="BinaryAccuracy"),
        tfma.MetricConfig(class_name="Calibration"),
        tfma.MetricConfig(class_name="MeanLabel"),
        tfma.MetricConfig(class_name="MeanPrediction"),
        tfma.MetricConfig(class_name="CalibrationPlot"),
        tfma.MetricConfig(class_name="ConfusionMatrixPlot"),
    ]
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name=SCORE_EXAMPLES_SIGNATURE, label_key="label", prediction_key="probability")],
        slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[name]) for name in config.slices],
        metrics_specs=[tfma.MetricsSpec(metrics=metrics)],
    )
