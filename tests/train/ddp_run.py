"""Train the tiny setup with whatever processes accelerate gives us; write the final losses."""

from __future__ import annotations

import json
import sys

from accelerate import Accelerator

from recfound.train.s2sched import S2SchedParams
from recfound.train.trainer import Trainer, TrainParams
from tests.train.tiny import tiny_model, tiny_tasks

if __name__ == "__main__":
    accelerator = Accelerator(cpu=True)
    tasks = tiny_tasks()
    params = TrainParams(
        steps=10,
        batch_size=8,
        embedding_batch_size=8,
        eval_every=5,
        val_batch_size=8,
        checkpoint_every=100,
        learning_rate=5e-3,
        warmup_steps=2,
        strategy="uniform",
        s2sched=S2SchedParams(),
        seed=5,
    )
    out = sys.argv[2]  # the same checkpoint folder for every process; rank 0 writes
    result = Trainer(tiny_model(tasks), tasks, params, out, accelerator=accelerator).train()
    if accelerator.is_main_process:
        with open(sys.argv[1], "w") as handle:
            json.dump(
                {
                    "final_val_loss": result.final_val_loss,
                    "num_processes": accelerator.num_processes,
                },
                handle,
            )
