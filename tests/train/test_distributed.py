"""Data parallel training gives what one process gives: DDP and FSDP (2 gloo processes on the CPU,
through accelerate), 2 "nodes" x 1 process through torchrun's rendezvous on 127.0.0.1 with the
training operator's PET_* variables, and a run whose rank is killed with SIGKILL and resumed.

Every run trains the tiny setup of tests/train/ddp_run.py with the same global batch; the adapter
weights are compared in the `last` checkpoints.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from recfound.model.adapter_format import WEIGHTS_FILE

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("ddp_run.py")
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(command: list[str], env: dict | None = None, expect_ok: bool = True):
    done = subprocess.run(
        command, capture_output=True, text=True, env=env or ENV, timeout=600, cwd=ROOT
    )
    if expect_ok:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def _accelerate(out: Path, *args: str, expect_ok: bool = True):
    """`accelerate launch` of 2 processes (without GPUs its multi-GPU launcher starts
    torch.distributed processes that use gloo)."""
    return _run(
        [
            str(BIN / "accelerate"),
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(_port()),
            str(SCRIPT),
            str(out),
            *args,
        ],
        expect_ok=expect_ok,
    )


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "last" / WEIGHTS_FILE))


def _result(out: Path) -> dict:
    return json.loads((out / "result.json").read_text())


def _assert_same_weights(a: dict, b: dict, rel: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        scale = float(a[name].abs().max().clamp(min=1e-12))
        assert float((a[name] - b[name]).abs().max()) <= rel * scale, name


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("one")
    _run([sys.executable, str(SCRIPT), str(out)])
    assert _result(out)["num_processes"] == 1
    return out


@pytest.fixture(scope="module")
def ddp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    _accelerate(out)
    return out


def test_ddp_two_processes_match_one_process(one_process: Path, ddp: Path) -> None:
    assert _result(ddp)["num_processes"] == 2
    assert _result(ddp)["module"] == "DistributedDataParallel"
    _assert_same_weights(_weights(one_process), _weights(ddp), rel=1e-3)
    for key, value in _result(one_process)["final_val_loss"].items():
        assert _result(ddp)["final_val_loss"][key] == pytest.approx(value, rel=1e-3)


def test_fsdp_two_processes_match_one_process(one_process: Path, tmp_path: Path) -> None:
    _accelerate(tmp_path, "--strategy", "fsdp")
    assert _result(tmp_path)["num_processes"] == 2
    assert _result(tmp_path)["module"].startswith("FSDP")  # the backbone sharded per layer
    _assert_same_weights(_weights(one_process), _weights(tmp_path), rel=1e-3)


def test_two_nodes_through_torchrun_match_one_process(one_process: Path, tmp_path: Path) -> None:
    """What the PyTorchJob runs (`torchrun --no-python ...`, the operator setting PET_*), as two
    "nodes" of one process each that meet through torchrun's rendezvous on 127.0.0.1."""
    port = str(_port())
    nodes = []
    for rank in range(2):
        env = {
            **ENV,
            "PET_NNODES": "2",
            "PET_NODE_RANK": str(rank),
            "PET_NPROC_PER_NODE": "1",
            "PET_MASTER_ADDR": "127.0.0.1",
            "PET_MASTER_PORT": port,
        }
        command = [str(BIN / "torchrun"), "--no-python", sys.executable, str(SCRIPT), str(tmp_path)]
        nodes.append(
            subprocess.Popen(
                command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
        )
    for node in nodes:
        output, _ = node.communicate(timeout=600)
        assert node.returncode == 0, output.decode()[-3000:]
    assert _result(tmp_path)["num_processes"] == 2
    _assert_same_weights(_weights(one_process), _weights(tmp_path), rel=1e-3)


def test_resume_after_kill_9_of_one_rank_gives_the_same_weights(ddp: Path, tmp_path: Path) -> None:
    killed = _accelerate(tmp_path, "--kill-rank", "1", "--kill-at", "3", expect_ok=False)
    assert killed.returncode != 0
    state = json.loads((tmp_path / "last" / "trainer_state.json").read_text())
    assert state["step"] == 2  # the last checkpoint before the kill
    _accelerate(tmp_path, "--resume")
    _assert_same_weights(_weights(ddp), _weights(tmp_path), rel=1e-6)
