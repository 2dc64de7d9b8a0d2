"""Serving cost of the trained model on 2 CPU cores: what each M6-Rec technique buys and costs.

One run, one machine, requests interleaved across variants (so load from other processes hits
every variant alike). For ``user2item``, ``rating_prediction`` and ``candidate_ranking`` test
requests (one request = one row: a prompt and, for the two generative tasks, its candidates):

- ``pyfunc_unfolded``: today's MLflow pyfunc, every request through the TMoLE adapter;
- ``pyfunc_folded``: the pyfunc answering with the task's folded weights (the `serving` branch's
  ``folded`` option when present, else emulated here with :func:`fold_rec_model`);
- ``pyfunc_bare``: the same pyfunc code over the bare backbone (no adapter): the floor;
- ``recmodel_unfolded`` / ``recmodel_folded`` / ``bare_backbone``: the same three without pyfunc
  and pandas (``RecModel.score`` / ``embed`` called directly);
- ``late_interaction``: item side cached per catalogue (split layer chosen on validation);
- ``early_exit``: exit heads distilled on train records, threshold calibrated on validation;
- ``onnx_float`` / ``onnx_int8``: the device artifact (``recfound export``), float and int8;
- a free generation request (rating prompt without candidates) through the three pyfuncs;
- over HTTP: ``mlflow models serve`` on 127.0.0.1 (unfolded and folded pyfunc; a fixed request
  count per task and a time cap).

Quality: every choice (split layer, exit threshold) is made on validation records; the reported
scores and drops are on test records, against the float folded model (the same model as the
unfolded one: folding is exact), each with its 95% bootstrap interval over the records (the drops
paired record by record, as evaluation compares the model with its baselines). Writes
reports/bench/serving.json.

    python bench/serving.py --backbone models/backbone --bundle models/merged \
        --tasks-dir data/tasks [--requests 60] [--no-http]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from paired import interval_text, signed

from recfound import artifacts
from recfound.device.export import FLOAT_MODEL_FILE, export_task
from recfound.device.runtime import DeviceModel
from recfound.evaluation.outputs import (
    BootstrapSettings,
    RecordOutputs,
    compare,
    metric_estimates,
    task_metrics,
)
from recfound.evaluation.protocols import (
    EvalSet,
    assign_protocols,
    candidate_outputs,
    full_ranking_outputs,
    load_eval_set,
    record_histories,
    score_metric,
)
from recfound.inference.decoder import DecoderSteps
from recfound.inference.early_exit import (
    EarlyExitScorer,
    calibrate_threshold,
    exit_divergence,
    train_exit_heads,
)
from recfound.inference.late_interaction import LateInteractionScorer
from recfound.model.backbone import load_backbone
from recfound.model.bundle import load_bundle, read_spec
from recfound.model.folded import FoldedAdapter, fold_rec_model
from recfound.model.recmodel import RecModel

OUTPUT = Path("reports/bench/serving.json")
TASKS = ("user2item", "rating_prediction", "candidate_ranking")
SCORING = ("rating_prediction", "candidate_ranking")
KS = (1, 5, 10, 20)
# max softmax over the candidates: uniform is 0.2 for 5 candidates (ratings), 0.1 for 10
THRESHOLDS = (0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15)
GENERATE_TOKENS = 8


# ---- models --------------------------------------------------------------------------------


# ---- quality -------------------------------------------------------------------------------


def chunked_scores(
    score: Callable[[list[str], list[list[str]]], list[list[float]]],
    frame: pd.DataFrame,
    pairs: int = 64,
) -> list[list[float]]:
    prompts = frame["prompt"].astype(str).tolist()
    candidates = [[str(c) for c in cands] for cands in frame["candidates"]]
    step = max(1, pairs // max(len(c) for c in candidates))
    out: list[list[float]] = []
    for i in range(0, len(prompts), step):
        out += score(prompts[i : i + step], candidates[i : i + step])
    return out


def scoring_quality(frame: pd.DataFrame, scores: list[list[float]], task: str, protocol: str):
    metrics = task_metrics(candidate_outputs(frame, scores, protocol, KS))
    return metrics[score_metric(task, protocol)]


def retrieval_outputs(
    data: EvalSet, task: str, queries: np.ndarray, documents: np.ndarray
) -> RecordOutputs:
    frame = data.frames[task]
    histories = record_histories(frame, data.earlier_items())
    return full_ranking_outputs(frame, queries @ documents.T, data.item_index, histories, KS)


def variant_quality(outputs: dict[str, RecordOutputs], metric: str) -> dict[str, Any]:
    """Each variant's test score with its bootstrap interval, and its drop against the float
    folded model (``recmodel_folded``) with a paired bootstrap interval: both systems on the same
    resampled records, as evaluation compares the model with its baselines."""
    reference = outputs["recmodel_folded"]
    settings = BootstrapSettings()
    estimates = {name: metric_estimates(o, settings)[metric] for name, o in outputs.items()}
    quality: dict[str, Any] = {name: e.value for name, e in estimates.items()}
    quality["interval"] = {name: e.interval for name, e in estimates.items()}
    quality["drop"] = {
        name: compare(reference, o, metric, settings).to_dict()
        for name, o in outputs.items()
        if name != "recmodel_folded"
    }
    return quality


# ---- latency -------------------------------------------------------------------------------


def summarize(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p99/mean latency (ms) and sequential throughput (requests/s)."""
    values = np.asarray(seconds) * 1000
    return {
        "n": len(values),
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "mean_ms": float(values.mean()),
        "throughput_rps": float(1000 / values.mean()),
    }


def interleaved(
    calls: dict[str, Callable[[int], Any]], n: int, warmup: int = 2
) -> dict[str, dict[str, float]]:
    """Every variant answers request i before any answers request i + 1 (rotating order)."""
    names = list(calls)
    for name in names:
        for i in range(min(warmup, n)):
            calls[name](i)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(n):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            start = time.perf_counter()
            calls[name](i)
            times[name].append(time.perf_counter() - start)
    return {name: summarize(values) for name, values in times.items()}


def request_rows(frame: pd.DataFrame, task: str, with_candidates: bool) -> list[dict[str, Any]]:
    rows = []
    for _, record in frame.iterrows():
        candidates = [str(c) for c in record["candidates"]] if with_candidates else None
        rows.append({"task": task, "input": str(record["prompt"]), "candidates": candidates})
    return rows


@dataclass
class Variants:
    pyfuncs: dict[str, Any]  # name -> an MLflow pyfunc PythonModel (loaded)
    rec: RecModel
    folded: dict[str, RecModel]
    bare: RecModel
    late: dict[str, LateInteractionScorer]
    early: dict[str, EarlyExitScorer]
    device: dict[str, dict[str, DeviceModel]]


def request_calls(
    task: str, rows: list[dict[str, Any]], v: Variants
) -> dict[str, Callable[[int], Any]]:
    """Variant -> a call answering request ``i`` of ``rows`` (one row per request)."""
    prompts = [r["input"] for r in rows]
    cands = [r["candidates"] for r in rows]
    calls: dict[str, Callable[[int], Any]] = {
        name: (lambda i, m=model: m.predict(None, pd.DataFrame([rows[i]])))
        for name, model in v.pyfuncs.items()
    }
    int8, flt = v.device[task]["onnx_int8"], v.device[task]["onnx_float"]
    if task not in SCORING:
        return calls | {
            "recmodel_unfolded": lambda i: v.rec.embed([prompts[i]], task),
            "recmodel_folded": lambda i: v.folded[task].embed([prompts[i]], task),
            "bare_backbone": lambda i: v.bare.embed([prompts[i]], task),
            "onnx_float": lambda i: flt.embed([prompts[i]]),
            "onnx_int8": lambda i: int8.embed([prompts[i]]),
        }
    return calls | {
        "recmodel_unfolded": lambda i: v.rec.score([prompts[i]], [cands[i]], task),
        "recmodel_folded": lambda i: v.folded[task].score([prompts[i]], [cands[i]], task),
        "bare_backbone": lambda i: v.bare.score([prompts[i]], [cands[i]], task),
        "late_interaction": lambda i: v.late[task].score([prompts[i]], [cands[i]]),
        "early_exit": lambda i: v.early[task].score([prompts[i]], [cands[i]]),
        "onnx_float": lambda i: flt.score([prompts[i]], [cands[i]]),
        "onnx_int8": lambda i: int8.score([prompts[i]], [cands[i]]),
    }


# ---- main ----------------------------------------------------------------------------------


def ratio(a: dict[str, float], b: dict[str, float]) -> float:
    return round(a["p50_ms"] / b["p50_ms"], 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", type=Path, default=Path("models/backbone"))
    parser.add_argument("--bundle", type=Path, default=Path("models/merged"))
    parser.add_argument("--tasks-dir", type=Path, default=Path("data/tasks"))
    parser.add_argument("--requests", type=int, default=60, help="timed requests per task")
    parser.add_argument("--quality-records", type=int, default=200, help="per task and split")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--exit-steps", type=int, default=150)
    parser.add_argument("--tolerance", type=float, default=0.005, help="validation drop allowed")
    parser.add_argument("--http-requests", type=int, default=30)
    parser.add_argument("--http-cap-s", type=float, default=120)
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument(
        "--no-pyfunc", action="store_true", help="skip the MLflow rows (pyfuncs, HTTP)"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    began = time.time()

    spec, _ = read_spec(args.bundle)
    kinds = dict(spec.task_kinds)
    rec = load_bundle(args.backbone, args.bundle)
    folded = {task: fold_rec_model(rec, task) for task in TASKS}
    valid = load_eval_set(args.tasks_dir, "valid", args.quality_records, args.seed, TASKS)
    test = load_eval_set(args.tasks_dir, "test", args.quality_records, args.seed, TASKS)
    train = load_eval_set(args.tasks_dir, "train", args.quality_records, args.seed, TASKS)
    protocols = assign_protocols(test, rec)
    item_texts = test.items["text"].astype(str).tolist()
    report: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "threads": args.threads,
        "model": {"backbone": str(args.backbone), "bundle": str(args.bundle)},
        "quality": {},
        "choices": {},
    }

    # ---- device artifacts (float and int8), one per task
    device_root = Path(tempfile.mkdtemp(prefix="recfound-device-"))
    device: dict[str, dict[str, DeviceModel]] = {}
    sizes = {}
    for task in TASKS:
        exported = export_task(
            rec, task, kinds, device_root / task, items=test.items, keep_float=True
        )
        device[task] = {
            "onnx_int8": DeviceModel(exported.directory, threads=args.threads),
            "onnx_float": DeviceModel(
                exported.directory, threads=args.threads, model_file=FLOAT_MODEL_FILE
            ),
        }
        sizes[task] = {
            "int8_bytes": exported.model_bytes,
            "float_bytes": exported.float_model_bytes,
            "smaller": round(exported.float_model_bytes / exported.model_bytes, 2),
        }
    report["artifact_sizes"] = sizes

    # ---- late interaction: split layer chosen on validation
    late: dict[str, LateInteractionScorer] = {}
    early: dict[str, EarlyExitScorer] = {}
    for task in SCORING:
        protocol = protocols[task]
        reference = scoring_quality(
            valid.frames[task],
            chunked_scores(lambda p, c, t=task: folded[t].score(p, c, t), valid.frames[task]),
            task,
            protocol,
        )
        trials = []
        chosen = 0
        for split in range(DecoderSteps(folded[task].model).num_layers):
            scorer = LateInteractionScorer(folded[task], split_layer=split)
            value = scoring_quality(
                valid.frames[task], chunked_scores(scorer.score, valid.frames[task]), task, protocol
            )
            trials.append({"split_layer": split, "valid_score": value})
            if value >= reference - args.tolerance:
                chosen = split
        late[task] = LateInteractionScorer(folded[task], split_layer=chosen)
        late[task].cache_catalogue(
            c for frame in (test.frames[task], valid.frames[task]) for cands in frame["candidates"]
            for c in cands
        )  # fmt: skip
        report["choices"].setdefault(task, {})["late_interaction"] = {
            "valid_reference": reference,
            "trials": trials,
            "split_layer": chosen,
            "cached_items": late[task].cached_items,
            "cache_bytes": late[task].cache_bytes(),
        }
        # ---- early exit: heads on train records, threshold on validation
        frame = train.frames[task]
        heads = train_exit_heads(
            folded[task],
            frame["prompt"].astype(str).tolist(),
            frame["target"].astype(str).tolist(),
            steps=args.exit_steps,
            seed=args.seed,
        )

        def evaluate(threshold: float, t: str = task, h=heads) -> tuple[float, float]:
            scorer = EarlyExitScorer(folded[t], h, threshold)
            layers: list[int] = []

            def score(
                p: list[str], lists: list[list[str]], s=scorer, used=layers
            ) -> list[list[float]]:
                result = s.score(p, lists)
                used.extend(result.layers)
                return result.scores

            value = scoring_quality(
                valid.frames[t], chunked_scores(score, valid.frames[t]), t, protocols[t]
            )
            return value, float(np.mean(layers))

        calibration = calibrate_threshold(evaluate, THRESHOLDS, args.tolerance)
        early[task] = EarlyExitScorer(folded[task], heads, calibration.threshold)
        held = valid.frames[task]
        report["choices"][task]["early_exit"] = {
            **calibration.to_dict(),
            "exit_layers": list(heads.layers),
            "divergence_valid": exit_divergence(
                folded[task],
                heads,
                held["prompt"].astype(str).tolist()[:64],
                held["target"].astype(str).tolist()[:64],
            ),
        }

    # ---- test quality of every variant, against the float folded model
    for task in TASKS:
        frame = test.frames[task]
        protocol = protocols[task]
        outputs: dict[str, RecordOutputs] = {}
        extra: dict[str, Any] = {}
        if task in SCORING:
            variants: dict[str, Callable] = {
                "recmodel_folded": lambda p, c, t=task: folded[t].score(p, c, t),
                "late_interaction": late[task].score,
                "onnx_float": device[task]["onnx_float"].score,
                "onnx_int8": device[task]["onnx_int8"].score,
            }
            for name, score in variants.items():
                outputs[name] = candidate_outputs(frame, chunked_scores(score, frame), protocol, KS)
            layers: list[int] = []

            def exit_score(p, c, t=task, used=layers):
                result = early[t].score(p, c)
                used.extend(result.layers)
                return result.scores

            outputs["early_exit"] = candidate_outputs(
                frame, chunked_scores(exit_score, frame), protocol, KS
            )
            extra["early_exit_mean_layers"] = float(np.mean(layers))
            extra["num_layers"] = early[task].num_layers
        else:
            queries = folded[task].embed(frame["prompt"].astype(str).tolist(), task).numpy()
            documents = folded[task].embed(item_texts, task).numpy()
            outputs["recmodel_folded"] = retrieval_outputs(test, task, queries, documents)
            for name in ("onnx_float", "onnx_int8"):
                model = device[task][name]
                q = model.embed(frame["prompt"].astype(str).tolist())
                outputs[name] = retrieval_outputs(test, task, q, model.embed(item_texts))
        metric = score_metric(task, protocol)
        quality = {**variant_quality(outputs, metric), **extra, "metric": metric}
        quality["records"] = len(frame)
        report["quality"][task] = quality

    artifacts.write_json(args.out, report)  # partial: quality and choices
    print(json.dumps(report["quality"]), flush=True)

    # ---- latency, in process
    pyfuncs: dict[str, Any] = {}
    if not args.no_pyfunc:
        import serving_pyfunc  # bench/ is the script's folder, on sys.path

        pyfuncs = serving_pyfunc.pyfunc_models(args.backbone, args.bundle)
        report["folded_pyfunc"] = "recfound.serving.pyfunc (serving.folded)"
    base, _ = load_backbone(args.backbone)
    base.eval()
    bare = RecModel(
        FoldedAdapter(base, None),
        rec.tokenizer,
        pooling=rec.pooling,
        embedding_attention=rec.embedding_attention,
        max_length=rec.max_length,
    )
    variants = Variants(pyfuncs, rec, folded, bare, late, early, device)
    latency: dict[str, Any] = {}
    requests: dict[str, list[dict[str, Any]]] = {}
    for task in TASKS:
        frame = test.frames[task].head(args.requests)
        rows = request_rows(frame, task, with_candidates=task in SCORING)
        requests[task] = rows
        calls = request_calls(task, rows, variants)
        with torch.no_grad():
            latency[task] = interleaved(calls, len(rows))
    # a free generation request: the rating prompt without candidates
    gen_rows = request_rows(test.frames["rating_prediction"].head(args.requests // 2),
                            "rating_prediction", with_candidates=False)  # fmt: skip
    params = {"max_new_tokens": GENERATE_TOKENS}
    with torch.no_grad():
        latency["generate"] = pyfuncs and interleaved(
            {
                name: (lambda i, m=model: m.predict(None, pd.DataFrame([gen_rows[i]]), params))
                for name, model in pyfuncs.items()
            },
            len(gen_rows),
        )
    report["latency"] = latency

    ratios: dict[str, Any] = {}
    for task, rows in latency.items():
        r: dict[str, float] = {}
        if not rows:
            continue
        if "pyfunc_bare" in rows:
            r["pyfunc_folded_over_pyfunc_bare"] = ratio(rows["pyfunc_folded"], rows["pyfunc_bare"])
            r["pyfunc_unfolded_over_pyfunc_folded"] = ratio(
                rows["pyfunc_unfolded"], rows["pyfunc_folded"]
            )
        if "bare_backbone" in rows:
            r["recmodel_folded_over_bare"] = ratio(rows["recmodel_folded"], rows["bare_backbone"])
            r["recmodel_unfolded_over_folded"] = ratio(
                rows["recmodel_unfolded"], rows["recmodel_folded"]
            )
            r["onnx_int8_speedup_over_recmodel_folded"] = ratio(
                rows["recmodel_folded"], rows["onnx_int8"]
            )
            r["onnx_int8_speedup_over_onnx_float"] = ratio(rows["onnx_float"], rows["onnx_int8"])
        for name in ("late_interaction", "early_exit"):
            if name in rows:
                r[f"{name}_speedup_over_recmodel_unfolded"] = ratio(
                    rows["recmodel_unfolded"], rows[name]
                )
                r[f"{name}_speedup_over_recmodel_folded"] = ratio(
                    rows["recmodel_folded"], rows[name]
                )
        ratios[task] = r
    report["ratios"] = ratios
    artifacts.write_json(args.out, report)  # partial: without HTTP

    # ---- over HTTP
    if not (args.no_http or args.no_pyfunc):
        models_dir = Path(tempfile.mkdtemp(prefix="recfound-pyfunc-"))
        urls: dict[str, str] = {}
        with contextlib.ExitStack() as stack:
            for name, flag in (("http_unfolded", False), ("http_folded", True)):
                serving_pyfunc.save_pyfunc(models_dir / name, args.backbone, args.bundle, flag)
                server = serving_pyfunc.mlflow_server(models_dir / name, args.threads)
                urls[name] = stack.enter_context(server)
            times = serving_pyfunc.http_latency(urls, requests, args.http_requests, args.http_cap_s)
            report["http"] = {
                task: {name: summarize(values) for name, values in rows.items()}
                for task, rows in times.items()
            }
            report["http_settings"] = {
                "requests_per_task": args.http_requests,
                "time_cap_s": args.http_cap_s,
                "workers": 1,
            }
    report["wall_s"] = round(time.time() - began, 1)
    artifacts.write_json(args.out, report)
    print(markdown(report))


ROWS = (
    "pyfunc_unfolded",
    "pyfunc_folded",
    "pyfunc_bare",
    "recmodel_unfolded",
    "recmodel_folded",
    "bare_backbone",
    "late_interaction",
    "early_exit",
    "onnx_float",
    "onnx_int8",
)


def markdown(report: dict[str, Any]) -> str:
    """The README table: p50 / p99 ms per request and test score per variant and task; the float
    folded model's score with its interval, every other variant's with its paired drop."""
    tasks = [t for t in (*TASKS, "generate") if report["latency"].get(t)]
    lines = [
        "| variant | " + " | ".join(tasks) + " |",
        "|---|" + "---|" * len(tasks),
    ]
    for row in ROWS:
        cells = []
        for task in tasks:
            timing = report["latency"][task].get(row)
            if timing is None:
                cells.append("–")
                continue
            cell = f"{timing['p50_ms']:.1f} / {timing['p99_ms']:.1f}"
            quality = report["quality"].get(task, {})
            if row in quality:
                drop = quality["drop"].get(row)
                cell += f" · {quality[row]:.3f}"
                if row == "recmodel_folded":
                    cell += " " + interval_text(quality["interval"][row], "")
                if drop is not None:
                    cell += f" ({signed(drop)})"
            cells.append(cell)
        if any(c != "–" for c in cells):
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
    if report.get("http"):
        lines += ["", "| over HTTP (p50 / p99 ms) | " + " | ".join(report["http"]) + " |"]
        lines.append("|---|" + "---|" * len(report["http"]))
        servers = sorted({s for rows in report["http"].values() for s in rows})
        for server in servers:
            cells = [
                f"{rows[server]['p50_ms']:.1f} / {rows[server]['p99_ms']:.1f}"
                if server in rows
                else "–"
                for rows in report["http"].values()
            ]
            lines.append(f"| {server} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
