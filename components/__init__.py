"""Kubeflow components: one per pipeline stage, thin typed wrappers around ``recfound.stages``.

Each maps its KFP artifacts (``Input[Dataset]``, ``Output[Model]``, ``Output[Metrics]`` …) to the
``paths`` of the config and calls the stage function; resources, accelerators and secrets are set
on the tasks in ``pipelines/``, not here. ``check_params`` validates the run's settings first.
"""

from components.baselines import baselines
from components.build_tasks import build_tasks
from components.check_params import check_params
from components.evaluate import evaluate
from components.ingest import ingest
from components.merge import merge
from components.pretrain import pretrain
from components.recommend import recommend
from components.register import register
from components.runtime import DEFAULT_IMAGE, IMAGE_ENV, project_image
from components.train import train
from components.validate import validate

__all__ = [
    "DEFAULT_IMAGE",
    "IMAGE_ENV",
    "baselines",
    "build_tasks",
    "check_params",
    "evaluate",
    "ingest",
    "merge",
    "pretrain",
    "project_image",
    "recommend",
    "register",
    "train",
    "validate",
]
