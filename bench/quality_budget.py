"""What more compute buys: quality against minutes of pretraining or of adapter training.

``--stage pretrain`` (default): next-item quality against minutes of pretraining.
``--stage train``: each task group's validation score against minutes of `recfound train` (the
trainer's own validation every ``--every`` steps: generative tasks' teacher-forced answer-token
accuracy, embedding tasks' in-batch Recall@1, averaged per group), on the backbone at
``paths.backbone``, for ``--steps`` steps with params.yaml's settings otherwise. Writes
reports/bench/train_budget.{json,png}.

Behaviour pretraining is where the model learns "people who watched X watch Y", so it sets the
quality of every next-item task. This runs the `pretrain` stage on the built task data (run
`recfound build-tasks` first) for ``--steps`` steps with the default settings otherwise, without
early stopping, and records the full-ranking next-item Recall@10 / NDCG@10 of validation users
(the stage's probe) after every ``--every`` steps together with the training seconds spent so far.
The default budget (params.yaml) is marked on the curve.

Writes reports/bench/quality_budget.json and reports/bench/quality_budget.png.

    python bench/quality_budget.py [--steps 2000] [--every 200] [--params params.yaml]
    python bench/quality_budget.py --stage train [--steps 1000] [--every 50]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import matplotlib
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from scratch import point_at_scratch  # noqa: E402

from recfound import artifacts  # noqa: E402
from recfound.config import parse_config  # noqa: E402
from recfound.stages.pretrain import run_pretrain  # noqa: E402
from recfound.train.from_config import train_adapters  # noqa: E402

GROUP_METRICS = {"generative": "token_acc", "embedding": "inbatch_recall1"}


def train_budget(args: argparse.Namespace) -> None:
    """Validation score per task group against minutes of adapter training."""
    raw = yaml.safe_load(Path(args.params).read_text())
    default_steps = int(raw["train"]["steps"])
    curve: list[dict] = []
    busy = {"seconds": 0.0, "last": time.perf_counter()}

    def log_metrics(values: dict[str, float], step: int) -> None:
        now = time.perf_counter()
        if "train/loss" in values:  # a training step: its time counts, validation's does not
            busy["seconds"] += now - busy["last"]
        busy["last"] = now
        groups: dict[str, list[float]] = {}
        for key, value in values.items():
            for group, metric in GROUP_METRICS.items():
                if key.startswith("val/") and key.endswith(f"/{metric}"):
                    groups.setdefault(group, []).append(value)
        if groups:
            row = {"step": step, "minutes": round(busy["seconds"] / 60, 3)}
            row.update({f"{g}_{GROUP_METRICS[g]}": sum(v) / len(v) for g, v in groups.items()})
            curve.append(row)
            busy["last"] = time.perf_counter()

    with tempfile.TemporaryDirectory() as scratch:
        raw["train"].update(steps=args.steps, eval_every=args.every)
        point_at_scratch(raw, scratch, "train", "reports")
        train_adapters(parse_config(raw, origin=args.params), log_metrics=log_metrics)
    document = {
        "what": "validation score per task group (generative: answer-token accuracy; "
        "embedding: in-batch Recall@1) against adapter-training minutes (validation time left "
        "out), 2-core CPU unless stated",
        "default_steps": default_steps,
        "steps": args.steps,
        "curve": curve,
    }
    out = Path(args.out)
    artifacts.write_json(out / "train_budget.json", document)
    keys = sorted({k for r in curve for k in r if k not in ("step", "minutes")})
    plot_curve(
        curve,
        keys,
        default_steps,
        ("adapter-training minutes", "validation score"),
        "Task-group quality vs compute (adapter training)",
        out / "train_budget.png",
    )
    print(json.dumps(document, indent=2))


def plot_curve(
    curve: list[dict],
    keys: list[str],
    default_steps: int,
    axes: tuple[str, str],
    title: str,
    path: Path,
) -> None:
    """Each of ``keys`` against minutes, the default budget marked."""
    fig, ax = plt.subplots(figsize=(7, 4))
    minutes = [r["minutes"] for r in curve]
    for key in keys:
        ax.plot(minutes, [r.get(key) for r in curve], marker="o", label=key)
    at_default = [r for r in curve if r["step"] <= default_steps]
    if at_default:
        ax.axvline(at_default[-1]["minutes"], color="grey", linestyle="--", label="default budget")
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=["pretrain", "train"], default="pretrain")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="reports/bench")
    args = parser.parse_args()
    if args.stage == "train":
        train_budget(args)
        return

    raw = yaml.safe_load(Path(args.params).read_text())
    default_steps = int(raw["pretrain"]["steps"])
    with tempfile.TemporaryDirectory() as scratch:
        raw["pretrain"].update(steps=args.steps, eval_every=args.every, keep_best=False)
        point_at_scratch(raw, scratch, "backbone", "reports")
        metrics = run_pretrain(parse_config(raw, origin=args.params))
        curve = json.loads(Path(f"{scratch}/reports/plots/pretrain_heldout_loss.json").read_text())
    document = {
        "what": "next-item full-ranking quality of the bare backbone on validation users, "
        "against pretraining minutes (2-core CPU unless stated)",
        "default_steps": default_steps,
        "steps": args.steps,
        "tokens_per_s": metrics["tokens_per_s"],
        "curve": [
            {
                "step": row["step"],
                "minutes": round(row["train_seconds"] / 60, 3),
                "valid_recall@10": row.get("valid_recall@10"),
                "valid_ndcg@10": row.get("valid_ndcg@10"),
                "heldout_behaviour_loss": row.get("heldout_behaviour_loss"),
            }
            for row in curve
        ],
    }
    out = Path(args.out)
    artifacts.write_json(out / "quality_budget.json", document)

    plot_curve(
        document["curve"],
        ["valid_recall@10", "valid_ndcg@10"],
        default_steps,
        ("pretraining minutes", "full-ranking score, validation users"),
        "Next-item quality vs compute (behaviour pretraining)",
        out / "quality_budget.png",
    )
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
