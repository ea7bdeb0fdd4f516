"""The audio AUC each user model's UEs give: the user branch judged by what the audio branch
does with its user embeddings (issue 12 item 5).

For one dataset: the audio pairs are split first; every user model (the history +
demographics two-tower, the hybrid, the user-id MF) is trained on the interactions outside
the audio validation and test pairs (an id embedding would otherwise have memorised the very
(user, track) pairs it is judged on, which no history filter can take back out); each
audio-branch user is embedded from their liked tracks outside those pairs, and their id;
the same audio-branch variant is trained on each model's UEs and scored on the same test
pairs. AUC is given for every user, and apart for the users the user branch trained on
(seen) and its held-out new users (new: an id model gives them its OOV row).

    python -m musicrec.trainer.user_audio_auc DATASET --features LOG_MEL_DIR [--out report.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pathlib
from typing import Dict, Iterable, Optional, Sequence

import musicrec
import numpy as np

from musicrec.data.audio_pairs import AudioPairs, SplitConfig, build_audio_pairs, user_queries
from musicrec.data.contract import FeedbackConfig
from musicrec.data.loading import Dataset, load_dataset
from musicrec.data.user_examples import build_user_examples
from musicrec.trainer.audio_branch import AudioBranchConfig
from musicrec.trainer.audio_data import UserVectors
from musicrec.trainer.audio_evaluation import evaluate_liked_disliked, track_embeddings
from musicrec.trainer.log_mel_shards import LogMels, open_log_mels
from musicrec.trainer.audio_training import train_audio_branch
from musicrec.trainer.retrieval_eval import MODEL_NAMES
from musicrec.trainer.user_config import QUERIES, UserBranchConfig
from musicrec.trainer.user_training import train_user_branch

GROUPS = ("all", "seen", "new")


def without_evaluated_pairs(dataset: Dataset, pairs: AudioPairs) -> Dataset:
    """The dataset less every interaction of a (user, track) pair in the audio validation or test split."""
    evaluated = pairs.pairs.loc[pairs.pairs["split"] != "train", ["user_id", "track_id"]].drop_duplicates()
    marked = dataset.interactions.merge(evaluated, on=["user_id", "track_id"], how="left", indicator=True)
    kept = (marked["_merge"] == "left_only").to_numpy()
    return dataclasses.replace(dataset, interactions=dataset.interactions[kept].reset_index(drop=True))


def _group_auc(trained_audio, pairs: AudioPairs, users: Iterable[str], store: LogMels,
               track_ae: np.ndarray) -> Dict[str, Optional[float]]:
    """AUC and test pairs of the users in `users`; AUC None when their test or validation pairs lack a label."""
    members = pairs.pairs[pairs.pairs["user_id"].isin(set(users))]
    group = AudioPairs(pairs=members.reset_index(drop=True), excluded=pairs.excluded)
    for split in ("validation", "test"):
        if group.split(split)["label"].nunique() < 2:
            return {"auc": None, "test_pairs": int(len(group.split("test")))}
    metrics = evaluate_liked_disliked(trained_audio, group, store, track_ae=track_ae)
    return {"auc": metrics["auc"], "test_pairs": metrics["test_pairs"]}


def audio_auc_by_user_model(dataset: Dataset, store: LogMels, audio: AudioBranchConfig,
                            user: UserBranchConfig = UserBranchConfig(), queries: Sequence[str] = QUERIES,
                            feedback: FeedbackConfig = FeedbackConfig(), split: SplitConfig = SplitConfig()) -> dict:
    """{user model name: {"all" | "seen" | "new": {"auc", "test_pairs"}}}, plus the split's summary."""
    pairs = build_audio_pairs(dataset.interactions, dataset.users["user_id"], store.usable(audio.context_frames), feedback, split)
    user_data = build_user_examples(without_evaluated_pairs(dataset, pairs), feedback)
    audio_users = user_queries(dataset, pairs, feedback)
    ids = audio_users.columns["user_id"].astype(str)
    seen = set(user_data.train.columns["user_id"].astype(str))
    groups = {"all": ids, "seen": [u for u in ids if u in seen], "new": [u for u in ids if u not in seen]}
    results = {}
    for query in queries:
        name = MODEL_NAMES[query]
        logging.info("%s audio AUC by user model: %s", musicrec.LOG_TAG, name)
        trained_users = train_user_branch(user_data, dataclasses.replace(user, query=query), verbose=0)
        vectors = UserVectors(ids, trained_users.user_embeddings(audio_users))
        trained_audio = train_audio_branch(pairs, store, vectors, audio)
        track_ae = track_embeddings(trained_audio.model.encoder, store, audio.context_frames)
        results[name] = {group: _group_auc(trained_audio, pairs, members, store, track_ae) for group, members in groups.items()}
    return {"split": pairs.summary(), "variant": dataclasses.asdict(audio), "user_models": results}


def format_report(report: dict) -> str:
    lines = ["| user model | audio AUC, all users | seen by the user branch | new to it |", "|---|---|---|---|"]
    for name, groups in report["user_models"].items():
        cells = ["n/a" if groups[g]["auc"] is None else f"{groups[g]['auc']:.3f} ({groups[g]['test_pairs']} pairs)"
                 for g in GROUPS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m musicrec.trainer.user_audio_auc", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help="plain-layout dataset folder")
    parser.add_argument("--features", required=True, help="folder of log-mel TFRecords (`musicrec extract-features`)")
    parser.add_argument("--variant", default="metric_1vs4", help="audio-branch variant (default metric_1vs4)")
    parser.add_argument("--epochs", type=int, default=10, help="audio-branch epochs (default 10)")
    parser.add_argument("--steps-per-epoch", type=int, default=150, help="audio-branch steps per epoch (default 150)")
    parser.add_argument("--queries", default=",".join(QUERIES), help=f"user models, of {', '.join(QUERIES)}")
    parser.add_argument("--protocol", default="per_user", help="audio split protocol (default per_user)")
    parser.add_argument("--out", help="write the report as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    audio = AudioBranchConfig.variant(args.variant, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch)
    store = open_log_mels([str(pathlib.Path(args.features) / "log_mel-*")], audio.log_mel_memory_mb)
    report = audio_auc_by_user_model(load_dataset(args.dataset), store, audio, queries=args.queries.split(","),
                                     split=SplitConfig(args.protocol))
    print(format_report(report))
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
