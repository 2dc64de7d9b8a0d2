"""Semantic vs atomic item identifiers on MovieLens-100K, side by side (issue 22).

Two arms that differ only in ``tasks.item_ids`` (``atomic``: one token per item; ``semantic``:
residual k-means codes of collaborative item vectors, ``recfound/data/semantic_ids.py``), each
run through the pipeline's own stage functions: ingest → validate → build-tasks → pretrain →
train, then the ``last`` training checkpoint (no merge: the ablation's ``without_merge`` row) is
evaluated on every test user with the standard full-ranking protocol (every earlier item
excluded). Both arms have the same records, seed and budget, so the difference is a paired
bootstrap on the same users (``recfound.evaluation.outputs.paired_difference``).

The budget is **reduced** (``BUDGET`` below: fewer pretraining and training steps, only the
next-item tasks ``sequential_recommendation`` and ``user2item``) so that an arm takes minutes on
a shared 2-core machine; the figures are therefore not the default pipeline's.

Writes ``reports/semantic_ids.json`` and ``reports/semantic_ids.md`` (a hand-written ``## Reading``
section at its end is kept); every arm's work goes to
``--out`` (default ``/tmp/recfound_semantic_ids``; an arm whose ``records.json`` is there is
reused, ``--fresh`` reruns it)::

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python bench/semantic_ids.py
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from recfound.config import Config, parse_config
from recfound.data.tasks.base import identifier_vocabulary
from recfound.evaluation.model_eval import evaluate_bundle
from recfound.evaluation.outputs import (
    BootstrapSettings,
    metric_estimates,
    paired_difference,
)
from recfound.evaluation.scores import outputs_from_records
from recfound.stages.ablate import load_last_checkpoint
from recfound.stages.build_tasks import run_build_tasks
from recfound.stages.ingest import run_ingest
from recfound.stages.pretrain import run_pretrain
from recfound.stages.train import run_train
from recfound.stages.validate import run_validate

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("atomic", "semantic")
TASKS = ("sequential_recommendation", "user2item")
METRICS = ("recall@10", "ndcg@10")
READING = "## Reading"  # the hand-written section of the report, kept when it is regenerated
# The reduced budget both arms share (on top of params.yaml).
BUDGET: dict[str, Any] = {
    "tasks": {"enabled": list(TASKS)},
    "pretrain": {"steps": 100, "eval_every": 50},
    "train": {"steps": 80, "eval_every": 40, "checkpoint_every": 40},
    "evaluate": {"fusion": {}},
}


def merged(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and value and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def arm_config(params: Path, arm: str, out: Path) -> Config:
    """params.yaml + :data:`BUDGET` + this arm's identifiers, every output under ``out/arm``."""
    raw = yaml.safe_load(params.read_text())
    home = out / arm
    raw = merged(raw, BUDGET)
    raw = merged(
        raw,
        {
            "tasks": {"item_ids": arm},
            "tracking": {
                "tracking_uri": f"sqlite:///{home / 'mlflow.db'}",
                "artifact_location": str(home / "mlartifacts"),
            },
            "paths": {
                name: str(home / name)
                for name in (
                    "interim",
                    "tasks",
                    "backbone",
                    "train",
                    "merged",
                    "baselines",
                    "reports",
                    "recommendations",
                )
            },
        },
    )
    return parse_config(raw, origin=f"{params} + bench/semantic_ids.py ({arm})")


def identifier_parameters(rec, vocabulary: int) -> dict[str, Any]:
    """Parameters the identifier tokens add: their rows in the input embedding (and in the LM
    head unless it is tied to it)."""
    hidden = rec.model.get_input_embeddings().weight.shape[1]
    tied = rec.model.get_output_embeddings().weight is rec.model.get_input_embeddings().weight
    added = vocabulary * hidden * (1 if tied else 2)
    total = sum(p.numel() for p in rec.model.parameters())
    return {"tokens": vocabulary, "parameters": added, "share_of_model": added / total}


def run_arm(cfg: Config, arm: str, out: Path) -> dict[str, Any]:
    """One arm end to end; its metrics, per-record outputs and sizes in ``out/arm``."""
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    for name, stage in (
        ("ingest", run_ingest),
        ("validate", run_validate),
        ("build_tasks", run_build_tasks),
        ("pretrain", run_pretrain),
        ("train", run_train),
    ):
        t0 = time.perf_counter()
        stage(cfg)
        seconds[name] = round(time.perf_counter() - t0, 1)
    rec, kinds = load_last_checkpoint(cfg.paths.backbone, cfg.paths.train)
    t0 = time.perf_counter()
    document, records = evaluate_bundle(rec, kinds, cfg)
    seconds["evaluate"] = round(time.perf_counter() - t0, 1)
    seconds["total"] = round(time.perf_counter() - started, 1)
    home = out / arm
    (home / "document.json").write_text(json.dumps(document, indent=1, default=float))
    items = pd.read_parquet(Path(cfg.paths.tasks) / "items.parquet")
    tokens = {str(i): str(t) for i, t in zip(items["item_id"], items["token"], strict=True) if t}
    summary = {
        "arm": arm,
        "seconds": seconds,
        "items_with_identifier": len(tokens),
        "example_identifier": next(iter(tokens.values()), ""),
        "identifiers": identifier_parameters(rec, len(identifier_vocabulary(tokens))),
        "tasks": {t: document["tasks"][t] for t in TASKS if t in document["tasks"]},
    }
    (home / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    (home / "records.json").write_text(json.dumps(records, default=float))
    return summary


def comparison(out: Path, settings: BootstrapSettings) -> dict[str, Any]:
    """Each task's metrics per arm with intervals, and semantic − atomic paired on the users."""
    summaries = {a: json.loads((out / a / "summary.json").read_text()) for a in ARMS}
    outputs = {
        a: outputs_from_records(json.loads((out / a / "records.json").read_text())) for a in ARMS
    }
    tasks: dict[str, Any] = {}
    for task in TASKS:
        if not all(task in outputs[a] for a in ARMS):
            continue
        row: dict[str, Any] = {}
        for arm in ARMS:
            estimates = metric_estimates(outputs[arm][task], settings)
            row[arm] = {
                m: {"value": estimates[m].value, "interval": estimates[m].interval} for m in METRICS
            }
        diffs = {}
        for m in METRICS:
            d = paired_difference(outputs["semantic"][task], outputs["atomic"][task], m, settings)
            diffs[m] = {"value": d.value, "interval": d.interval, "records": d.n_records}
        row["semantic_minus_atomic"] = diffs
        # the baselines see the same records in both arms (identifiers play no part in them)
        baselines = json.loads((out / "atomic" / "document.json").read_text())["baselines"]
        row["baselines"] = {
            name: {m: {"value": b[task][m], "interval": b[task]["ci"][m]} for m in METRICS}
            for name, b in sorted(baselines.items())
            if task in b
        }
        tasks[task] = row
    return {"arms": summaries, "tasks": tasks}


def scale_parameters() -> dict[str, Any] | None:
    """The 10^6-item parameter counts of ``bench/recommend_scale.py`` (its last report)."""
    path = ROOT / "reports" / "bench" / "recommend_scale.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text())["results"]
    largest = max(results, key=lambda r: r["items"])
    return largest["identifiers"] | {"items": largest["items"]}


def fmt(estimate: dict[str, Any]) -> str:
    low, high = estimate["interval"]
    if low is None or high is None:
        return f"{estimate['value']:.4f}"
    return f"{estimate['value']:.4f} [{low:.4f}, {high:.4f}]"


def markdown(document: dict[str, Any]) -> str:
    arms = document["arms"]
    lines = [
        "# Semantic vs atomic item identifiers (ml-100k, reduced budget)",
        "",
        "Generated by `bench/semantic_ids.py` (`make semantic-ids`; command: "
        f"`{document['command']}`); the Reading section at the end is written by hand. "
        "Settings: params.yaml (seed 42, one seed) plus `BUDGET` in the script: "
        f"`{json.dumps(document['budget'])}`; the two arms differ only in `tasks.item_ids` "
        "(semantic: `tasks.semantic_levels` 2, `tasks.semantic_codebook_size` 32, the defaults). "
        "Each arm is evaluated from its `last` training checkpoint (no merge) on every test user, "
        "full ranking over the whole catalogue with every earlier item excluded.",
        "",
        "| task | metric | atomic | semantic | semantic − atomic (paired) |",
        "|---|---|---|---|---|",
    ]
    for task, row in document["tasks"].items():
        for m in METRICS:
            lines.append(
                f"| {task} | {m} | {fmt(row['atomic'][m])} | {fmt(row['semantic'][m])} | "
                f"{fmt(row['semantic_minus_atomic'][m])} |"
            )
    lines += ["", "Baselines on the same test users (the same in both arms):", ""]
    for task, row in document["tasks"].items():
        shown = "; ".join(
            f"{name} Recall@10 {fmt(b['recall@10'])}, NDCG@10 {fmt(b['ndcg@10'])}"
            for name, b in row["baselines"].items()
        )
        lines.append(f"- {task}: {shown}")
    for task, row in document["tasks"].items():
        d = row["semantic_minus_atomic"]["recall@10"]
        low, high = d["interval"]
        if low is not None and high is not None and (low > 0 or high < 0):
            verdict = "semantic is " + ("better" if low > 0 else "worse") + " (interval excludes 0)"
        else:
            verdict = "no clear difference (interval includes 0)"
        lines.append(f"\n{task}, Recall@10 on {d['records']} paired test users: {verdict}.")
    lines += [
        "",
        "95% bootstrap intervals (1,000 resamples of the test users, seeded; the difference "
        "resamples the same users for both arms).",
        "",
        "| arm | example identifier | identifier tokens | parameters they add | share of model | "
        "seconds (pretrain / train / evaluate) |",
        "|---|---|---|---|---|---|",
    ]
    for arm in ARMS:
        s = arms[arm]
        ids = s["identifiers"]
        sec = s["seconds"]
        lines.append(
            f"| {arm} | `{s['example_identifier']}` | {ids['tokens']:,} | {ids['parameters']:,} | "
            f"{ids['share_of_model']:.1%} | {sec['pretrain']:.0f} / {sec['train']:.0f} / "
            f"{sec['evaluate']:.0f} |"
        )
    scale = document.get("scale")
    if scale:
        lines += [
            "",
            f"At {scale['items']:,} items (synthetic, `bench/recommend_scale.py`): atomic "
            f"identifiers add {scale['atomic_params']:,} parameters, semantic ones "
            f"{scale['semantic_params']:,} ({scale['semantic_share_of_atomic']:.2%} of atomic).",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--out", type=Path, default=Path("/tmp/recfound_semantic_ids"))
    parser.add_argument("--reports", type=Path, default=ROOT / "reports")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--fresh", action="store_true", help="rerun arms already done")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    for arm in args.arms:
        home = args.out / arm
        if (home / "records.json").is_file() and not args.fresh:
            logging.info("arm %s: reusing %s", arm, home)
            continue
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        cfg = arm_config(args.params, arm, args.out)
        run_arm(cfg, arm, args.out)
    if not all((args.out / a / "records.json").is_file() for a in ARMS):
        logging.info("not every arm has run yet: no comparison written")
        return
    cfg = arm_config(args.params, "atomic", args.out)
    document = comparison(args.out, BootstrapSettings(seed=cfg.seed))
    document.update(
        {
            "budget": BUDGET,
            "scale": scale_parameters(),
            "machine": {"cpu": platform.machine(), "torch_threads": torch.get_num_threads()},
            "command": "OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python bench/semantic_ids.py",
        }
    )
    args.reports.mkdir(parents=True, exist_ok=True)
    (args.reports / "semantic_ids.json").write_text(json.dumps(document, indent=1, default=float))
    path = args.reports / "semantic_ids.md"
    old = path.read_text() if path.is_file() else ""
    reading = old[old.index(READING) :] if READING in old else ""  # written by hand: kept
    path.write_text(markdown(document) + ("\n" + reading if reading else ""))
    logging.info("wrote %s", args.reports / "semantic_ids.md")


if __name__ == "__main__":
    main()
