"""``mlflow models serve`` on 127.0.0.1 under a bounded concurrent load: 4 clients, 200 requests
over four tasks, every answer equal to the sequential answer for the same request, no errors; the
answers are the folded model's; bad requests get a 400 that names the field (an unknown param too,
although MLflow drops it before the model's predict)."""

from __future__ import annotations

import contextlib
import os
import random
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import pandas as pd
import pytest

from recfound.serving.pyfunc import RecFoundModel
from tests.tracking.conftest import (
    FOUR_TASKS,
    mlflow_cli_on_localhost,
    post_json,
    register_in_sqlite,
)
from tests.tracking.test_serving import assert_same_answers

REQUESTS = 200
CLIENTS = 4
TIME_CAP_S = 300  # the whole concurrent phase; a hang fails instead of blocking the suite
CANDIDATES = ["Heat (1995)", "Jumanji (1995)", "Casino (1995)", "Babe (1995)"]
TITLES = ["Toy Story (1995)", "GoldenEye (1995)", "Four Rooms (1995)", "Get Shorty (1995)"]


@contextlib.contextmanager
def serve_registered(root: Path, four_task_bundle: tuple[Path, Path], folded: bool):
    """The four-task model registered as champion in a sqlite store under ``root`` (with
    ``serving.folded``) and served by ``mlflow models serve --env-manager local`` on 127.0.0.1;
    yields the invocations URL and the server's log file."""
    register_in_sqlite(root, four_task_bundle, serving={"folded": folded})
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db"}
    env.pop("MLFLOW_REGISTRY_URI", None)
    args = ["models", "serve", "-m", "models:/recfound@champion", "--env-manager", "local"]
    with mlflow_cli_on_localhost([*args, "--workers", "1"], root, "/ping", env) as url:
        yield f"{url}/invocations", root / "mlflow-cli.log"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, four_task_bundle: tuple[Path, Path]):
    """The registered model served folded (the default)."""
    with serve_registered(tmp_path_factory.mktemp("serve"), four_task_bundle, True) as out:
        yield out


@pytest.fixture(scope="module")
def served_unfolded(tmp_path_factory: pytest.TempPathFactory, four_task_bundle: tuple[Path, Path]):
    """The registered model served through TMoLE (``serving.folded: false``)."""
    with serve_registered(tmp_path_factory.mktemp("serve"), four_task_bundle, False) as out:
        yield out


def make_requests(n: int, seed: int = 0) -> list[dict]:
    """``n`` requests of 1-3 rows each, tasks mixed (embedding, scoring and generation rows)."""
    rng = random.Random(seed)
    tasks = sorted(FOUR_TASKS)
    requests = []
    for i in range(n):
        rows = []
        for _ in range(rng.randint(1, 3)):
            task = tasks[rng.randrange(len(tasks))]
            row = {"task": task, "input": f"{rng.choice(TITLES)} #{rng.randrange(50)}"}
            if rng.random() < 0.6:
                row["candidates"] = rng.sample(CANDIDATES, rng.randint(2, 4))
            rows.append(row)
        requests.append({"dataframe_records": rows, "params": {"max_new_tokens": 1 + i % 4}})
    return requests


def as_frame(body: dict) -> pd.DataFrame:
    return pd.DataFrame(body["predictions"])


@pytest.mark.slow
@pytest.mark.parametrize("server", ["served", "served_unfolded"])
def test_concurrent_clients_get_the_sequential_answers(
    server: str, request: pytest.FixtureRequest
) -> None:
    url, log_path = request.getfixturevalue(server)
    requests = make_requests(REQUESTS)
    tasks_seen = {row["task"] for r in requests for row in r["dataframe_records"]}
    assert tasks_seen == set(FOUR_TASKS)

    sequential = [post_json(url, r) for r in requests]
    assert [status for status, _ in sequential] == [200] * REQUESTS, sequential[:3]

    order = list(range(REQUESTS))
    random.Random(1).shuffle(order)  # the clients send them in another order than before
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        futures = {pool.submit(post_json, url, requests[i]): i for i in order}
        done, pending = wait(futures, timeout=TIME_CAP_S)
        for future in pending:
            future.cancel()
    assert not pending, f"{len(pending)} of {REQUESTS} requests unanswered after {TIME_CAP_S} s"
    concurrent = {futures[f]: f.result() for f in done}
    errors = {i: answer for i, answer in concurrent.items() if answer[0] != 200}
    assert not errors, (list(errors.items())[:3], log_path.read_text()[-3000:])
    for i in range(REQUESTS):
        assert_same_answers(as_frame(concurrent[i][1]), as_frame(sequential[i][1]), atol=1e-6)


@pytest.mark.slow
def test_http_answers_are_the_folded_models(served, four_task_bundle) -> None:
    url, _ = served
    backbone, bundle = four_task_bundle
    folded = RecFoundModel.from_dirs(backbone, bundle)
    unfolded = RecFoundModel.from_dirs(backbone, bundle, folded=False)
    for request in make_requests(12, seed=5):
        status, body = post_json(url, request)
        assert status == 200, body
        rows, params = request["dataframe_records"], request["params"]
        assert_same_answers(as_frame(body), folded.predict(None, rows, params), atol=1e-6)
        assert_same_answers(as_frame(body), unfolded.predict(None, rows, params), atol=1e-5)
    assert folded.folded_models.built() == sorted(
        {r["task"] for q in make_requests(12, seed=5) for r in q["dataframe_records"]}
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"dataframe_records": [{"task": "genre", "input": None}]}, "'input' is null"),
        (
            {
                "dataframe_records": [{"task": "genre", "input": "x"}],
                "params": {"max_new_tokens": -1},
            },
            "'max_new_tokens' is -1",
        ),
        (
            {"dataframe_records": [{"task": "genre", "input": "x"}] * 65},
            "serving.max_rows = 64",
        ),
        (
            {"dataframe_records": [{"task": "genre", "input": "x" * 5000}]},
            "serving.max_input_chars = 4000",
        ),
        ({"dataframe_records": [{"task": "nope", "input": "x"}]}, "unknown task(s) ['nope']"),
        (
            {
                "dataframe_records": [{"task": "genre", "input": "x"}],
                "params": {"max_new_tokens": 4, "temperature": 0.7},
            },
            "unknown parameter(s) ['temperature']; this model takes only 'max_new_tokens'",
        ),
    ],
)
def test_bad_requests_get_400_naming_the_field(served, payload: dict, field: str) -> None:
    url, _ = served
    status, body = post_json(url, payload)
    assert status == 400, body
    assert field in body["message"] and body["error_code"] == "INVALID_PARAMETER_VALUE"


@pytest.mark.slow
def test_unknown_param_is_refused_and_the_next_request_answered(served) -> None:
    """MLflow's scoring server removes params the signature lacks before ``predict``; the model
    still refuses them by name, and a correct request on the same worker is answered after."""
    url, log_path = served
    rows = [{"task": "genre", "input": "Heat (1995)"}]
    status, body = post_json(url, {"dataframe_records": rows, "params": {"top_p": 0.9}})
    assert status == 400, body
    assert "unknown parameter(s) ['top_p']" in body["message"], body
    assert "takes only 'max_new_tokens'" in body["message"], body
    status, body = post_json(url, {"dataframe_records": rows, "params": {"max_new_tokens": 2}})
    assert status == 200, (body, log_path.read_text()[-2000:])
