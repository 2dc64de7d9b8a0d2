"""The code every component runs in its pod: config from the run's params, metrics, plot pages."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from kfp.dsl import HTML, Artifact, Dataset, Metrics, Model

import components
from components.runtime import log_scalars, stage_config, write_images_page
from recfound.config import ConfigError

STAGE_COMPONENTS = [
    components.ingest,
    components.validate,
    components.build_tasks,
    components.baselines,
    components.pretrain,
    components.train,
    components.merge,
    components.evaluate,
    components.register,
    components.recommend,
]


def test_stage_config_validates_the_params_and_points_paths_at_artifacts() -> None:
    # a component's locals(): artifacts named for paths keys (checkpoints fills train, report
    # fills reports), an artifact no path takes, a metrics output, a module with a `path`
    artifacts = {
        "tasks": Dataset(name="tasks", uri="/a/tasks"),
        "checkpoints": Model(name="checkpoints", uri="/a/ckpt"),
        "report": Artifact(name="report", uri="/a/rep"),
        "evaluation": Artifact(name="evaluation", uri="/a/eval"),
        "metrics": Metrics(name="metrics", uri="/a/metrics"),
        "os": os,
        "params": "{}",
    }
    cfg = stage_config(json.dumps({"train": {"steps": 7.0}, "seed": 3}), artifacts)
    assert cfg.train.steps == 7 and isinstance(cfg.train.steps, int)  # JSON structs give floats
    assert (cfg.paths.tasks, cfg.paths.train, cfg.paths.reports) == (
        "/a/tasks",
        "/a/ckpt",
        "/a/rep",
    )
    assert cfg.paths.backbone == "models/backbone"  # what the component does not map is unchanged
    with pytest.raises(ConfigError, match="train.strategy"):
        stage_config(json.dumps({"train": {"strategy": "foo"}}))


def test_log_scalars_flattens_numbers_and_skips_the_rest(tmp_path: Path) -> None:
    metrics = Metrics(name="metrics", uri=str(tmp_path / "m"))
    values = {
        "steps": 6,
        "tokens_per_s": 12.5,
        "final_val_loss": {"user2item": 1.25, "rating_prediction": math.nan},
        "pretrained": True,
        "mlflow_run_id": "abc",
    }
    log_scalars(metrics, values)
    assert metrics.metadata == {
        "steps": 6,
        "tokens_per_s": 12.5,
        "final_val_loss.user2item": 1.25,
    }


def test_images_page_inlines_every_png(tmp_path: Path) -> None:
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "train_val_loss.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    (plots / "train_val_loss.json").write_text("[]")
    page = HTML(name="plots", uri=str(tmp_path / "out" / "plots"))
    write_images_page(str(plots), page, "Training")
    text = Path(page.path).read_text()
    assert text.count("<img") == 1 and "data:image/png;base64," in text
    write_images_page(str(tmp_path / "missing"), page, "Training")
    assert "wrote no plots" in Path(page.path).read_text()


@pytest.mark.parametrize("component", STAGE_COMPONENTS, ids=lambda c: c.name)
def test_components_are_self_contained_for_the_image(component) -> None:
    """The image has recfound but not components/: the embedded source must not import it."""
    container = component.component_spec.implementation.container
    source = "\n".join(container.command)
    assert "recfound.stages." in source  # it calls the stage function
    assert "def stage_config(" in source  # the shared helpers travel with it
    assert "import components" not in source and "from components" not in source
    assert "pip install" not in source
    assert container.image == components.project_image()
