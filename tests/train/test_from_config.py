"""Training from the config: a model.max_length that cuts records is named with their count, and
task weights name trained tasks."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from recfound.config import ConfigError
from recfound.model.backbone import train_bpe_tokenizer
from recfound.model.recmodel import answer_ids, answer_rows
from recfound.train.from_config import count_cut_records, warn_cut_records
from recfound.train.s2sched import check_task_weights
from tests.train.tiny import tiny_tasks


@pytest.fixture(scope="module")
def tasks_and_tokenizer():
    tasks = tiny_tasks(n_train=40, n_valid=8)
    texts = [str(t) for task in tasks for t in pd.concat([task.train.prompt, task.train.target])]
    return tasks, train_bpe_tokenizer(texts, 600)


def _truly_cut(tokenizer, task, max_length: int) -> int:
    """What the model does to each record, counted the slow way."""
    records = pd.concat([task.train, task.valid])
    if task.kind == "generative":
        rows, _ = answer_rows(tokenizer, list(records.prompt), list(records.target), max_length)
        whole = [
            len(tokenizer(p)["input_ids"]) + len(answer_ids(tokenizer, t, 10**6))
            for p, t in zip(records.prompt, records.target, strict=True)
        ]
        return sum(len(r) < w for r, w in zip(rows, whole, strict=True))
    return sum(
        max(len(tokenizer(p)["input_ids"]), len(tokenizer(t)["input_ids"])) > max_length
        for p, t in zip(records.prompt, records.target, strict=True)
    )


@pytest.mark.parametrize("max_length", [8, 12, 16, 24, 256])
def test_cut_records_are_counted_exactly(tasks_and_tokenizer, max_length: int) -> None:
    tasks, tokenizer = tasks_and_tokenizer
    counts = {c.task: c for c in count_cut_records(tokenizer, tasks, max_length)}
    for task in tasks:
        assert counts[task.name].cut == _truly_cut(tokenizer, task, max_length), task.name
        assert counts[task.name].total == len(task.train) + len(task.valid)
        if counts[task.name].cut:  # the suggested length keeps every record whole
            assert _truly_cut(tokenizer, task, counts[task.name].needed) == 0


def test_a_short_max_length_is_warned_naming_the_key_and_counts(
    tasks_and_tokenizer, caplog: pytest.LogCaptureFixture
) -> None:
    tasks, tokenizer = tasks_and_tokenizer
    with caplog.at_level(logging.WARNING, logger="recfound.train.from_config"):
        cut = warn_cut_records(tokenizer, tasks, 16)
    assert cut, "a 16-token model cuts some records"
    message = caplog.text
    total = sum(len(t.train) + len(t.valid) for t in tasks)
    assert f"model.max_length (16 tokens) is too short for {sum(c.cut for c in cut)} of " in message
    assert f"of {total} training/validation records" in message
    for c in cut:
        assert f"{c.task} {c.cut}/{c.total}" in message
    assert f"Set model.max_length to {max(c.needed for c in cut)}" in message

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="recfound.train.from_config"):
        assert warn_cut_records(tokenizer, tasks, 4096) == []
    assert caplog.text == ""  # nothing cut: nothing said


def test_task_weights_of_a_task_without_training_records_are_named(tasks_and_tokenizer) -> None:
    tasks, _ = tasks_and_tokenizer
    names = [t.name for t in tasks]
    check_task_weights({names[0]: 2.0}, names)  # a trained task: fine
    with pytest.raises(ConfigError, match=r"train\.task_weights names zero_shot, which has no"):
        check_task_weights({"zero_shot": 2.0, names[0]: 2.0}, names)
