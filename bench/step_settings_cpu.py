"""CPU tokens/s of the default train and pretrain steps under the settings issue 23 added, side by
side in one process.

The code as it was before (commit 5c2d3a3) cannot be imported next to this tree, so each row is a
setting that changed, run with this tree's code on the same batches:

- train (``recfound train``'s step at params.yaml's sizes: the builtin backbone of
  ``model.builtin``, TMoLE on its projections, ``train.batch_size`` generative samples and
  ``train.embedding_batch_size`` embedding samples with ``catalogue_negatives``):
  ``default`` (SDPA, plain AdamW, no compile, FLOP accounting: what the default run does now);
  ``no_flop_accounting`` (the loop as before: without the per-batch model-FLOP count);
  ``eager_attention`` (what a user's checkpoint could load with before); ``fused_adamw`` (the GPU
  optimiser, here on CPU); ``compile`` (``train.compile: true``).
- pretrain (``pretrain_causal_lm`` at ``pretrain``'s sizes on random token rows, the builtin
  trained in full as ``trainable: auto`` does): ``default`` (SDPA), ``eager_attention``,
  ``identifiers`` (``pretrain.trainable: identifiers``: the backbone frozen).

Each variant trains ``--warmup`` steps untimed, then ``--steps`` timed; the variants alternate for
``--repeats`` rounds and the best round is reported (the median beside it). Tokens are those the
model reads (padding excluded). Writes ``--out`` (default reports/bench/step_settings_cpu.json).

    nice -n 10 .venv/bin/python -m bench.step_settings_cpu [--steps 6 --repeats 2 --no-compile]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.cpu_step_throughput import (
    IDENTIFIERS,
    builtin_spec,
    params_rec_model,
    pretrain_inputs,
    pretrain_steps,
)
from recfound.config import TrainConfig, load_config
from recfound.model.backbone import build_builtin_backbone, train_bpe_tokenizer
from recfound.train.pretrain_fit import prepare_trainable
from recfound.train.trainer import Trainer
from tests.train.tiny import tiny_tasks

REPO = Path(__file__).resolve().parents[1]


def set_attention(model: torch.nn.Module, implementation: str) -> None:
    model.config._attn_implementation = implementation
    for module in model.modules():
        if hasattr(module, "config") and hasattr(module.config, "_attn_implementation"):
            module.config._attn_implementation = implementation


def train_variant(cfg, name: str, out: Path) -> tuple[Trainer, Callable[[], tuple[int, float]]]:
    """A trainer at params.yaml's sizes with the variant's setting, and a function that times
    one step: (tokens, seconds)."""
    # two generative tasks and one embedding task from ml-100k's item attributes (the trainer
    # tests' tiny tasks); the step's sizes come from params.yaml, not from these records
    tasks = tiny_tasks(n_train=600, n_valid=16, questions=True)
    texts = [str(t) for task in tasks for t in [*task.train.prompt, *task.train.target]]
    tokenizer = train_bpe_tokenizer(texts, cfg.model.builtin.vocab_size)
    base = build_builtin_backbone(builtin_spec(cfg), tokenizer, seed=cfg.seed)
    if name == "eager_attention":
        set_attention(base, "eager")
    rec = params_rec_model(cfg, base, tokenizer, tasks)
    config: TrainConfig = cfg.train.model_copy(
        update={"compile": name == "compile", "eval_every": 10**6, "checkpoint_every": 10**6}
    )
    catalogue = (
        tasks[0]
        .train.rename(columns={"prompt": "text"})
        .assign(item_id=lambda f: range(len(f)), token="")
    )
    trainer = Trainer(rec, tasks, config, out, seed=cfg.seed, catalogue=catalogue)
    if name == "fused_adamw":
        trainer.optimizer.optimizer.defaults["fused"] = True
        for group in trainer.optimizer.optimizer.param_groups:
            group["fused"] = True
    trainer.module.train()

    def step() -> tuple[int, float]:
        start = time.perf_counter()
        batch = trainer.draw_batch()
        trainer.train_step(batch)
        if name != "no_flop_accounting":
            trainer.batch_flops(batch)
        return batch.tokens, time.perf_counter() - start

    return trainer, step


def pretrain_variant(cfg, name: str) -> Callable[[int], float]:
    """A function that pretrains the builtin for n steps with the variant's setting and returns
    its tokens/s (the function's own timing, validation excluded)."""
    model, tokenizer, blocks, behaviour = pretrain_inputs(cfg)
    if name == "eager_attention":
        set_attention(model, "eager")
    vocab = cfg.model.builtin.vocab_size
    rows = range(vocab - IDENTIFIERS, vocab)  # as many identifier rows as ml-100k's items
    trainable = "identifiers" if name == "identifiers" else "full"
    target = prepare_trainable(model, trainable, rows, weight_decay=cfg.pretrain.weight_decay)

    def run(steps: int) -> float:
        result = pretrain_steps(
            cfg,
            target.module,
            tokenizer,
            blocks,
            behaviour,
            steps,
            heldout=8,
            parameter_groups=target.parameter_groups,
        )
        return result.tokens_per_s

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant and round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compile)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true", help="leave the compile row out")
    parser.add_argument("--out", default=str(REPO / "reports/bench/step_settings_cpu.json"))
    args = parser.parse_args()
    cfg = load_config(args.params)
    torch.manual_seed(cfg.seed)
    train_names = ["default", "no_flop_accounting", "eager_attention", "fused_adamw"]
    train_names += [] if args.no_compile else ["compile"]
    pretrain_names = ["default", "eager_attention", "identifiers"]
    train_rates: dict[str, list[float]] = {n: [] for n in train_names}
    pretrain_rates: dict[str, list[float]] = {n: [] for n in pretrain_names}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        steps = {}
        for name in train_names:
            _, step = train_variant(cfg, name, Path(tmp) / name)
            for _ in range(args.warmup):
                step()
            steps[name] = step
        runs = {name: pretrain_variant(cfg, name) for name in pretrain_names}
        for run in runs.values():
            run(args.warmup)
        for _ in range(args.repeats):
            for name, step in steps.items():
                timed = [step() for _ in range(args.steps)]
                train_rates[name].append(sum(t for t, _ in timed) / sum(s for _, s in timed))
            for name, run in runs.items():
                pretrain_rates[name].append(run(args.steps))

    def table(rates: dict[str, list[float]]) -> dict[str, dict[str, float]]:
        base = max(rates["default"])
        return {
            n: {
                "tokens_per_s_best": max(r),
                "tokens_per_s_median": statistics.median(r),
                "vs_default": max(r) / base,
                "rounds": len(r),
            }
            for n, r in rates.items()
        }

    report = {
        "what": "CPU tokens/s of the default train and pretrain steps per setting (bench/"
        "step_settings_cpu.py); best of the rounds, the median beside it",
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "settings": vars(args),
        "train": table(train_rates),
        "pretrain": table(pretrain_rates),
        "seconds": time.perf_counter() - started,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    for part in ("train", "pretrain"):
        for name, row in report[part].items():
            print(
                f"{part:8s} {name:20s} {row['tokens_per_s_best']:9.0f} tokens/s "
                f"(median {row['tokens_per_s_median']:.0f}, x{row['vs_default']:.2f})"
            )
    print(f"wrote {out} in {report['seconds']:.0f} s")


if __name__ == "__main__":
    main()
