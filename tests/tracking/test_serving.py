"""The registered model answers requests: ``models:/recfound@champion`` loaded with
``mlflow.pyfunc.load_model`` in this environment, one request per task of the model."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from recfound.config import load_config
from recfound.stages.register import run_register
from recfound.tracking import serving
from tests.tracking.conftest import project_params, write_metrics

CANDIDATES = ["Heat (1995)", "Jumanji (1995)", "Casino (1995)"]


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: tuple[Path, Path]):
    """The tiny model registered in a sqlite store as version 1 (champion), then loaded back."""
    root = tmp_path_factory.mktemp("serving")
    backbone, bundle = tiny_bundle
    params = project_params(
        root,
        backbone,
        bundle,
        tracking={
            "tracking_uri": f"sqlite:///{root}/mlflow.db",
            "artifact_location": str(root / "mlartifacts"),
        },
    )
    cfg = load_config(params)
    write_metrics(Path(cfg.paths.reports) / "metrics.json", 0.4, {"genre": 0.3, "match": 0.5})
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        patch.chdir(root)  # no dvc.lock here: the data version is a content hash
        report = run_register(cfg)
        model = mlflow.pyfunc.load_model("models:/recfound@champion")
    return report, model


def test_register_reports_version_and_alias(champion) -> None:
    report, _ = champion
    assert report["version"] == 1
    assert report["alias"] == "champion"
    assert report["decision"]["passed"] is True
    assert report["data_version"].startswith("sha256:")
    assert report["data_version_source"] == "content"


def test_champion_answers_every_task(champion) -> None:
    _, model = champion
    task_kinds = model.metadata.metadata["task_kinds"]
    assert sorted(task_kinds.values()) == ["embedding", "generative", "generative"]
    rows = []
    for task in sorted(task_kinds):
        rows.append({"task": task, "input": "Toy Story (1995)", "candidates": None})
        rows.append({"task": task, "input": "GoldenEye (1995)", "candidates": CANDIDATES})
    out = model.predict(pd.DataFrame(rows), params={"max_new_tokens": 6})

    assert list(out.columns) == ["task", "kind", "output_type", "generation", "embedding", "scores"]
    assert out["task"].tolist() == [r["task"] for r in rows]
    for row, answer in zip(rows, out.to_dict("records"), strict=True):
        kind = task_kinds[row["task"]]
        assert answer["kind"] == kind
        if kind == "embedding":
            assert answer["output_type"] == "embedding"
            assert math.isclose(sum(v * v for v in answer["embedding"]), 1.0, rel_tol=1e-4)
            assert answer["generation"] is None
            if row["candidates"]:  # cosine similarities to the candidates
                assert len(answer["scores"]) == len(CANDIDATES)
                assert all(-1.0 - 1e-5 <= s <= 1.0 + 1e-5 for s in answer["scores"])
            else:
                assert answer["scores"] is None
        elif row["candidates"]:
            assert answer["output_type"] == "scores"
            assert len(answer["scores"]) == len(CANDIDATES)
            assert all(s <= 0 for s in answer["scores"])  # mean log-likelihoods
            best = max(range(len(CANDIDATES)), key=answer["scores"].__getitem__)
            assert answer["generation"] == CANDIDATES[best]
            assert answer["embedding"] is None
        else:
            assert answer["output_type"] == "generation"
            assert isinstance(answer["generation"], str)
            assert answer["embedding"] is None and answer["scores"] is None


def test_rows_as_dicts_with_and_without_candidates(champion) -> None:
    _, model = champion
    out = model.predict(
        [
            {"task": "year", "input": "Heat (1995)"},
            {"task": "match", "input": "Heat (1995)", "candidates": CANDIDATES[:2]},
        ],
        params={"max_new_tokens": 4},
    )
    assert out["output_type"].tolist() == ["generation", "embedding"]
    assert len(out.loc[1, "scores"]) == 2


def test_scores_do_not_depend_on_how_rows_are_batched(
    champion, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, model = champion
    request = pd.DataFrame(
        [{"task": "genre", "input": f"Movie {i}", "candidates": CANDIDATES} for i in range(3)]
    )
    together = model.predict(request)["scores"].tolist()
    monkeypatch.setattr(serving, "SCORE_PAIRS", 2)  # one row per forward pass
    one_by_one = model.predict(request)["scores"].tolist()
    assert np.allclose(together, one_by_one, atol=1e-5)


def test_unknown_task_names_the_known_ones(champion) -> None:
    _, model = champion
    with pytest.raises(MlflowException, match=r"unknown task\(s\) \['nope'\].*genre, match, year"):
        model.predict(pd.DataFrame([{"task": "nope", "input": "x"}]))


def test_candidates_must_be_a_list(champion) -> None:
    _, model = champion
    for wrong in ("Heat", 3):
        with pytest.raises(MlflowException, match="list of strings"):
            model.predict(pd.DataFrame([{"task": "genre", "input": "x", "candidates": wrong}]))
