"""The dependency rules are contracts a machine checks (import-linter, configured in
pyproject.toml): they hold, and breaking one fails the check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports() -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


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
