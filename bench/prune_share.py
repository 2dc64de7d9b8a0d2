"""What M6-Rec's pruning and parameter sharing buy and cost here: size, speed and quality.

``prune``: the trained model (backbone + merged bundle) with the ``H`` least important attention
heads and the ``C`` least important MLP channels of every layer removed (first-order importance
on *training* records, :mod:`recfound.model.prune`), its TMoLE adapter cut to match, no
retraining. Per setting: backbone parameters, safetensors bytes, p50 latency of one backbone
forward pass over a batch of validation prompts, and each task's validation score (the evaluate
stage's metrics, ``--max-per-task`` records, never the test split).

``share``: the builtin backbone (params.yaml sizes, the trained backbone's vocabulary) with
``model.builtin.share_layers`` set to each value (ALBERT-style groups): parameters, safetensors
bytes, forward latency; with ``--steps N`` also the ``pretrain`` stage run from scratch for each at
that budget: the held-out LM loss and the validation next-item NDCG@10 / Recall@10 of the stage's
probe (validation users).

Writes reports/bench/prune.json and reports/bench/share.json.

    python bench/prune_share.py prune --backbone models/backbone --bundle models/merged \
        [--tasks data/tasks] [--settings 0:0 1:0 2:0 0:86 1:86 2:172]
    python bench/prune_share.py share --backbone models/backbone [--shares 1 3] [--steps 600]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import load_file
from scratch import point_at_scratch

from recfound import artifacts
from recfound.config import parse_config
from recfound.data.datasets import read_task_frames, task_kind
from recfound.evaluation.model_predictions import evaluate_model
from recfound.evaluation.protocols import load_eval_set
from recfound.model.adapter_format import WEIGHTS_FILE
from recfound.model.backbone import (
    BuiltinSpec,
    build_builtin_backbone,
    load_backbone,
    save_backbone,
)
from recfound.model.bundle import build_from_spec, load_adapter_tensors, read_spec
from recfound.model.prune import importance_scores, prune_adapter_tensors, prune_model
from recfound.stages.pretrain import run_pretrain

TASKS = ("sequential_recommendation", "user2item", "rating_prediction", "candidate_ranking")


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # shared tensors once


def saved_bytes(model, tokenizer) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        save_backbone(model, tokenizer, scratch)
        return sum(f.stat().st_size for f in Path(scratch).glob("*.safetensors"))


@torch.no_grad()
def forward_p50_ms(model, batch: dict[str, torch.Tensor], repeats: int = 9) -> float:
    """p50 wall time of one forward pass of the decoder (no LM head) over ``batch``."""
    model.eval()
    decoder = model.base_model
    decoder(**batch)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        decoder(**batch)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def add_ratios(rows: list[dict]) -> None:
    """Size and speed of every row relative to the first (the unchanged model)."""
    full = rows[0]
    for row in rows:
        row["parameters_ratio"] = row["parameters"] / full["parameters"]
        row["bytes_ratio"] = row["safetensors_bytes"] / full["safetensors_bytes"]
        row["speedup"] = full["forward_p50_ms"] / row["forward_p50_ms"]


def prompt_batch(tokenizer, prompts: list[str], max_length: int = 256) -> dict[str, torch.Tensor]:
    batch = tokenizer(
        prompts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def training_lm_batches(tokenizer, tasks_dir: str, records: int, batch_size: int, seed: int):
    """LM batches (labels = tokens, padding ignored) of ``records`` training records (prompt +
    answer) drawn evenly from the generative tasks' *train* split."""
    frames = read_task_frames(tasks_dir, splits=("train",))
    generative = [n for n, s in frames.items() if len(s["train"]) and task_kind(s) == "generative"]
    per_task = max(1, records // len(generative))
    texts = []
    for name in sorted(generative):
        train = frames[name]["train"]
        sample = train.sample(min(per_task, len(train)), random_state=seed)
        texts += (sample["prompt"].astype(str) + " " + sample["target"].astype(str)).tolist()
    batches = []
    for start in range(0, len(texts), batch_size):
        batch = prompt_batch(tokenizer, texts[start : start + batch_size])
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        batches.append({**batch, "labels": labels})
    return batches, len(texts)


def run_prune(args: argparse.Namespace) -> dict:
    base, tokenizer = load_backbone(args.backbone)
    spec, _ = read_spec(args.bundle)
    adapter = load_file(str(Path(args.bundle) / WEIGHTS_FILE))
    batches, n_records = training_lm_batches(tokenizer, args.tasks, args.records, 8, args.seed)
    importance = importance_scores(base, batches)
    data = load_eval_set(args.tasks, "valid", args.max_per_task, args.seed, tasks=list(TASKS))
    prompts = data.frames["sequential_recommendation"]["prompt"].astype(str).tolist()[:16]
    timing_batch = prompt_batch(tokenizer, prompts)
    rows = []
    for setting in args.settings:
        heads, channels = (int(x) for x in setting.split(":"))
        pruned, plan = prune_model(copy.deepcopy(base), importance, heads, channels)
        row = {  # the bare pruned backbone, before the adapter wraps it
            "heads_pruned_per_layer": heads,
            "channels_pruned_per_layer": channels,
            "architecture": type(pruned).__name__,
            "parameters": parameter_count(pruned),
            "safetensors_bytes": saved_bytes(pruned, tokenizer),
            "forward_p50_ms": forward_p50_ms(pruned, timing_batch),
        }
        rec = build_from_spec(pruned, tokenizer, spec)
        load_adapter_tensors(rec.model, prune_adapter_tensors(adapter, plan), "pruned adapter")
        started = time.perf_counter()
        scores = evaluate_model(rec, data, ks=(10,), batch_size=32)
        row["evaluation_seconds"] = time.perf_counter() - started
        row["valid_scores"] = {t: s["score"] for t, s in scores.items()}
        row["score_metrics"] = {t: s["score_metric"] for t, s in scores.items()}
        row["valid_mean_score"] = float(np.mean(list(row["valid_scores"].values())))
        rows.append(row)
        print(row, flush=True)
    add_ratios(rows)
    for row in rows:
        row["mean_score_change"] = row["valid_mean_score"] - rows[0]["valid_mean_score"]
    return {
        "what": "structured pruning of the trained backbone (no retraining): size, speed and "
        "validation quality of the merged TMoLE model on the pruned backbone",
        "backbone": str(args.backbone),
        "bundle": str(args.bundle),
        "importance": f"first-order |dL/dgate| on {n_records} training records "
        f"({len(batches)} batches), generative tasks' train split",
        "evaluation": f"validation split, at most {args.max_per_task} records per task",
        "timing": f"decoder forward of {len(prompts)} validation prompts, p50 of 9, "
        f"{torch.get_num_threads()} torch threads, 2-core CPU shared with other jobs",
        "rows": rows,
    }


def pretrain_quality(raw: dict, share: int, args: argparse.Namespace) -> dict:
    """The pretrain stage's held-out loss and validation probe for ``share`` at ``args.steps``."""
    raw = copy.deepcopy(raw)
    with tempfile.TemporaryDirectory() as scratch:
        raw["model"]["builtin"]["share_layers"] = share
        raw["pretrain"].update(steps=args.steps, eval_every=args.steps)
        raw["paths"]["tasks"] = args.tasks
        point_at_scratch(raw, scratch, "backbone", "reports")
        started = time.perf_counter()
        metrics = run_pretrain(parse_config(raw, origin=args.params))
    keys = (
        "heldout_loss_after",
        "heldout_behaviour_loss_after",
        "valid_ndcg@10_after",
        "valid_recall@10_after",
    )
    return {
        "pretrain_steps": args.steps,
        "pretrain_seconds": time.perf_counter() - started,
        **{k: metrics[k] for k in keys if k in metrics},
    }


def run_share(args: argparse.Namespace) -> dict:
    raw = yaml.safe_load(Path(args.params).read_text())
    cfg = parse_config(raw, origin=args.params)
    _, tokenizer = load_backbone(args.backbone)  # the default model's vocabulary (item tokens)
    frames = read_task_frames(args.tasks, splits=("valid",))
    prompts = frames["sequential_recommendation"]["valid"]["prompt"].astype(str).tolist()[:16]
    timing_batch = prompt_batch(tokenizer, prompts)
    rows = []
    for share in args.shares:
        spec = BuiltinSpec(**{**cfg.model.builtin.model_dump(), "share_layers": share})
        model = build_builtin_backbone(spec, tokenizer, seed=cfg.seed)
        row = {
            "share_layers": share,
            "num_layers": spec.num_layers,
            "parameters": parameter_count(model),
            "safetensors_bytes": saved_bytes(model, tokenizer),
            "forward_p50_ms": forward_p50_ms(model, timing_batch),
        }
        if args.steps:
            row.update(pretrain_quality(raw, share, args))
        rows.append(row)
        print(row, flush=True)
    add_ratios(rows)
    return {
        "what": "ALBERT-style cross-layer sharing of the builtin backbone (params.yaml sizes, the "
        "default model's vocabulary): size and speed; with --steps, quality after pretraining "
        "each from scratch with the pretrain stage at that budget (validation probe, never test)",
        "timing": f"decoder forward of {len(prompts)} validation prompts, p50 of 9, "
        f"{torch.get_num_threads()} torch threads, 2-core CPU shared with other jobs",
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prune = commands.add_parser("prune")
    prune.add_argument("--backbone", default="models/backbone")
    prune.add_argument("--bundle", default="models/merged")
    prune.add_argument("--tasks", default="data/tasks")
    prune.add_argument("--settings", nargs="+", default=["0:0", "1:0", "2:0", "0:86", "2:172"])
    prune.add_argument("--records", type=int, default=128)
    prune.add_argument("--max-per-task", type=int, default=100)
    prune.add_argument("--seed", type=int, default=42)
    share = commands.add_parser("share")
    share.add_argument("--shares", type=int, nargs="+", default=[1, 3])
    share.add_argument("--steps", type=int, default=0, help="pretrain steps (0: size/speed)")
    share.add_argument("--backbone", default="models/backbone")
    share.add_argument("--params", default="params.yaml")
    share.add_argument("--tasks", default="data/tasks")
    for sub in (prune, share):
        sub.add_argument("--out", default="reports/bench")
    args = parser.parse_args()
    torch.manual_seed(0)
    document = run_prune(args) if args.command == "prune" else run_share(args)
    document["command"] = "python bench/prune_share.py " + " ".join(sys.argv[1:])
    artifacts.write_json(Path(args.out) / f"{args.command}.json", document)


if __name__ == "__main__":
    main()
