"""One model on one split of every task: the evaluation `evaluate` and `ablate` both run.

Every record of the full-ranking tasks and a seeded sample of at most ``evaluate.max_per_task``
records of the others; the model's per-record outputs and the baselines' on exactly the same
records; every metric with a seeded bootstrap interval.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from recfound.config import Config
from recfound.data.tasks import TASK_BUILDERS
from recfound.evaluation.baseline_predictions import TrainedBaselines, baseline_outputs
from recfound.evaluation.model_predictions import model_outputs
from recfound.evaluation.outputs import (
    BootstrapSettings,
    ChoiceOutputs,
    RecordOutputs,
    TextOutputs,
    compare,
    metric_estimates,
    well_formed,
)
from recfound.evaluation.protocols import assign_protocols, cap_records, load_eval_set
from recfound.evaluation.scores import evaluation_document, records_document
from recfound.layout import RECORDS_FILE
from recfound.model.recmodel import RecModel

log = logging.getLogger(__name__)


def answered_as(task_kinds: dict[str, str], tasks: list[str]) -> dict[str, str]:
    """Eval-only tasks the model has no adapter task for → the trained task that answers them."""
    out = {}
    for task in tasks:
        builder = TASK_BUILDERS.get(task)
        if task not in task_kinds and builder is not None and builder.answered_as in task_kinds:
            out[task] = builder.answered_as
    return out


SAMPLES_PER_TASK = 3


def text_samples(
    frames: dict[str, pd.DataFrame], outputs: dict[str, RecordOutputs], n: int = SAMPLES_PER_TASK
) -> dict[str, list[dict[str, Any]]]:
    """Per text task, its first ``n`` evaluated records: prompt, target, the model's answer and
    whether the answer is well-formed (so a reader can judge the text, not only its scores)."""
    out = {}
    for task, values in outputs.items():
        if not isinstance(values, TextOutputs):
            continue
        prompts = frames[task]["prompt"].astype(str).tolist()
        out[task] = [
            {
                "prompt": prompts[i],
                "target": values.target[i],
                "output": values.output[i],
                "well_formed": well_formed(values.output[i], values.answer_format),
            }
            for i in range(min(n, len(values)))
        ]
    return out


def single_path(
    alone: dict[str, RecordOutputs],
    fusion: dict[str, str],
    baselines: dict[str, dict[str, RecordOutputs]],
    document: dict[str, Any],
    settings: BootstrapSettings,
) -> dict[str, dict[str, Any]]:
    """Per fused task: the model's own signal alone (the embedding without BM25, or the
    identifiers without the embedding), its score metric and headline metrics with intervals,
    and its paired difference to the task's best baseline on the same records."""
    out = {}
    for task, outputs in alone.items():
        metric = document["tasks"][task]["score_metric"]
        estimates = metric_estimates(outputs, settings)
        entry: dict[str, Any] = {
            "path": "embedding" if fusion[task] == "bm25" else "identifiers",
            "fused_with": fusion[task],
            "metric": metric,
            "score": estimates[metric].value,
            "ci": estimates[metric].interval,
            "metrics": {
                k: {"value": e.value, "ci": e.interval}
                for k, e in estimates.items()
                if k in ("recall@10", "ndcg@10", "mrr@20")
            },
        }
        best = document["versus_best_baseline"].get(task, {}).get("baseline")
        if best in baselines and task in baselines[best]:
            entry["versus_best_baseline"] = {
                "baseline": best,
                **compare(outputs, baselines[best][task], metric, settings).to_dict(),
            }
        out[task] = entry
    return out


def evaluate_bundle(
    rec: RecModel,
    task_kinds: dict[str, str],
    cfg: Config,
    split: str = "test",
    trained: TrainedBaselines | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(metrics document, per-record outputs document)`` of one model on ``split``."""
    data = load_eval_set(cfg.paths.tasks, split, None, cfg.seed)
    aliases = answered_as(task_kinds, list(data.frames))
    unanswerable = [t for t in data.frames if t not in task_kinds and t not in aliases]
    for task in unanswerable:
        log.warning("task %s: the model has no adapter task for it; not evaluated", task)
        data.frames.pop(task)
    protocols = assign_protocols(data, rec)
    data = cap_records(data, protocols, cfg.evaluate.max_per_task, cfg.seed)
    bar = tqdm(total=len(data.frames), desc=f"evaluate ({split})", unit="task")

    def progress(task: str) -> None:
        bar.set_postfix_str(task)
        bar.update(1)

    started = time.perf_counter()
    alone: dict[str, RecordOutputs] = {}
    outputs = model_outputs(
        rec,
        data,
        protocols,
        ks=cfg.evaluate.ks,
        max_new_tokens=cfg.evaluate.max_new_tokens,
        batch_size=cfg.evaluate.batch_size,
        progress=progress,
        answered_as=aliases,
        fusion=cfg.evaluate.fusion,
        alone=alone,
    )
    bar.close()
    model_seconds = time.perf_counter() - started
    baselines = baseline_outputs(data, protocols, cfg.evaluate.ks, trained)
    kinds = {t: ("embedding" if protocols[t] == "retrieval" else "generative") for t in outputs}
    settings = BootstrapSettings(seed=cfg.seed)
    document = evaluation_document(outputs, baselines, protocols, kinds, settings)
    document.update(
        {
            "single_path": single_path(alone, cfg.evaluate.fusion, baselines, document, settings),
            "text_samples": text_samples(data.frames, outputs),
            "answered_as": aliases,
            "decision_thresholds": {
                task: values.threshold
                for task, values in outputs.items()
                if isinstance(values, ChoiceOutputs) and values.threshold is not None
            },
            "split": split,
            "records_file": RECORDS_FILE,
            "seconds": round(time.perf_counter() - started, 1),
            "model_seconds": round(model_seconds, 1),
        }
    )
    return document, records_document(outputs, protocols, split)
