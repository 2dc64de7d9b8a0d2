"""What the model's other signals add to the two tasks below their floors, on validation records.

- **conversational_rec** (below SASRec on test): its records are the same users and next items as
  sequential_recommendation's, shown as a conversation. Every combination of the merged model's
  own signals is scored on the task's validation records: the identifier log-probabilities of the
  conversation (the task's own answer), the same prompt under sequential_recommendation's adapter,
  the user's sequential_recommendation prompt, and the user's user2item embedding (the default
  fusion, ``evaluate.fusion``), fused as the evaluation fuses them (z-scores added). And, since
  the task's answer is the next item the user *liked*, each item's like rate in the training
  ratings (smoothed, ``(likes + 1) / (ratings + 2)``) as a prior: its log added to the
  identifier log-probabilities (Bayes with the conversation's own scores, which are trained on
  liked targets, and with the next-item prompt's, which are trained on every next item; weight 1,
  not fitted). Recall@10 of each, its paired difference to the default fusion, and SASRec's on
  the same records.
- **user_profile** (at its majority answer): the user's nearest training users by the merged
  model's user2item embedding vote each field of the profile (k nearest); token-F1 against the
  majority profile and each field's most common value. And the model's own probability of each
  field's values after the prompt (each field given the most common values of the fields before
  it): accuracy of its most probable value, and AUC of ``female``.

The test records are not read. Writes reports/bench/fusion_signals.json; about a minute on 2 cores
after `make run`.

    python bench/fusion_signals.py
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from paired import signed
from profile_signal import profile_fields, profile_text
from sklearn.metrics import roc_auc_score

from recfound import artifacts
from recfound.config import load_config
from recfound.data.datasets import read_task_frames
from recfound.evaluation.baseline_predictions import baseline_outputs
from recfound.evaluation.model_predictions import embedding_scores, fused_scores, user_prompts
from recfound.evaluation.outputs import BootstrapSettings, compare
from recfound.evaluation.protocols import (
    assign_protocols,
    catalogue_tokens,
    cutoffs_for,
    full_ranking_outputs,
    load_eval_set,
    record_histories,
)
from recfound.evaluation.scores import scored_metrics
from recfound.metrics import token_f1
from recfound.model.bundle import load_bundle
from recfound.stages.evaluate import trained_baselines

CONVERSATION = "conversational_rec"
NEXT_ITEM = "sequential_recommendation"
USER = "user2item"
PROFILE = "user_profile"
DEFAULT = "ids + user2item (default)"


def log_like_rate(data, threshold: float) -> np.ndarray:
    """Each catalogue item's log of its smoothed like rate in the training ratings,
    ``log((likes + 1) / (ratings + 2))`` (an unrated item: log 1/2), in ``data.item_index``
    order."""
    train = data.train_interactions
    liked = (train["rating"] >= threshold).to_numpy()
    index = data.item_index
    rows = train["item_id"].astype(str).map(index)
    known = rows.notna().to_numpy()
    positions = rows[known].astype(int).to_numpy()
    likes = np.bincount(positions, weights=liked[known], minlength=len(index))
    counts = np.bincount(positions, minlength=len(index))
    return np.log((likes + 1.0) / (counts + 2.0))


def conversation_signals(rec, data, cfg) -> dict[str, Any]:
    protocols = assign_protocols(data, rec)
    frame, protocol = data.frames[CONVERSATION], protocols[CONVERSATION]
    prompts = frame["prompt"].astype(str).tolist()
    users = frame["user_id"].astype(str).tolist()
    tokens = catalogue_tokens(data.items) or []
    size = cfg.evaluate.batch_size

    ids = rec.catalogue_scores(prompts, tokens, CONVERSATION, size).numpy()
    ids_next = rec.catalogue_scores(prompts, tokens, NEXT_ITEM, size).numpy()
    next_prompts = user_prompts(data, NEXT_ITEM, users, prompts)
    next_prompt = rec.catalogue_scores(next_prompts, tokens, NEXT_ITEM, size).numpy()
    embedding = embedding_scores(rec, data, user_prompts(data, USER, users, prompts), USER, size)
    prior = log_like_rate(data, cfg.data.rating_threshold)[None, :]
    combinations = {
        "ids alone": ids,
        "ids under the next-item adapter": ids_next,
        "the user's next-item prompt": next_prompt,
        "user2item embedding alone": embedding,
        DEFAULT: fused_scores(ids, embedding),
        "ids + next-item adapter": fused_scores(ids, ids_next),
        "ids + user2item + next-item adapter": fused_scores(ids, embedding, ids_next),
        "ids + user2item + next-item prompt": fused_scores(ids, embedding, next_prompt),
        "ids x2 + user2item": fused_scores(ids, ids, embedding),
        "ids + like-rate prior, + user2item": fused_scores(ids + prior, embedding),
        "next-item prompt + like-rate prior": next_prompt + prior,
    }
    histories = record_histories(frame, data.earlier_items())
    cutoffs = cutoffs_for(cfg.evaluate.ks, protocol)
    outputs = {
        name: full_ranking_outputs(frame, scores, data.item_index, histories, cutoffs)
        for name, scores in combinations.items()
    }
    settings = BootstrapSettings(seed=cfg.seed)
    trained = trained_baselines(cfg)
    sasrec = baseline_outputs(data, protocols, cfg.evaluate.ks, trained)["sasrec"][CONVERSATION]
    rows = {}
    for name, values in {**outputs, "SASRec": sasrec}.items():
        point = scored_metrics({CONVERSATION: values}, {CONVERSATION: protocol})[CONVERSATION]
        rows[name] = {
            "recall@10": point["recall@10"],
            "ndcg@10": point["ndcg@10"],
            "versus_default": compare(values, outputs[DEFAULT], "recall@10", settings).to_dict(),
        }
    return {"records": len(frame), "rows": rows}


def profile_signals(rec, data, cfg, ks=(10, 25, 50, 100)) -> dict[str, Any]:
    train = read_task_frames(cfg.paths.tasks, splits=("train",))[PROFILE]["train"]
    frame, users_frame = data.frames[PROFILE], data.frames[USER]
    profiles = [profile_fields(t) for t in train["target"]]
    keys = list(profiles[0])
    values = {k: sorted({p[k] for p in profiles}) for k in keys}
    modes = {k: Counter(p[k] for p in profiles).most_common(1)[0][0] for k in keys}
    majority = Counter(train["target"]).most_common(1)[0][0]
    targets = frame["target"].astype(str).tolist()

    def f1(answers: list[str]) -> float:
        return float(np.mean([token_f1(t, a) for t, a in zip(targets, answers, strict=True)]))

    row = {u: i for i, u in enumerate(users_frame["user_id"].astype(str))}
    embedded = rec.embed(
        users_frame["prompt"].astype(str).tolist(), USER, batch_size=cfg.evaluate.batch_size
    )
    embedded = embedded.float().numpy()
    similarity = (
        embedded[[row[u] for u in frame["user_id"].astype(str)]]
        @ embedded[[row[u] for u in train["user_id"].astype(str)]].T
    )
    neighbours = {}
    for k in ks:
        answers = []
        for scores in similarity:
            nearest = np.argsort(-scores)[:k]
            answers.append(
                profile_text(
                    {f: Counter(profiles[j][f] for j in nearest).most_common(1)[0][0] for f in keys}
                )
            )
        neighbours[str(k)] = {"token_f1": f1(answers), "distinct_answers": len(set(answers))}
    prompts = frame["prompt"].astype(str).tolist()
    fields_of_truth = [profile_fields(t) for t in targets]
    model_fields, prefix = {}, ""
    for key in keys:
        candidates = [[f"{prefix}{key}: {v}" for v in values[key]] for _ in prompts]
        scores = np.array(rec.choice_scores(prompts, candidates, PROFILE, cfg.evaluate.batch_size))
        truth = [f[key] for f in fields_of_truth]
        chosen = [values[key][i] for i in scores.argmax(axis=1)]
        entry = {
            "accuracy": float(np.mean([c == t for c, t in zip(chosen, truth, strict=True)])),
            "mode_accuracy": float(np.mean([modes[key] == t for t in truth])),
            "most_probable": dict(Counter(chosen).most_common(3)),
        }
        if "female" in values[key]:
            labels = [t == "female" for t in truth]
            entry["auc_female"] = float(
                roc_auc_score(labels, scores[:, values[key].index("female")])
            )
        model_fields[key] = entry
        prefix += f"{key}: {modes[key]}; "
    return {
        "records": len(frame),
        "majority": {"answer": majority, "token_f1": f1([majority] * len(frame))},
        "field_modes": {
            "answer": profile_text(modes),
            "token_f1": f1([profile_text(modes)] * len(frame)),
        },
        "user2item_neighbours": neighbours,
        "model_field_probabilities": model_fields,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="reports/bench/fusion_signals.json")
    args = parser.parse_args()
    cfg = load_config(args.params)
    rec = load_bundle(cfg.paths.backbone, cfg.paths.merged)
    rec.model.eval()
    data = load_eval_set(
        cfg.paths.tasks, "valid", None, cfg.seed, tasks=[CONVERSATION, NEXT_ITEM, USER, PROFILE]
    )
    report = {
        "split": "valid",
        CONVERSATION: conversation_signals(rec, data, cfg),
        PROFILE: profile_signals(rec, data, cfg),
    }
    artifacts.write_json(Path(args.out), report)
    print(f"{CONVERSATION} ({report[CONVERSATION]['records']} validation records), Recall@10:")
    for name, entry in report[CONVERSATION]["rows"].items():
        diff = entry["versus_default"]
        print(f"  {name:38s} {entry['recall@10']:.3f}  vs default {signed(diff)}")
    profile = report[PROFILE]
    print(f"{PROFILE} ({profile['records']} validation records), token-F1:")
    print(f"  majority profile {profile['majority']['token_f1']:.4f}")
    print(f"  each field's most common value {profile['field_modes']['token_f1']:.4f}")
    for k, entry in profile["user2item_neighbours"].items():
        print(f"  {k} nearest users by user2item embedding {entry['token_f1']:.4f}")
    for key, entry in profile["model_field_probabilities"].items():
        extra = f", AUC of female {entry['auc_female']:.3f}" if "auc_female" in entry else ""
        print(
            f"  model's most probable {key}: accuracy {entry['accuracy']:.3f} "
            f"(most common value {entry['mode_accuracy']:.3f}){extra}"
        )


if __name__ == "__main__":
    main()
