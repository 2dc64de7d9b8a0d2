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
option_tuning                M6-Rec's option tuning (``model.option``: per-task options on the
                             frozen backbone, about 1% task parameters), S2Sched; ``last``
============================ =====================================================================

The four extra trainings run with the main run's ``train`` settings (steps, batch, learning rate,
seed) into ``<paths.train>/../ablation/<row>/``; every row is evaluated on the same test records
as `evaluate` (every record of full-ranking tasks, the same seeded sample of the others). Each row
is reported as its difference to ``recfound`` per task and per group mean, with a paired bootstrap
interval (:func:`ablation_differences`). Outputs: ``reports/ablation.json`` and
``reports/ablation.md`` (one table per task group), one unit (``reports/manifests/ablate.json``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from recfound import artifacts
from recfound.config import Config
from recfound.evaluation.model_eval import evaluate_bundle
from recfound.evaluation.outputs import (
    BootstrapSettings,
    Estimate,
    compare,
    mean_of_estimates,
)
from recfound.evaluation.report import with_interval
from recfound.evaluation.scores import outputs_from_records
from recfound.layout import EVALUATION_MANIFEST, RECORDS_FILE, unit_manifest
from recfound.merge.from_config import merge_from_config
from recfound.model.backbone import load_backbone
from recfound.model.build import attach_adapter
from recfound.model.bundle import build_from_spec, load_bundle, read_spec
from recfound.model.recmodel import RecModel
from recfound.tracking.runs import TRAINING, run_named, stage_run, task_inputs
from recfound.train.checkpoint import load_checkpoint
from recfound.train.from_config import adapter_spec, train_adapters

log = logging.getLogger(__name__)

ROWS = (
    "recfound",
    "without_merge",
    "without_merge_s2sched",
    "without_merge_tmole",
    "without_all",
    "option_tuning",
)
# row -> (adapter, strategy) of the extra training runs
TRAINED_ROWS = {
    "without_merge_s2sched": ("tmole", "uniform"),
    "without_merge_tmole": ("lora", "s2sched"),
    "without_all": ("lora", "uniform"),
    "option_tuning": ("option", "s2sched"),
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


def variant_config(cfg: Config, row: str, lora_rank: int, seed: int | None = None) -> Config:
    """The settings of an ablation row's training: its adapter and sampling, trained into
    ``<paths.train>/../ablation/<row>[_seed<seed>]/`` (with ``seed`` instead of the main one)."""
    adapter, strategy = TRAINED_ROWS.get(row, (cfg.model.adapter, cfg.train.strategy))
    out = _with_adapter(cfg, adapter, lora_rank if adapter == "lora" else None)
    train_dir = Path(cfg.paths.train).parent / "ablation" / seeded_name(row, seed)
    return out.model_copy(
        update={
            "seed": cfg.seed if seed is None else seed,
            "train": cfg.train.model_copy(update={"strategy": strategy}),
            "paths": cfg.paths.model_copy(
                update={
                    "train": str(train_dir),
                    "merged": str(train_dir.with_name(train_dir.name + "_merged")),
                    "reports": str(train_dir / "reports"),
                }
            ),
        }
    )


def seeded_name(row: str, seed: int | None) -> str:
    return row if seed is None else f"{row}_seed{seed}"


def load_last_checkpoint(backbone: str, train_dir: str) -> tuple[RecModel, dict[str, str]]:
    spec, _ = read_spec(train_dir)
    base, tokenizer = load_backbone(backbone)
    rec = build_from_spec(base, tokenizer, spec)
    load_checkpoint(Path(train_dir) / "last", rec.model)
    rec.model.eval()
    return rec, spec.task_kinds


FULL_ROW = "recfound"
SEEDED_ROWS = (FULL_ROW, "without_all")  # rows repeated with ablation.extra_seeds


def ablation_differences(
    results: dict[str, dict[str, Any]], settings: BootstrapSettings
) -> dict[str, dict[str, Any]]:
    """Row → each task's score difference to the full method, and each group's mean difference.

    Every difference is paired: both rows are recomputed on the same resampled records
    (``records``: task → per-record outputs). A group mean's interval averages the tasks'
    replicates (tasks resampled independently). ``excludes_zero`` marks a difference whose 95%
    interval does not contain 0: one that is not noise at this test-set size.
    """
    full = results[FULL_ROW]
    out: dict[str, dict[str, Any]] = {}
    for row, result in results.items():
        if row == FULL_ROW:
            continue
        tasks: dict[str, dict[str, Any]] = {}
        groups: dict[str, list[Estimate]] = {}
        for task, values in result["tasks"].items():
            mine, theirs = result["records"].get(task), full["records"].get(task)
            if mine is None or theirs is None or task not in full["tasks"]:
                continue
            metric = full["tasks"][task]["score_metric"]
            comparison = compare(mine, theirs, metric, settings)
            tasks[task] = comparison.to_dict()
            groups.setdefault(values["kind"], []).append(comparison.estimate)
        means = {}
        for kind, estimates in groups.items():
            mean = mean_of_estimates(estimates, settings.confidence)
            means[kind] = {
                "difference": mean.value,
                "ci": mean.interval,
                "tasks": len(estimates),
                "excludes_zero": mean.excludes(0.0),
            }
        out[row] = {"tasks": tasks, "groups": means}
    return out


def _difference_cell(value: dict[str, Any] | None) -> str:
    if not value:
        return "–"
    mark = " *" if value["excludes_zero"] else ""
    return f"{with_interval(value['difference'], value['ci'])}{mark}"


def ablation_markdown(
    results: dict[str, dict[str, Any]], differences: dict[str, dict[str, Any]]
) -> str:
    """Per task group: the full method's scores, then each row's paired difference to it."""
    lines = [
        "# Ablation (test split)",
        "",
        "Rows as in RecFound's ablation table: same data, training budget and seed; each task's "
        "score metric as in `reports/evaluation.md` (higher is better). The `recfound` row gives "
        "scores; every other row gives its difference to `recfound` with a paired 95% bootstrap "
        "interval (both rows on the same resampled test records); `*` marks a difference whose "
        "interval excludes 0. The mean column is the group's mean difference, its interval from "
        "the tasks' resamples averaged.",
    ]
    full = results[FULL_ROW]
    for kind in ("embedding", "generative"):
        tasks = sorted(t for t, v in full["tasks"].items() if v["kind"] == kind)
        if not tasks:
            continue
        lines += ["", f"## {kind.capitalize()} tasks", ""]
        counts = [str(full["tasks"][t].get("n_records", "")) for t in tasks]
        lines.append("| row | " + " | ".join(tasks) + " | mean |")
        lines.append("|---|" + "---:|" * (len(tasks) + 1))
        lines.append("| records | " + " | ".join(counts) + " | |")
        scores = [full["tasks"][t]["score"] for t in tasks]
        lines.append(
            f"| {FULL_ROW} | "
            + " | ".join(
                with_interval(s, full["tasks"][t].get("ci", {}).get("score"))
                for t, s in zip(tasks, scores, strict=True)
            )
            + f" | {np.mean(scores):.4f} |"
        )
        for row, difference in differences.items():
            cells = [_difference_cell(difference["tasks"].get(t)) for t in tasks]
            mean = _difference_cell(difference["groups"].get(kind))
            lines.append(f"| {row} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines) + "\n"


def train_variant(variant: Config, name: str) -> None:
    """Train one ablation row's adapter (resuming a partial or finished run of it)."""
    trained = [Path(variant.paths.train), artifacts.partial_path(variant.paths.train)]
    settings = {"model": variant.model.model_dump(), "train": variant.train.model_dump()}
    with (
        run_named(f"ablation/{name}"),
        stage_run(variant.tracking, "train", settings, inputs=task_inputs(variant, *TRAINING)),
    ):
        train_adapters(
            variant,
            resume=any((d / "last").exists() for d in trained),
            log_metrics=lambda values, step: mlflow.log_metrics(values, step=step),
        )


def seeded_rows(cfg: Config, lora_rank: int) -> dict[str, tuple[str, int, RecModel, dict]]:
    """The rows repeated with ``ablation.extra_seeds``: the full method (train, then merge, as
    the main pipeline) and without_all. Row name → (row, seed, model, task kinds)."""
    out = {}
    for seed in cfg.ablation.extra_seeds:
        for row in SEEDED_ROWS:
            variant = variant_config(cfg, row, lora_rank, seed)
            name = seeded_name(row, seed)
            log.info("ablation row %s", name)
            train_variant(variant, name)
            if row == FULL_ROW:
                with run_named(f"ablation/{name}"):
                    merge_from_config(variant)
                rec = load_bundle(cfg.paths.backbone, variant.paths.merged)
                kinds = read_spec(variant.paths.merged)[0].task_kinds
            else:
                rec, kinds = load_last_checkpoint(cfg.paths.backbone, variant.paths.train)
            out[name] = (row, seed, rec, kinds)
    return out


def seed_spread(results: dict[str, dict[str, Any]], seeds: dict[str, tuple[str, int]]) -> dict:
    """Per seeded row: each seed's group means, their mean and standard deviation across seeds;
    and the full method's relative gain over without_all (RecFound reports these: +16% U2I, +2.9%
    generative mean), per seed and its mean ± sd across seeds."""
    keys = ("mean_score", "embedding_score", "generative_score")
    per_row: dict[str, dict[int, dict[str, float]]] = {}
    for name, (row, seed) in seeds.items():
        values = {k: results[name]["overall"][k] for k in keys}
        values.update({t: v["score"] for t, v in results[name]["tasks"].items()})
        per_row.setdefault(row, {})[seed] = values
    out: dict[str, Any] = {"rows": {}}
    for row, by_seed in per_row.items():
        out["rows"][row] = {
            "seeds": by_seed,
            "mean": {k: float(np.mean([s[k] for s in by_seed.values()])) for k in keys},
            "sd": {k: float(np.std([s[k] for s in by_seed.values()], ddof=1)) for k in keys}
            if len(by_seed) > 1
            else {},
        }
    if FULL_ROW in per_row and "without_all" in per_row:
        full, ablated = per_row[FULL_ROW], per_row["without_all"]
        common = sorted(set(full) & set(ablated))
        names = [k for k in full[common[0]] if all(k in ablated[s] for s in common)]
        gains = {}
        for key in names:
            ratios = [
                (full[s][key] - ablated[s][key]) / abs(ablated[s][key])
                for s in common
                if ablated[s][key]
            ]
            if ratios:
                gains[key] = {
                    "per_seed": ratios,
                    "mean": float(np.mean(ratios)),
                    "sd": float(np.std(ratios, ddof=1)) if len(ratios) > 1 else 0.0,
                }
        out["relative_gain_full_vs_without_all"] = gains
    return out


def seeds_markdown(spread: dict[str, Any]) -> str:
    """The rows trained with several seeds: group means per seed, mean ± sd; relative gains."""
    rows = spread.get("rows", {})
    if not rows:
        return ""
    keys = ("embedding_score", "generative_score", "mean_score")
    lines = [
        "",
        "## Across seeds",
        "",
        "Training noise next to the record-bootstrap intervals above: the full method (train and "
        "merge) and without_all trained with each seed; every seed evaluated on the same test "
        "records. Mean ± standard deviation across seeds.",
        "",
        "| row | seeds | " + " | ".join(keys) + " |",
        "|---|---|" + "---:|" * len(keys),
    ]
    for row, values in rows.items():
        cells = [
            f"{values['mean'][k]:.4f} ± {values['sd'].get(k, 0.0):.4f}"
            + " ("
            + ", ".join(f"{s[k]:.4f}" for s in values["seeds"].values())
            + ")"
            for k in keys
        ]
        seeds = ", ".join(str(s) for s in values["seeds"])
        lines.append(f"| {row} | {seeds} | " + " | ".join(cells) + " |")
    gains = spread.get("relative_gain_full_vs_without_all", {})
    if gains:
        lines += [
            "",
            "Relative gain of the full method over without_all, (full − without_all) / "
            "without_all per seed, mean ± sd (RecFound reports +16% on U2I and +2.9% on the "
            "generative mean):",
            "",
            "| score | gain (mean ± sd) | per seed |",
            "|---|---:|---|",
        ]
        for key, value in gains.items():
            per_seed = ", ".join(f"{100 * g:+.1f}%" for g in value["per_seed"])
            lines.append(
                f"| {key} | {100 * value['mean']:+.1f}% ± {100 * value['sd']:.1f}% | {per_seed} |"
            )
    return "\n".join(lines) + "\n"


def run_ablate(cfg: Config) -> dict[str, Any]:
    spec, _ = read_spec(cfg.paths.merged)
    lora_rank = matched_lora_rank(cfg, spec.task_kinds)
    log.info("ablation: the LoRA rows use rank %d (TMoLE's parameter budget)", lora_rank)
    results: dict[str, dict[str, Any]] = {}
    metrics_path = Path(cfg.paths.reports) / "metrics.json"
    records_path = Path(cfg.paths.reports) / RECORDS_FILE
    for row in ROWS:
        log.info("ablation row %s", row)
        if (
            row == FULL_ROW
            and metrics_path.is_file()
            and records_path.is_file()
            and artifacts.manifest_agrees(metrics_path.parent / EVALUATION_MANIFEST)
        ):
            document = json.loads(metrics_path.read_text())  # `evaluate` already scored it
            records = json.loads(records_path.read_text())
            results[row] = {
                "overall": document["overall"],
                "tasks": document["tasks"],
                "records": outputs_from_records(records),
            }
            continue
        if row == FULL_ROW:
            rec, kinds = load_bundle(cfg.paths.backbone, cfg.paths.merged), spec.task_kinds
        elif row == "without_merge":
            rec, kinds = load_last_checkpoint(cfg.paths.backbone, cfg.paths.train)
        else:
            variant = variant_config(cfg, row, lora_rank)
            train_variant(variant, row)
            rec, kinds = load_last_checkpoint(cfg.paths.backbone, variant.paths.train)
        document, records = evaluate_bundle(rec, kinds, cfg)
        results[row] = {
            "overall": document["overall"],
            "tasks": document["tasks"],
            "records": outputs_from_records(records),
        }
    seeds = {row: (row, cfg.seed) for row in SEEDED_ROWS}
    for name, (row, seed, rec, kinds) in seeded_rows(cfg, lora_rank).items():
        document, records = evaluate_bundle(rec, kinds, cfg)  # the main run's test records
        results[name] = {
            "overall": document["overall"],
            "tasks": document["tasks"],
            "records": outputs_from_records(records),
        }
        seeds[name] = (row, seed)
    spread = seed_spread(results, seeds)
    differences = ablation_differences(results, BootstrapSettings(seed=cfg.seed))
    report = {
        "rows": {
            row: {
                "overall": r["overall"],
                "scores": {t: v["score"] for t, v in r["tasks"].items()},
                **({"versus_recfound": differences[row]} if row in differences else {}),
            }
            for row, r in results.items()
        },
        "across_seeds": spread,
        "lora_rank": lora_rank,
        "n_records": {t: v.get("n_records") for t, v in results[FULL_ROW]["tasks"].items()},
        "bootstrap": BootstrapSettings(seed=cfg.seed).to_dict(),
    }
    reports = Path(cfg.paths.reports)
    with artifacts.publish_unit(unit_manifest(reports, "ablate"), writer="recfound ablate") as unit:
        unit.write_json(reports / "ablation.json", report)
        table = ablation_markdown(results, differences) + seeds_markdown(spread)
        unit.write_text(reports / "ablation.md", table)
    log.info(
        "ablation: mean scores %s",
        ", ".join(f"{row} {r['overall']['mean_score']:.4f}" for row, r in results.items()),
    )
    return report
