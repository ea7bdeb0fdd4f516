"""`musicrec robustness`: one recipe measured on several generated worlds and split protocols.

A recipe fitted to one simulated service fits its quirks, so every modelling
choice is measured on each world preset (`musicrec generate-demo --world`)
under the per_user and the cold_tracks protocols, beside the practitioner
baselines (popularity, musicnn features + per-user logistic regression, a
genre one-hot profile) and the oracle, on the same split and test pairs. Each
(world, protocol) cell is one `reproduce-table1` run; log-mel features, the
user tower and the baselines' musicnn features are computed once per world and
shared by its protocols; a cell already measured with the same recipe is read
back, so an interrupted campaign resumes where it stopped. The acceptance bar of every cell: the chosen default
beats every applicable baseline by at least 0.02 pooled AUC and reaches at
least 85% of the oracle's margin over 0.5.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from typing import Dict, List, Optional, Sequence, Tuple

from musicrec.data.contract import FeedbackConfig
from musicrec.pipeline.table1 import Table1Config, reproduce_table1
from musicrec.simulation.generator import generate_demo, is_generated
from musicrec.simulation.worlds import WORLDS
from musicrec.trainer.audio_branch import VARIANT_NAMES

PROTOCOLS = ("per_user", "cold_tracks")
BASELINE_MARGIN = 0.02  # pooled AUC the default must gain over every applicable baseline
ORACLE_SHARE = 0.85  # share of the oracle's margin over 0.5 the default must reach


@dataclasses.dataclass(frozen=True)
class RobustnessConfig:
    worlds: Tuple[str, ...] = tuple(WORLDS)
    protocols: Tuple[str, ...] = PROTOCOLS
    size: str = "demo"
    seed: int = 0
    # The recipe: its rows (variant, context seconds) and training options; the first row is the
    # candidate default the acceptance bar is checked for.
    table1: Table1Config = Table1Config(rows=(("metric_1vs4", 3.0), ("dcue_1vs1", 3.0)))


def world_dataset(datasets_dir: pathlib.Path, world: str, size: str, seed: int) -> pathlib.Path:
    """The generated dataset of `world`, generated first unless a matching one is there."""
    path = datasets_dir / world
    if not is_generated(path, size, seed, world):
        logging.info("generating world %s (%s, seed %d) into %s", world, size, seed, path)
        generate_demo(path, size=size, seed=seed, world=world, overwrite=True)
    return path


def run_robustness(out_dir, config: RobustnessConfig = RobustnessConfig(), datasets_dir=None,
                   feedback: FeedbackConfig = FeedbackConfig()) -> dict:
    out = pathlib.Path(out_dir)
    datasets = pathlib.Path(datasets_dir) if datasets_dir else out / "datasets"
    cells = []
    for world in config.worlds:
        dataset = world_dataset(datasets, world, config.size, config.seed)
        for protocol in config.protocols:
            table1 = dataclasses.replace(config.table1, protocol=protocol, seed=config.seed)
            report = measured_cell(out / world / protocol, table1)
            if report is None:
                logging.info("world %s, protocol %s", world, protocol)
                report = reproduce_table1(
                    dataset, out / world / protocol, table1, feedback, features_dir=out / world / "features",
                    user_branch_dir=out / world / "user_branch", feature_cache_dir=out / world / "feature_cache",
                )
            cells.append(summarize_cell(world, protocol, report))
            _write(out, config, cells)  # after every cell: a long campaign keeps what it measured
    return _write(out, config, cells)


def measured_cell(cell_dir: pathlib.Path, table1: Table1Config) -> Optional[dict]:
    """The report a previous (interrupted) campaign left for this cell, if it measured this same recipe."""
    path = cell_dir / "table1.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    if report.get("training") != json.loads(json.dumps(dataclasses.asdict(table1))):
        return None
    logging.info("reusing %s: measured with this recipe before", path)
    return report


def summarize_cell(world: str, protocol: str, report: dict) -> dict:
    """One (world, protocol) cell: each variant's and baseline's AUCs, the oracle, the acceptance bar."""
    oracle = report.get("oracle_auc")
    variants = [{"name": f"{VARIANT_NAMES.get(r['variant'], r['variant'])} ({r['context_seconds']:g} s)",
                 "pooled": r["auc"], "per_user": r["per_user_auc"], "epochs": r.get("best_epoch") or r.get("epochs_trained"),
                 "oracle_share": oracle_share(r["auc"], oracle)} for r in report["results"]]
    baselines = [{"name": b["name"], "pooled": b["pooled"], "per_user": b["per_user"], "note": b.get("note", "")}
                 for b in report["baselines"]]
    return {"world": world, "protocol": protocol, "oracle": oracle, "test_pairs": report["split"]["pairs"].get("test", {}),
            "variants": variants, "baselines": baselines, "checks": acceptance(variants[0] if variants else None, baselines)}


def oracle_share(auc: float, oracle: Optional[float]) -> Optional[float]:
    """The share of the oracle's margin over 0.5 an AUC reaches."""
    return None if oracle is None or oracle <= 0.5 else (auc - 0.5) / (oracle - 0.5)


def acceptance(default: Optional[dict], baselines: Sequence[dict]) -> Dict[str, bool]:
    if default is None:
        return {}
    checks = {}
    applicable = [b["pooled"] for b in baselines if b["pooled"] is not None]
    if applicable:
        checks[f"beats every baseline by >= {BASELINE_MARGIN}"] = default["pooled"] >= max(applicable) + BASELINE_MARGIN
    if default["oracle_share"] is not None:
        checks[f">= {ORACLE_SHARE:.0%} of the oracle's margin"] = default["oracle_share"] >= ORACLE_SHARE
    return checks


def _write(out: pathlib.Path, config: RobustnessConfig, cells: List[dict]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    report = {"config": dataclasses.asdict(config), "cells": cells}
    (out / "robustness.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "robustness.md").write_text(format_robustness(report) + "\n")
    return report


def format_robustness(report: dict) -> str:
    """One table per world: rows are the variants, the baselines and the oracle; columns the protocols."""
    lines = []
    for world in dict.fromkeys(c["world"] for c in report["cells"]):
        cells = [c for c in report["cells"] if c["world"] == world]
        lines += [f"### World `{world}`", "",
                  "| model | " + " | ".join(f"{c['protocol']}: pooled AUC (per user) | % oracle margin" for c in cells) + " |",
                  "|---|" + "---|---|" * len(cells)]
        names = list(dict.fromkeys(r["name"] for c in cells for r in c["variants"] + c["baselines"]))
        for name in names:
            row = [name]
            for cell in cells:
                found = next((r for r in cell["variants"] + cell["baselines"] if r["name"] == name), None)
                row += [_auc(found), _share(found and found.get("oracle_share"))]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("| oracle | " + " | ".join(f"{c['oracle']:.3f} | 100%" if c["oracle"] else "n/a | " for c in cells) + " |")
        lines.append("")
        for cell in cells:
            test = cell["test_pairs"]
            verdict = "; ".join(f"{'PASS' if ok else 'FAIL'}: {name}" for name, ok in cell["checks"].items())
            lines.append(f"- {cell['protocol']} ({test.get('liked', 0)} liked / {test.get('disliked', 0)} disliked test pairs), "
                         f"{cell['variants'][0]['name'] if cell['variants'] else 'no variant'}: {verdict or 'no check applies'}")
        lines.append("")
    return "\n".join(lines)


def _auc(result: Optional[dict]) -> str:
    if result is None:
        return "–"
    if result["pooled"] is None:
        return f"n/a ({result.get('note') or 'not applicable'})"
    per_user = result.get("per_user")
    return f"{result['pooled']:.3f}" + (f" ({per_user:.3f})" if per_user is not None else "")


def _share(share: Optional[float]) -> str:
    return "" if share is None else f"{share:.0%}"
