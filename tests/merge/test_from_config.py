"""What names the merge study: the selection slice it is scored on (records and settings)."""

from __future__ import annotations

from pathlib import Path

from recfound.config import load_config
from recfound.evaluation.protocols import load_eval_set
from recfound.merge.from_config import selection_digest, split_validation


def test_selection_digest_follows_the_records_and_the_scoring_settings(
    tiny_catalogue_project: Path,
) -> None:
    cfg = load_config(tiny_catalogue_project / "params.yaml")
    scoring = {"max_new_tokens": 3, "ks": [1, 5]}

    def digest(max_per_task: int, settings: dict = scoring) -> str:
        data = load_eval_set(cfg.paths.tasks, "valid", 2 * max_per_task, cfg.seed)
        return selection_digest(split_validation(data, cfg.seed)[0], settings)

    assert digest(6) == digest(6)  # a resumed stage finds its study
    assert digest(6) != digest(3)  # another merge.max_per_task: other records
    assert digest(6) != digest(6, {**scoring, "ks": [1, 10]})
    data = load_eval_set(cfg.paths.tasks, "valid", 12, cfg.seed)
    select = split_validation(data, cfg.seed)[0]
    task = sorted(select.frames)[0]
    edited = select.frames[task].copy()
    edited.loc[0, "target"] = str(edited.loc[0, "target"]) + " edited"
    changed = type(select)(**{**vars(select), "frames": {**select.frames, task: edited}})
    assert selection_digest(changed, scoring) != selection_digest(select, scoring)
