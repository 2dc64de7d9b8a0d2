"""The kept training checkpoints → one merged model (an Optuna-tuned merge), from the config:
what the `merge` stage and the ablation's seeded repeats of the full method share.

Recipe: rebuild the model from ``<paths.train>/adapter_config.json`` (its seeded initial adapter is
the base of the task vectors) → split a validation sample of every task into two disjoint slices →
score every kept checkpoint on the *selection* slice (the reference of the normalised objective) →
Optuna study over method, coefficients and density on that slice, one MLflow child run per trial
→ score the chosen merge and every checkpoint on the *report* slice, text tasks by generation as
at test time → write the chosen model as a bundle at ``paths.merged``; ``reports/merge.json`` and
the study's figures (MLflow artifacts and ``reports/plots/``). The bundle and these reports are one
unit (``reports/manifests/merge.json``, :func:`recfound.artifacts.publish_unit`).

If no merge beats the best single checkpoint on the selection slice, that checkpoint is written
instead. The study's winner must also beat that checkpoint on the report slice, which the study
never saw (a *confirmation* slice: with ``merge.max_per_task`` records per task, the best of
several trials on one slice is partly luck); otherwise the checkpoint ships and ``merge.json``
says the merge was not confirmed. Test records are never looked at.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np

from recfound import artifacts
from recfound.accelerator import stage_device
from recfound.config import Config
from recfound.evaluation.model_predictions import evaluate_model
from recfound.evaluation.protocols import EvalSet, load_eval_set
from recfound.layout import unit_manifest
from recfound.merge.tune import (
    MergeChoice,
    apply_choice,
    normalised_objective,
    read_checkpoint_tensors,
    study_figures,
    tune_merge,
)
from recfound.model.backbone import load_backbone
from recfound.model.bundle import (
    adapter_tensors,
    build_from_spec,
    load_adapter_tensors,
    read_spec,
    save_bundle,
)
from recfound.tracking.runs import child_run, stage_run, task_inputs

log = logging.getLogger(__name__)


def study_storage(cfg: Config) -> str:
    """sqlite file next to the merged model (outside it: DVC replaces the output folder)."""
    path = Path(cfg.paths.merged).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.parent / (path.name + '.optuna.db')}"


def split_validation(data: EvalSet, seed: int) -> tuple[EvalSet, EvalSet]:
    """Two disjoint halves of every task's validation records (seeded): one to select the merge
    on, one to report it on."""
    select, report = {}, {}
    for task, frame in data.frames.items():
        order = np.random.default_rng([seed, len(frame)]).permutation(len(frame))
        half = (len(frame) + 1) // 2
        select[task] = frame.iloc[np.sort(order[:half])].reset_index(drop=True)
        report[task] = frame.iloc[np.sort(order[half:])].reset_index(drop=True)
    report = {t: f for t, f in report.items() if len(f)}
    return replace(data, frames=select), replace(
        data, frames=report, kinds={t: data.kinds[t] for t in report}
    )


def selection_digest(data: EvalSet, scoring: Mapping[str, object]) -> str:
    """A digest of what the merge objective scores on: every task's selection records (their
    keys and content), the catalogue and interactions they are ranked against, and the scoring
    settings. The study's name carries it, so a changed ``merge.max_per_task``, rebuilt
    validation data or other ``ks`` start a new study instead of mixing its trials' values with
    values scored on other records."""
    digest = hashlib.sha256(json.dumps(dict(scoring), sort_keys=True, default=str).encode())
    digest.update(json.dumps(data.train_targets, sort_keys=True).encode())
    tables = {
        **{f"task:{t}": data.frames[t] for t in sorted(data.frames)},
        "items": data.items,
        "train_interactions": data.train_interactions,
        "interactions": data.interactions,
    }
    for name, table in tables.items():
        if table is not None:
            digest.update(name.encode())
            digest.update(table.to_json(orient="split", default_handler=str).encode())
    return digest.hexdigest()[:16]


def merge_from_config(cfg: Config) -> dict:
    spec, _ = read_spec(cfg.paths.train)
    checkpoints = read_checkpoint_tensors(cfg.paths.train, cfg.merge.checkpoints)
    base_model, tokenizer = load_backbone(cfg.paths.backbone)
    rec = build_from_spec(base_model, tokenizer, spec)
    rec.model.to(stage_device())  # every trial scores on the accelerator's device
    base = adapter_tensors(rec.model)  # the seeded initial adapter: task vectors are ckpt - base
    data = load_eval_set(
        cfg.paths.tasks, "valid", 2 * cfg.merge.max_per_task, cfg.seed, tasks=list(spec.task_kinds)
    )
    select, report_slice = split_validation(data, cfg.seed)
    kwargs = {"ks": cfg.evaluate.ks, "batch_size": cfg.evaluate.batch_size}

    def score(tensors: dict, on: EvalSet = select, quick: bool = True) -> dict[str, float]:
        load_adapter_tensors(rec.model, tensors, "merged tensors")
        return {
            t: v["score"]
            for t, v in evaluate_model(
                rec, on, quick=quick, max_new_tokens=cfg.evaluate.max_new_tokens, **kwargs
            ).items()
        }

    settings = {"merge": cfg.merge.model_dump(), "seed": cfg.seed}
    reports = Path(cfg.paths.reports)
    published = artifacts.publish_unit(unit_manifest(reports, "merge"), writer="recfound merge")
    with (
        published as unit,
        stage_run(cfg.tracking, "merge", settings, inputs=task_inputs(cfg, "validation")) as run,
    ):
        single = {name: score(tensors) for name, tensors in checkpoints.items()}
        reference = {t: max(s[t] for s in single.values()) for t in next(iter(single.values()))}
        single_objective = {n: normalised_objective(s, reference)[0] for n, s in single.items()}
        for name, value in single_objective.items():
            log.info("checkpoint %s: validation objective %.4f", name, value)
            mlflow.log_metric(f"checkpoint/{name}/objective", value)

        def on_trial(number: int, choice: MergeChoice, value: float, scores: dict) -> None:
            with child_run(f"merge trial {number}"):
                mlflow.log_params({**choice.to_dict(), "coefficients": str(choice.coefficients)})
                mlflow.log_metric("objective", value)
                mlflow.log_metrics({f"score/{t}": v for t, v in scores.items()})

        result = tune_merge(
            checkpoints,
            base,
            score,
            reference,
            methods=cfg.merge.methods,
            trials=cfg.merge.trials,
            density_min=cfg.merge.density_min,
            seed=cfg.seed,
            storage=study_storage(cfg),
            scored_on=selection_digest(
                select, {"max_new_tokens": cfg.evaluate.max_new_tokens, "ks": cfg.evaluate.ks}
            ),
            on_trial=on_trial,
        )
        best_single = max(single_objective, key=single_objective.get)
        if result.objective > single_objective[best_single]:
            chosen, merged = (
                result.choice.to_dict(),
                apply_choice(result.choice, checkpoints, base, cfg.seed),
            )
            objective, source = result.objective, f"trial {result.trial}"
        else:
            log.warning(
                "no merge beat checkpoint %s (%.4f >= %.4f); shipping that checkpoint",
                best_single,
                single_objective[best_single],
                result.objective,
            )
            chosen, merged = (
                {"method": "checkpoint", "checkpoint": best_single},
                checkpoints[best_single],
            )
            objective, source = single_objective[best_single], f"checkpoint {best_single}"

        # the report slice: never seen by the study; text tasks generate as at test time
        held_out = {name: score(checkpoints[name], report_slice, False) for name in checkpoints}
        held_out["chosen"] = score(merged, report_slice, False)
        held_reference = {
            t: max(s[t] for n, s in held_out.items() if n != "chosen") for t in held_out["chosen"]
        }
        report_objective = {
            n: normalised_objective(s, held_reference)[0] for n, s in held_out.items()
        }
        confirmed = report_objective["chosen"] > report_objective[best_single]
        if chosen["method"] != "checkpoint" and not confirmed:
            # the study's winner did not hold on records it never saw: the merge does not pay
            log.warning(
                "the merge (%s) scores %.4f on the confirmation slice, checkpoint %s %.4f: "
                "shipping the checkpoint",
                source,
                report_objective["chosen"],
                best_single,
                report_objective[best_single],
            )
            chosen = {"method": "checkpoint", "checkpoint": best_single, "rejected": chosen}
            merged, objective = checkpoints[best_single], single_objective[best_single]
            source = f"checkpoint {best_single} (merge {source} not confirmed)"
            report_objective["chosen"] = report_objective[best_single]
        plots = reports / "plots"
        drawn = study_figures(result.study, unit.folder(plots))
        for figure in drawn:
            mlflow.log_artifact(str(figure), "plots")
        for stale in plots.glob("merge_*.png"):  # a figure this study could not draw
            if stale.name not in {f.name for f in drawn}:
                unit.remove(stale)
        trials = [
            {"trial": t.number, "objective": t.value}
            for t in result.study.trials
            if t.value is not None
        ]
        report = {
            "objective": objective,
            "chosen": chosen,
            "source": source,
            "checkpoint_objectives": single_objective,
            "report_objectives": report_objective,
            "merge_confirmed": bool(confirmed),
            "beats_every_checkpoint_on_report": all(
                report_objective["chosen"] > v for n, v in report_objective.items() if n != "chosen"
            ),
            "trials": len(trials),
            "study": result.study.study_name,
            "records_per_task": {
                "selection": {t: len(f) for t, f in select.frames.items()},
                "report": {t: len(f) for t, f in report_slice.frames.items()},
            },
            "mlflow_run_id": run.info.run_id,
        }
        mlflow.log_metric("objective", objective)
        mlflow.log_dict(report, "merge.json")
        save_bundle(unit.directory(cfg.paths.merged), spec, merged, merge=report)
        unit.write_json(reports / "merge.json", report)
        unit.write_json(plots / "merge_trials.json", trials)
    log.info(
        "merged model (%s, selection objective %.4f; checkpoints: %s) written to %s; on the "
        "report slice it scores %.4f (checkpoints: %s)",
        source,
        objective,
        ", ".join(f"{n} {v:.4f}" for n, v in single_objective.items()),
        cfg.paths.merged,
        report_objective["chosen"],
        ", ".join(f"{n} {v:.4f}" for n, v in report_objective.items() if n != "chosen"),
    )
    return report
