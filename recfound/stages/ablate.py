"""Stage `ablate`: the rows of RecFound's ablation table, on the same data, budget and seed.

============================ =====================================================================
row                          model
============================ =====================================================================
recfound                     the merged model (``paths.merged``): TMoLE + S2Sched + merge (its
                             scores are read from ``reports/metrics.json`` when `evaluate` ran)
without_merge                the ``last`` checkpoint of the main training run
without_merge_s2sched        TMoLE trained with uniform task sampling; ``last``
without_merge_tmole          one LoRA with the TMoLE adapter's number of trainable parameters,
                             S2Sched; ``last``
without_all                  that LoRA with uniform sampling; ``last``
============================ =====================================================================

The three extra trainings run with the main run's ``train`` settings (steps, batch, learning rate,
seed) into ``<paths.train>/../ablation/<row>/``; every row is evaluated on the same seeded test
sample (``evaluate.max_per_task`` records per task). Outputs: ``reports/ablation.json`` and
``reports/ablation.md`` (one table per task group).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from recfound import artifacts
from recfound.config import Config
from recfound.model.backbone import load_backbone
from recfound.model.build import attach_adapter
from recfound.model.bundle import build_from_spec, load_bundle, read_spec
from recfound.model.recmodel import RecModel
from recfound.stages.evaluate import evaluate_bundle
from recfound.stages.train import adapter_spec, run_train
from recfound.train.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

ROWS = ("recfound", "without_merge", "without_merge_s2sched", "without_merge_tmole", "without_all")
# row -> (adapter, strategy) of the extra training runs
TRAINED_ROWS = {
    "without_merge_s2sched": ("tmole", "uniform"),
    "without_merge_tmole": ("lora", "s2sched"),
    "without_all": ("lora", "uniform"),
}


def matched_lora_rank(cfg: Config, task_kinds: dict[str, str]) -> int:
    """The LoRA rank whose trainable-parameter count is closest to the TMoLE adapter's."""
    counts = {}
    for kind, rank in (("tmole", cfg.model.tmole.rank), ("lora", 1)):
        base, _ = load_backbone(cfg.paths.backbone)
        spec = adapter_spec(_with_adapter(cfg, kind, rank))
        adapter = attach_adapter(base, spec, task_kinds, seed=cfg.seed)
        counts[kind] = sum(p.numel() for p in adapter.model.parameters() if p.requires_grad)
    return max(1, round(counts["tmole"] / counts["lora"]))


def _with_adapter(cfg: Config, adapter: str, lora_rank: int | None = None) -> Config:
    model = {"adapter": adapter}
    if lora_rank is not None:
        model["lora"] = cfg.model.lora.model_copy(
            update={
                "rank": lora_rank,
                "alpha": cfg.model.lora.alpha / cfg.model.lora.rank * lora_rank,
            }
        )
    return cfg.model_copy(update={"model": cfg.model.model_copy(update=model)})


def variant_config(cfg: Config, row: str, lora_rank: int) -> Config:
    adapter, strategy = TRAINED_ROWS[row]
    out = _with_adapter(cfg, adapter, lora_rank if adapter == "lora" else None)
    train_dir = Path(cfg.paths.train).parent / "ablation" / row
    return out.model_copy(
        update={
            "train": cfg.train.model_copy(update={"strategy": strategy}),
            "paths": cfg.paths.model_copy(
                update={"train": str(train_dir), "reports": str(train_dir / "reports")}
            ),
        }
    )


def load_last_checkpoint(backbone: str, train_dir: str) -> tuple[RecModel, dict[str, str]]:
    spec, _ = read_spec(train_dir)
    base, tokenizer = load_backbone(backbone)
    rec = build_from_spec(base, tokenizer, spec)
    load_checkpoint(Path(train_dir) / "last", rec.model)
    rec.model.eval()
    return rec, spec.task_kinds


def ablation_markdown(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# Ablation (test split)",
        "",
        "Rows as in RecFound's ablation table: same data, training budget and seed; each task's "
        "score metric as in `reports/evaluation.md` (higher is better).",
    ]
    for kind in ("embedding", "generative"):
        tasks = sorted(
            {t for r in results.values() for t, v in r["tasks"].items() if v["kind"] == kind}
        )
        if not tasks:
            continue
        lines += ["", f"## {kind.capitalize()} tasks", ""]
        lines.append("| row | " + " | ".join(tasks) + " | mean |")
        lines.append("|---|" + "---:|" * (len(tasks) + 1))
        for row, result in results.items():
            scores = [result["tasks"].get(t, {}).get("score") for t in tasks]
            known = [s for s in scores if s is not None]
            cells = [f"{s:.4f}" if s is not None else "–" for s in scores]
            mean = f"{np.mean(known):.4f}" if known else "–"
            lines.append(f"| {row} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines) + "\n"


def run_ablate(cfg: Config) -> dict[str, Any]:
    spec, _ = read_spec(cfg.paths.merged)
    lora_rank = matched_lora_rank(cfg, spec.task_kinds)
    log.info("ablation: the LoRA rows use rank %d (TMoLE's parameter budget)", lora_rank)
    results: dict[str, dict[str, Any]] = {}
    metrics_path = Path(cfg.paths.reports) / "metrics.json"
    for row in ROWS:
        log.info("ablation row %s", row)
        if row == "recfound" and metrics_path.is_file():  # `evaluate` already scored it
            document = json.loads(metrics_path.read_text())
            results[row] = {"overall": document["overall"], "tasks": document["tasks"]}
            continue
        if row == "recfound":
            rec, kinds = load_bundle(cfg.paths.backbone, cfg.paths.merged), spec.task_kinds
        elif row == "without_merge":
            rec, kinds = load_last_checkpoint(cfg.paths.backbone, cfg.paths.train)
        else:
            variant = variant_config(cfg, row, lora_rank)
            run_train(variant, resume=(Path(variant.paths.train) / "last").exists())
            rec, kinds = load_last_checkpoint(cfg.paths.backbone, variant.paths.train)
        document = evaluate_bundle(rec, kinds, cfg)
        results[row] = {"overall": document["overall"], "tasks": document["tasks"]}
    report = {
        "rows": {
            row: {
                "overall": r["overall"],
                "scores": {t: v["score"] for t, v in r["tasks"].items()},
            }
            for row, r in results.items()
        },
        "lora_rank": lora_rank,
        "records_per_task": cfg.evaluate.max_per_task,
    }
    reports = Path(cfg.paths.reports)
    artifacts.write_json(reports / "ablation.json", report)
    artifacts.write_text(reports / "ablation.md", ablation_markdown(results))
    log.info(
        "ablation: mean scores %s",
        ", ".join(f"{row} {r['overall']['mean_score']:.4f}" for row, r in results.items()),
    )
    return report
