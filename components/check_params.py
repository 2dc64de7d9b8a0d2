"""Component `check-params`: validate the run's settings once, before any step does work."""

from components.runtime import stage_component, stage_config


@stage_component
def check_params(
    seed: int,
    data: dict,
    tasks: dict,
    model: dict,
    pretrain: dict,
    train: dict,
    merge: dict,
    baselines: dict,
    evaluate: dict,
    registry: dict,
    tracking: dict,
) -> str:
    """Validate the run's settings (one pipeline parameter per params.yaml section) as params.yaml.

    Pipeline parameters travel as JSON structs (every number a float); ``parse_config`` turns them
    back into params.yaml's typed values, and a bad value stops the run here with the key named.
    Returns the validated settings as JSON, the ``params`` input of every stage.
    """
    import json

    sections = {
        "seed": seed,
        "data": data,
        "tasks": tasks,
        "model": model,
        "pretrain": pretrain,
        "train": train,
        "merge": merge,
        "baselines": baselines,
        "evaluate": evaluate,
        "registry": registry,
        "tracking": tracking,
    }
    cfg = stage_config(json.dumps(sections))
    return json.dumps(cfg.model_dump(mode="json", exclude={"paths"}), sort_keys=True)
