"""What the embedding tasks learn from their data and their share of a step, on validation.

Each arm builds the task datasets with its ``tasks.queries_per_train_item`` (into a folder of its
own), trains only the three embedding tasks from this checkout's pretrained backbone for
``--steps`` steps with its ``train.embedding_batch_size`` (everything else as params.yaml says),
and scores the result with the evaluation's own code on the **validation** split (never test):
query2item's hybrid and embedding-only MRR@20, user2item's MRR@20 and item2item's NDCG@20, next
to BM25. Every score carries its bootstrap interval over the validation records, and every other
arm is compared with the default's (params.yaml's settings) record by record, with a paired
interval, as evaluation compares the model with its baselines. It is how the default's query2item
settings were chosen; it needs ``dvc repro`` to have run (tables validated, backbone pretrained,
baselines trained).

    python bench/embedding_budget.py                # the three arms of the README
    python bench/embedding_budget.py --steps 200 --arm 1:32 --arm 4:64

Writes ``reports/bench/embedding_budget.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from paired import signed

from recfound.artifacts import write_json
from recfound.config import Config, load_config
from recfound.evaluation.model_eval import evaluate_bundle
from recfound.evaluation.outputs import BootstrapSettings, RecordOutputs, compare
from recfound.evaluation.report import with_interval
from recfound.evaluation.scores import outputs_from_records
from recfound.layout import validation_dir
from recfound.stages.build_tasks import run_build_tasks
from recfound.stages.evaluate import trained_baselines
from recfound.train.from_config import build_model_for, load_training_tasks, read_catalogue
from recfound.train.trainer import Trainer

ARMS = ("1:32", "4:32", "4:64")  # queries per training item : embedding samples per step
OUT = Path("reports/bench/embedding_budget.json")


def run_arm(
    base: Config, queries: int, batch: int, steps: int, work: Path
) -> tuple[dict, dict[str, RecordOutputs]]:
    """The arm's JSON row and the model's per-record validation outputs (for the paired
    comparison between arms)."""
    arm_dir = work / f"q{queries}_b{batch}"
    cfg = base.model_copy(
        update={
            "tasks": base.tasks.model_copy(update={"queries_per_train_item": queries}),
            "train": base.train.model_copy(
                update={"steps": steps, "embedding_batch_size": batch, "checkpoint_every": 10**6}
            ),
            "paths": base.paths.model_copy(
                update={"tasks": str(arm_dir / "tasks"), "reports": str(arm_dir / "reports")}
            ),
        }
    )
    run_build_tasks(cfg, validation_dir(base.paths.reports) / "tables.json")
    tasks = [t for t in load_training_tasks(cfg) if t.kind == "embedding"]
    kinds = {t.name: t.kind for t in tasks}
    rec = build_model_for(cfg, kinds)
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    trainer = Trainer(
        rec, tasks, cfg.train, arm_dir / "train", seed=cfg.seed, catalogue=read_catalogue(cfg)
    )
    trainer.train()
    seconds = time.perf_counter() - started
    doc, records = evaluate_bundle(rec, kinds, cfg, split="valid", trained=trained_baselines(base))
    scores = {t: doc["tasks"][t]["score"] for t in kinds}
    alone = doc["single_path"]["query2item"]
    row = {
        "queries_per_train_item": queries,
        "embedding_batch_size": batch,
        "steps": steps,
        "train_seconds": round(seconds, 1),
        "query2item_training_records": len(next(t for t in tasks if t.name == "query2item").train),
        "scores": scores,
        "intervals": {t: doc["tasks"][t]["ci"]["score"] for t in kinds},
        "score_metrics": {t: doc["tasks"][t]["score_metric"] for t in kinds},
        "query2item_embedding_alone": alone["score"],
        "query2item_embedding_alone_interval": alone["ci"],
        "bm25": doc["baselines"]["bm25"]["query2item"]["score"],
        "bm25_interval": doc["baselines"]["bm25"]["query2item"]["ci"]["score"],
        "query2item_minus_bm25": doc["versus_best_baseline"]["query2item"],
        "query2item_embedding_alone_minus_bm25": alone["versus_best_baseline"],
        "embedding_shares": {k: round(v, 3) for k, v in trainer.task_sampler.weights.items()},
    }
    return row, outputs_from_records(records)


def arm_name(row: dict) -> str:
    """An arm's name, ``QUERIES:BATCH`` (as ``--arm`` takes it)."""
    return f"{row['queries_per_train_item']}:{row['embedding_batch_size']}"


def versus_reference(
    rows: list[dict],
    outputs: list[dict[str, RecordOutputs]],
    reference: int,
    settings: BootstrapSettings,
) -> str:
    """Adds to every other row its paired difference to the ``reference`` row on each task's
    score (same validation records and record resamples as the arms' own intervals); returns the
    reference's name (:func:`arm_name`)."""
    ref = rows[reference]
    for row, arm in zip(rows, outputs, strict=True):
        if row is not ref:
            row["minus_default"] = {
                task: compare(arm[task], outputs[reference][task], metric, settings).to_dict()
                for task, metric in row["score_metrics"].items()
            }
    return arm_name(ref)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--arm", action="append", help="QUERIES:BATCH (repeatable)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    base = load_config(args.params)
    default = (base.tasks.queries_per_train_item, base.train.embedding_batch_size)
    rows, outputs = [], []
    with tempfile.TemporaryDirectory(prefix="recfound_embedding_budget_") as work:
        for arm in args.arm or ARMS:
            queries, batch = (int(x) for x in arm.split(":"))
            row, arm_outputs = run_arm(base, queries, batch, args.steps, Path(work))
            rows.append(row)
            outputs.append(arm_outputs)
            print(json.dumps(row))
    arms = [(r["queries_per_train_item"], r["embedding_batch_size"]) for r in rows]
    settings = BootstrapSettings(seed=base.seed)  # evaluate_bundle's
    reference = arms.index(default) if default in arms else len(rows) - 1
    name = versus_reference(rows, outputs, reference, settings)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"split": "valid", "bootstrap": settings.to_dict(), "default": name, "arms": rows}
    write_json(args.out, report)
    print(f"wrote {args.out}")
    print("| queries/item | embedding batch | query2item hybrid | alone | BM25 | user2item | i2i |")
    text = partial(with_interval, digits=3)  # "0.136 [0.101, 0.175]"
    for r in rows:
        s, ci = r["scores"], r["intervals"]
        print(
            f"| {r['queries_per_train_item']} | {r['embedding_batch_size']} | "
            f"{text(s['query2item'], ci['query2item'])} | "
            f"{text(r['query2item_embedding_alone'], r['query2item_embedding_alone_interval'])} | "
            f"{text(r['bm25'], r['bm25_interval'])} | {text(s['user2item'], ci['user2item'])} | "
            f"{text(s['item2item'], ci['item2item'])} |"
        )
    for r in rows:
        for task, d in r.get("minus_default", {}).items():
            print(f"{arm_name(r)} minus {name} on {task}: {signed(d)}")


if __name__ == "__main__":
    main()
