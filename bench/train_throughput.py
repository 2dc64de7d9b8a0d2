"""Training throughput and model FLOPs utilisation (MFU) of the adapter training step.

For each backbone size (built from a config, random weights: throughput does not depend on them)
with the TMoLE adapter on its attention and MLP projections, measures:

- ``lm_step``: next-token loss over every position of ``batch x seq_len`` tokens, backward,
  AdamW step on the adapter: the plain causal-LM figure MFU is usually quoted for;
- ``rec_step``: the step ``recfound train`` takes, through the same RecModel code the trainer
  calls: answer-token cross-entropy of a generative batch (the LM head runs only on answer
  positions) plus InfoNCE of an embedding block (queries and documents: two forward passes).

Model FLOPs are counted analytically for the tokens processed: a frozen weight costs 2 FLOPs per
token forward and 2 backward (activation gradients only), a trainable weight 6, attention
``4 * seq * hidden`` per token and layer forward (twice that backward), the LM head only where it
runs. MFU = model FLOP/s over the device's peak: the vendor's dense bf16 figure for known GPUs
(``nominal``) and the best measured large bf16 matmul (``measured``); on a CPU the measured fp32
matmul. On CUDA the weights are fp32 and the step runs under bf16 autocast (what the trainer's
accelerate ``mixed_precision="bf16"`` does).

    python bench/train_throughput.py                     # CPU: the builtin size only
    python bench/train_throughput.py --sizes 125m,350m,1b --max-seconds 40   # a GPU

Needs torch, transformers, tokenizers and peft only (no params.yaml, no data): it runs on a bare
GPU machine. Writes ``--out`` (default reports/bench/train_throughput.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from recfound.config import ModelConfig
from recfound.model.backbone import (
    BuiltinSpec,
    add_item_tokens,
    build_builtin_backbone,
    train_bpe_tokenizer,
)
from recfound.model.build import AdapterSpec, build_rec_model
from recfound.train.losses import infonce

# Llama-style sizes (tied embeddings); vocab = BPE words + one token per item, as RecFound's
SIZES: dict[str, BuiltinSpec] = {
    "builtin": BuiltinSpec(128, 3, 4, 344, 256, 4000),  # params.yaml's model.builtin
    "125m": BuiltinSpec(768, 12, 12, 2048, 1024, 32000),
    "350m": BuiltinSpec(1024, 24, 16, 2816, 1024, 32000),
    "1b": BuiltinSpec(2048, 16, 32, 5632, 1024, 32000),
}
DEFAULTS = ModelConfig()  # params.yaml's model defaults
ADAPTER = AdapterSpec(DEFAULTS.tmole, tuple(DEFAULTS.target_modules))
# dense bf16 tensor-core peaks (vendor data sheets, without sparsity), by device-name substring
NOMINAL_BF16 = {
    "H200": 989.4e12,
    "H100 SXM": 989.4e12,
    "H100 80GB HBM3": 989.4e12,
    "H100 NVL": 835.5e12,
    "H100 PCIe": 756.5e12,
    "H100": 756.5e12,
    "A100": 312e12,
    "L40S": 362.05e12,
    "L4": 121e12,
    "A10G": 70e12,
}
TASKS = {"next_item": "generative", "user2item": "embedding"}


def nominal_peak(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return platform.processor() or platform.machine(), None
    name = torch.cuda.get_device_name(device)
    for key, peak in NOMINAL_BF16.items():
        if key in name:
            return name, peak
    return name, None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 10) -> float:
    """Best FLOP/s of a square matmul (after three warm-ups)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = 0.0
    for i in range(repeats + 3):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        if i >= 3:
            best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def linear_weights(model: torch.nn.Module) -> tuple[int, int]:
    """(frozen, trainable) weights of the transformer's linear layers and adapters, LM head
    excluded (counted separately, where it runs)."""
    head = model.get_output_embeddings().weight
    frozen = sum(
        m.weight.numel()
        for m in model.modules()
        if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad and m.weight is not head
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return frozen, trainable


def forward_flops(model: torch.nn.Module, tokens: int, seq: int, head_tokens: int) -> float:
    """Model FLOPs of forward + backward over ``tokens`` tokens of rows of length ``seq``, with
    the LM head (frozen, tied) on ``head_tokens`` of them."""
    frozen, trainable = linear_weights(model)
    config = model.config
    attention = 4 * seq * config.hidden_size * config.num_hidden_layers
    per_token = 4 * frozen + 6 * trainable + 3 * attention
    head = 4 * model.get_output_embeddings().weight.numel()
    return float(per_token * tokens + head * head_tokens)


def build(spec: BuiltinSpec, device: torch.device, seed: int = 0):
    words = [f"w{i}" for i in range(400)]
    generator = torch.Generator().manual_seed(seed)
    texts = [
        " ".join(words[j] for j in torch.randint(len(words), (12,), generator=generator))
        for _ in range(2000)
    ]
    tokenizer = train_bpe_tokenizer(texts, min(spec.vocab_size, 1000))
    items = [f"<item_{i}>" for i in range(max(0, spec.vocab_size - len(tokenizer)))]
    add_item_tokens(None, tokenizer, items)
    with torch.device(device):  # weights initialised in place (1B on a CPU takes long)
        base = build_builtin_backbone(spec, tokenizer, seed)
    rec = build_rec_model(base, tokenizer, ADAPTER, TASKS, seed=seed, max_length=spec.max_length)
    return rec, tokenizer, items


def measure(step, device: torch.device, max_steps: int, max_seconds: float) -> tuple[int, float]:
    """(steps, seconds) of timed steps after two warm-ups."""
    for _ in range(2):
        step()
    synchronize(device)
    start, steps = time.perf_counter(), 0
    while steps < max_steps and time.perf_counter() - start < max_seconds:
        step()
        steps += 1
    synchronize(device)
    return steps, time.perf_counter() - start


def bench_size(name: str, args: argparse.Namespace, device: torch.device, peaks: dict) -> dict:
    spec = SIZES[name]
    seq = min(args.seq_len, spec.max_length)
    rec, tokenizer, items = build(spec, device)
    model = rec.model
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(4, len(tokenizer), (args.batch_size, seq), generator=generator).to(device)

    def lm_step() -> None:
        with rec.adapter.task("next_item"), autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # rec_step data: behaviour prompts of item tokens, an item + a few words as the answer
    def texts(n: int, length: int) -> list[str]:
        rows = torch.randint(len(items), (n, length), generator=generator)
        return [" ".join(items[i] for i in row) for row in rows.tolist()]

    answer_len = max(4, seq // 8)
    prompts, answers = texts(args.batch_size, seq - answer_len - 2), texts(args.batch_size, 4)
    queries = texts(args.batch_size, seq // 2)
    documents = texts(args.batch_size, seq // 4)
    gen_batch = rec.encode_with_answers(prompts, answers)
    answer_tokens = int((gen_batch["labels"] != -100).sum())

    def rec_step() -> None:
        with autocast:
            picked, mask = rec.logprobs_of(gen_batch, "next_item")
            loss = -picked.sum() / mask.sum() + infonce(
                rec.embed_batch(queries, "user2item"),
                rec.embed_batch(documents, "user2item"),
                rec.temperature,
            )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    result = {
        "backbone": spec.__dict__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "seq_len": seq,
        "batch_size": args.batch_size,
    }
    gen_tokens = int(gen_batch["attention_mask"].sum())
    q_tokens, d_tokens = rec.count_tokens(queries), rec.count_tokens(documents)
    per_step = {
        "lm_step": (
            ids.numel(),
            forward_flops(model, ids.numel(), seq, ids.numel()),
        ),
        "rec_step": (
            gen_tokens + q_tokens + d_tokens,
            forward_flops(model, gen_tokens, seq, answer_tokens)
            + forward_flops(model, q_tokens, seq // 2, 0)
            + forward_flops(model, d_tokens, seq // 4, 0),
        ),
    }
    for kind, step in (("lm_step", lm_step), ("rec_step", rec_step)):
        steps, seconds = measure(step, device, args.steps, args.max_seconds)
        tokens, flops = per_step[kind]
        flops_per_s = flops * steps / seconds
        result[kind] = {
            "steps": steps,
            "seconds": round(seconds, 3),
            "tokens_per_step": tokens,
            "tokens_per_s": tokens * steps / seconds,
            "model_tflops_per_s": flops_per_s / 1e12,
            **{f"mfu_vs_{k}_peak": flops_per_s / v for k, v in peaks.items() if v},
        }
        print(name, kind, json.dumps(result[kind]), flush=True)
    if device.type == "cuda":
        result["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=None, help=f"comma-separated, of {list(SIZES)}")
    parser.add_argument("--steps", type=int, default=20, help="most timed steps per measure")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="per measure")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--out", default="reports/bench/train_throughput.json")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    args.sizes = args.sizes or ("125m,350m,1b" if gpu else "builtin")
    args.batch_size = args.batch_size or (16 if gpu else 8)
    args.seq_len = args.seq_len or (512 if gpu else 128)
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
    name, nominal = nominal_peak(device)
    measured = matmul_peak(device, torch.bfloat16 if gpu else torch.float32, 8192 if gpu else 1024)
    peaks = {"nominal_bf16": nominal, "measured_matmul": measured}
    document = {
        "device": str(device),
        "device_name": name,
        "dtype": "bf16 autocast, fp32 weights" if gpu else "fp32",
        "nominal_bf16_peak_flops": nominal,
        "measured_matmul_peak_flops": measured,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "sizes": {},
    }
    for size in args.sizes.split(","):
        try:
            document["sizes"][size] = bench_size(size, args, device, peaks)
        except torch.OutOfMemoryError as error:  # report the sizes that fit
            document["sizes"][size] = {"error": f"out of memory: {error}"[:300]}
        if gpu:
            torch.cuda.empty_cache()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
