"""Promotion is atomic: two ``recfound register`` processes started together, one clearly better
than the other (both better than the old champion), against a real ``mlflow server`` and on a
fresh sqlite store; the worse never ends up champion, and neither process crashes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from recfound.config import load_config
from recfound.stages.register import run_register
from recfound.tracking.lock import LOCK_OWNER_TAG, LOCK_SUFFIX, RegistryError, promotion_lock
from tests.tracking.conftest import project_params, write_metrics

OLD, WORSE, BETTER = 0.50, 0.55, 0.60  # mean scores: WORSE passes against OLD, not against BETTER
TASK_SCORES = {"genre": 0.5, "match": 0.5}
PROCESS_TIMEOUT_S = 400


def project(root: Path, bundle: tuple[Path, Path], name: str, mean: float, **sections) -> Path:
    """A params.yaml of its own (reports, tasks) registering ``name`` with ``mean`` as score."""
    params = project_params(root, *bundle, registry={"model_name": name}, **sections)
    write_metrics(Path(load_config(params).paths.reports) / "metrics.json", mean, TASK_SCORES)
    return params


def start_register(params: Path, env: dict[str, str]) -> subprocess.Popen:
    log = (params.parent / "register.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "recfound.cli", "--params", str(params), "register"],
        cwd=params.parent,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def register_together(
    first: Path, second: Path, env: dict[str, str], stagger_s: float = 0.3
) -> tuple[dict, dict]:
    """Both registrations at (nearly) the same time; each one's reports/registry.json."""
    processes = [start_register(first, env)]
    time.sleep(stagger_s)
    processes.append(start_register(second, env))
    for params, process in zip((first, second), processes, strict=True):
        code = process.wait(timeout=PROCESS_TIMEOUT_S)
        log = (params.parent / "register.log").read_text()
        assert code == 0, f"{params.parent.name} exited {code}:\n{log[-4000:]}"
        assert "Traceback" not in log, log[-4000:]
    return tuple(
        json.loads((p.parent / "reports" / "registry.json").read_text()) for p in (first, second)
    )


def assert_better_is_champion(client: MlflowClient, name: str, better: dict, worse: dict) -> None:
    champion = client.get_model_version_by_alias(name, "champion")
    assert int(champion.version) == better["version"], (better["decision"], worse["decision"])
    assert champion.tags["metric.overall.mean_score"] == repr(BETTER)
    assert better["alias"] == "champion"
    if worse["alias"] == "champion":  # promoted first: the better one was judged against it
        assert better["decision"]["champion_version"] == worse["version"]
    else:  # promoted second: judged against the better one, not the old champion
        assert worse["alias"] == "challenger"
        assert worse["decision"]["champion_version"] == better["version"]
        assert "below the champion's 0.6000" in worse["decision"]["failures"][0]
    assert not any(m.name.endswith(LOCK_SUFFIX) for m in client.search_registered_models())


@pytest.mark.slow
def test_concurrent_registrations_on_a_real_server_never_crown_the_worse(
    mlflow_server: str, tiny_bundle: tuple[Path, Path], tmp_path: Path
) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    env.pop("MLFLOW_REGISTRY_URI", None)
    client = MlflowClient(tracking_uri=mlflow_server)

    # a fresh server: both processes create the experiment and the registered model at once;
    # the worse starts first, so when it wins the lock the better is judged against it
    better = project(tmp_path / "fresh-better", tiny_bundle, "fresh", BETTER)
    worse = project(tmp_path / "fresh-worse", tiny_bundle, "fresh", WORSE)
    worse_report, better_report = register_together(worse, better, env)
    assert_better_is_champion(client, "fresh", better_report, worse_report)

    # with an old champion both pass against, the better starting first: when the better wins the
    # lock, the worse must be judged against it, not against the champion it saw at its start
    old = project(tmp_path / "race-old", tiny_bundle, "race", OLD)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        patch.chdir(old.parent)
        assert run_register(load_config(old))["alias"] == "champion"
    better = project(tmp_path / "race-better", tiny_bundle, "race", BETTER)
    worse = project(tmp_path / "race-worse", tiny_bundle, "race", WORSE)
    better_report, worse_report = register_together(better, worse, env)
    assert_better_is_champion(client, "race", better_report, worse_report)


@pytest.mark.slow
def test_concurrent_first_use_of_a_fresh_sqlite_store(
    tiny_bundle: tuple[Path, Path], tmp_path: Path
) -> None:
    """Two processes create the same sqlite database (tables, experiment, registered model) at
    once: both register, the better ends champion, no SQLAlchemy traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    tracking = {
        "tracking_uri": f"sqlite:///{tmp_path}/shared.db",
        "artifact_location": str(tmp_path / "mlartifacts"),
    }
    better = project(tmp_path / "better", tiny_bundle, "recfound", BETTER, tracking=tracking)
    worse = project(tmp_path / "worse", tiny_bundle, "recfound", WORSE, tracking=tracking)
    worse_report, better_report = register_together(worse, better, env, stagger_s=0.0)
    client = MlflowClient(tracking_uri=tracking["tracking_uri"])
    assert_better_is_champion(client, "recfound", better_report, worse_report)


def test_a_held_lock_is_waited_for_and_named_and_a_stale_one_broken(tmp_path: Path) -> None:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    with promotion_lock(client, "recfound") as owner:
        assert client.get_registered_model("recfound" + LOCK_SUFFIX).tags[LOCK_OWNER_TAG] == owner
        refused = pytest.raises(RegistryError, match=r"holds the lock 'recfound\.promotion-lock'")
        with refused, promotion_lock(client, "recfound", wait_s=0.5):
            pass
        with promotion_lock(client, "recfound", stale_s=0.0) as breaker:  # a killed holder's
            assert breaker != owner
    assert not client.search_registered_models()  # released, nothing left behind


# ---- a registration killed with -9 (issue 24, finding 5) ----------------------------------------


def dead_owner() -> str:
    """The lock owner of a process of this host that has exited."""
    import socket

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return f"{socket.gethostname()}:{child.pid}:12345:deadbeef"


def test_a_lock_whose_owner_is_gone_is_broken_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    reused = f"{socket.gethostname()}:{os.getpid()}:1:0ff1ce"  # this pid, another start time
    for owner in (dead_owner(), reused):
        client.create_registered_model("recfound" + LOCK_SUFFIX, tags={LOCK_OWNER_TAG: owner})
        start = time.monotonic()
        with caplog.at_level("WARNING"), promotion_lock(client, "recfound", wait_s=3.0) as mine:
            assert mine != owner
        assert time.monotonic() - start < 2.0  # not the wait for a live holder
        assert f"its owner {owner} is gone" in caplog.text


def test_a_version_left_without_alias_is_named_by_the_next_registration(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from recfound.config import RegistryConfig
    from recfound.tracking.lock import process_owner
    from recfound.tracking.registry import REGISTERED_BY_TAG, promote

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.create_run(client.create_experiment("e", str(tmp_path / "artifacts")))
    client.create_registered_model("recfound")

    def register(owner: str) -> int:
        tags = {"metric.overall.mean_score": "0.5", REGISTERED_BY_TAG: owner}
        source = f"runs:/{run.info.run_id}/model"
        version = client.create_model_version("recfound", source, run.info.run_id, tags=tags)
        return int(version.version)

    killed = register(dead_owner())  # registered, then killed before its promotion
    waiting = register(process_owner())  # a live registration still on its way to the lock
    latest = register(process_owner())
    with caplog.at_level("WARNING"):
        decision = promote(
            client, RegistryConfig(), latest, challenger_on_refusal=True, candidate_records={}
        )
    assert decision.promote
    tags = client.get_model_version("recfound", str(killed)).tags
    assert tags["promotion.alias"] == "unjudged"
    assert f"`recfound promote {killed}` judges it" in tags["promotion.reasons"]
    assert f"version {killed} has no alias" in caplog.text
    assert "promotion.alias" not in client.get_model_version("recfound", str(waiting)).tags
