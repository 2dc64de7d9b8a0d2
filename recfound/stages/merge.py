"""Stage `merge`: the kept training checkpoints → one merged model (an Optuna-tuned merge).

Recipe: rebuild the model from ``<paths.train>/model_spec.json`` (its seeded initial adapter is the
base of the task vectors) → score every kept checkpoint on a validation sample (the reference of
the normalised objective) → Optuna study over method, coefficients and density, one MLflow child
run per trial → write the best merge as a model bundle at ``paths.merged``; ``reports/merge.json``
and the study's figures (MLflow artifacts and ``reports/plots/``).

If no merge beats the best single checkpoint, that checkpoint is written instead and the report
says so: the stage never ships something worse than what training produced.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow

from recfound import artifacts
from recfound.config import Config
from recfound.evaluation.runner import evaluate_model, load_eval_set
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
from recfound.tracking.runs import stage_run

log = logging.getLogger(__name__)


def study_storage(cfg: Config) -> str:
    """sqlite file next to the merged model (outside it: DVC replaces the output folder)."""
    path = Path(cfg.paths.merged).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.parent / (path.name + '.optuna.db')}"


def run_merge(cfg: Config) -> dict:
    spec, _ = read_spec(cfg.paths.train)
    checkpoints = read_checkpoint_tensors(cfg.paths.train, cfg.merge.checkpoints)
    base_model, tokenizer = load_backbone(cfg.paths.backbone)
    rec = build_from_spec(base_model, tokenizer, spec)
    base = adapter_tensors(rec.model)  # the seeded initial adapter: task vectors are ckpt - base
    data = load_eval_set(
        cfg.paths.tasks, "valid", cfg.merge.max_per_task, cfg.seed, tasks=list(spec.task_kinds)
    )
    kwargs = {"ks": cfg.evaluate.ks, "batch_size": cfg.evaluate.batch_size, "quick": True}

    def score(tensors: dict) -> dict[str, float]:
        load_adapter_tensors(rec.model, tensors, "merged tensors")
        return {t: v["score"] for t, v in evaluate_model(rec, data, **kwargs).items()}

    settings = {"merge": cfg.merge.model_dump(), "seed": cfg.seed}
    with stage_run(cfg.tracking, "merge", settings) as run:
        single = {name: score(tensors) for name, tensors in checkpoints.items()}
        reference = {t: max(s[t] for s in single.values()) for t in next(iter(single.values()))}
        single_objective = {n: normalised_objective(s, reference)[0] for n, s in single.items()}
        for name, value in single_objective.items():
            log.info("checkpoint %s: validation objective %.4f", name, value)
            mlflow.log_metric(f"checkpoint/{name}/objective", value)

        def on_trial(number: int, choice: MergeChoice, value: float, scores: dict) -> None:
            with mlflow.start_run(run_name=f"trial-{number}", nested=True):
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

        plots = Path(cfg.paths.reports) / "plots"
        for figure in study_figures(result.study, plots):
            mlflow.log_artifact(str(figure), "plots")
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
            "beats_every_checkpoint": all(objective > v for v in single_objective.values()),
            "trials": len(trials),
            "study": result.study.study_name,
            "validation_records_per_task": cfg.merge.max_per_task,
            "mlflow_run_id": run.info.run_id,
        }
        mlflow.log_metric("objective", objective)
        mlflow.log_dict(report, "merge.json")
        save_bundle(cfg.paths.merged, spec, merged, merge=report)
    artifacts.write_json(Path(cfg.paths.reports) / "merge.json", report)
    artifacts.write_json(plots / "merge_trials.json", trials)
    log.info(
        "merged model (%s, objective %.4f; checkpoints: %s) written to %s",
        source,
        objective,
        ", ".join(f"{n} {v:.4f}" for n, v in single_objective.items()),
        cfg.paths.merged,
    )
    return report
