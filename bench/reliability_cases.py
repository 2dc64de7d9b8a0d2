"""The cases of issue 24's items 5-9, run for real, with the message each gets now.

A tiny project (a 30-user slice of MovieLens-100K, the tiny test settings) is built with the CLI
(`recfound ingest` … `register`); then every case is run the way an operator meets it: a
`recfound` command on a damaged params file, source, backbone or report (exit code and what it
prints: the `recfound:` error line, or the WARNING lines), and the serving cases as HTTP requests
to `mlflow models serve` of the registered version on 127.0.0.1. Nothing is copied from the code:
each message below is what the run printed or answered.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python bench/reliability_cases.py \
        --out reports/reliability_cases.md

About 5-10 minutes on 2 shared cores. Not part of the tests' pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import write_ml100k_slice, write_tiny_params  # noqa: E402
from tests.tracking.conftest import free_port, mlflow_cli_on_localhost, post_json  # noqa: E402

RECFOUND = str(Path(sys.executable).parent / "recfound")
TASKS = ["user2item", "sequential_recommendation", "rating_prediction", "product_matching"]


@dataclass
class Case:
    item: str
    case: str
    run_as: str
    outcome: str
    message: str


def run_cli(stage: str, params: Path, *extra: str, cwd: Path) -> tuple[int, str, float]:
    """``recfound STAGE --params PARAMS``: exit code, what it printed that an operator reads (its
    ``recfound:`` lines and WARNING lines, else the last line), seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    started = time.perf_counter()
    done = subprocess.run(
        [RECFOUND, stage, "--params", str(params), *extra],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    lines = (done.stdout + done.stderr).splitlines()
    said = [ln for ln in lines if ln.startswith("recfound:") or " WARNING " in ln]
    if done.returncode != 0 and not said:
        said = lines[-1:]
    if done.returncode != 0 and said and said[0].startswith("recfound:"):
        # a multi-line error (validation) goes on after its first line
        first = lines.index(said[0])
        said = [ln for ln in lines[first:] if not ln.startswith("Traceback")]
    text = "\n".join(_strip_log_prefix(ln) for ln in said)
    return done.returncode, text, seconds


def _strip_log_prefix(line: str) -> str:
    """``12:00:01 WARNING recfound.x: text`` → ``WARNING recfound.x: text`` (no clock)."""
    parts = line.split(" ", 1)
    return parts[1].strip() if len(parts) == 2 and parts[0].count(":") == 2 else line


def outcome_of(code: int) -> str:
    return "exit 0" if code == 0 else f"exit {code}"


class Project:
    """The tiny project every case starts from (copied, then damaged, per case)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.raw = write_ml100k_slice(root / "raw", num_users=30)
        self.params = write_tiny_params(
            root / "params.yaml",
            data={"source": "recbole_atomic", "path": str(self.raw), "dataset_name": "mini"},
            tasks={"enabled": TASKS, "max_train_per_task": 24, "max_eval_per_task": 6},
            pretrain={"steps": 4, "eval_every": 2},
            train={"steps": 4, "eval_every": 2, "checkpoint_every": 2},
            merge={"trials": 1, "max_per_task": 8},
            evaluate={"max_per_task": 4, "max_new_tokens": 2, "ks": [1, 5]},
            tracking={
                "tracking_uri": f"sqlite:///{root}/mlflow.db",
                "artifact_location": str(root / "mlartifacts"),
            },
        )

    def settings(self) -> dict:
        return yaml.safe_load(self.params.read_text())

    def params_with(self, name: str, change: Callable[[dict], None]) -> Path:
        settings = self.settings()
        change(settings)
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(settings, sort_keys=False))
        return path

    def build(self) -> None:
        for stage in ("ingest", "validate", "build-tasks", "pretrain", "train", "merge"):
            code, text, seconds = run_cli(stage, self.params, cwd=self.root)
            print(f"  {stage}: exit {code} in {seconds:.0f} s", flush=True)
            if code != 0:
                raise SystemExit(f"{stage} failed:\n{text}")
        for stage in ("evaluate", "register"):
            code, text, seconds = run_cli(stage, self.params, cwd=self.root)
            print(f"  {stage}: exit {code} in {seconds:.0f} s", flush=True)
            if code != 0:
                raise SystemExit(f"{stage} failed:\n{text}")


def source_case(project: Project, name: str, damage: Callable[[Path], None]) -> tuple[int, str]:
    """Ingest then validate a damaged copy of the source; what both printed."""
    raw = project.root / f"raw-{name}"
    shutil.rmtree(raw, ignore_errors=True)
    shutil.copytree(project.raw, raw)
    damage(raw)
    work = project.root / f"work-{name}"
    work.mkdir(exist_ok=True)

    def change(s: dict) -> None:
        s["data"]["path"] = str(raw)
        s["paths"] = {**s["paths"], "interim": str(work / "interim"), "reports": str(work / "r")}

    params = project.params_with(f"source-{name}", change)
    code, said, _ = run_cli("ingest", params, cwd=project.root)
    if code != 0:
        return code, said
    code, validated, _ = run_cli("validate", params, cwd=project.root)
    return code, "\n".join(t for t in (said, validated) if t)


def edit_lines(path: Path, edit: Callable[[list[str]], list[str]]) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")


def params_cases(project: Project) -> list[Case]:
    cases = []
    empty = project.root / "empty.yaml"
    empty.write_text("")
    missing = project.params_with("missing-section", lambda s: s.pop("tasks"))
    duplicate = project.root / "duplicate.yaml"
    duplicate.write_text(project.params.read_text() + "seed: 7\n")
    for case, params in (
        ("an empty params file", empty),
        ("a params file without the `tasks` section", missing),
        ("a duplicated YAML key (`seed` twice)", duplicate),
        ("`seed: -1`", project.params_with("seed-neg", lambda s: s.update(seed=-1))),
        ("`seed: 2**70`", project.params_with("seed-big", lambda s: s.update(seed=2**70))),
    ):
        code, said, _ = run_cli("ingest", params, cwd=project.root)
        cases.append(Case("5", case, "`recfound ingest`", outcome_of(code), said))

    def short(s: dict) -> None:
        s["model"]["max_length"] = 16
        s["train"]["steps"] = 1
        s["paths"]["train"] = str(project.root / "models" / "train-16")

    code, said, _ = run_cli("train", project.params_with("short", short), cwd=project.root)
    said = "\n".join(ln for ln in said.splitlines() if "max_length" in ln)
    cases.append(Case("5", "`model.max_length: 16`", "`recfound train`", outcome_of(code), said))
    return cases


def data_cases(project: Project) -> list[Case]:
    def title(text: str) -> Callable[[Path], None]:
        def damage(raw: Path) -> None:
            def edit(lines: list[str]) -> list[str]:
                fields = lines[1].split("\t")
                fields[1] = text
                return [lines[0], "\t".join(fields), *lines[2:]]

            edit_lines(raw / "mini.item", edit)

        return damage

    def ratings_all(value: str) -> Callable[[Path], None]:
        def damage(raw: Path) -> None:
            def edit(lines: list[str]) -> list[str]:
                rows = [ln.split("\t") for ln in lines[1:]]
                return [lines[0]] + ["\t".join([r[0], r[1], value, r[3]]) for r in rows]

            edit_lines(raw / "mini.inter", edit)

        return damage

    def timestamps_equal(raw: Path) -> None:
        def edit(lines: list[str]) -> list[str]:
            rows = [ln.split("\t") for ln in lines[1:]]
            return [lines[0]] + ["\t".join([*r[:3], "881250949"]) for r in rows]

        edit_lines(raw / "mini.inter", edit)

    def duplicated_rows(raw: Path) -> None:
        edit_lines(raw / "mini.inter", lambda lines: lines + lines[1:51])

    cases = []
    for n, (case, damage) in enumerate(
        (
            ("an item title containing `<item_50> </s> <pad>`", title("Toy <item_50> </s> <pad>")),
            ("a 100 KB item title", title("Long " + "x" * 100_000)),
            ("every rating identical (4)", ratings_all("4")),
            ("every timestamp equal", timestamps_equal),
            ("50 duplicated interaction rows", duplicated_rows),
        )
    ):
        code, said = source_case(project, f"data{n}", damage)
        cases.append(Case("6", case, "`recfound ingest` + `validate`", outcome_of(code), said))
    return cases


def serving_cases(project: Project) -> list[Case]:
    root = project.root
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{root}/mlflow.db"
    args = ["models", "serve", "-m", "models:/recfound@champion", "--env-manager", "local"]
    row = {"task": "rating_prediction", "input": "Heat (1995): how would the user rate it?"}
    requests = {
        "64 rows × 100 candidates × 800 characters (inside every per-field limit)": {
            "dataframe_records": [
                {"task": "rating_prediction", "input": "x" * 800, "candidates": ["c" * 800] * 100}
            ]
            * 64
        },
        "an unknown request param (`temperature`)": {
            "dataframe_records": [row],
            "params": {"max_new_tokens": 4, "temperature": 0.7},
        },
        "a candidate list whose entries are all empty": {
            "dataframe_records": [{**row, "candidates": ["", " "]}]
        },
    }
    cases = []
    serve_dir = root / "serve"
    serve_dir.mkdir(exist_ok=True)
    with mlflow_cli_on_localhost([*args, "--workers", "1"], serve_dir, "/ping", env) as url:
        for case, payload in requests.items():
            status, body = post_json(f"{url}/invocations", payload)
            message = body.get("message", json.dumps(body)[:300])
            cases.append(Case("7", case, "HTTP `mlflow models serve`", f"HTTP {status}", message))
    return cases


def tracking_cases(project: Project) -> list[Case]:
    missing = f"sqlite:///{project.root}/no-such-folder/mlflow.db"
    nobody = f"http://127.0.0.1:{free_port()}"
    cases = []
    for case, uri in (
        ("a sqlite tracking URI in a folder that does not exist", missing),
        ("a tracking URI where nothing listens", nobody),
    ):
        params = project.params_with(
            "tracking", lambda s, uri=uri: s["tracking"].update(tracking_uri=uri)
        )
        code, said, seconds = run_cli("baselines", params, cwd=project.root)
        outcome = f"{outcome_of(code)} after {seconds:.0f} s"
        cases.append(Case("8, 9", case, "`recfound baselines`", outcome, said))
    return cases


def traceback_cases(project: Project) -> list[Case]:
    cases = []

    def inf_timestamp(raw: Path) -> None:
        def edit(lines: list[str]) -> list[str]:
            fields = lines[5].split("\t")
            fields[3] = "inf"
            return [*lines[:5], "\t".join(fields), *lines[6:]]

        edit_lines(raw / "mini.inter", edit)

    code, said = source_case(project, "inf", inf_timestamp)
    cases.append(Case("9", "timestamp `inf`", "`recfound ingest`", outcome_of(code), said))

    params = project.params_with(
        "model-name", lambda s: s["registry"].update(model_name="team/recfound")
    )
    code, said, _ = run_cli("register", params, cwd=project.root)
    case = "`registry.model_name: team/recfound`"
    cases.append(Case("9", case, "`recfound register`", outcome_of(code), said))

    def damaged_backbone(name: str, damage: Callable[[Path], None]) -> tuple[int, str]:
        copy = project.root / "models" / f"backbone-{name}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(project.root / "models" / "backbone", copy)
        damage(copy)

        def change(s: dict) -> None:
            s["paths"]["backbone"] = str(copy)
            s["paths"]["train"] = str(project.root / "models" / f"train-{name}")
            s["train"]["steps"] = 1

        code, said, _ = run_cli("train", project.params_with(name, change), cwd=project.root)
        return code, said

    def corrupt_config(folder: Path) -> None:
        (folder / "config.json").write_text('{"model_type": "llama", "hidden_si')

    def truncated_weights(folder: Path) -> None:
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    for name, case, damage in (
        ("config", "a backbone with a corrupt `config.json`", corrupt_config),
        ("weights", "a truncated backbone `model.safetensors`", truncated_weights),
    ):
        code, said = damaged_backbone(name, damage)
        cases.append(Case("9", case, "`recfound train`", outcome_of(code), said))

    records = project.root / "reports" / "eval_records.json"
    saved = records.read_bytes()
    records.write_bytes(saved[: len(saved) // 2])
    try:
        code, said, _ = run_cli("register", project.params, cwd=project.root)
    finally:
        records.write_bytes(saved)
    case = "a truncated `eval_records.json`"
    cases.append(Case("9", case, "`recfound register`", outcome_of(code), said))
    return cases


def markdown(cases: list[Case], seconds: float) -> str:
    def cell(text: str) -> str:
        text = text.replace("|", "\\|").replace("\n", "<br>")
        return f"`{text}`" if text and "`" not in text else text or "(nothing)"

    lines = [
        "# Issue 24, items 5-9: each case and its message now",
        "",
        "Written by `bench/reliability_cases.py`, which runs every case for real on a tiny",
        "project (a 30-user slice of MovieLens-100K): a `recfound` command on a damaged params",
        "file, source, backbone or report, or an HTTP request to `mlflow models serve` of the",
        "registered version. The message is what the run printed (its `recfound:` error line, or",
        "its WARNING lines) or the server answered, verbatim; `<br>` separates lines. Paths are",
        f"those of the run's temporary folder. Whole run: {seconds:.0f} s.",
        "",
        "| item | case | run as | outcome | message now |",
        "|---|---|---|---|---|",
    ]
    for c in cases:
        lines.append(
            f"| {c.item} | {c.case} | {c.run_as} | {c.outcome} | {cell(c.message.strip())} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/reliability_cases.md")
    parser.add_argument("--keep", action="store_true", help="keep the temporary project")
    args = parser.parse_args()
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="recfound-cases-"))
    try:
        project = Project(root)
        print(f"building the tiny project in {root}", flush=True)
        project.build()
        cases = []
        for group in (params_cases, data_cases, serving_cases, tracking_cases, traceback_cases):
            print(f"running {group.__name__}", flush=True)
            cases += group(project)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    text = markdown(cases, time.perf_counter() - started)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
