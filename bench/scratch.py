"""What the benches that train or pretrain again share: a params.yaml dict pointed at a scratch
folder, so a bench run leaves the pipeline's outputs and its MLflow store untouched.

Imported by the benches as a sibling (``python bench/NAME.py`` puts bench/ on ``sys.path``)."""

from __future__ import annotations

from typing import Any


def point_at_scratch(raw: dict[str, Any], scratch: str, *paths: str) -> None:
    """In place: ``raw``'s MLflow store, and each of ``paths`` (keys of ``paths:``), in
    ``scratch``."""
    raw["paths"].update({name: f"{scratch}/{name}" for name in paths})
    raw["tracking"].update(
        tracking_uri=f"sqlite:///{scratch}/mlflow.db", artifact_location=f"{scratch}/mlruns"
    )
