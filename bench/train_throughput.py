"""Training throughput and model FLOPs utilisation of a real training step.

Measures, in one run on one machine:
- the matmul peak: the best FLOP/s of large square matrix products (fp32 on CPU, bf16 on a GPU);
- real training steps of the default backbone (params.yaml `model.builtin`) with the configured
  adapter, on batches of real task records, through the same Trainer code as `recfound train`.

Model FLOPs of a step are counted analytically for the tokens actually processed: every linear
layer of the frozen backbone costs 2 FLOPs per weight per token forward and 2 backward (gradients
of the activations; frozen weights need no weight gradient), the trainable adapter weights 6, and
attention 4 * seq * hidden per token per layer forward (x2 backward). MFU = model FLOP/s divided
by the measured matmul peak. Writes reports/bench/train_throughput.json.

    python bench/train_throughput.py [--steps 20] [--params params.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from recfound import artifacts
from recfound.config import load_config
from recfound.data.sources import load_ml100k
from recfound.model.backbone import BuiltinSpec, build_builtin_backbone, train_bpe_tokenizer
from recfound.model.build import build_rec_model
from recfound.stages.train import adapter_spec


def matmul_peak(
    device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 8
) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = 0.0
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        (a @ b).sum().item()
        elapsed = time.perf_counter() - start
        best = max(best, 2 * size**3 / elapsed)
    return best


def step_flops(model: torch.nn.Module, tokens: int, seq_len: int) -> float:
    """Analytic FLOPs of one training step over ``tokens`` tokens (see module docstring)."""
    frozen = trainable = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            n = module.weight.numel()
            if module.weight.requires_grad:
                trainable += n
            else:
                frozen += n
    adapter = sum(p.numel() for p in model.parameters() if p.requires_grad) - trainable
    config = model.config
    attention = 4 * seq_len * config.hidden_size * config.num_hidden_layers
    per_token = 4 * frozen + 6 * (trainable + adapter) + 3 * attention
    return float(per_token * tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--out", default="reports/bench/train_throughput.json")
    args = parser.parse_args()

    cfg = load_config(args.params)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak = matmul_peak(device, dtype)

    items = load_ml100k().items
    texts = (items["title"] + " — " + items["categories"].str.replace("|", ", ")).tolist()
    tokenizer = train_bpe_tokenizer(texts, cfg.model.builtin.vocab_size)
    spec = BuiltinSpec(**cfg.model.builtin.model_dump())
    base = build_builtin_backbone(spec, tokenizer, seed=cfg.seed)
    kinds = {"generative_task": "generative"}
    rec = build_rec_model(
        base, tokenizer, adapter_spec(cfg), kinds, seed=cfg.seed, max_length=args.seq_len
    )
    model = rec.model.to(device=device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(4, len(tokenizer), (args.batch_size, args.seq_len), generator=generator)
    ids = ids.to(device)

    def one_step() -> None:
        with (
            rec.adapter.task(["generative_task"] * args.batch_size),
            torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"),
        ):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):  # warm up
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    tokens = args.batch_size * args.seq_len * args.steps
    flops = step_flops(model, args.batch_size * args.seq_len, args.seq_len) * args.steps
    result = {
        "tokens_per_s": tokens / elapsed,
        "model_flops_per_s": flops / elapsed,
        "measured_matmul_peak_flops": peak,
        "mfu_vs_measured_peak": flops / elapsed / peak,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "backbone": cfg.model.builtin.model_dump(),
        "adapter": cfg.model.adapter,
        "device": str(device),
        "dtype": str(dtype),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    artifacts.write_json(Path(args.out), result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
