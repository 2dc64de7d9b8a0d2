"""Train the tiny setup with whatever processes the launcher gives us (1 process, `accelerate
launch`, `torchrun` with the training operator's PET_* variables).

    python tests/train/ddp_run.py OUT_DIR [--strategy ddp|fsdp] [--resume]
        [--kill-rank 1 --kill-at 5]

Writes OUT_DIR/result.json (final validation losses, processes) from the main process; the
adapter weights are in OUT_DIR/last.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

from recfound.train.trainer import Trainer
from tests.train.tiny import tiny_model, tiny_tasks, tiny_train_config

# S2Sched's settings are unused by the uniform strategy
CONFIG = tiny_train_config(
    steps=6, batch_size=4, eval_every=3, checkpoint_every=2, strategy="uniform"
)


def fsdp_on_cpu(accelerator: Accelerator) -> None:
    """Switch an accelerator started on CPUs (gloo) to accelerate's FSDP2 preparation: the frozen
    backbone's weights sharded per decoder layer, the adapters trainable. accelerate selects FSDP
    from its config only for GPU process groups; its preparation itself runs on gloo."""
    accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=["LlamaDecoderLayer"],
        reshard_after_forward=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--strategy", choices=["ddp", "fsdp"], default="ddp")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kill-rank", type=int, default=None)
    parser.add_argument("--kill-at", type=int, default=None)
    args = parser.parse_args()
    accelerator = Accelerator(cpu=True)
    if args.strategy == "fsdp" and accelerator.num_processes > 1:
        fsdp_on_cpu(accelerator)

    def kill(values: dict, step: int) -> None:  # kill -9 of one rank, mid-run
        if step == args.kill_at and accelerator.process_index == args.kill_rank:
            os.kill(os.getpid(), signal.SIGKILL)

    tasks = tiny_tasks()
    trainer = Trainer(
        tiny_model(tasks),
        tasks,
        CONFIG,
        args.out,  # the same folder for every process; the main process writes
        seed=5,
        log_metrics=kill if args.kill_at is not None else None,
        accelerator=accelerator,
    )
    result = trainer.train(resume=args.resume)
    if accelerator.is_main_process:
        summary = {
            "final_val_loss": result.final_val_loss,
            "num_processes": accelerator.num_processes,
            "distributed_type": accelerator.distributed_type.value,
            "module": type(trainer.module).__name__,
        }
        (Path(args.out) / "result.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
