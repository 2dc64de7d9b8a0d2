"""What every RecFound component shares: the project image and the code that runs in the pod.

The components are *lightweight* KFP Python components: KFP copies each function's source into
the compiled pipeline and runs it in the project image, which has ``recfound`` installed (and
nothing is installed at run time). This folder is not in the image, so the helpers below are
embedded into every component with ``additional_funcs``: they may use only builtins, the kfp.dsl
names and ``recfound``, and import inside their bodies.

This module does not use ``from __future__ import annotations``: KFP reads the components' type
annotations (``Output[Dataset]`` …) at decoration time and cannot resolve them from strings.
"""

import os
from collections.abc import Callable

from kfp import dsl
from kfp.dsl import HTML, Metrics

DEFAULT_IMAGE = "ghcr.io/recfound/recfound:0.1.0"
IMAGE_ENV = "RECFOUND_IMAGE"


def project_image() -> str:
    """The container image every step runs in: ``$RECFOUND_IMAGE``, else :data:`DEFAULT_IMAGE`.

    infra/ builds it (infra/docker/Dockerfile); push it where the cluster can pull it and set
    RECFOUND_IMAGE (or ``recfound pipeline compile --image``) to that name.
    """
    return os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE


def stage_config(params: str, artifacts: dict | None = None):
    """The run's validated config with ``paths.<name>`` pointing at this task's artifacts.

    ``params`` is the JSON the ``check-params`` step wrote; it is validated again here, at the
    edge of the pod, with the same parser as params.yaml. ``artifacts`` is the component's
    ``locals()``: every artifact parameter named for a ``paths`` key (``tasks``, ``backbone``
    …; ``checkpoints`` fills ``train`` and ``report`` fills ``reports``) sets that key to the
    artifact's local path; other parameters (metrics, pages, inputs no stage reads from
    ``paths``) are left alone.
    """
    import json
    import logging

    from recfound.config import parse_config

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    cfg = parse_config(json.loads(params), origin="pipeline parameters")
    renamed = {"checkpoints": "train", "report": "reports"}
    paths = {
        renamed.get(name, name): value.path
        for name, value in (artifacts or {}).items()
        if hasattr(value, "path") and renamed.get(name, name) in type(cfg.paths).model_fields
    }
    return cfg.model_copy(update={"paths": cfg.paths.model_copy(update=paths)})


def log_scalars(metrics: Metrics, values: dict, prefix: str = "") -> None:
    """Log every finite number of a stage's (nested) metrics dict, as ``a.b.c`` names, to KFP."""
    import math

    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            log_scalars(metrics, value, f"{name}.")
        elif (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        ):
            metrics.log_metric(name, value)


def write_images_page(folder: str, page: HTML, title: str) -> None:
    """One HTML page with every PNG of ``folder`` inlined, so the KFP UI shows a stage's plots."""
    import base64
    import html
    import pathlib

    images = sorted(pathlib.Path(folder).glob("*.png")) if pathlib.Path(folder).is_dir() else []
    parts = [f"<html><head><title>{html.escape(title)}</title></head><body>"]
    parts.append(f"<h2>{html.escape(title)}</h2>")
    for image in images:
        data = base64.b64encode(image.read_bytes()).decode("ascii")
        parts.append(f"<h3>{html.escape(image.stem)}</h3>")
        parts.append(f'<img src="data:image/png;base64,{data}" style="max-width:100%">')
    if not images:
        parts.append("<p>This step wrote no plots.</p>")
    parts.append("</body></html>")
    pathlib.Path(page.path).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(page.path).write_text("\n".join(parts), encoding="utf-8")


def stage_component(func: Callable) -> Callable:
    """``@dsl.component`` in the project image, with nothing installed at run time."""
    return dsl.component(
        func,
        base_image=project_image(),
        packages_to_install=[],
        install_kfp_package=False,
        additional_funcs=[stage_config, log_scalars, write_images_page],
    )
