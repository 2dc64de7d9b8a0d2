"""What a bigger share of the samples buys one task (or another training setting buys), and what it
costs the others.

`recfound train` runs again on the pipeline's backbone with ``train.task_weights`` set by
``--weight TASK=MULTIPLIER`` (params.yaml's settings otherwise), then both its last checkpoint
and the pipeline's own (``paths.train``: the same run without the weight) answer every task's
**validation** records (the test records are not read): each task's score with its interval, the
paired difference weighted − default, the samples each task was trained on, and each group's mean
difference. With S2Sched the multiplier is a prior, not a quota: the scheduler still moves samples
towards the tasks whose loss falls slowest. ``--set SECTION.KEY=VALUE`` changes any other setting
of the second training the same way (e.g. ``--set train.answer_loss=sample``).

Writes reports/bench/task_share.json and reports/bench/task_share.png. Needs `recfound train`
first (about one train stage of time: 8 to 10 minutes on 2 cores).

    python bench/task_share.py [--weight ctr_prediction=2]
    python bench/task_share.py --set train.answer_loss=sample --out reports/bench/answer_loss.json
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
from recfound.evaluation.model_eval import evaluate_bundle  # noqa: E402
from recfound.evaluation.outputs import BootstrapSettings  # noqa: E402
from recfound.evaluation.scores import outputs_from_records  # noqa: E402
from recfound.stages.ablate import FULL_ROW, ablation_differences, load_last_checkpoint  # noqa: E402
from recfound.stages.evaluate import trained_baselines  # noqa: E402
from recfound.train.from_config import load_training_tasks, train_adapters  # noqa: E402

WEIGHTED = "weighted"


def samples_seen(train_dir: str | Path, sizes: dict[str, int]) -> dict[str, int]:
    """Task → training samples drawn over the run: its stream's finished passes over the task's
    training records, and its position in the current one."""
    state = json.loads((Path(train_dir) / "last" / "trainer_state.json").read_text())
    return {
        task: int(epoch) * sizes[task] + int(position)
        for task, (epoch, position) in state["batches"]["streams"].items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--weight", action="append", default=None, metavar="TASK=MULTIPLIER")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--out", default="reports/bench/task_share.json")
    args = parser.parse_args()
    weights = {}
    for pair in args.weight or ([] if args.set else ["ctr_prediction=2"]):
        task, _, value = pair.partition("=")
        weights[task] = float(value)
    raw = yaml.safe_load(Path(args.params).read_text())
    cfg = parse_config(raw)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        raw["train"]["task_weights"] = {**raw["train"].get("task_weights", {}), **weights}
        for setting in args.set:
            key, _, value = setting.partition("=")
            *sections, name = key.split(".")
            target = raw
            for section in sections:
                if not isinstance(target.get(section), dict):
                    parser.error(f"--set {setting}: params.yaml has no section {section!r}")
                target = target[section]
            target[name] = yaml.safe_load(value)  # parse_config names an unknown key
        point_at_scratch(raw, scratch, "train")
        variant = parse_config(raw)  # the weights are checked like params.yaml's
        started = time.perf_counter()
        train_adapters(variant)
        train_seconds = time.perf_counter() - started
        seen = {}
        sizes = {t.name: len(t.train) for t in load_training_tasks(cfg)}
        trained = trained_baselines(cfg)
        for row, directory in ((FULL_ROW, cfg.paths.train), (WEIGHTED, variant.paths.train)):
            rec, kinds = load_last_checkpoint(cfg.paths.backbone, directory)
            document, records = evaluate_bundle(rec, kinds, cfg, split="valid", trained=trained)
            results[row] = {
                "overall": document["overall"],
                "tasks": document["tasks"],
                "records": outputs_from_records(records),
            }
            seen[row] = samples_seen(directory, sizes)
    differences = ablation_differences(results, BootstrapSettings(seed=cfg.seed))[WEIGHTED]
    tasks = sorted(results[FULL_ROW]["tasks"])
    report = {
        "task_weights": weights,
        "settings": args.set,
        "split": "valid",
        "train_seconds": round(train_seconds, 1),
        "tasks": {
            task: {
                "metric": results[FULL_ROW]["tasks"][task]["score_metric"],
                "default": results[FULL_ROW]["tasks"][task]["score"],
                "weighted": results[WEIGHTED]["tasks"][task]["score"],
                "difference": differences["tasks"].get(task),
                "samples_default": seen[FULL_ROW].get(task),
                "samples_weighted": seen[WEIGHTED].get(task),
                **{
                    f"auc_{row}": results[row]["tasks"][task]["auc"]
                    for row in (FULL_ROW, WEIGHTED)
                    if "auc" in results[row]["tasks"][task]
                },
            }
            for task in tasks
        },
        "groups": differences["groups"],
        "overall": {row: r["overall"] for row, r in results.items()},
    }
    out = Path(args.out)
    artifacts.write_json(out, report)
    figure, axis = plt.subplots(figsize=(8, 6))
    rows = [t for t in tasks if report["tasks"][t]["difference"]]
    values = [report["tasks"][t]["difference"]["difference"] for t in rows]
    spans = [report["tasks"][t]["difference"]["ci"] for t in rows]
    axis.barh(
        rows,
        values,
        xerr=[
            [v - lo for v, (lo, _) in zip(values, spans, strict=True)],
            [hi - v for v, (_, hi) in zip(values, spans, strict=True)],
        ],
        color=["tab:orange" if t in weights else "tab:blue" for t in rows],
    )
    axis.axvline(0, color="black", linewidth=0.8)
    labels = ", ".join([f"{t} x{w:g}" for t, w in weights.items()] + args.set)
    axis.set_xlabel("validation score, changed − default (paired 95% interval)")
    axis.set_title(f"{labels}: every task's change")
    figure.tight_layout()
    figure.savefig(out.with_suffix(".png"), dpi=120)
    for task in tasks:
        entry = report["tasks"][task]
        print(
            f"{task:28s} {entry['metric']:10s} {entry['default']:.4f} -> {entry['weighted']:.4f}"
            f"  samples {entry['samples_default']} -> {entry['samples_weighted']}"
        )
    print(json.dumps(report["groups"], indent=1))


if __name__ == "__main__":
    main()
