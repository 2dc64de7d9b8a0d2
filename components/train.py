"""Component `train`: TMoLE adapters on every task with S2Sched, on all GPUs of the pod."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components.runtime import log_scalars, stage_component, stage_config, write_images_page


@stage_component
def train(
    params: str,
    tasks: Input[Dataset],
    backbone: Input[Model],
    checkpoints: Output[Model],
    metrics: Output[Metrics],
    report: Output[Artifact],
    plots: Output[HTML],
) -> None:
    """Train the adapters (recfound train); logs to MLflow. ``checkpoints`` is paths.train
    (last/, best_generative/, best_embedding/); ``report`` holds ``train.json`` and the plots.

    With more than one GPU in the pod, the stage runs under ``accelerate launch --multi_gpu``
    with one process per GPU; otherwise it runs in this process (one GPU, or the CPU).
    """
    import json
    import pathlib
    import subprocess
    import sys
    import tempfile

    import torch
    import yaml

    cfg = stage_config(params, locals())
    gpus = torch.cuda.device_count()
    if gpus > 1:
        params_file = pathlib.Path(tempfile.mkdtemp()) / "params.yaml"
        params_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        command = [
            sys.executable, "-m", "accelerate.commands.launch",
            "--multi_gpu", "--num_processes", str(gpus), "--num_machines", "1",
            "--mixed_precision", "bf16" if cfg.train.bf16 else "no", "--dynamo_backend", "no",
            "-m", "recfound.cli", "--params", str(params_file), "train",
        ]  # fmt: skip
        print("launching:", " ".join(command), flush=True)
        subprocess.run(command, check=True)
    else:
        from recfound.stages.train import run_train

        run_train(cfg)
    reports = pathlib.Path(report.path)
    log_scalars(metrics, json.loads((reports / "train.json").read_text()))
    write_images_page(str(reports / "plots"), plots, "Training: task shares and validation loss")
