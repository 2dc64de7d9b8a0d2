"""Where a `recfound train` step spends its time: the generative batch against the embedding
blocks, forward and backward, on the built task data and the pretrained backbone.

Runs the trainer's own batch drawing and loss (:class:`recfound.train.trainer.Trainer`) on the
current ``params.yaml`` for ``--steps`` steps per variant, timing each part of a step separately:

- ``generative``: the answer-token cross-entropy (+ closed-set softmax) of the generative batch,
  forward and backward;
- ``embedding``: the InfoNCE of every embedding block (queries, positives, catalogue negatives),
  forward and backward.

Variants (``--variants``): ``default`` (params.yaml as it is), ``negatives_no_grad`` (catalogue
negatives embedded without gradients: cheaper, but the embeddings collapsed in training),
``old_mix`` (16 generative samples, 64 negatives with gradients: the step before the re-plan),
``one_pass`` / ``two_groups`` (each batch in one padded forward pass, or two passes of
similar-length rows, instead of ``train.length_groups``).
Ratios are measured side by side in one run. Needs `recfound build-tasks` and `recfound pretrain`
first.

Writes ``reports/bench/train_step_profile.json``.

    python bench/train_step_profile.py [--steps 8] [--variants default,negatives_no_grad,old_mix]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from recfound import artifacts
from recfound.config import parse_config
from recfound.train.from_config import build_model_for, load_training_tasks, read_catalogue
from recfound.train.trainer import Trainer

VARIANTS = {
    "default": {},
    "negatives_no_grad": {"negatives_grad": False},
    "old_mix": {"negatives_grad": True, "batch_size": 16, "catalogue_negatives": 64},
    "one_pass": {"length_groups": 1},
    "two_groups": {"length_groups": 2},
}


def profile(raw: dict, overrides: dict, steps: int, scratch: str) -> dict:
    raw = json.loads(json.dumps(raw))
    raw["train"].update(overrides)
    cfg = parse_config(raw, origin="params.yaml")
    tasks = load_training_tasks(cfg)
    rec = build_model_for(cfg, {t.name: t.kind for t in tasks})
    trainer = Trainer(rec, tasks, cfg.train, scratch, seed=cfg.seed, catalogue=read_catalogue(cfg))
    trainer.module.train()
    parts: dict[str, list[float]] = {"generative": [], "embedding": [], "draw": []}
    tokens = {"generative": 0, "embedding": 0}
    for step in range(steps + 1):  # the first step warms up and is not counted
        start = time.perf_counter()
        batch = trainer.draw_batch()
        drawn = time.perf_counter()
        generative = type(batch)(batch.generative, batch.generative_tasks, [], batch.choices)
        embedding = type(batch)(None, [], batch.blocks, [])
        timings = {}
        for name, part in (("generative", generative), ("embedding", embedding)):
            begin = time.perf_counter()
            loss, _ = trainer.batch_loss(part)
            loss.backward()
            timings[name] = time.perf_counter() - begin
        trainer.optimizer.zero_grad(set_to_none=True)
        if step:
            parts["draw"].append(drawn - start)
            for name, seconds in timings.items():
                parts[name].append(seconds)
            tokens["generative"] += int(batch.generative["attention_mask"].sum())
            tokens["embedding"] += batch.tokens - int(batch.generative["attention_mask"].sum())
    seconds = {k: float(np.median(v)) for k, v in parts.items()}
    total = sum(seconds.values())
    return {
        "settings": {
            k: getattr(cfg.train, k)
            for k in (
                "batch_size",
                "embedding_batch_size",
                "catalogue_negatives",
                "negatives_grad",
                "length_groups",
            )
        },
        "median_seconds": seconds,
        "step_seconds": total,
        "share": {k: v / total for k, v in seconds.items()},
        "tokens_per_step": {k: v / steps for k, v in tokens.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--variants", default="default,negatives_no_grad,old_mix")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="reports/bench/train_step_profile.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    raw = yaml.safe_load(Path(args.params).read_text())
    results = {}
    for name in args.variants.split(","):
        with tempfile.TemporaryDirectory() as scratch:
            results[name] = profile(raw, VARIANTS[name], args.steps, scratch)
        print(name, json.dumps(results[name]["median_seconds"]), flush=True)
    document = {
        "what": "median seconds per train step part (forward + backward), 2-core CPU unless "
        "stated; variants measured side by side in one run",
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "variants": results,
    }
    artifacts.write_json(args.out, document)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
