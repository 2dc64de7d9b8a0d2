"""What the embedding tasks learn from their data and their share of a step, on validation.

Each arm builds the task datasets with its ``tasks.queries_per_train_item`` (into a folder of its
own), trains only the three embedding tasks from this checkout's pretrained backbone for
``--steps`` steps with its ``train.embedding_batch_size`` (everything else as params.yaml says),
and scores the result with the evaluation's own code on the **validation** split (never test):
query2item's hybrid and embedding-only MRR@20, user2item's MRR@20 and item2item's NDCG@20, next
to BM25. It is how the default's query2item settings were chosen; it needs ``dvc repro`` to have
run (tables validated, backbone pretrained, baselines trained).

    python bench/embedding_budget.py                # the three arms of the README
    python bench/embedding_budget.py --steps 200 --arm 1:32 --arm 4:64

Writes ``reports/bench/embedding_budget.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from recfound.artifacts import write_json
from recfound.config import load_config
from recfound.evaluation.model_eval import evaluate_bundle
from recfound.layout import validation_dir
from recfound.stages.build_tasks import run_build_tasks
from recfound.stages.evaluate import trained_baselines
from recfound.train.from_config import build_model_for, load_training_tasks, read_catalogue
from recfound.train.trainer import Trainer

ARMS = ("1:32", "4:32", "4:64")  # queries per training item : embedding samples per step
OUT = Path("reports/bench/embedding_budget.json")


def run_arm(params: str, queries: int, batch: int, steps: int, work: Path) -> dict:
    base = load_config(params)
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
    doc, _ = evaluate_bundle(rec, kinds, cfg, split="valid", trained=trained_baselines(base))
    scores = {t: doc["tasks"][t]["score"] for t in kinds}
    return {
        "queries_per_train_item": queries,
        "embedding_batch_size": batch,
        "steps": steps,
        "train_seconds": round(seconds, 1),
        "query2item_training_records": len(next(t for t in tasks if t.name == "query2item").train),
        "scores": scores,
        "query2item_embedding_alone": doc["single_path"]["query2item"]["score"],
        "bm25": doc["baselines"]["bm25"]["query2item"]["score"],
        "embedding_shares": {k: round(v, 3) for k, v in trainer.task_sampler.weights.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--arm", action="append", help="QUERIES:BATCH (repeatable)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory(prefix="recfound_embedding_budget_") as work:
        for arm in args.arm or ARMS:
            queries, batch = (int(x) for x in arm.split(":"))
            row = run_arm(args.params, queries, batch, args.steps, Path(work))
            rows.append(row)
            print(json.dumps(row))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    write_json(OUT, {"split": "valid", "arms": rows})
    print(f"wrote {OUT}")
    print("| queries/item | embedding batch | query2item hybrid | alone | BM25 | user2item | i2i |")
    for r in rows:
        s = r["scores"]
        print(
            f"| {r['queries_per_train_item']} | {r['embedding_batch_size']} | "
            f"{s['query2item']:.3f} | {r['query2item_embedding_alone']:.3f} | {r['bm25']:.3f} | "
            f"{s['user2item']:.3f} | {s['item2item']:.3f} |"
        )


if __name__ == "__main__":
    main()
