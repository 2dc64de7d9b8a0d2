"""What TMoLE costs over plain LoRA in training, and what folding it costs at inference.

Measures, side by side in one run on one machine (repeats interleaved, medians reported):
- a training step (forward + backward + AdamW step) of a small Llama-style backbone with
  TMoLE (E experts of rank r), with one peft LoRA of rank E*r (same total rank, the fair cost
  comparison), and with one peft LoRA of rank r;
- an inference forward of TMoLE folded into the base weights (``merge_into_base``) against the
  bare backbone (should be the same model shape, hence the same time).

Targets: TMoLE step <= 1.15x the rank-E*r LoRA step; folded inference <= 1.02x the backbone.
Writes reports/bench/tmole_overhead.json (atomically).

    python bench/tmole_overhead.py [--repeats 9] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from recfound import artifacts
from recfound.model.lora import LoRAAdapter
from recfound.model.tmole import TMoLEConfig, TMoLEModel

OUTPUT = Path("reports/bench/tmole_overhead.json")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TASKS = {
    "search": "embedding",
    "similar": "embedding",
    "rating": "generative",
    "next": "generative",
}


def build_backbone(hidden: int, layers: int, vocab: int, seq: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3 // 8 * 8,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        vocab_size=vocab,
        max_position_embeddings=seq,
    )
    return LlamaForCausalLM(config)


def train_step(
    adapter: TMoLEModel | LoRAAdapter, batch: dict[str, torch.Tensor]
) -> Callable[[], None]:
    """A closure running one forward + backward + AdamW step on ``batch``."""
    params = [p for p in adapter.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    adapter.model.train()

    def step() -> None:
        with adapter.task(batch["tasks"]):
            loss = adapter.model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def inference(model: nn.Module, input_ids: torch.Tensor) -> Callable[[], None]:
    model.eval()

    @torch.no_grad()
    def forward() -> None:
        model(input_ids=input_ids)

    return forward


def interleaved_medians(
    runs: dict[str, Callable[[], None]], repeats: int, inner: int, warmup: int
) -> dict[str, float]:
    """Median seconds per call of each run; one repeat times ``inner`` calls of every run in turn
    (rotating the order), so drift and background load hit all runs alike."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            for _ in range(inner):
                runs[name]()
            times[name].append((time.perf_counter() - start) / inner)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=4000)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--experts", type=int, default=6, help="E (split evenly across kinds)")
    parser.add_argument("--rank", type=int, default=8, help="r, the rank of each expert")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--inner", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.experts % 3:
        parser.error("--experts must be a multiple of 3 (embedding | shared | generative)")
    torch.set_num_threads(args.threads)

    base = build_backbone(args.hidden, args.layers, args.vocab, args.seq, args.seed)
    third = args.experts // 3
    tmole = TMoLEModel(
        copy.deepcopy(base),
        TMoLEConfig(
            rank=args.rank,
            alpha=2.0 * args.rank,
            num_embedding_experts=third,
            num_shared_experts=third,
            num_generative_experts=third,
            task_names=sorted(TASKS),
            task_kinds=dict(TASKS),
            target_modules=TARGETS,
            seed=args.seed,
        ),
    )
    total_rank = args.experts * args.rank
    lora_total = LoRAAdapter(copy.deepcopy(base), total_rank, 2.0 * total_rank, 0.0, TARGETS)
    lora_r = LoRAAdapter(copy.deepcopy(base), args.rank, 2.0 * args.rank, 0.0, TARGETS)
    with torch.no_grad():  # non-zero B so folding is not a no-op
        init = torch.Generator().manual_seed(args.seed)
        for name, p in tmole.adapter_state_dict().items():
            if name.endswith("tmole_B"):
                p.normal_(std=0.01, generator=init)

    generator = torch.Generator().manual_seed(args.seed)
    input_ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=generator)
    tasks = torch.arange(args.batch) % len(TASKS)  # a batch mixing every task
    batch = {"input_ids": input_ids, "tasks": tasks}

    step_medians = interleaved_medians(
        {
            "tmole": train_step(tmole, batch),
            "lora_same_total_rank": train_step(lora_total, batch),
            "lora_rank_r": train_step(lora_r, batch),
        },
        args.repeats,
        args.inner,
        args.warmup,
    )
    folded = tmole.merge_into_base("rating")
    infer_medians = interleaved_medians(
        {"folded_tmole": inference(folded, input_ids), "base": inference(base, input_ids)},
        args.repeats * 2,
        args.inner * 2,
        args.warmup,
    )
    result = {
        "step_ratio_vs_lora_same_total_rank": step_medians["tmole"]
        / step_medians["lora_same_total_rank"],
        "step_ratio_vs_lora_rank_r": step_medians["tmole"] / step_medians["lora_rank_r"],
        "folded_inference_ratio_vs_base": infer_medians["folded_tmole"] / infer_medians["base"],
        "targets": {
            "step_ratio_vs_lora_same_total_rank": 1.15,
            "folded_inference_ratio_vs_base": 1.02,
        },
        "median_step_seconds": step_medians,
        "median_inference_seconds": infer_medians,
        "trainable_parameters": {
            "tmole": tmole.trainable_parameters(),
            "lora_same_total_rank": lora_total.trainable_parameters(),
            "lora_rank_r": lora_r.trainable_parameters(),
        },
        "config": {
            **{k: v for k, v in vars(args).items() if k != "threads"},
            "target_modules": TARGETS,
            "tasks": TASKS,
            "lora_same_total_rank": total_rank,
            "optimizer": "AdamW",
            "dtype": "float32",
            "device": "cpu",
        },
        "machine": {
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "cpus_available": len(os.sched_getaffinity(0)),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
    }
    artifacts.write_json(OUTPUT, result)
    for key in (
        "step_ratio_vs_lora_same_total_rank",
        "step_ratio_vs_lora_rank_r",
        "folded_inference_ratio_vs_base",
    ):
        print(f"{key}: {result[key]:.3f}")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
