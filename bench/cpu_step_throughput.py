"""CPU tokens/s of the default train and pretrain steps: this tree against an older checkout of
the project, side by side in one run (issue 23's "before and after").

Each round runs one process per tree, in turn and in alternating order (before, after, after,
before, …), so a machine whose speed drifts slows both alike and a steady drift does not favour
the one that runs second; the figure to quote is the median of the per-round ratios after/before
with their spread. A process imports ``recfound`` from its own tree
(``PYTHONPATH``) and calls only functions both trees have: the same steps at the same sizes, each
tree's own code.

- **train**: ``Trainer`` of :mod:`recfound.train.trainer` at this tree's ``params.yaml`` sizes
  (the builtin backbone of ``model.builtin``, TMoLE on its projections, ``train.batch_size``
  generative samples, ``train.embedding_batch_size`` embedding samples with
  ``catalogue_negatives``); a step is what the training loop times: ``draw_batch`` →
  ``train_step`` (→ ``batch_flops`` where the tree counts FLOPs). Tasks are built from ml-100k
  ratings (a user's last 10 titles → the next title, → a rating; the history → the next item's
  text as the embedding pair), so prompts are as long as the pipeline's history prompts.
  Tokens: the batch's own count (``StepBatch.tokens``).
- **pretrain**: ``pretrain_causal_lm`` of :mod:`recfound.train.pretrain` at ``pretrain``'s sizes
  on random token rows (text blocks of ``seq_len``, behaviour rows of 60 tokens), the builtin
  trained in full (``trainable: auto`` on the builtin) with 1,682 identifier rows added; its own
  tokens/s (forward, backward, optimiser step).

Only these keys are copied from this tree's params.yaml into the other tree's (a key the other
tree lacks is listed in the report): :data:`SIZE_KEYS`.

    git worktree add /tmp/before23 465c6b9     # the first parent of the merge of 'families'
    nice -n 19 .venv/bin/python bench/cpu_step_throughput.py --before /tmp/before23
    git worktree remove /tmp/before23

Writes ``--out`` (default ``reports/bench/cpu_step_throughput.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SIZE_KEYS = {
    "model": ["builtin", "adapter", "tmole", "pooling", "embedding_attention", "max_length"],
    "pretrain": ["batch_size", "seq_len", "behaviour_fraction", "learning_rate", "weight_decay"],
    "train": [
        "batch_size",
        "embedding_batch_size",
        "samples_per_task",
        "catalogue_negatives",
        "negatives_grad",
        "closed_set_weight",
        "grad_accum",
        "learning_rate",
        "weight_decay",
    ],
}
PARTS = ("train", "pretrain")
IDENTIFIERS = 1682  # ml-100k's items: the identifier rows pretraining adds


# ---- one process: one tree (the older tree's API only: hence no import from
# step_settings_cpu.py, which needs recfound.train.pretrain_fit; it imports the builders below,
# passing what only this tree's functions take) ----------------------------------------------


def sized_params(tree: Path, sizes: Path, out: Path) -> list[str]:
    """``tree``'s params.yaml with :data:`SIZE_KEYS` from ``sizes``; returns the keys it lacks."""
    params = yaml.safe_load((tree / "params.yaml").read_text())
    wanted = yaml.safe_load(sizes.read_text())
    missing = []
    for section, keys in SIZE_KEYS.items():
        for key in keys:
            if key in params.get(section, {}):
                params[section][key] = wanted[section][key]
            else:
                missing.append(f"{section}.{key}")
    out.write_text(yaml.safe_dump(params, sort_keys=False))
    return missing


def history_tasks(n_users: int = 400, history: int = 10):
    """Two generative tasks and one embedding task from ml-100k users' rating histories, and
    the item catalogue (``item_id``, ``text``, ``token``)."""
    import pandas as pd

    from recfound.data.sources import load_ml100k
    from recfound.train.trainer import TaskData

    data = load_ml100k()
    items = data.items.set_index("item_id")
    titles = items["title"].astype(str)
    text = titles + " — genres: " + items["categories"].astype(str).str.replace("|", ", ")
    rows = {"next": [], "rating": [], "match": []}
    ratings = data.interactions.sort_values(["user_id", "timestamp"])
    for _, user in list(ratings.groupby("user_id"))[:n_users]:
        seen = user["item_id"].tolist()
        for end in range(history, len(seen), history):
            past = "History: " + "; ".join(titles[i] for i in seen[end - history : end])
            target = seen[end]
            rows["next"].append((past + ". Next movie?", titles[target]))
            rating = str(int(user["rating"].iloc[end]))
            rows["rating"].append((past + f". Rating of {titles[target]}?", rating))
            rows["match"].append((past, text[target]))
    kinds = {"next": "generative", "rating": "generative", "match": "embedding"}
    tasks = []
    for name, pairs in rows.items():
        frame = pd.DataFrame(pairs, columns=["prompt", "target"])
        tasks.append(TaskData(name, kinds[name], frame.iloc[16:], frame.iloc[:16]))
    catalogue = pd.DataFrame({"item_id": text.index.astype(str), "text": text.values, "token": ""})
    return tasks, catalogue


def builtin_spec(cfg):
    from recfound.model.backbone import BuiltinSpec

    b = cfg.model.builtin
    return BuiltinSpec(
        b.hidden_size, b.num_layers, b.num_heads, b.intermediate_size, b.max_length, b.vocab_size
    )


def time_train(cfg, steps: int, warmup: int, out: Path) -> dict:
    from recfound.model.backbone import build_builtin_backbone, train_bpe_tokenizer
    from recfound.train.trainer import Trainer

    tasks, catalogue = history_tasks()
    texts = [str(t) for task in tasks for t in [*task.train.prompt[:2000], *task.train.target]]
    tokenizer = train_bpe_tokenizer(texts, cfg.model.builtin.vocab_size)
    base = build_builtin_backbone(builtin_spec(cfg), tokenizer, seed=cfg.seed)
    rec = params_rec_model(cfg, base, tokenizer, tasks)
    config = cfg.train.model_copy(update={"eval_every": 10**6, "checkpoint_every": 10**6})
    trainer = Trainer(rec, tasks, config, out, seed=cfg.seed, catalogue=catalogue)
    trainer.module.train()
    count_flops = getattr(trainer, "batch_flops", None)
    tokens, seconds = 0, 0.0
    for step in range(warmup + steps):
        start = time.perf_counter()
        batch = trainer.draw_batch()
        trainer.train_step(batch)
        if count_flops is not None:
            count_flops(batch)
        if step >= warmup:
            tokens, seconds = tokens + batch.tokens, seconds + time.perf_counter() - start
    return {"tokens_per_s": tokens / seconds, "tokens": tokens, "seconds": seconds}


def params_rec_model(cfg, base, tokenizer, tasks):
    """``base`` with ``model``'s adapter, pooling and lengths for ``tasks``: the model that
    ``recfound train`` trains."""
    from recfound.model.build import build_rec_model
    from recfound.train.from_config import adapter_spec

    return build_rec_model(
        base,
        tokenizer,
        adapter_spec(cfg),
        {t.name: t.kind for t in tasks},
        seed=cfg.seed,
        pooling=cfg.model.pooling,
        embedding_attention=cfg.model.embedding_attention,
        max_length=cfg.model.max_length,
    )


def pretrain_inputs(cfg, extra_rows: int = 0):
    """``(model, tokenizer, blocks, behaviour)``: the builtin of ``model.builtin`` (a BPE tokenizer
    of synthetic titles) with its embedding grown by ``extra_rows`` (identifier rows), and random
    token rows of that vocabulary (seeded): 256 text blocks of ``pretrain.seq_len`` and 512
    behaviour rows of 60 tokens."""
    import torch

    from recfound.model.backbone import build_builtin_backbone, train_bpe_tokenizer

    spec = builtin_spec(cfg)
    tokenizer = train_bpe_tokenizer(
        [f"movie {i} of year {1900 + i % 99}" for i in range(2000)], 600
    )
    model = build_builtin_backbone(spec, tokenizer, seed=cfg.seed)
    vocab = spec.vocab_size + extra_rows
    model.resize_token_embeddings(vocab)
    generator = torch.Generator().manual_seed(cfg.seed)
    blocks = torch.randint(4, vocab, (256, cfg.pretrain.seq_len), generator=generator)
    behaviour = torch.randint(4, vocab, (512, 60), generator=generator)
    return model, tokenizer, blocks, behaviour


def pretrain_steps(cfg, model, tokenizer, blocks, behaviour, steps: int, heldout: int, **extra):
    """``pretrain_causal_lm`` of ``model`` for ``steps`` steps at ``pretrain``'s sizes, the first
    ``heldout`` rows of each kind held out and validation never due; ``extra``: arguments that
    only this tree's function takes."""
    from recfound.train.pretrain import pretrain_causal_lm

    p = cfg.pretrain
    return pretrain_causal_lm(
        model,
        blocks,
        blocks[:heldout],
        behaviour_rows=behaviour,
        heldout_behaviour=behaviour[:heldout],
        behaviour_fraction=p.behaviour_fraction,
        pad_id=tokenizer.pad_token_id,
        steps=steps,
        batch_size=p.batch_size,
        learning_rate=p.learning_rate,
        warmup_steps=1,
        weight_decay=p.weight_decay,
        eval_every=10**6,
        seed=cfg.seed,
        **extra,
    )


def time_pretrain(cfg, steps: int, warmup: int) -> dict:
    model, tokenizer, blocks, behaviour = pretrain_inputs(cfg, extra_rows=IDENTIFIERS)

    def run(n: int):
        return pretrain_steps(cfg, model, tokenizer, blocks, behaviour, n, heldout=2)

    if warmup:
        run(warmup)
    return {"tokens_per_s": run(steps).tokens_per_s}


def worker(args: argparse.Namespace) -> None:
    """Time both steps with the ``recfound`` found first on the path; print one JSON line."""
    import recfound
    from recfound.config import load_config

    tree = Path(args.tree).resolve()
    if not Path(recfound.__file__).resolve().is_relative_to(tree):
        raise SystemExit(f"recfound comes from {recfound.__file__}, not from {tree}")
    with tempfile.TemporaryDirectory() as tmp:
        missing = sized_params(tree, Path(args.sizes), Path(tmp) / "params.yaml")
        cfg = load_config(Path(tmp) / "params.yaml")
        train = time_train(cfg, args.steps, args.warmup, Path(tmp) / "train")
        pretrain = time_pretrain(cfg, args.steps, args.warmup)
    print(json.dumps({"train": train, "pretrain": pretrain, "missing_keys": missing}))


# ---- the comparison: processes alternate ------------------------------------------------------


def run_tree(tree: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--tree", str(tree)]
    command += ["--sizes", str(REPO / "params.yaml")]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{tree}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def compare(args: argparse.Namespace) -> None:
    trees = {"before": Path(args.before).resolve(), "after": REPO}
    commit = {
        name: subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True
        ).stdout.strip()
        for name, tree in trees.items()
    }
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    started = time.perf_counter()
    for round_ in range(args.rounds):
        order = list(trees.items())
        for name, tree in order if round_ % 2 == 0 else reversed(order):
            runs[name].append(run_tree(tree, args))
            rates = {part: round(runs[name][-1][part]["tokens_per_s"]) for part in PARTS}
            print(f"round {round_ + 1} {name}: {rates} tokens/s", flush=True)
    report: dict = {
        "what": "CPU tokens/s of the default train and pretrain steps, before and after, "
        "alternating processes (bench/cpu_step_throughput.py)",
        "commits": commit,
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "load_average_at_start_and_end": [args.load_at_start, list(os.getloadavg())],
        },
        "settings": {"rounds": args.rounds, "steps": args.steps, "warmup": args.warmup},
        "sizes_missing_in_before": runs["before"][0]["missing_keys"],
        "seconds": time.perf_counter() - started,
    }
    for part in PARTS:
        per_tree = {n: [r[part]["tokens_per_s"] for r in runs[n]] for n in runs}
        ratios = [a / b for a, b in zip(per_tree["after"], per_tree["before"], strict=True)]
        report[part] = {
            "tokens_per_s": {n: {**summary(v), "rounds": v} for n, v in per_tree.items()},
            "ratio_after_over_before": {**summary(ratios), "rounds": ratios},
        }
        print(
            f"{part:8s} before {statistics.median(per_tree['before']):7.0f}  after "
            f"{statistics.median(per_tree['after']):7.0f} tokens/s (medians); after/before "
            f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out} in {report['seconds']:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="the older checkout (a git worktree) to compare against")
    parser.add_argument("--rounds", type=int, default=4, help="processes per tree, alternating")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per process and step")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--out", default=str(REPO / "reports/bench/cpu_step_throughput.json"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if not args.before:
        parser.error("--before is required")
    args.load_at_start = list(os.getloadavg())
    compare(args)


if __name__ == "__main__":
    main()
