"""What ``recfound pipeline compile | submit | run-local`` do.

- ``compile``: the pipeline, with params.yaml's values as parameter defaults, to a YAML package.
- ``submit``: compile, then start a run on a Kubeflow Pipelines endpoint (``kfp.Client``).
- ``run-local``: the same pipeline through kfp.local's subprocess runner: every step runs here, in
  this Python environment, in order; outputs land under ``--output-dir``, MLflow runs in the local
  store, tagged with one ``recfound.run_group``.

Both read versioned data unless told otherwise: ``--param data_repo=… --param data_rev=…`` (the
DVC project and revision the first step fetches), or ``--param data_from=raw``.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlflow.environment_variables import MLFLOW_SERVER_ENABLE_JOB_EXECUTION

from pipelines.arguments import (
    check_data_location,
    config_arguments,
    pipeline_arguments,
    resource_arguments,
)
from pipelines.recfound_pipeline import PIPELINE_NAME, build_pipeline
from recfound.config import Config
from recfound.tracking.runs import RUN_GROUP_ENV

DEFAULT_LOCAL_OUTPUT = "kfp_local"
# MLflow's UI opens experiments in its GenAI view unless this fragment asks for training runs
TRAINING_VIEW = "/#/experiments?workflowType=machine_learning"


class PipelineRunFailed(Exception):
    """A step of a local pipeline run failed; its log is printed above the message."""


def compile_pipeline(cfg: Config, output: str | Path, image: str | None = None) -> Path:
    """Write the pipeline package (YAML) with ``cfg``'s values as parameter defaults."""
    from kfp import compiler

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    pipeline = build_pipeline(config_arguments(cfg), image=image, resources=resource_arguments(cfg))
    compiler.Compiler().compile(pipeline, str(output), pipeline_name=PIPELINE_NAME)
    return output


def submit(
    cfg: Config,
    host: str,
    experiment: str,
    overrides: Sequence[str] = (),
    run_name: str | None = None,
    image: str | None = None,
    namespace: str | None = None,
    cache: bool = True,
) -> str:
    """Compile and start a run on the KFP endpoint ``host``; returns the run's URL in the KFP UI.

    The overrides are checked (as params.yaml would be) before anything reaches the cluster.
    ``cache=False`` runs every step even where KFP holds a cached result for the same inputs.
    """
    import kfp

    arguments = pipeline_arguments(cfg, overrides)
    check_data_location(arguments)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(cfg, Path(tmp) / "recfound.yaml", image=image)
        client = kfp.Client(host=host, namespace=namespace)
        run = client.create_run_from_pipeline_package(
            str(package),
            arguments=arguments,
            run_name=run_name,
            experiment_name=experiment,
            namespace=namespace,
            enable_caching=None if cache else False,
        )
    return f"{host.rstrip('/')}/#/runs/details/{run.run_id}"


def absolute_tracking_uri(uri: str) -> str:
    """``uri`` with a relative local store made absolute (the steps run in other processes)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    if "://" not in uri:
        return Path(uri).resolve().as_uri()
    return uri


@dataclass(frozen=True)
class LocalRun:
    """Where a local run left its outputs and what it registered."""

    run_dir: Path
    tracking_uri: str
    model_name: str
    model_version: str | None
    aliases: tuple[str, ...]

    def summary(self) -> str:
        if self.model_version is None:
            registered = f"no version of {self.model_name!r} in the registry"
        else:
            aliases = ", ".join(self.aliases) or "none"
            registered = f"{self.model_name} version {self.model_version} (aliases: {aliases})"
        return "\n".join(
            [
                "local pipeline run finished",
                f"  outputs (one folder per step): {self.run_dir}",
                f"  MLflow: {self.tracking_uri}  ({self.how_to_look()})",
                f"  registered model: {registered}",
            ]
        )

    def how_to_look(self) -> str:
        """How to open the runs in MLflow's UI, in its view of training runs: a tracking server
        at its own address; a local store through `mlflow ui`, started as `make ui` starts it,
        without MLflow's job runner (GenAI scorers, unused here: eight processes and 1.1 GiB
        fewer for a UI)."""
        if self.tracking_uri.startswith(("http://", "https://")):
            return f"open {self.tracking_uri.rstrip('/')}{TRAINING_VIEW}"
        return (
            f"{MLFLOW_SERVER_ENABLE_JOB_EXECUTION.name}=false mlflow ui --backend-store-uri "
            f"{self.tracking_uri}, then open http://127.0.0.1:5000{TRAINING_VIEW}"
        )


def run_local(
    cfg: Config, overrides: Sequence[str] = (), output_dir: str | Path = DEFAULT_LOCAL_OUTPUT
) -> LocalRun:
    """Run the whole pipeline here with kfp.local's subprocess runner (no cluster, no image).

    The steps run as subprocesses of this Python; they inherit this process's environment, which
    is how MLflow settings reach them (the cluster's Kubernetes Secret does not exist here):
    MLFLOW_TRACKING_URI if set, else ``tracking.tracking_uri``, made absolute.
    """
    from kfp import local

    arguments = pipeline_arguments(cfg, overrides)
    check_data_location(arguments)
    if arguments["data_from"] == "dvc" and "://" not in arguments["data_repo"]:
        arguments["data_repo"] = str(Path(arguments["data_repo"]).resolve())  # steps run elsewhere
    tracking = arguments["tracking"]
    tracking_uri = absolute_tracking_uri(
        os.environ.get("MLFLOW_TRACKING_URI") or tracking["tracking_uri"]
    )
    os.environ["MLFLOW_TRACKING_URI"] = tracking["tracking_uri"] = tracking_uri
    tracking["artifact_location"] = str(Path(tracking["artifact_location"]).resolve())

    # the MLflow runs of this pipeline run share a tag (on a cluster: the KFP run id)
    os.environ[RUN_GROUP_ENV] = f"kfp-local-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(Path(output_dir).resolve()),
    )
    pipeline = build_pipeline(config_arguments(cfg), target="local")
    with warnings.catch_warnings():
        # The subprocess runner runs each step in this interpreter, not in the project image.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        try:
            finished = pipeline(**arguments)
        except RuntimeError as exc:
            message = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # kfp colours task names
            raise PipelineRunFailed(f"local pipeline run failed: {message}") from None
    run_dir = Path(finished.output.path).parents[1]
    model_name = arguments["registry"]["model_name"]
    version, aliases = _latest_version(tracking_uri, model_name)
    return LocalRun(run_dir, tracking_uri, model_name, version, aliases)


def _latest_version(tracking_uri: str, model_name: str) -> tuple[str | None, tuple[str, ...]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    versions = client.search_model_versions(f"name='{model_name}'")
    if not versions:
        return None, ()
    number = str(max(int(v.version) for v in versions))
    # search results carry no aliases; the version itself does
    return number, tuple(sorted(client.get_model_version(model_name, number).aliases))


def run_command(cfg: Config, args: argparse.Namespace) -> None:
    """Run ``recfound pipeline ACTION`` with the options recfound.cli parsed."""
    if args.action == "compile":
        print(f"compiled the pipeline to {compile_pipeline(cfg, args.output, image=args.image)}")
    elif args.action == "submit":
        url = submit(
            cfg,
            host=args.host,
            experiment=args.experiment,
            overrides=args.param,
            run_name=args.run_name,
            image=args.image,
            namespace=args.namespace,
            cache=not args.no_cache,
        )
        print(f"submitted run: {url}")
    else:
        try:
            print(run_local(cfg, overrides=args.param, output_dir=args.output_dir).summary())
        except PipelineRunFailed as exc:
            raise SystemExit(f"recfound: {exc}") from None
