"""The audio AUC by user model (trainer/user_audio_auc.py) on the tiny dataset."""

from musicrec.data.audio_pairs import build_audio_pairs
from musicrec.data.loading import load_dataset
from musicrec.trainer.audio_branch import AudioBranchConfig
from musicrec.trainer.retrieval_eval import MF, TWO_TOWER
from musicrec.trainer.user_audio_auc import audio_auc_by_user_model, format_report, without_evaluated_pairs
from musicrec.trainer.user_config import UserBranchConfig


def _pair_keys(frame):
    return set(zip(frame["user_id"], frame["track_id"]))


def test_user_models_never_train_on_the_audio_pairs_they_are_judged_on(tiny_dataset, tiny_log_mels):
    dataset = load_dataset(tiny_dataset)
    pairs = build_audio_pairs(dataset.interactions, dataset.users["user_id"], tiny_log_mels.usable(130))
    kept = without_evaluated_pairs(dataset, pairs).interactions
    evaluated = _pair_keys(pairs.pairs[pairs.pairs["split"] != "train"])
    assert evaluated and not _pair_keys(kept) & evaluated
    dropped = sum(key in evaluated for key in zip(dataset.interactions["user_id"], dataset.interactions["track_id"]))
    assert len(kept) == len(dataset.interactions) - dropped
    assert _pair_keys(pairs.split("train")) <= _pair_keys(kept)


def test_each_user_models_ues_are_judged_on_the_same_audio_pairs(tiny_dataset, tiny_log_mels):
    audio = AudioBranchConfig.variant("metric_1vs4", epochs=1, steps_per_epoch=1)
    user = UserBranchConfig(epochs=2, early_stopping_patience=0)
    report = audio_auc_by_user_model(load_dataset(tiny_dataset), tiny_log_mels, audio, user, queries=("history", "user_id"))
    models = report["user_models"]
    assert set(models) == {TWO_TOWER, MF}
    assert len({groups["all"]["test_pairs"] for groups in models.values()}) == 1
    for groups in models.values():
        assert groups["seen"]["test_pairs"] + groups["new"]["test_pairs"] == groups["all"]["test_pairs"] > 0
        assert groups["seen"]["test_pairs"] > 0 and groups["new"]["test_pairs"] > 0
        assert 0.0 <= groups["all"]["auc"] <= 1.0 and 0.0 <= groups["seen"]["auc"] <= 1.0
    assert f"| {TWO_TOWER} | " in format_report(report)
