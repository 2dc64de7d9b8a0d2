"""Closed sets are scored as closed sets, text answers are judged by their template, greedy
decoding stops at the end of the answer, and every task is compared with its trivial answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recfound.data.schema import TaskRecord, records_to_frame
from recfound.data.tasks import TASK_BUILDERS
from recfound.evaluation.baseline_predictions import baseline_outputs
from recfound.evaluation.outputs import (
    BootstrapSettings,
    TextOutputs,
    outputs_from_dict,
    well_formed,
)
from recfound.evaluation.protocols import (
    EvalSet,
    candidate_outputs,
    decide_at,
    decision_threshold,
)
from recfound.evaluation.scores import evaluation_document
from tests.evaluation.test_runner import ITEMS, SPLIT_INTERACTIONS
from tests.train.tiny import tiny_model, tiny_tasks

RATINGS = ["1", "2", "3", "4", "5"]


def label_frame(task: str, targets: list[str], candidates: list[str], labels: list[float]):
    """Test records of a label task, one per target."""
    rows = [
        TaskRecord(
            task=task,
            kind="generative",
            split="test",
            prompt=f"{task} {n}",
            target=t,
            user_id=f"u{n}",
            candidates=candidates,
            label=label,
        )
        for n, (t, label) in enumerate(zip(targets, labels, strict=True))
    ]
    return records_to_frame(rows)


def rating_frame(targets: list[str]):
    return label_frame("rating_prediction", targets, RATINGS, [float(t) for t in targets])


def test_expected_rating_is_the_probability_weighted_labels() -> None:
    frame = rating_frame(["4", "2"])
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5))
    scores = (logits - np.log(np.exp(logits).sum(1, keepdims=True))).tolist()  # log-probs
    outputs = candidate_outputs(frame, scores, "rating", ks=[1])
    probabilities = np.exp(np.array(scores))
    want = probabilities @ np.arange(1, 6, dtype=float)
    np.testing.assert_allclose(outputs.expected, want, rtol=1e-12)
    assert outputs.predicted.tolist() == [int(np.argmax(s)) for s in scores]


def test_a_models_label_scores_are_a_distribution_over_the_label_set() -> None:
    rec = tiny_model(tiny_tasks(n_train=40, n_valid=4))
    prompts = ["Toy Story (1995)", "Heat (1995) — genres: Action"]
    scores = rec.choice_scores(prompts, [RATINGS, ["yes", "no"]], "year")
    for row in scores:
        assert sum(np.exp(row)) == pytest.approx(1.0, abs=1e-9)
    # whichever way a row is decided (first tokens, or whole answers when labels share their
    # first token, as here where this tiny tokenizer writes " 1" as " " + "1"), its order is the
    # order of the labels' whole-answer likelihoods
    whole = rec.score(prompts, [RATINGS, ["yes", "no"]], "year", length_normalize=False)
    for got, want in zip(scores, whole, strict=True):
        assert np.argsort(got).tolist() == np.argsort(want).tolist()


@pytest.mark.parametrize(
    ("task", "answer", "ok"),
    [
        ("user_profile", "age group: 25-34; gender: male; occupation: student", True),
        ("user_profile", "age's; movie 34's's's's 34's rated rated rated4's 25 gender:'s", False),
        ("user_profile", "age group: 25-34; gender: male; gender: male; gender: male", True),
        ("user_profile", "", False),
        (
            "item_profile",
            "well liked: average rating 3.9/5 from 444 users. Its fans are most often: "
            "age group 25-34, gender male, occupation student.",
            True,
        ),
        ("item_profile", "well liked: average rating 3.9/5 from", False),
        ("query_rewriting", "Children's movies from 1995", True),
        ("query_rewriting", "Comedy and Romance movies from the 1990s", True),
        ("query_rewriting", "Comedy Comedy Comedy Comedy Comedy Comedy", False),
        ("answer_generation", "Animation, Children's, Comedy", True),
        ("answer_generation", "1995", True),
        ("attribute_value_extraction", "Drama Drama Drama", False),
    ],
)
def test_well_formed_accepts_the_template_and_rejects_malformed_answers(
    task: str, answer: str, ok: bool
) -> None:
    assert well_formed(answer, TASK_BUILDERS[task].answer_format) is ok


def test_every_text_task_target_is_well_formed() -> None:
    """The templates' own answers parse (a check that rejected its targets would be useless)."""
    examples = {
        "user_profile": "age group: 18-24; gender: female; occupation: writer",
        "item_profile": "poorly rated: average rating 1.6/5 from 12 users.",
        "query_rewriting": "unknown movies from the 1970s",
        "answer_generation": "unknown",
        "attribute_value_extraction": "Film-Noir, Sci-Fi",
    }
    for task, answer in examples.items():
        assert well_formed(answer, TASK_BUILDERS[task].answer_format), task
    outputs = TextOutputs(
        record=np.arange(2),
        user_id=["", ""],
        target=["a", "b"],
        output=[examples["user_profile"], "gender gender gender"],
        answer_format=TASK_BUILDERS["user_profile"].answer_format,
    )
    assert outputs.metrics_on(np.arange(2))["well_formed"][0] == pytest.approx(0.5)


def test_greedy_decoding_stops_at_the_end_of_the_answer() -> None:
    """A model that learned ``prompt → answer</s>`` generates the answer and nothing after it,
    even with room for many more tokens."""
    torch.manual_seed(0)
    rec = tiny_model(tiny_tasks(n_train=40, n_valid=4))
    prompts = ["Toy Story (1995) is a", "Heat (1995) is a"]
    answers = ["Comedy", "Action, Crime"]
    params = [p for p in rec.model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=0.02)
    batch = rec.encode_with_answers(prompts, answers)
    for _ in range(150):
        picked, mask = rec.logprobs_of(batch, "genre")
        loss = -(picked.sum() / mask.sum())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    generated = rec.generate(prompts, "genre", max_new_tokens=20)
    assert generated == answers


def test_every_task_is_compared_with_its_trivial_answer() -> None:
    frame = rating_frame(["4", "4", "5", "1"])
    data = EvalSet(
        split="test",
        frames={"rating_prediction": frame},
        kinds={"rating_prediction": "generative"},
        items=ITEMS,
        train_interactions=SPLIT_INTERACTIONS[SPLIT_INTERACTIONS["split"] == "train"].assign(
            rating=[4.0, 4.0, 3.0]
        ),
        train_targets={"rating_prediction": ["4", "4", "3"]},
    )
    protocols = {"rating_prediction": "rating"}
    baselines = baseline_outputs(data, protocols, ks=[1])
    mean = baselines["global_mean"]["rating_prediction"]
    np.testing.assert_allclose(mean.expected, np.full(4, 11 / 3))  # the mean training rating
    # a model sure of every true rating
    scores = [[0.0 if r == t else -30.0 for r in RATINGS] for t in ("4", "4", "5", "1")]
    model = {"rating_prediction": candidate_outputs(frame, scores, "rating", ks=[1])}
    document = evaluation_document(
        model, baselines, protocols, {"rating_prediction": "generative"}, BootstrapSettings()
    )
    entry = document["versus_trivial"]["rating_prediction"]
    assert entry["baseline"] in ("majority", "global_mean") and entry["at_or_above"]
    assert entry["rmse"]["baseline"] == "global_mean" and entry["rmse"]["better"]
    assert entry["rmse"]["difference"] < 0


def test_fused_scores_add_standardised_signals_and_keep_unscored_items_rankable() -> None:
    from recfound.evaluation.model_predictions import fused_scores

    logits = np.array([[0.0, -1.0, -2.0, -np.inf], [-5.0, -1.0, -3.0, -2.0]])
    embedding = np.array([[0.1, 0.9, 0.5, 0.95], [0.2, 0.1, 0.3, 0.0]])
    fused = fused_scores(logits, embedding)
    assert np.isfinite(fused).all()  # the item without an identifier is ranked by the embedding

    def z(v: np.ndarray) -> np.ndarray:
        return (v - v.mean()) / v.std()

    np.testing.assert_allclose(fused[1], z(logits[1]) + z(embedding[1]))
    # one signal alone, with a constant second one, keeps its own order
    alone = fused_scores(logits[1:], np.zeros((1, 4)))
    assert np.argsort(alone[0]).tolist() == np.argsort(logits[1]).tolist()


def test_a_two_label_decision_threshold_is_chosen_on_validation_then_applied() -> None:
    # validation: every "yes" has a margin above 1, every "no" below: the cut separates them
    margin = np.array([2.0, 3.0, 1.5, -1.0, 0.5, 0.8])
    cut = decision_threshold(margin, np.array([True, True, True, False, False, False]))
    assert 0.8 < cut < 1.5
    # no cut beats answering "yes" everywhere: ties go to the cut nearest 0 (the argmax)
    assert decision_threshold(np.array([0.5, 1.0, 2.0]), np.ones(3, dtype=bool)) == 0.0

    frame = label_frame("ctr_prediction", ["yes", "no", "yes", "no"], ["yes", "no"], [1, 0, 1, 0])
    scores = [[-0.1, -2.4], [-0.5, -0.9], [-0.2, -1.6], [-1.2, -0.4]]  # margins 2.3 .4 1.4 -.8
    argmax = candidate_outputs(frame, scores, "classification", ks=[1])
    assert argmax.threshold is None and argmax.predicted.tolist() == [0, 0, 0, 1]
    calibrated = decide_at(argmax, cut)
    assert calibrated.threshold == cut and calibrated.predicted.tolist() == [0, 1, 0, 1]
    assert calibrated.margin.tolist() == argmax.margin.tolist()  # AUC does not change
    restored = outputs_from_dict(calibrated.to_dict())
    assert restored.threshold == cut and restored.take(np.array([1])).threshold == cut
