"""AudioTrainer: TFX's Trainer (same spec, same GenericExecutor) plus the log-mel features input.

The stock Trainer takes one Examples channel, so the audio branch's other
inputs would otherwise travel as file paths in `custom_config`. Here they are
artifacts: `log_mel_features` (the audio feature component's output) and
`base_model` (the user-branch Trainer's model, whose user tower embeds the
users). The executor adds their locations to `custom_config` before calling
the `run_fn`, which is `musicrec.trainer.audio_module.run_fn`.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from tfx.components.trainer import executor as trainer_executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.proto import trainer_pb2
from tfx.types import Channel, artifact_utils, standard_artifacts
from tfx.types import standard_component_specs as specs
from tfx.types.component_spec import ChannelParameter

from musicrec.components.artifacts import LogMelFeatures

LOG_MEL_FEATURES_KEY = "log_mel_features"
# Split of the audio pair examples holding each user's query (history outside evaluated pairs).
USER_QUERIES_SPLIT = "user_queries"


class AudioTrainerSpec(specs.TrainerSpec):
    INPUTS = {**specs.TrainerSpec.INPUTS, LOG_MEL_FEATURES_KEY: ChannelParameter(type=LogMelFeatures)}


class AudioTrainerExecutor(trainer_executor.GenericExecutor):
    def _GetFnArgs(self, input_dict: Dict[str, List], output_dict: Dict[str, List], exec_properties: Dict[str, Any]):
        fn_args = super()._GetFnArgs(input_dict, output_dict, exec_properties)
        examples = input_dict[specs.EXAMPLES_KEY]
        fn_args.custom_config = {
            **(fn_args.custom_config or {}),
            "log_mel_uri": artifact_utils.get_single_uri(input_dict[LOG_MEL_FEATURES_KEY]),
            "user_queries_uri": artifact_utils.get_split_uri(examples, USER_QUERIES_SPLIT),
        }
        return fn_args


class AudioTrainer(base_component.BaseComponent):
    SPEC_CLASS = AudioTrainerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(AudioTrainerExecutor)

    def __init__(self, examples, log_mel_features, base_model, run_fn: str,
                 custom_config: Optional[Dict[str, Any]] = None,
                 train_args: Optional[trainer_pb2.TrainArgs] = None,
                 eval_args: Optional[trainer_pb2.EvalArgs] = None):
        spec = AudioTrainerSpec(
            examples=examples,
            log_mel_features=log_mel_features,
            base_model=base_model,
            run_fn=run_fn,
            custom_config=json.dumps(custom_config or {}, sort_keys=True),
            train_args=train_args or trainer_pb2.TrainArgs(splits=["train"]),
            eval_args=eval_args or trainer_pb2.EvalArgs(splits=["eval"]),
            model=Channel(type=standard_artifacts.Model),
            model_run=Channel(type=standard_artifacts.ModelRun),
        )
        super().__init__(spec=spec)


