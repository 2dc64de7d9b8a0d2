"""What more compute buys: next-item quality against minutes of pretraining, on this machine.

Behaviour pretraining is where the model learns "people who watched X watch Y", so it sets the
quality of every next-item task. This runs the `pretrain` stage on the built task data (run
`recfound build-tasks` first) for ``--steps`` steps with the default settings otherwise, without
early stopping, and records the full-ranking next-item Recall@10 / NDCG@10 of validation users
(the stage's probe) after every ``--every`` steps together with the training seconds spent so far.
The default budget (params.yaml) is marked on the curve.

Writes reports/bench/quality_budget.json and reports/bench/quality_budget.png.

    python bench/quality_budget.py [--steps 2000] [--every 200] [--params params.yaml]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import matplotlib
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from recfound import artifacts  # noqa: E402
from recfound.config import parse_config  # noqa: E402
from recfound.stages.pretrain import run_pretrain  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="reports/bench")
    args = parser.parse_args()

    raw = yaml.safe_load(Path(args.params).read_text())
    default_steps = int(raw["pretrain"]["steps"])
    with tempfile.TemporaryDirectory() as scratch:
        raw["pretrain"].update(steps=args.steps, eval_every=args.every, keep_best=False)
        raw["paths"].update(backbone=f"{scratch}/backbone", reports=f"{scratch}/reports")
        raw["tracking"].update(
            tracking_uri=f"sqlite:///{scratch}/mlflow.db", artifact_location=f"{scratch}/mlruns"
        )
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

    fig, ax = plt.subplots(figsize=(7, 4))
    minutes = [r["minutes"] for r in document["curve"]]
    for key in ("valid_recall@10", "valid_ndcg@10"):
        ax.plot(minutes, [r[key] for r in document["curve"]], marker="o", label=key)
    at_default = [r for r in document["curve"] if r["step"] <= default_steps]
    if at_default:
        ax.axvline(at_default[-1]["minutes"], color="grey", linestyle="--", label="default budget")
    ax.set_xlabel("pretraining minutes")
    ax.set_ylabel("full-ranking score, validation users")
    ax.set_title("Next-item quality vs compute (behaviour pretraining)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "quality_budget.png", dpi=110)
    plt.close(fig)
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
