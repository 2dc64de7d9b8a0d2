"""A served two-label answer is the answer evaluation scored: the label chosen at the cut
evaluation chose on validation records (``decisions.json``, written at registration from
``eval_records.json``), not the argmax of the two log-probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from recfound.evaluation.outputs import ChoiceOutputs, RankOutputs
from recfound.evaluation.protocols import decide_at
from recfound.evaluation.scores import records_document
from recfound.layout import RECORDS_FILE
from recfound.serving.decisions import (
    DecisionsError,
    LabelCut,
    cuts_from_records,
    read_decisions,
    write_decisions,
)
from recfound.serving.pyfunc import RecFoundModel
from tests.tracking.conftest import register_in_sqlite

LABELS = ["yes", "no"]
PROMPT = "Toy Story (1995)"


def choice(threshold: float | None, labels: list[str] = LABELS) -> ChoiceOutputs:
    return ChoiceOutputs(
        record=np.arange(3),
        user_id=["1", "2", "3"],
        labels=labels,
        target=np.array([0, 1, 0]),
        predicted=np.array([0, 1, 1]),
        margin=np.array([0.4, -0.2, 0.1]) if len(labels) == 2 else None,
        threshold=threshold,
    )


def test_the_cut_chooses_between_the_two_labels_in_either_order() -> None:
    cut = LabelCut(("yes", "no"), threshold=0.5)
    assert cut.choose(["yes", "no"], [-0.1, -0.8]) == 0  # margin 0.7 > 0.5
    assert cut.choose(["yes", "no"], [-0.4, -0.8]) == 1  # margin 0.4: not above the cut
    assert cut.choose(["no", "yes"], [-0.8, -0.1]) == 1  # the same answer, candidates reversed
    assert cut.choose(["no", "yes"], [-0.8, -0.4]) == 0
    assert cut.choose(["yes", "maybe"], [-0.1, -0.8]) is None  # not this task's labels
    assert cut.choose(["yes", "no", "maybe"], [-0.1, -0.8, -2.0]) is None


def test_serving_answers_what_evaluation_scored_at_every_margin_ties_included() -> None:
    """decide_at (the scored answers) and LabelCut.choose (the served ones) apply one rule; a
    margin equal to the cut answers the second label in both."""
    cut = LabelCut(("yes", "no"), threshold=0.25)
    margins = np.array([-1.0, 0.0, 0.25, 0.2500001, 0.75])
    outputs = ChoiceOutputs(
        record=np.arange(len(margins)),
        user_id=[str(i) for i in range(len(margins))],
        labels=LABELS,
        target=np.zeros(len(margins), dtype=np.int64),
        predicted=np.zeros(len(margins), dtype=np.int64),
        margin=margins,
    )
    scored = decide_at(outputs, cut.threshold).predicted.tolist()
    served = [cut.choose(["yes", "no"], [float(m), 0.0]) for m in margins]
    assert scored == served == [1, 1, 1, 0, 0]


def test_cuts_come_from_the_model_tasks_decided_at_one(tmp_path: Path) -> None:
    records = {
        "ctr_prediction": choice(threshold=0.25),
        "zero_shot": choice(threshold=-0.7),  # answered by ctr_prediction: not a model task
        "product_matching": choice(threshold=None),  # the argmax: nothing to write
        "rating_prediction": choice(None, labels=["1", "2", "3"]),
        "candidate_ranking": RankOutputs(
            record=np.arange(2), user_id=["1", "2"], ranks=np.array([1, 3]), ks=(1,)
        ),
    }
    cuts = cuts_from_records(records, ["ctr_prediction", "product_matching", "candidate_ranking"])
    assert cuts == {"ctr_prediction": LabelCut(("yes", "no"), 0.25)}
    path = write_decisions(tmp_path / "decisions.json", cuts)
    assert read_decisions(path) == cuts
    assert read_decisions(tmp_path / "absent.json") == {}  # registered without one
    path.write_text(json.dumps({"ctr_prediction": {"labels": ["yes"], "threshold": 0.2}}))
    with pytest.raises(DecisionsError, match=r"decisions\.json is not a decisions file"):
        read_decisions(path)


def test_the_served_answer_follows_the_cut_and_the_scores_do_not_move(
    four_task_bundle: tuple[Path, Path], tmp_path: Path
) -> None:
    request = [
        {"task": "genre", "input": PROMPT, "candidates": LABELS},
        {"task": "genre", "input": PROMPT, "candidates": LABELS[::-1]},
        {"task": "year", "input": PROMPT, "candidates": LABELS},  # no cut for year
    ]
    plain = RecFoundModel.from_dirs(*four_task_bundle).predict(None, request)
    scores = plain["scores"].tolist()
    margin = scores[0][0] - scores[0][1]
    argmax = [LABELS[int(np.argmax(s))] for s in (scores[0], scores[2])]
    for threshold, expected in ((margin - 1.0, "yes"), (margin + 1.0, "no")):
        path = write_decisions(
            tmp_path / f"{threshold}.json", {"genre": LabelCut(("yes", "no"), threshold)}
        )
        served = RecFoundModel.from_dirs(*four_task_bundle, decisions_path=path)
        answers = served.predict(None, request)
        assert answers["generation"].tolist() == [expected, expected, argmax[1]]
        for got, before in zip(answers["scores"], scores, strict=True):
            np.testing.assert_array_equal(got, before)
    assert plain["generation"].tolist()[0] == argmax[0]


def test_registration_ships_the_cuts_of_the_evaluation_records(
    tiny_bundle: tuple[Path, Path], tmp_path: Path
) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    records = {"genre": choice(threshold=1e6), "year": choice(threshold=-1e6)}
    document = records_document(records, {t: "classification" for t in records}, "test")
    (reports / RECORDS_FILE).write_text(json.dumps(document))
    report = register_in_sqlite(tmp_path, tiny_bundle)
    assert report["decision_thresholds"] == {"genre": 1e6, "year": -1e6}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
        model = mlflow.pyfunc.load_model("models:/recfound@champion")
    request = [{"task": t, "input": PROMPT, "candidates": LABELS} for t in ("genre", "year")]
    answers = model.predict(request)
    assert answers["generation"].tolist() == ["no", "yes"]  # the cuts, whatever the scores
