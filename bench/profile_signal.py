"""How much of a user's profile can ten rated movies tell? The ceiling of user_profile.

user_profile asks the model for a user's age group, gender and occupation from ten rated movies,
and is scored by token-F1 against the true profile. Its trivial answer is the majority training
profile (the most common whole profile); each field's most common value is the other constant
answer (the one the model gives). This fits a dedicated classifier per field (logistic regression
on the history's items and genre counts) on the task's **training** records and scores it on its
**validation** records, the same way evaluation scores the model (token-F1 of the whole profile).
The test records are not read. A classifier built only for this task that cannot beat the
constant answers by much says the signal is not in the prompt at this data size. A second
classifier reads every training rating of the user (the whole history, about a hundred movies on
average, not the ten a prompt has room for): whether a longer prompt would carry the signal.

Writes reports/bench/profile_signal.json (per-field accuracy and token-F1 of the two constant
answers and of each classifier at each regularisation strength; token-F1 with its bootstrap
interval over the validation records, and each row's difference to the field modes, the model's
answer, with its paired interval as evaluation computes them).

    python bench/profile_signal.py [--params params.yaml]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression

from recfound import artifacts
from recfound.config import load_config
from recfound.data.ingest import read_tables
from recfound.evaluation.outputs import BootstrapSettings, TextOutputs, compare, metric_estimates
from recfound.evaluation.protocols import text_outputs

STRENGTHS = (0.03, 0.1, 0.3, 1.0)  # inverse L2 strength C of the logistic regression


def item_genres(interim: str | Path) -> dict[str, list[str]]:
    """Item → its genres, from the ingested items table (``categories``, ``|``-separated)."""
    items = read_tables(interim).items
    return {
        str(item): [g for g in str(categories).split("|") if g]
        for item, categories in zip(items["item_id"], items["categories"].fillna(""), strict=True)
    }


def features(history: list[str], genres: dict[str, list[str]]) -> dict[str, float]:
    """One indicator per rated item, and each genre's share of the items."""
    out: dict[str, float] = {}
    for item in history:
        out[f"item {item}"] = 1.0
        for genre in genres.get(item, []):
            out[f"genre {genre}"] = out.get(f"genre {genre}", 0.0) + 1.0 / len(history)
    return out


def profile_fields(target: str) -> dict[str, str]:
    """``"age group: 25-34; gender: male; occupation: student"`` → field → value."""
    return dict(part.split(": ", 1) for part in target.split("; "))


def profile_text(values: dict[str, str]) -> str:
    return "; ".join(f"{field}: {value}" for field, value in values.items())


def field_accuracies(truth: pd.DataFrame, predicted: pd.DataFrame) -> dict[str, float]:
    return {
        f"{field} accuracy": float((predicted[field] == truth[field]).mean()) for field in truth
    }


def as_outputs(frame: pd.DataFrame, predicted: pd.DataFrame) -> TextOutputs:
    """The predicted profiles as evaluation's text outputs of ``frame``'s records (token-F1
    against each record's target, as evaluation scores the model)."""
    return text_outputs(frame, [profile_text(row) for row in predicted.to_dict("records")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="reports/bench/profile_signal.json")
    args = parser.parse_args()
    cfg = load_config(args.params)
    tasks = Path(cfg.paths.tasks)
    train, valid = (
        pd.read_parquet(tasks / "user_profile" / f"{s}.parquet") for s in ("train", "valid")
    )
    genres = item_genres(cfg.paths.interim)
    rated = pd.read_parquet(tasks / "train_interactions.parquet").astype({"user_id": str})
    every = rated.groupby("user_id", sort=False)["item_id"].agg(lambda s: s.astype(str).tolist())
    y_train = pd.DataFrame([profile_fields(t) for t in train["target"]])
    y_valid = pd.DataFrame([profile_fields(t) for t in valid["target"]])

    modes = {field: y_train[field].mode()[0] for field in y_train}
    majority = profile_fields(train["target"].mode()[0])
    predictions = {  # row label → each validation record's predicted fields
        "majority profile": pd.DataFrame([majority] * len(valid)),
        "field modes": pd.DataFrame([modes] * len(valid)),
    }
    histories = {  # row label → each record's rated items: the prompt's ten, or all of them
        "": lambda frame: [list(h) for h in frame["history_ids"]],
        ", whole history": lambda frame: [every.get(str(u), []) for u in frame["user_id"]],
    }
    for label, history in histories.items():
        vectorizer = DictVectorizer()
        x_train = vectorizer.fit_transform([features(h, genres) for h in history(train)])
        x_valid = vectorizer.transform([features(h, genres) for h in history(valid)])
        for strength in STRENGTHS:
            predictions[f"classifier{label} C={strength}"] = pd.DataFrame(
                {
                    field: LogisticRegression(C=strength, max_iter=3000)
                    .fit(x_train, y_train[field])
                    .predict(x_valid)
                    for field in y_train
                }
            )
    answers = {name: as_outputs(valid, values) for name, values in predictions.items()}
    settings = BootstrapSettings()
    rows: dict[str, dict] = {}
    for name, predicted in predictions.items():
        f1 = metric_estimates(answers[name], settings)["token_f1"]
        rows[name] = values = {
            **field_accuracies(y_valid, predicted),
            "token_f1": f1.value,
            "token_f1_interval": f1.interval,
        }
        if name != "field modes":
            versus = compare(answers[name], answers["field modes"], "token_f1", settings)
            values["token_f1_minus_field_modes"] = versus.to_dict()
        cells = ", ".join(f"{k} {v:.3f}" for k, v in values.items() if isinstance(v, float))
        print(f"{name:22s} {cells}")
    document = {
        "task": "user_profile",
        "fitted_on": f"train ({len(train)} records)",
        "scored_on": f"valid ({len(valid)} records)",
        "majority_profile": profile_text(majority),
        "field_modes": profile_text(modes),
        "rows": rows,
    }
    artifacts.write_json(Path(args.out), document)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
