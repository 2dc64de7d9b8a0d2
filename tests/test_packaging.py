"""The project as users install it: a wheel in a fresh virtualenv, no checkout on the path.

The fresh environment takes its third-party dependencies from the running interpreter's
site-packages (a plain path in a .pth file: no network, and the editable install of the checkout
that lives there is not activated); recfound, pipelines and components come only from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, write_params

SOURCES = ("pyproject.toml", "README.md", "recfound", "pipelines", "components")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, cwd=cwd, env=_clean_env(), capture_output=True, text=True, check=False, timeout=900
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the sources (the build leaves nothing in the checkout)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, source / name, ignore=ignore)
        else:
            shutil.copy(REPO_ROOT / name, source / name)
    _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", str(root / "dist"), str(source), cwd=root,
    )  # fmt: skip
    (built,) = (root / "dist").glob("recfound-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_alone_runs_recfound_pipeline_compile(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", str(venv), cwd=tmp_path)
    python = venv / "bin" / "python"
    purelib = _run(
        str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path
    ).stdout.strip()
    shared = sysconfig.get_paths()["purelib"]
    (Path(purelib) / "shared_deps.pth").write_text(shared + "\n")
    _run(
        str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall",
        "-q", str(wheel), cwd=tmp_path,
    )  # fmt: skip

    where = _run(
        str(python), "-c",
        "import recfound, pipelines, components; "
        "print(recfound.__file__); print(pipelines.__file__); print(components.__file__)",
        cwd=tmp_path,
    ).stdout.split()  # fmt: skip
    for path in where:
        assert path.startswith(purelib), where  # from the wheel, not the checkout

    write_params(tmp_path / "params.yaml")
    out = tmp_path / "out" / "recfound.yaml"
    result = _run(
        str(venv / "bin" / "recfound"), "pipeline", "compile", "-o", str(out), cwd=tmp_path
    )
    assert "compiled the pipeline" in result.stdout
    package = out.read_text()
    assert "data_repo" in package and "recfound.stages.train" in package


def test_the_library_never_imports_kfp() -> None:
    code = (
        "import importlib, pkgutil, sys, recfound\n"
        "for m in pkgutil.walk_packages(recfound.__path__, 'recfound.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n == 'kfp' or n.startswith(('kfp.', 'pipelines',"
        " 'components')))\n"
        "print(bad)\n"
    )
    result = _run(sys.executable, "-c", code, cwd=REPO_ROOT)
    assert result.stdout.strip() == "[]"
