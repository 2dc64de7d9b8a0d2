"""The registered model answers requests: ``models:/recfound@champion`` loaded with
``mlflow.pyfunc.load_model`` in this environment, one request per task of the model; it is defined
from code (no pickle), answers each task with folded weights equal to the adapter's, refuses bad
requests with a 400 naming the field, and reports its own failures as a 500."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException

from recfound.config import ServingConfig
from recfound.model.tmole import TMoLELinear
from recfound.serving import pyfunc as serving
from recfound.serving.pyfunc import RecFoundModel
from tests.tracking.conftest import FOUR_TASKS, free_port, post_json, register_in_sqlite

CANDIDATES = ["Heat (1995)", "Jumanji (1995)", "Casino (1995)"]


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: tuple[Path, Path]):
    """The tiny model registered in a sqlite store as version 1 (champion), then loaded back."""
    root = tmp_path_factory.mktemp("serving")
    report = register_in_sqlite(root, tiny_bundle)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        model = mlflow.pyfunc.load_model("models:/recfound@champion")
        model_dir = Path(mlflow.artifacts.download_artifacts("models:/recfound@champion"))
    return report, model, model_dir


def test_register_reports_version_and_alias(champion) -> None:
    report, _, _ = champion
    assert report["version"] == 1
    assert report["alias"] == "champion"
    assert report["decision"]["passed"] is True
    assert report["data_version"].startswith("sha256:")
    assert report["data_version_source"] == "content"


def test_champion_answers_every_task(champion) -> None:
    _, model, _ = champion
    task_kinds = model.metadata.metadata["task_kinds"]
    assert sorted(task_kinds.values()) == ["embedding", "generative", "generative"]
    rows = []
    for task in sorted(task_kinds):
        rows.append({"task": task, "input": "Toy Story (1995)", "candidates": None})
        rows.append({"task": task, "input": "GoldenEye (1995)", "candidates": CANDIDATES})
    out = model.predict(pd.DataFrame(rows), params={"max_new_tokens": 6})

    assert list(out.columns) == [
        *("task", "kind", "output_type", "generation", "embedding", "scores"),
        *("items", "titles", "path"),  # filled by recommend rows only
    ]
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
    _, model, _ = champion
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
    _, model, _ = champion
    request = pd.DataFrame(
        [{"task": "genre", "input": f"Movie {i}", "candidates": CANDIDATES} for i in range(3)]
    )
    together = model.predict(request)["scores"].tolist()
    monkeypatch.setattr(serving, "SCORE_PAIRS", 2)  # one row per forward pass
    one_by_one = model.predict(request)["scores"].tolist()
    assert np.allclose(together, one_by_one, atol=1e-5)


def test_unknown_task_names_the_known_ones(champion) -> None:
    _, model, _ = champion
    with pytest.raises(MlflowException, match=r"unknown task\(s\) \['nope'\].*genre, match, year"):
        model.predict(pd.DataFrame([{"task": "nope", "input": "x"}]))


def test_candidates_must_be_a_list(champion) -> None:
    _, model, _ = champion
    for wrong in ("Heat", 3):
        with pytest.raises(MlflowException, match="list of strings"):
            model.predict(pd.DataFrame([{"task": "genre", "input": "x", "candidates": wrong}]))


# ---- defined from code, not pickled ---------------------------------------------------------


def test_registered_model_is_code_and_safetensors_without_pickle(champion) -> None:
    _, _, model_dir = champion
    files = [p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()]
    assert not [f for f in files if f.endswith((".pkl", ".pickle"))], files
    flavor = mlflow.models.Model.load(model_dir / "MLmodel").flavors["python_function"]
    assert flavor["model_code_path"].endswith("model_code.py") and "python_model" not in flavor
    assert flavor["config"] == ServingConfig().model_dump()  # the serving settings travel
    assert any(f.endswith("adapter_model.safetensors") for f in files)
    assert any(f.endswith("model.safetensors") for f in files)  # the backbone
    # the directory alone, loaded afresh, answers every task
    model = mlflow.pyfunc.load_model(str(model_dir))
    tasks = sorted(model.metadata.metadata["task_kinds"])
    out = model.predict(
        [{"task": t, "input": "Heat (1995)", "candidates": CANDIDATES} for t in tasks]
    )
    assert out["task"].tolist() == tasks
    assert all(len(scores) == len(CANDIDATES) for scores in out["scores"])


# ---- folded serving --------------------------------------------------------------------------


def _all_kinds_request() -> list[dict]:
    rows = []
    for n, task in enumerate(sorted(FOUR_TASKS)):
        rows.append({"task": task, "input": f"Toy Story (1995) {n}", "candidates": None})
        rows.append({"task": task, "input": "GoldenEye (1995)", "candidates": CANDIDATES})
    return rows


def assert_same_answers(got: pd.DataFrame, expected: pd.DataFrame, atol: float) -> None:
    """Same rows, output types and generations; vectors and scores within ``atol``."""
    assert got["task"].tolist() == expected["task"].tolist()
    assert got["output_type"].tolist() == expected["output_type"].tolist()
    for a, b in zip(got.to_dict("records"), expected.to_dict("records"), strict=True):
        for key in ("embedding", "scores"):
            assert (a[key] is None) == (b[key] is None), key
            if a[key] is not None:
                np.testing.assert_allclose(a[key], b[key], atol=atol, rtol=0)
        if a["output_type"] == "generation":
            assert a["generation"] == b["generation"]


def test_folded_answers_equal_the_adapters_to_1e_5(four_task_bundle) -> None:
    backbone, bundle = four_task_bundle
    folded = RecFoundModel.from_dirs(backbone, bundle)
    unfolded = RecFoundModel.from_dirs(backbone, bundle, folded=False)
    request = _all_kinds_request()
    params = {"max_new_tokens": 5}
    expected = unfolded.predict(None, request, params)
    got = folded.predict(None, request, params)
    assert_same_answers(got, expected, atol=1e-5)
    assert folded.folded_models.built() == sorted(FOUR_TASKS)  # one model per task
    assert unfolded.folded_models.built() == []
    plain = folded.folded_models.for_task("genre").model
    assert not any(isinstance(m, TMoLELinear) for m in plain.modules())
    assert not any("tmole" in name for name, _ in plain.named_parameters())
    # tasks differ: the four folded models are four different sets of weights
    weight = "model.layers.0.self_attn.q_proj.weight"
    folded_weights = [
        dict(folded.folded_models.for_task(t).model.named_parameters())[weight]
        for t in sorted(FOUR_TASKS)
    ]
    assert all(not torch.equal(folded_weights[0], w) for w in folded_weights[1:])
    # untouched tensors are shared with the adapted model, not copied per task
    embed = "model.embed_tokens.weight"
    assert dict(plain.named_parameters())[embed] is dict(folded.rec.model.named_parameters())[embed]


def test_a_task_is_folded_once_when_its_first_requests_arrive_together(four_task_bundle) -> None:
    folded = RecFoundModel.from_dirs(*four_task_bundle)
    barrier = threading.Barrier(4)
    got: list[object] = []

    def first_request() -> None:
        barrier.wait(timeout=30)
        got.append(folded.folded_models.for_task("year"))

    threads = [threading.Thread(target=first_request) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(got) == 4 and all(model is got[0] for model in got)
    assert folded.folded_models.built() == ["year"]


# ---- limits and bad fields: 400 naming the field; the model's own failure: 500 ------------------

LIMITS = ServingConfig()
BAD_REQUESTS = [
    ([{"task": "genre", "input": None}], None, r"row 0: 'input' is null"),
    ([{"task": "genre", "input": "x" * 4001}], None, r"'input' has 4001 characters.*4000"),
    ([{"task": "genre", "input": "x"}] * 65, None, r"65 rows.*serving.max_rows = 64"),
    (
        [{"task": "genre", "input": "x", "candidates": ["a"] * 101}],
        None,
        r"101 entries.*serving.max_candidates = 100",
    ),
    (
        [{"task": "genre", "input": "x", "candidates": ["a", 3]}],
        None,
        r"'candidates' must be a list of strings; entry 1",
    ),
    (
        [{"task": "genre", "input": "x", "candidates": ["a", "y" * 4001]}],
        None,
        r"'candidates\[1\]' has 4001 characters",
    ),
    ([{"task": None, "input": "x"}], None, r"row 0: 'task' must be a task name"),
    (
        [{"task": "genre", "input": "x", "candidates": ["", "  "]}],
        None,
        r"row 0: every entry of 'candidates' is empty",
    ),
    (  # inside every per-field limit, 2.56 M characters in all
        [{"task": "genre", "input": "x" * 200, "candidates": ["c" * 200] * 100}] * 64,
        None,
        r"read 2560000 characters .* serving.max_request_chars = 1000000",
    ),
    ([{"task": "genre", "input": "x"}], {"max_new_tokens": -1}, r"'max_new_tokens' is -1"),
    ([{"task": "genre", "input": "x"}], {"max_new_tokens": 0}, r"'max_new_tokens' is 0"),
    (
        [{"task": "genre", "input": "x"}],
        {"max_new_tokens": 129},
        r"'max_new_tokens' is 129; allowed: 1 to serving.max_new_tokens = 128",
    ),
    (  # MLflow drops params its ParamSchema lacks before predict; the model still sees them
        [{"task": "genre", "input": "x"}],
        {"max_new_tokens": 4, "temperature": 0.7, "top_k": 5},
        r"unknown parameter\(s\) \['temperature', 'top_k'\]; this model takes only "
        r"'max_new_tokens'",
    ),
]


@pytest.mark.parametrize(("rows", "params", "message"), BAD_REQUESTS)
def test_bad_requests_are_client_errors_naming_the_field(
    champion, rows: list[dict], params: dict | None, message: str
) -> None:
    _, model, _ = champion
    with pytest.raises(MlflowException, match=message) as caught:
        model.predict(pd.DataFrame(rows), params=params)
    assert caught.value.get_http_status_code() == 400


def test_unknown_params_are_refused_by_the_model_itself(champion) -> None:
    """Called without MLflow's wrapper (benchmarks, tests) the model sees the params itself."""
    _, model, _ = champion
    with pytest.raises(MlflowException, match=r"unknown parameter\(s\) \['beam'\]") as caught:
        model.unwrap_python_model().predict(
            None, [{"task": "genre", "input": "x"}], {"beam": 2, "max_new_tokens": 2}
        )
    assert caught.value.get_http_status_code() == 400


def test_a_request_after_a_refused_one_is_answered(champion) -> None:
    """What MLflow dropped for one request is not held against the next one."""
    _, model, _ = champion
    rows = pd.DataFrame([{"task": "genre", "input": "x"}])
    with pytest.raises(MlflowException, match="unknown parameter"):
        model.predict(rows, params={"temperature": 0.5})
    assert len(model.predict(rows, params={"max_new_tokens": 2})) == 1


def test_empty_request_is_a_client_error(champion) -> None:
    _, model, _ = champion
    with pytest.raises(MlflowException, match="no rows") as caught:
        model.unwrap_python_model().predict(None, [])
    assert caught.value.get_http_status_code() == 400


def test_model_failure_is_500_and_bad_request_400_over_http(
    champion, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow's own scoring app (what ``mlflow models serve`` runs) under uvicorn on 127.0.0.1,
    with the model's folding broken as a server-side fault (e.g. out of memory)."""
    import uvicorn
    from mlflow.pyfunc import scoring_server

    _, model, _ = champion
    python_model = model.unwrap_python_model()

    def broken(task: str):
        raise RuntimeError("simulated: not enough memory to fold the task")

    monkeypatch.setattr(python_model.folded_models, "for_task", broken)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(scoring_server.init(model), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}/invocations"
        for _ in range(200):
            if server.started:
                break
            threading.Event().wait(0.05)
        status, body = post_json(url, {"dataframe_records": [{"task": "genre", "input": "Heat"}]})
        assert status == 500, body
        assert "server-side error" in body["message"] and "not enough memory" in body["message"]
        assert body["error_code"] == "INTERNAL_ERROR"
        status, body = post_json(
            url,
            {
                "dataframe_records": [{"task": "genre", "input": "x"}],
                "params": {"max_new_tokens": -1},
            },
        )
        assert status == 400 and "'max_new_tokens' is -1" in body["message"], body
    finally:
        server.should_exit = True
        thread.join(timeout=30)
