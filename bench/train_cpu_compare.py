"""CPU training throughput of two source trees side by side (e.g. main's trainer and this one).

Each tree trains the tiny setup of its own ``tests/train/tiny.py`` (a 2-layer Llama, three ml-100k
tasks, uniform task sampling so both draw exactly the same batches) for ``--steps`` steps in a
fresh process, alternating trees ``--repeats`` times. Reported per tree: the best seconds per
training step (the loop, validation only at start and end) and tokens/s, where tokens are what
the model reads in those steps (prompts, answers, queries, positives and catalogue negatives;
counted once, with the "after" tree's batch drawer: the batches are the same in both trees).

    python bench/train_cpu_compare.py --before /work/main --after . [--steps 20 --repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

WORKER = r"""
import json, sys, tempfile, time
import torch
torch.manual_seed(0)
from tests.train.tiny import tiny_model, tiny_tasks
import recfound.train.trainer as T
steps = int(sys.argv[1])
tasks = tiny_tasks()
settings = dict(steps=steps, batch_size=8, embedding_batch_size=8, samples_per_task=4,
                catalogue_negatives=0, eval_every=10**6, val_batch_size=8,
                checkpoint_every=10**6, learning_rate=5e-3, warmup_steps=2, strategy="uniform")
catalogue = None
if hasattr(T, "TrainParams"):  # main's API
    make = lambda out: T.Trainer(tiny_model(tasks), tasks, T.TrainParams(**settings, seed=5), out)
else:
    from recfound.config import TrainConfig
    make = lambda out: T.Trainer(tiny_model(tasks), tasks, TrainConfig(**settings), out, seed=5)
tokens = None
with tempfile.TemporaryDirectory() as out:
    trainer = make(out)
    if hasattr(trainer, "batches"):  # count what the model reads in the same draws
        probe = make(out + "/probe")
        tokens = sum(probe.draw_batch().tokens for _ in range(steps))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
print("RESULT " + json.dumps({"seconds": seconds, "steps": steps, "tokens": tokens}))
"""


def run(tree: Path, steps: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(steps)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    raise RuntimeError(f"{tree}: {done.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, default=Path("."))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="reports/bench/train_cpu_compare.json")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for _ in range(args.repeats):
        for name in ("before", "after"):
            runs[name].append(run(getattr(args, name).resolve(), args.steps))
            print(name, runs[name][-1], flush=True)
    tokens = next(r["tokens"] for r in runs["after"] if r["tokens"])
    summary = {}
    for name, results in runs.items():
        best = min(r["seconds"] for r in results)
        summary[name] = {
            "tree": str(getattr(args, name).resolve()),
            "seconds_per_step": best / args.steps,
            "tokens_per_s": tokens / best,
            "runs_seconds": [round(r["seconds"], 2) for r in results],
        }
    document = {
        "steps": args.steps,
        "tokens_per_run": tokens,
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **summary,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
