"""Promotion gates, version tags and the registry against a real ``mlflow server``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from recfound.cli import main
from recfound.config import Config, RegistryConfig, load_config
from recfound.errors import EXIT_USER_ERROR, UserInputError
from recfound.evaluation.outputs import RankOutputs
from recfound.evaluation.scores import records_document
from recfound.stages.register import PromotionRefused, run_promote, run_register
from recfound.tracking.gates import check_gates
from recfound.tracking.lineage import DataVersion, content_hash, data_version
from recfound.tracking.lock import RegistryError
from recfound.tracking.registry import configure_registry, promote
from recfound.tracking.version_card import version_tags
from tests.tracking.conftest import project_params, publish_evaluation, write_metrics

GATES = RegistryConfig(primary_metric="mean_score", max_regression=0.02, min_improvement=0.0)


def scores(mean: float, **tasks: float) -> dict:
    return {
        "overall": {"mean_score": mean, "embedding_score": mean, "generative_score": mean},
        "tasks": {
            t: {"kind": "generative", "score_metric": "mrr@20", "score": s}
            for t, s in tasks.items()
        },
    }


# ---- gates ----------------------------------------------------------------------------------


def test_first_version_passes_without_a_champion() -> None:
    decision = check_gates(scores(0.1, genre=0.1), None, GATES)
    assert decision.passed and decision.promote
    assert decision.failures == []
    assert "no champion yet" in decision.summary()


def test_better_candidate_passes() -> None:
    decision = check_gates(
        scores(0.50, genre=0.50, year=0.49),
        scores(0.45, genre=0.40, year=0.50),
        GATES,
        champion_version=3,
    )
    assert decision.passed, decision.summary()
    assert "v3" in decision.summary()


def test_regressed_task_is_refused_and_named() -> None:
    decision = check_gates(
        scores(0.60, genre=0.70, year=0.40),
        scores(0.50, genre=0.50, year=0.45),
        GATES,
        champion_version=1,
    )
    assert not decision.passed and not decision.promote
    assert len(decision.failures) == 1
    failure = decision.failures[0]
    for words in ("year", "0.4000", "0.4500", "0.0500 below", "allowed drop is 0.02"):
        assert words in failure
    assert "fails 1 gate(s) against the champion v1" in decision.summary()


def test_drop_exactly_at_the_tolerance_passes() -> None:
    decision = check_gates(scores(0.5, year=0.50), scores(0.5, year=0.52), GATES)
    assert decision.passed, decision.summary()


def test_lower_primary_metric_is_refused() -> None:
    decision = check_gates(scores(0.44, genre=0.5), scores(0.45, genre=0.5), GATES)
    assert not decision.passed
    assert decision.failures == ["mean_score: candidate 0.4400 is below the champion's 0.4500"]


def test_min_improvement_is_required() -> None:
    gates = RegistryConfig(primary_metric="generative_score", min_improvement=0.05)
    decision = check_gates(scores(0.48), scores(0.45), gates)
    assert not decision.passed
    assert "min_improvement 0.05 = 0.5000" in decision.failures[0]
    assert check_gates(scores(0.50), scores(0.45), gates).passed


def test_force_promotes_but_keeps_the_failures() -> None:
    decision = check_gates(scores(0.1, genre=0.1), scores(0.5, genre=0.5), GATES, force=True)
    assert not decision.passed and decision.forced and decision.promote
    assert len(decision.failures) == 2
    assert "promoted by force" in decision.summary()


def test_tasks_in_one_model_only_are_noted_not_compared() -> None:
    decision = check_gates(scores(0.5, genre=0.5, new=0.0), scores(0.5, genre=0.5, old=0.9), GATES)
    assert decision.passed
    assert any("old" in n for n in decision.notes) and any("new" in n for n in decision.notes)


def test_a_version_keeps_a_few_tags() -> None:
    metrics = scores(0.123456789, genre=0.5, year=1 / 3)
    data = DataVersion("dec81e53.dir", "data/interim", revision="a" * 40, repo="/data")
    tags = version_tags(metrics, "mean_score", data, "b" * 40)
    assert tags == {
        "data_version": "dec81e53.dir",
        "data_revision": "a" * 40,
        "git_commit": "b" * 40,
        "primary_metric": "mean_score",
        "metric.overall.mean_score": repr(0.123456789),
    }


def test_without_dvc_every_stage_of_a_run_logs_the_same_content_version(tmp_path: Path) -> None:
    """No dvc.lock and no recorded version (a Kubeflow run from raw data): a stage that has the
    normalized tables (register) and one that has only the task datasets (train) agree."""
    interim, tasks = tmp_path / "interim", tmp_path / "tasks"
    for folder, content in ((interim, b"tables"), (tasks, b"tasks")):
        folder.mkdir()
        (folder / "part.parquet").write_bytes(content)
    lock = tmp_path / "dvc.lock"
    with_tables = data_version(interim, tasks, lock_path=lock)
    tasks_only = data_version(tmp_path / "not-an-input", tasks, lock_path=lock)
    assert with_tables == tasks_only
    assert (with_tables.md5, with_tables.origin) == (content_hash(tasks), "content")


def test_data_version_prefers_dvc_lock(tmp_path: Path) -> None:
    interim = tmp_path / "data" / "interim"
    interim.mkdir(parents=True)
    (interim / "interactions.parquet").write_bytes(b"one")
    first = content_hash(interim)
    assert first == content_hash(interim)  # deterministic
    (interim / "interactions.parquet").write_bytes(b"two")
    assert content_hash(interim) != first
    version = data_version(interim, lock_path=tmp_path / "dvc.lock")
    assert (version.md5, version.origin) == (content_hash(interim), "content")

    lock = {
        "schema": "2.0",
        "stages": {
            "ingest": {
                "outs": [
                    {"path": "data/interim", "hash": "md5", "md5": "dec81e53.dir"},
                ]
            }
        },
    }
    (tmp_path / "dvc.lock").write_text(json.dumps(lock))  # JSON is YAML
    version = data_version(interim, lock_path=tmp_path / "dvc.lock")
    assert (version.md5, version.origin, version.path) == ("dec81e53.dir", "dvc.lock", str(interim))


def test_register_names_the_stage_to_run_first(tmp_path: Path) -> None:
    cfg = load_config(project_params(tmp_path, tmp_path / "no_backbone", tmp_path / "no_bundle"))
    with pytest.raises(UserInputError, match="run `recfound pretrain`"):
        run_register(cfg)
    Path(cfg.paths.backbone).mkdir()
    with pytest.raises(UserInputError, match="run `recfound pretrain`"):  # no config.json
        run_register(cfg)
    (Path(cfg.paths.backbone) / "config.json").write_text("{}")
    with pytest.raises(UserInputError, match="run `recfound merge`"):
        run_register(cfg)
    bundle = Path(cfg.paths.merged)
    bundle.mkdir()
    (bundle / "adapter_config.json").write_text("{}")
    with pytest.raises(UserInputError, match="run `recfound evaluate`"):
        run_register(cfg)
    (Path(cfg.paths.reports) / "metrics.json").parent.mkdir(parents=True)
    (Path(cfg.paths.reports) / "metrics.json").write_text('{"overall": {}}')
    publish_evaluation(Path(cfg.paths.reports))
    with pytest.raises(UserInputError, match="needs overall.mean_score"):
        run_register(cfg)


# ---- per-record outputs: paired gates ------------------------------------------------------

N_RECORDS = 200
CHAMPION_YEAR = np.arange(N_RECORDS) < 120  # hits: Recall@10 = 0.60


def noisy_drop(hits: np.ndarray) -> np.ndarray:
    """20 hits lost and 14 gained: -0.03 on 200 records, well inside the noise."""
    out = hits.copy()
    out[:20] = False
    out[150:164] = True
    return out


def clear_drop(hits: np.ndarray) -> np.ndarray:
    """60 hits lost, none gained: -0.30."""
    out = hits.copy()
    out[:60] = False
    return out


def rank_outputs(hits: np.ndarray) -> RankOutputs:
    return RankOutputs(
        record=np.arange(len(hits)),
        user_id=[str(u) for u in range(len(hits))],
        ranks=np.where(hits, 1, 50),
        ks=(10,),
    )


def write_evaluation(reports: Path, mean: float, year_hits: np.ndarray) -> None:
    """metrics.json and eval_records.json: 'year' from ``year_hits``, 'genre' always 0.5."""
    outputs = {
        "year": rank_outputs(year_hits),
        "genre": rank_outputs(np.arange(N_RECORDS) % 2 == 0),
    }
    protocols = {"year": "next_item", "genre": "next_item"}
    write_metrics(reports / "metrics.json", mean, {})
    metrics = json.loads((reports / "metrics.json").read_text())
    metrics["tasks"] = {
        task: {
            "kind": "generative",
            "score_metric": "recall@10",
            "score": float(np.mean(np.asarray(o.ranks) <= 10)),
        }
        for task, o in outputs.items()
    }
    (reports / "metrics.json").write_text(json.dumps(metrics))
    records = records_document(outputs, protocols, "test")
    (reports / "eval_records.json").write_text(json.dumps(records))
    publish_evaluation(reports)


def test_a_drop_inside_the_noise_is_not_a_regression() -> None:
    champion = {"year": rank_outputs(CHAMPION_YEAR)}
    noisy = {"year": rank_outputs(noisy_drop(CHAMPION_YEAR))}
    old = {**scores(0.5), "tasks": {"year": {"score": 0.60, "score_metric": "recall@10"}}}
    new = {**scores(0.5), "tasks": {"year": {"score": 0.57, "score_metric": "recall@10"}}}
    assert not check_gates(new, old, GATES).passed  # the point rule alone calls it a regression
    decision = check_gates(new, old, GATES, candidate_records=noisy, champion_records=champion)
    assert decision.passed, decision.summary()
    year = decision.comparisons["year"]
    assert year["basis"] == "paired" and year["difference"] == pytest.approx(-0.03)
    assert year["ci"][0] < -0.02 < year["ci"][1]
    assert decision.paired_mean_difference["difference"] == pytest.approx(-0.03)


def test_a_clear_drop_is_a_regression_and_records_pair_by_key() -> None:
    champion = rank_outputs(CHAMPION_YEAR)
    dropped = rank_outputs(clear_drop(CHAMPION_YEAR))
    reordered = dropped.take(np.arange(N_RECORDS)[::-1])  # pairing is by key, not position
    old = {**scores(0.5), "tasks": {"year": {"score": 0.60, "score_metric": "recall@10"}}}
    new = {**scores(0.6), "tasks": {"year": {"score": 0.30, "score_metric": "recall@10"}}}
    decision = check_gates(
        new, old, GATES, candidate_records={"year": reordered}, champion_records={"year": champion}
    )
    assert not decision.passed
    assert decision.comparisons["year"]["difference"] == pytest.approx(-0.30)
    assert decision.comparisons["year"]["ci"][1] < -0.02
    assert "entirely below -0.02" in decision.failures[0]


# ---- a real MLflow server -----------------------------------------------------------------


@pytest.mark.slow
def test_gates_judge_drops_on_paired_intervals_on_a_real_server(
    mlflow_server: str,
    tiny_bundle: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.chdir(tmp_path)
    params = project_params(tmp_path / "project", *tiny_bundle)
    cfg = load_config(params)
    reports = Path(cfg.paths.reports)

    write_evaluation(reports, 0.50, CHAMPION_YEAR)
    first = run_register(cfg)
    # year drops 0.03 (> max_regression 0.02) but inside the noise of 200 records: not a regression
    write_evaluation(reports, 0.55, noisy_drop(CHAMPION_YEAR))
    second = run_register(cfg)
    # year drops 0.30, far outside the noise: a regression although the mean improves
    write_evaluation(reports, 0.60, clear_drop(CHAMPION_YEAR))
    third = run_register(cfg)

    assert (first["version"], first["alias"]) == (1, "champion")
    assert (second["version"], second["alias"]) == (2, "champion"), second["decision"]
    noisy = second["decision"]["comparisons"]["year"]
    assert noisy["basis"] == "paired" and noisy["n_records"] == 200
    assert noisy["difference"] == pytest.approx(-0.03)
    assert noisy["ci"][0] < -0.02 < noisy["ci"][1] and not noisy["regressed"]
    assert (third["version"], third["alias"]) == (3, "challenger")
    failures = third["decision"]["failures"]
    assert len(failures) == 1 and "task year" in failures[0] and "paired interval" in failures[0]
    clear = third["decision"]["comparisons"]["year"]  # against v2, read back from its run
    assert clear["regressed"] and clear["ci"][1] < -0.02
    assert third["decision"]["comparisons"]["genre"]["ci"] == [0.0, 0.0]
    saved = json.loads((reports / "registry.json").read_text())
    assert saved["version"] == 3 and saved["decision"]["comparisons"]["year"]["ci"] == clear["ci"]

    client = MlflowClient(tracking_uri=mlflow_server)
    assert client.get_model_version_by_alias("recfound", "champion").version == "2"
    assert client.get_model_version_by_alias("recfound", "challenger").version == "3"
    v3 = client.get_model_version("recfound", "3")
    assert v3.tags["metric.overall.mean_score"] == "0.6"
    assert v3.tags["primary_metric"] == "mean_score"
    assert v3.tags["data_version"] == first["data_version"]
    assert v3.tags["promotion.alias"] == "challenger"
    assert len(v3.tags) <= 10
    assert v3.description.startswith("**challenger**: fails 1 gate(s) against the champion v2")
    assert "mean_score 0.6000 vs champion v2 0.5500 (+0.0500)" in v3.description
    assert "year 0.300 (-0.270, regressed)" in v3.description
    assert v3.run_id == third["mlflow_run_id"]
    run = client.get_run(v3.run_id)  # the full settings and every score stay on the run
    assert run.data.params["registry.max_regression"] == "0.02"
    assert run.data.metrics["year.score"] == 0.3
    assert run.info.run_name == "register"
    assert {d.tags[0].value for d in run.inputs.dataset_inputs} == {
        "training",
        "validation",
        "test",
    }
    artifacts = {a.path for a in client.list_artifacts(third["mlflow_run_id"])}
    assert {"metrics.json", "eval_records.json", "registry.json"} <= artifacts

    # by hand: the same gates (records read back from both runs) refuse version 3 ...
    registry_client = configure_registry(cfg.tracking)
    decision = promote(registry_client, cfg.registry, 3)
    assert not decision.promote and "task year" in decision.failures[0]
    assert decision.comparisons["year"]["basis"] == "paired"
    with pytest.raises(PromotionRefused, match="task year"):
        run_promote(cfg, 3)
    assert main(["--params", str(params), "promote", "--version", "3"]) == EXIT_USER_ERROR
    assert "--force" in capsys.readouterr().err
    assert client.get_model_version_by_alias("recfound", "champion").version == "2"

    # ... and --force moves the champion
    assert main(["--params", str(params), "promote", "--version", "3", "--force"]) == 0
    assert client.get_model_version_by_alias("recfound", "champion").version == "3"
    assert client.get_model_version("recfound", "3").tags["promotion.forced"] == "true"
    assert "already is champion" in run_promote(cfg, 3)["notes"][0]
    with pytest.raises(MlflowException, match="challenger"):  # v3 no longer is challenger
        client.get_model_version_by_alias("recfound", "challenger")
    with pytest.raises(RegistryError, match=r"no version 7; registered versions: \[1, 2, 3\]"):
        run_promote(cfg, 7)


# ---- non-finite scores (issue 24, finding 2) ---------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_candidate_never_passes_not_even_forced(bad: float) -> None:
    for champion in (None, scores(0.2, genre=0.2)):
        decision = check_gates(scores(bad, genre=0.3), champion, GATES, force=True)
        assert not decision.promote, decision.summary()
        assert f"overall.mean_score = {bad}: not a finite number" in decision.failures[0]
    decision = check_gates(scores(0.3, genre=bad), scores(0.2, genre=0.2), GATES)
    assert not decision.promote
    assert f"tasks.genre.score = {bad}" in decision.failures[0]


def test_a_nan_champion_does_not_block_a_later_version(caplog: pytest.LogCaptureFixture) -> None:
    nan = float("nan")
    with caplog.at_level("WARNING"):
        decision = check_gates(
            scores(0.2195, genre=0.3), scores(nan, genre=nan), GATES, champion_version=1
        )
    assert decision.passed, decision.summary()
    assert "the champion v1 has no finite mean_score" in decision.summary()
    assert "judged as if there were no champion" in caplog.text


def tracked_config(tmp_path: Path, tiny_bundle: tuple[Path, Path]) -> Config:
    """The tiny project's config, tracking into an MLflow database under ``tmp_path``."""
    tracking = {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}
    return load_config(project_params(tmp_path, *tiny_bundle, tracking=tracking))


def test_register_refuses_a_report_with_a_nan_score(
    tmp_path: Path, tiny_bundle: tuple[Path, Path]
) -> None:
    from recfound.tracking.registry import NonFiniteScoreError

    cfg = tracked_config(tmp_path, tiny_bundle)
    write_metrics(Path(cfg.paths.reports) / "metrics.json", float("nan"), {"genre": 0.3})
    with pytest.raises(NonFiniteScoreError, match=r"overall\.mean_score = nan.*not registered"):
        run_register(cfg)
    assert not (tmp_path / "mlflow.db").exists()  # refused before anything was logged


# ---- evaluate's reports are one unit (issue 24, finding 1) -------------------------------------


def test_register_refuses_reports_from_a_killed_evaluate(
    tmp_path: Path, tiny_bundle: tuple[Path, Path]
) -> None:
    from recfound.artifacts import ManifestError

    cfg = tracked_config(tmp_path, tiny_bundle)
    reports = Path(cfg.paths.reports)
    write_evaluation(reports, 0.40, CHAMPION_YEAR)  # a complete run: files + manifest
    old_records = (reports / "eval_records.json").read_bytes()

    # killed just after metrics.json was replaced: the next run's scores, the old records
    write_metrics(reports / "metrics.json", 0.55, {"year": 0.7})
    (reports / "eval_records.json").write_bytes(old_records)
    (reports / "evaluation_manifest.json").write_text(
        json.dumps({"writer": "recfound evaluate", "files": {"metrics.json": "0" * 64}})
    )
    with pytest.raises(
        ManifestError, match=r"metrics\.json differs from the one recfound evaluate"
    ):
        run_register(cfg)

    (reports / "evaluation_manifest.json").unlink()  # killed before the manifest was written
    with pytest.raises(
        ManifestError, match=r"evaluation_manifest\.json is missing.*recfound evaluate"
    ):
        run_register(cfg)

    (reports / "eval_records.json").unlink()
    write_metrics(reports / "metrics.json", 0.55, {"year": 0.7})  # a manifest of metrics only
    (reports / "eval_records.json").write_bytes(old_records)  # ... and records of another run
    with pytest.raises(ManifestError, match=r"eval_records\.json is not listed"):
        run_register(cfg)
    assert not (tmp_path / "mlflow.db").exists()  # nothing was registered


# ---- a damaged eval_records.json is a named error (issue 24, item 9) ---------------------------


@pytest.mark.parametrize(
    ("damage", "kind"),
    [
        (lambda text: text[: len(text) // 2], "JSONDecodeError"),
        (lambda text: "[1, 2]", "TypeError"),
        (lambda text: '{"tasks": {"year": {}}}', "KeyError"),
    ],
)
def test_a_damaged_records_file_is_named(tmp_path: Path, damage, kind: str) -> None:
    from recfound.tracking.version_card import RecordsError, read_records

    write_evaluation(tmp_path, 0.40, CHAMPION_YEAR)
    path = tmp_path / "eval_records.json"
    assert set(read_records(path)) == {"year", "genre"}
    path.write_text(damage(path.read_text()))
    before = path.read_bytes()
    with pytest.raises(RecordsError) as err:
        read_records(path)
    message = str(err.value)
    assert f"{path} is not a usable per-record report ({kind}" in message
    assert "Run `recfound evaluate` again" in message
    assert path.read_bytes() == before


def test_a_champions_damaged_records_artifact_falls_back_to_point_scores(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from types import SimpleNamespace

    from recfound.tracking.version_card import run_records

    class Client:  # the two calls run_records makes of an MlflowClient
        def list_artifacts(self, run_id: str) -> list:
            return [SimpleNamespace(path="eval_records.json")]

        def download_artifacts(self, run_id: str, name: str, folder: str) -> str:
            local = Path(folder) / name
            local.write_text('{"tasks": {"year": {"outp')  # cut short
            return str(local)

    assert run_records(Client(), "run-1") is None
    assert "cannot read eval_records.json of run run-1" in caplog.text
    assert "cut short or damaged" in caplog.text


def test_register_refuses_a_truncated_records_file(
    tmp_path: Path, tiny_bundle: tuple[Path, Path]
) -> None:
    from recfound.artifacts import ManifestError

    cfg = tracked_config(tmp_path, tiny_bundle)
    reports = Path(cfg.paths.reports)
    write_evaluation(reports, 0.40, CHAMPION_YEAR)
    records = reports / "eval_records.json"
    records.write_bytes(records.read_bytes()[:100])
    with pytest.raises(ManifestError, match=r"eval_records\.json differs"):
        run_register(cfg)
    assert not (tmp_path / "mlflow.db").exists()  # nothing was registered
