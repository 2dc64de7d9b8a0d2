"""The pyfunc side of bench/serving.py (kept apart: it needs MLflow, the rest does not).

- today's unfolded pyfunc and the folded one (``serving.folded``), from the bundle directories;
- the same pyfunc code over the bare backbone (:class:`BarePyfunc`);
- ``mlflow models serve`` on 127.0.0.1 for a saved pyfunc, and a bounded HTTP load.

This file travels as model code with the saved models (``code_paths``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recfound.model.backbone import load_backbone
from recfound.model.folded import FoldedAdapter
from recfound.model.recmodel import RecModel
from recfound.serving import pyfunc as serving


class BarePyfunc(serving.RecFoundModel):
    """The same pyfunc code over the bare backbone: what a request costs without any adapter."""

    def load(self, backbone_dir, bundle_dir, settings, *optional) -> None:
        super().load(backbone_dir, bundle_dir, settings, *optional)
        base, _ = load_backbone(backbone_dir)
        base.eval()
        self.bare = RecModel(
            FoldedAdapter(base, None),
            self.rec.tokenizer,
            pooling=self.rec.pooling,
            embedding_attention=self.rec.embedding_attention,
            max_length=self.rec.max_length,
        )

    def model_for(self, task: str) -> RecModel:
        return self.bare


def pyfunc_models(backbone: Path, bundle: Path) -> dict[str, serving.RecFoundModel]:
    """Today's unfolded pyfunc, the folded one (every task folded up front) and the bare one."""
    models = {
        "pyfunc_unfolded": serving.RecFoundModel.from_dirs(backbone, bundle, folded=False),
        "pyfunc_folded": serving.RecFoundModel.from_dirs(backbone, bundle, folded=True),
        "pyfunc_bare": BarePyfunc.from_dirs(backbone, bundle),
    }
    models["pyfunc_folded"].warm_up()
    return models


# ---- HTTP ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def save_pyfunc(path: Path, backbone: Path, bundle: Path, folded: bool) -> None:
    import mlflow

    common = {
        "artifacts": {"backbone": str(backbone), "bundle": str(bundle)},
        "code_paths": [serving.package_dir(), __file__],
        "signature": serving.SIGNATURE,
        "pip_requirements": serving.pinned_requirements(),
    }
    mlflow.pyfunc.save_model(
        str(path),
        python_model=serving.model_code_path(),  # models from code: no pickle
        model_config={"folded": folded},
        **common,
    )


@contextlib.contextmanager
def mlflow_server(model_dir: Path, threads: int, startup_s: float = 240) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    command = [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir),
        "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1",
    ]  # fmt: skip
    log_path = Path(tempfile.mkdtemp(prefix="recfound-serve-")) / "server.log"
    log = log_path.open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited; see {log_path}")
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow models serve did not start in {startup_s}s")
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def post(url: str, rows: list[dict[str, Any]]) -> Any:
    body = json.dumps({"dataframe_records": rows}).encode()
    request = urllib.request.Request(
        f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def http_latency(
    urls: dict[str, str], requests: dict[str, list[dict[str, Any]]], n: int, cap_s: float
) -> dict[str, dict[str, list[float]]]:
    """Per task and server, the seconds of each of ``n`` requests (servers interleaved; a task
    stops at ``cap_s`` seconds)."""
    out: dict[str, dict[str, list[float]]] = {}
    for task, rows in requests.items():
        for url in urls.values():
            post(url, [rows[0]])  # warm-up (also builds a lazily folded task)
        times: dict[str, list[float]] = {name: [] for name in urls}
        start_task = time.monotonic()
        for i in range(min(n, len(rows))):
            if time.monotonic() - start_task > cap_s:
                break
            for name, url in urls.items():
                start = time.perf_counter()
                post(url, [rows[i]])
                times[name].append(time.perf_counter() - start)
        out[task] = {name: values for name, values in times.items() if values}
    return out
