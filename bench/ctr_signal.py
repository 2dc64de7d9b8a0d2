"""Is ctr_prediction's signal in its prompt, and does the model learn to read it?

ctr_prediction asks whether a user will like (rate at or above the like threshold) an item, from
ten rated movies, the user's average rating and the item's average rating ("reception"); it is
scored by AUC of the model's yes/no margin. This measures, on the task's **validation** records
(the test records are not read):

- ``averages``: the two averages the prompt shows, as numbers, ranked alone and summed (their
  z-scores), and a logistic regression on them fitted on the task's training records: what a
  reader of the prompt's numbers reaches without learning anything else; and one on the words
  the prompt puts beside them (the user's habit, "a moderate rater", and the item's reception,
  "mixed reception"): what a reader of two words reaches;
- ``model``: the margin of the model at ``paths.merged`` (what `evaluate` scores) and of each
  training checkpoint it was merged from (``checkpoints``: does merging cost ctr?), and two other
  signals of the same model about the same user and item: the user2item similarity of the
  user's user2item prompt and the item's text, and the next-item log-probability of the item's
  identifier after the user's sequential_recommendation prompt (both rank *which items a user
  rates*; ctr asks which of the rated ones they like), and its expected rating when the same
  prompt asks rating_prediction's question instead of ctr's ("How would they rate … Answer with
  a rating out of 5.": the same history, averages and item), alone and fused with the margin;
- ``alone``: the pretrained backbone with a fresh adapter trained on ctr_prediction alone,
  ``--batch`` samples a step, at each of ``--steps`` (the trainer of `recfound train`, one task,
  uniform sampling): how the margin's AUC grows with the samples seen. In the default run ctr
  gets about 8% of the 40 generative samples of each of 400 steps (about 1,300 samples);
- ``layout``: whether the model reads the user's rating habit more easily when the question
  names it. The prompt states it once, at its start, about 150 tokens before the question; here
  the same ctr-alone training (``--layout-steps`` steps, each seed of ``--layout-seeds``) runs
  on the prompts as they are and on the same prompts with the question rewritten to
  "Will this moderate rater (average 3.6/5) like …?". Both are scored on validation records
  rewritten the same way.

``intervals``: every AUC above with its bootstrap interval over the validation records, and
its difference to the merged model's margin (``minus_model``) with a paired interval, as
evaluation computes them (a layout run that ``alone`` already trained, the prompts as they are
at the config's seed, is listed once, as ``alone_<steps>_steps``). Writes
reports/bench/ctr_signal.json. Needs `recfound train` and `recfound merge` first.

    python bench/ctr_signal.py [--steps 0,100,200] [--batch 16] [--layout-seeds 42,1,2]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression

from recfound import artifacts
from recfound.config import load_config
from recfound.evaluation.model_predictions import closed_set_outputs
from recfound.evaluation.outputs import (
    BootstrapSettings,
    ChoiceOutputs,
    compare,
    metric_estimates,
    task_metrics,
)
from recfound.evaluation.protocols import catalogue_tokens, record_keys
from recfound.model.bundle import load_bundle
from recfound.stages.ablate import load_last_checkpoint
from recfound.train.checkpoint import load_checkpoint
from recfound.train.from_config import build_model_for, load_training_tasks, read_catalogue
from recfound.train.trainer import TaskData, Trainer

TASK = "ctr_prediction"
HABIT = re.compile(r"^A user whose average rating is (\S+) \(a (\w+ rater)\)")
RECEPTION = re.compile(r"\(([a-z ]+): average rating \S+ from \d+ users\)\? Answer yes or no\.$")


def margins(rec, frame: pd.DataFrame) -> np.ndarray:
    """The model's yes/no margin on ``frame``'s records, as `evaluate` computes it (its closed-set
    outputs: the first label's score minus the second's; ctr's first label is "yes")."""
    outputs = closed_set_outputs(rec, frame, "classification", TASK, (), 32)
    if outputs.labels[0] != "yes":
        raise ValueError(f"{TASK}'s first label is {outputs.labels[0]!r}, expected 'yes'")
    return outputs.margin


def averages(frame: pd.DataFrame, ratings: pd.DataFrame) -> np.ndarray:
    """``(records, 2)``: the user's and the item's mean training rating (the global mean where
    one has none)."""
    mean = float(ratings["rating"].mean())
    users = ratings.groupby("user_id")["rating"].mean()
    items = ratings.groupby("item_id")["rating"].mean()
    return np.column_stack(
        [
            frame["user_id"].astype(str).map(users).fillna(mean).to_numpy(),
            frame["item_id"].astype(str).map(items).fillna(mean).to_numpy(),
        ]
    )


def words(frame: pd.DataFrame) -> pd.DataFrame:
    """One indicator column per word pair the prompt shows: the user's habit ("moderate rater")
    and the item's reception ("mixed reception"; "none" where the item has no ratings shown)."""
    found = []
    for prompt in frame["prompt"].astype(str):
        habit, seen = HABIT.match(prompt), RECEPTION.search(prompt)
        found.append(
            {
                "habit": habit.group(2) if habit else "none",
                "reception": seen.group(1) if seen else "none",
            }
        )
    return pd.get_dummies(pd.DataFrame(found)).astype(float)


def other_signals(rec, cfg, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The model's user2item similarity and next-item log-probability of each record's item
    (from the same split's user2item and sequential_recommendation prompts of the user)."""
    items = pd.read_parquet(f"{cfg.paths.tasks}/items.parquet").astype({"item_id": str})
    position = {item: i for i, item in enumerate(items["item_id"])}
    users = frame["user_id"].astype(str).tolist()
    wanted = [position[i] for i in frame["item_id"].astype(str)]

    def prompts(task: str) -> list[str]:
        other = pd.read_parquet(f"{cfg.paths.tasks}/{task}/valid.parquet")
        by_user = dict(zip(other["user_id"].astype(str), other["prompt"].astype(str), strict=True))
        return [by_user[u] for u in users]

    queries = rec.embed(prompts("user2item"), "user2item")
    documents = rec.embed(items["text"].astype(str).tolist(), "user2item")
    similarity = (queries * documents[wanted]).sum(-1).float().numpy()
    logprobs = rec.catalogue_scores(
        prompts("sequential_recommendation"),
        catalogue_tokens(items),
        "sequential_recommendation",
        32,
    ).numpy()
    chosen = logprobs[np.arange(len(wanted)), wanted]
    lowest = chosen[np.isfinite(chosen)].min()
    return {
        "user2item_similarity": similarity,
        "next_item_logprob": np.where(np.isfinite(chosen), chosen, lowest),
    }


def rating_question(rec, cfg, frame: pd.DataFrame) -> np.ndarray:
    """The model's expected rating (rating_prediction's closed set, probability-weighted) of each
    record's item, asked with rating_prediction's question in ctr's prompt."""
    ratings = pd.read_parquet(f"{cfg.paths.tasks}/rating_prediction/train.parquet")
    scale = [str(c) for c in ratings["candidates"].iloc[0]]
    asked = frame.copy()
    prompts = []
    for prompt in frame["prompt"].astype(str):
        if " Will they like " not in prompt or not prompt.endswith("? Answer yes or no."):
            raise ValueError(f"not ctr's question: {prompt[-120:]!r}")
        prompt = prompt.replace(" Will they like ", " How would they rate ", 1)
        prompts.append(
            prompt.removesuffix("Answer yes or no.") + f"Answer with a rating out of {scale[-1]}."
        )
    asked["prompt"] = prompts
    asked["candidates"] = [scale] * len(asked)
    asked["target"] = scale[-1]  # not scored: only the expected rating is read
    return closed_set_outputs(rec, asked, "rating", "rating_prediction", (), 32).expected


def habit_in_question(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with each question naming the user's rating habit, which the prompt's first
    sentence states (\"Will this moderate rater (average 3.6/5) like …?\")."""
    prompts = []
    for prompt in frame["prompt"].astype(str):
        habit = HABIT.match(prompt)
        if habit is None or " Will they like " not in prompt:
            raise ValueError(f"not ctr's prompt: {prompt[:80]!r} … {prompt[-80:]!r}")
        named = f" Will this {habit.group(2)} (average {habit.group(1)}) like "
        prompts.append(prompt.replace(" Will they like ", named, 1))
    return frame.assign(prompt=prompts)


def train_alone(cfg, task: TaskData, catalogue, steps: int, batch: int, seed: int):
    """The pretrained backbone with a fresh adapter trained on ``task`` alone for ``steps``
    steps of ``batch`` samples (none for 0), and the seconds that took."""
    rec = build_model_for(cfg.model_copy(update={"seed": seed}), {TASK: "generative"})
    started = time.perf_counter()
    if steps:
        config = cfg.train.model_copy(
            update={
                "steps": steps,
                "batch_size": batch,
                "strategy": "uniform",
                "eval_every": 10**6,
                "checkpoint_every": 10**6,
            }
        )
        with tempfile.TemporaryDirectory() as scratch:
            Trainer(rec, [task], config, scratch, seed=seed, catalogue=catalogue).train()
    return rec, round(time.perf_counter() - started, 1)


def checkpoint_aucs(cfg, frame: pd.DataFrame, signals: Signals) -> dict[str, float]:
    """AUC of the margin of each checkpoint ``merge.checkpoints`` names under ``paths.train``."""
    rec, _ = load_last_checkpoint(cfg.paths.backbone, cfg.paths.train)
    aucs = {}
    for name in cfg.merge.checkpoints:
        load_checkpoint(Path(cfg.paths.train) / name, rec.model)
        rec.model.eval()
        aucs[name] = signals.auc(f"checkpoint_{name}", margins(rec, frame))
    return aucs


def zsum(values: np.ndarray) -> np.ndarray:
    return ((values - values.mean(0)) / values.std(0)).sum(1)


class Signals:
    """Every signal's AUC on the same validation records, and its scores, kept for the intervals:
    each AUC's bootstrap interval and its paired difference to the merged model's margin (both
    computed as evaluation computes them, on the same resampled records)."""

    def __init__(self, frame: pd.DataFrame, liked: np.ndarray) -> None:
        self.frame, self.liked = frame, liked
        self.outputs: dict[str, ChoiceOutputs] = {}

    def auc(self, name: str, scores: np.ndarray) -> float:
        """``scores``' AUC of the likes, as evaluation computes it; kept under ``name``."""
        scores = np.asarray(scores, dtype=np.float64)
        self.outputs[name] = ChoiceOutputs(
            **record_keys(self.frame),
            labels=["yes", "no"],
            target=np.where(self.liked, 0, 1),
            predicted=np.where(scores > 0, 0, 1),
            margin=scores,
        )
        return task_metrics(self.outputs[name])["auc"]

    def intervals(self, reference: str) -> dict[str, dict]:
        settings = BootstrapSettings()
        out = {}
        for name, outputs in self.outputs.items():
            out[name] = {"auc_interval": metric_estimates(outputs, settings)["auc"].interval}
            if name != reference:
                versus = compare(outputs, self.outputs[reference], "auc", settings)
                out[name][f"minus_{reference}"] = versus.to_dict()
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--steps", default="0,100,200")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--layout-steps", type=int, default=100)
    parser.add_argument("--layout-seeds", default="42,1,2", help="comma-separated; empty: skip")
    parser.add_argument("--out", default="reports/bench/ctr_signal.json")
    args = parser.parse_args()
    cfg = load_config(args.params)
    tasks = {t.name: t for t in load_training_tasks(cfg)}
    train, valid = tasks[TASK].train, tasks[TASK].valid
    liked = (valid["target"] == "yes").to_numpy()
    signals = Signals(valid, liked)
    ratings = pd.read_parquet(f"{cfg.paths.tasks}/train_interactions.parquet")
    ratings = ratings.astype({"user_id": str, "item_id": str})
    x_train, x_valid = averages(train, ratings), averages(valid, ratings)
    w_train, w_valid = words(train), words(valid)
    worded = LogisticRegression().fit(w_train, (train["target"] == "yes").to_numpy())
    fitted = LogisticRegression().fit(x_train, (train["target"] == "yes").to_numpy())
    report: dict = {
        "what": "AUC of liked vs not liked on ctr_prediction's validation records",
        "records": {"train": len(train), "valid": len(valid), "liked_share": float(liked.mean())},
        "averages": {
            "user_mean": signals.auc("user_mean", x_valid[:, 0]),
            "item_mean": signals.auc("item_mean", x_valid[:, 1]),
            "z_sum": signals.auc("z_sum", zsum(x_valid)),
            "logistic_regression": signals.auc(
                "logistic_regression", fitted.decision_function(x_valid)
            ),
            "words_logistic_regression": signals.auc(
                "words_logistic_regression",
                worded.decision_function(w_valid.reindex(columns=w_train.columns, fill_value=0)),
            ),
        },
    }
    merged = load_bundle(cfg.paths.backbone, cfg.paths.merged)
    margin, expected = margins(merged, valid), rating_question(merged, cfg, valid)
    report["model"] = {
        "bundle": str(cfg.paths.merged),
        "auc": signals.auc("model", margin),
        "checkpoints": checkpoint_aucs(cfg, valid, signals),
        **{
            f"{name}_auc": signals.auc(name, values)
            for name, values in other_signals(merged, cfg, valid).items()
        },
        "rating_question_expected_auc": signals.auc("rating_question_expected", expected),
        "rating_question_correlation_with_margin": float(np.corrcoef(margin, expected)[0, 1]),
        "margin_and_rating_question_z_sum_auc": signals.auc(
            "margin_and_rating_question_z_sum", zsum(np.column_stack([margin, expected]))
        ),
    }
    print("averages", report["averages"], "model", report["model"], flush=True)
    alone = []
    catalogue = read_catalogue(cfg)
    for steps in [int(s) for s in args.steps.split(",")]:
        rec, seconds = train_alone(cfg, tasks[TASK], catalogue, steps, args.batch, cfg.seed)
        auc = signals.auc(f"alone_{steps}_steps", margins(rec, valid))
        alone.append(
            {"steps": steps, "samples": steps * args.batch, "auc": auc, "seconds": seconds}
        )
        print("alone", alone[-1], flush=True)
    report["alone"] = {"batch": args.batch, "learning_rate": cfg.train.learning_rate, "runs": alone}
    named = TaskData(TASK, "generative", habit_in_question(train), habit_in_question(valid))
    layout = {"steps": args.layout_steps, "batch": args.batch, "as_is": {}, "habit_in_question": {}}
    trained = {(run["steps"], cfg.seed): run["auc"] for run in alone}  # the prompts as they are
    for seed in [int(s) for s in args.layout_seeds.split(",") if s]:
        for name, task in (("as_is", tasks[TASK]), ("habit_in_question", named)):
            if name == "as_is" and (args.layout_steps, seed) in trained:
                layout[name][str(seed)] = trained[args.layout_steps, seed]  # trained above
                continue
            rec, _ = train_alone(cfg, task, catalogue, args.layout_steps, args.batch, seed)
            scores = margins(rec, task.valid)
            layout[name][str(seed)] = signals.auc(f"layout_{name}_seed{seed}", scores)
        print("layout", seed, {k: layout[k][str(seed)] for k in ("as_is", "habit_in_question")})
    report["layout"] = layout
    report["intervals"] = signals.intervals("model")
    report["torch_threads"] = torch.get_num_threads()
    artifacts.write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
