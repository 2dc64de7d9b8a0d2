"""The `recfound` command as a user runs it: help texts, exit codes and messages on bad input."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from recfound.cli import STAGES, main
from recfound.errors import EXIT_INTERRUPTED, EXIT_INVALID_DATA, EXIT_USER_ERROR
from tests.conftest import file_digests, write_mini_project, write_ml100k_slice, write_params


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recfound.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )


def test_help_describes_every_stage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for stage in STAGES:
        assert stage in text
    for stage in STAGES:
        with pytest.raises(SystemExit):
            main([stage, "--help"])
        stage_help = capsys.readouterr().out
        assert "--params" in stage_help
        assert len(stage_help) > 300  # a real description, not just usage


def test_every_stage_command_names_a_stage_function() -> None:
    # commands of stages without options import recfound.stages.<name> when they run
    named = 0
    for command, *_ in STAGES.values():
        name = inspect.getclosurevars(command).nonlocals.get("name")
        if name is not None:
            assert callable(
                getattr(importlib.import_module(f"recfound.stages.{name}"), f"run_{name}")
            )
            named += 1
    assert named == 10


def test_console_script_is_installed() -> None:
    script = shutil.which("recfound", path=str(Path(sys.executable).parent))
    assert script is not None
    out = subprocess.run([script, "--help"], capture_output=True, text=True, check=True).stdout
    assert "build-tasks" in out


def test_params_typo_names_the_key(mini_project: Path) -> None:
    params = mini_project / "params.yaml"
    params.write_text(params.read_text().replace("history_length:", "histroy_length:"))
    result = run_cli("ingest", cwd=mini_project)
    assert result.returncode == EXIT_USER_ERROR
    assert "tasks.histroy_length: unknown key" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (mini_project / "data").exists()  # nothing was written


def test_an_interrupted_stage_exits_143_and_other_errors_propagate(
    mini_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`main` maps the trainer's interruption to 143 (as a shell reports SIGTERM) and lets an
    error it does not know through, with its traceback."""
    from recfound.train.trainer import TrainingInterrupted

    def interrupted(cfg, args) -> None:
        raise TrainingInterrupted("stopped at step 3; run `recfound train --resume`")

    def broken(cfg, args) -> None:
        raise KeyError("not a user error")

    monkeypatch.chdir(mini_project)
    _, *text = STAGES["train"]
    monkeypatch.setitem(STAGES, "train", (interrupted, *text))
    assert main(["train"]) == EXIT_INTERRUPTED
    assert "recfound: stopped at step 3" in capsys.readouterr().err
    monkeypatch.setitem(STAGES, "train", (broken, *text))
    with pytest.raises(KeyError, match="not a user error"):
        main(["train"])


def test_the_cli_knows_stopped_stages_without_importing_torch_or_great_expectations() -> None:
    """The CLI recognises every stopped stage by the base in recfound.errors, so loading it
    (every command does, `recfound --help` too) does not import the trainer's torch or the
    validation's Great Expectations, which take seconds."""
    code = (
        "import sys, recfound.cli; "
        "print(sorted(m for m in ('torch', 'great_expectations') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"


# Four ways the raw files can be wrong, all at once (tests/validation checks each one alone):
# name: (file, line transform, words the error must contain)
CORRUPTIONS = {
    "rating_out_of_range": (
        "mini.inter",
        lambda i, ln: ln.replace("\t3\t", "\t7\t", 1),
        "outside [1.0, 5.0]",
    ),
    "unknown_item": (
        "mini.inter",
        lambda i, ln: ln.split("\t", 1)[0] + "\t999999\t" + ln.split("\t", 2)[2] if i == 5 else ln,
        "not an item_id of the items table",
    ),
    "duplicated_item_ids": (
        "mini.item",
        lambda i, ln: "1\t" + ln.split("\t", 1)[1] if i == 3 else ln,
        "duplicated",
    ),
    "empty_title": (
        "mini.item",
        lambda i, ln: "\t".join([ln.split("\t")[0], "", *ln.split("\t")[2:]]) if i == 2 else ln,
        "empty or blank",
    ),
}


@pytest.fixture(scope="module")
def built_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small project (mini atomic files) that went through ingest → validate → build-tasks."""
    root = tmp_path_factory.mktemp("built")
    work = write_mini_project(root / "work", write_ml100k_slice(root / "raw"))
    for stage in ("ingest", "validate", "build-tasks"):
        result = run_cli(stage, cwd=work)
        assert result.returncode == 0, result.stderr
    return root


@pytest.mark.slow
def test_stages_end_to_end_on_a_small_atomic_folder(built_project: Path) -> None:
    project = built_project / "work"
    counts = json.loads((project / "reports" / "task_counts.json").read_text())
    assert counts["num_embedding_tasks"] == 3
    assert counts["num_generative_tasks"] >= 10
    manifest = json.loads((project / "data" / "tasks" / "manifest.json").read_text())
    assert "review_text" in manifest["skipped"]["sentiment_analysis"]
    train = pd.read_parquet(project / "data" / "tasks" / "user2item" / "train.parquet")
    assert len(train) > 0
    assert (project / "reports" / "validation" / "tables.json").is_file()
    assert (project / "reports" / "validation" / "tasks.json").is_file()


@pytest.mark.slow
def test_corrupted_data_stops_validate_and_keeps_outputs(
    built_project: Path, tmp_path: Path
) -> None:
    """The raw files of a project that ran once get every corruption of :data:`CORRUPTIONS`:
    ingest parses them, validate names each one and stops (exit code, reports written), the task
    datasets built from the good data stay as they were, and build-tasks refuses the tables.
    One run for the four (each stage command is a process that imports its libraries anew)."""
    root = tmp_path / "copy"
    shutil.copytree(built_project, root)
    project, raw = root / "work", root / "raw"
    params = project / "params.yaml"
    params.write_text(params.read_text().replace(str(built_project), str(root)))
    tasks_before = file_digests(project / "data" / "tasks")
    for filename in sorted({target for target, _, _ in CORRUPTIONS.values()}):
        path = raw / filename
        lines = path.read_text().splitlines()
        for target, transform, _ in CORRUPTIONS.values():
            if target == filename:
                lines = [lines[0]] + [transform(i, ln) for i, ln in enumerate(lines[1:], 1)]
        path.write_text("\n".join(lines) + "\n")

    assert run_cli("ingest", cwd=project).returncode == 0  # parsing is fine; semantics are not
    result = run_cli("validate", cwd=project)
    assert result.returncode == EXIT_INVALID_DATA, result.stderr
    assert "data validation failed" in result.stderr
    for name, (_, _, words) in CORRUPTIONS.items():
        assert words in result.stderr, name
    assert "Traceback" not in result.stderr
    assert (project / "reports" / "validation" / "tables.json").is_file()
    assert (project / "reports" / "validation" / "data_docs" / "index.html").is_file()
    # the task datasets built from the good data are untouched
    assert file_digests(project / "data" / "tasks") == tasks_before
    # and build-tasks, run by hand after the failed validate, refuses the tables
    result = run_cli("build-tasks", cwd=project)
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    assert "failed validation" in result.stderr and "Traceback" not in result.stderr
    assert file_digests(project / "data" / "tasks") == tasks_before


def test_truncated_source_file_exit_code_and_outputs_kept(
    mini_project: Path, mini_atomic: Path
) -> None:
    assert run_cli("ingest", cwd=mini_project).returncode == 0
    interim_before = file_digests(mini_project / "data" / "interim")
    inter = mini_atomic / "mini.inter"
    text = inter.read_text()
    inter.write_text(text[: text.rfind("\t")])  # the last line loses its last field
    result = run_cli("ingest", cwd=mini_project)
    assert result.returncode == EXIT_USER_ERROR
    assert "mini.inter" in result.stderr and "truncated" in result.stderr
    assert file_digests(mini_project / "data" / "interim") == interim_before


# --- issue 15: each bad input is a named error, and the previous outputs stay as they were ------


def _cut_last_timestamp(folder: Path) -> None:
    inter = folder / "mini.inter"
    inter.write_text(inter.read_text()[:-4])


def _drop_timestamp_column(folder: Path) -> None:
    inter = folder / "mini.inter"
    lines = inter.read_text().splitlines()
    inter.write_text("\n".join(ln.rsplit("\t", 1)[0] for ln in lines) + "\n")


def _blank_user_id(folder: Path) -> None:
    inter = folder / "mini.inter"
    lines = inter.read_text().splitlines()
    lines[7] = "\t" + lines[7].split("\t", 1)[1]
    inter.write_text("\n".join(lines) + "\n")


SOURCE_FAULTS = {
    # name: (corrupt the raw folder, words the message must contain)
    "truncated_mid_timestamp": (_cut_last_timestamp, ["mini.inter: line", "looks truncated"]),
    "dropped_timestamp_column": (
        _drop_timestamp_column,
        ["mini.inter: the header has no 'timestamp' field", "data.timestamps"],
    ),
    "blank_user_id": (_blank_user_id, ["mini.inter: empty user_id at line 8"]),
}


@pytest.mark.parametrize("name", sorted(SOURCE_FAULTS))
def test_bad_source_is_named_and_interim_tables_are_kept(
    name: str, mini_project: Path, mini_atomic: Path
) -> None:
    assert run_cli("ingest", cwd=mini_project).returncode == 0
    before = file_digests(mini_project / "data" / "interim")
    corrupt, words = SOURCE_FAULTS[name]
    corrupt(mini_atomic)
    result = run_cli("ingest", cwd=mini_project)
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    for word in words:
        assert word in result.stderr
    assert "Traceback" not in result.stderr
    assert file_digests(mini_project / "data" / "interim") == before


def test_amazon_rating_five_names_file_and_line(tmp_path: Path) -> None:
    fixture = Path(__file__).parent / "fixtures" / "amazon"
    raw = tmp_path / "amazon"
    shutil.copytree(fixture, raw)
    reviews = raw / "reviews.jsonl"
    lines = reviews.read_text().splitlines()
    record = json.loads(lines[2])
    record["rating"] = "five"
    lines[2] = json.dumps(record)
    reviews.write_text("\n".join(lines) + "\n")
    write_params(tmp_path / "params.yaml", data={"source": "amazon_jsonl", "path": str(raw)})
    result = run_cli("ingest", cwd=tmp_path)
    assert result.returncode == EXIT_USER_ERROR
    assert f"{reviews}: line 3: rating is 'five'; expected a number" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("stage", ["pretrain", "train"])
def test_missing_backbone_path_stops_the_stage(stage: str, mini_project: Path) -> None:
    params = mini_project / "params.yaml"
    params.write_text(params.read_text().replace("backbone: builtin", "backbone: /nope", 1))
    result = run_cli(stage, cwd=mini_project)
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    assert "model.backbone is '/nope', which is not a local Hugging Face checkpoint" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_params_file_missing_a_section_stops_before_anything_runs(mini_project: Path) -> None:
    params = mini_project / "params.yaml"
    params.write_text(params.read_text().split("\ntrain:", 1)[0] + "\n")
    result = run_cli("ingest", cwd=mini_project)
    assert result.returncode == EXIT_USER_ERROR
    assert "lacks section(s) train, merge," in result.stderr
    assert not (mini_project / "data").exists()


# --- issue 24: build-tasks builds only from tables that passed validate --------------------------


def test_build_tasks_refuses_tables_that_did_not_pass_validation(
    mini_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recfound import artifacts
    from recfound.config import load_config
    from recfound.data.ingest import table_digests
    from recfound.stages.build_tasks import run_build_tasks
    from recfound.stages.ingest import run_ingest
    from recfound.validation.validate import TablesNotValidatedError

    monkeypatch.chdir(mini_project)
    cfg = load_config("params.yaml")
    run_ingest(cfg)
    result = mini_project / "reports" / "validation" / "tables.json"
    with pytest.raises(TablesNotValidatedError, match=r"no validation result \(.*is missing\)"):
        run_build_tasks(cfg)
    assert not (mini_project / "data" / "tasks").exists()

    digests = table_digests(cfg.paths.interim)
    artifacts.write_json(result, {"success": True, "failures": [], "inputs": digests})
    run_build_tasks(cfg)  # what validate writes when the tables pass
    tasks_before = file_digests(mini_project / "data" / "tasks")

    artifacts.write_json(result, {"success": False, "failures": [{}] * 2, "inputs": digests})
    with pytest.raises(TablesNotValidatedError, match=r"failed validation \(2 expectation"):
        run_build_tasks(cfg)
    stale = {**digests, "interactions.parquet": "0" * 64}  # validated, then ingested again
    artifacts.write_json(result, {"success": True, "failures": [], "inputs": stale})
    with pytest.raises(TablesNotValidatedError, match="changed since they were validated"):
        run_build_tasks(cfg)
    assert file_digests(mini_project / "data" / "tasks") == tasks_before
