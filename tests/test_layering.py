"""The dependency rules are contracts a machine checks (import-linter, configured in
pyproject.toml): they hold, and breaking one fails the check. Likewise dead code (vulture, with
its settings in pyproject.toml and the reasons in vulture_whitelist.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
VULTURE = Path(sys.executable).with_name("vulture")


def run_tool(tool: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(tool), *args], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )


def lint_imports() -> subprocess.CompletedProcess:
    return run_tool(LINT_IMPORTS, "--no-cache")


def test_the_layering_contracts_hold() -> None:
    result = lint_imports()
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def test_a_stage_importing_a_stage_breaks_the_contract() -> None:
    probe = REPO / "recfound" / "stages" / "_layering_probe.py"
    probe.write_text("from recfound.stages.evaluate import run_evaluate  # noqa: F401\n")
    try:
        result = lint_imports()
    finally:
        probe.unlink()
    assert result.returncode != 0
    assert "No stage imports a stage BROKEN" in result.stdout
    assert "recfound.stages._layering_probe -> recfound.stages.evaluate" in result.stdout


def vulture(*paths: str) -> subprocess.CompletedProcess:
    return run_tool(VULTURE, *paths)


def test_no_dead_code_outside_the_whitelist() -> None:
    result = vulture()
    assert result.returncode == 0, result.stdout[-3000:]


def test_a_function_nothing_calls_is_reported(tmp_path: Path) -> None:
    module = tmp_path / "forgotten.py"
    module.write_text("def used():\n    return 1\n\n\ndef forgotten():\n    return 2\n\n\nused()\n")
    result = vulture(str(module))
    assert result.returncode != 0
    assert "unused function 'forgotten'" in result.stdout
    assert "'used'" not in result.stdout
