"""The ``recfound`` command: one subcommand per pipeline stage (what ``dvc.yaml`` runs).

Each subcommand reads params.yaml once, calls the stage function and turns the errors a user can
cause (bad config, bad data, failed validation) into a short message and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from recfound.config import ALL_TASKS, SOURCES, Config, ConfigError, load_config
from recfound.errors import UserInputError

log = logging.getLogger("recfound")

EXIT_USER_ERROR = 2
EXIT_INVALID_DATA = 3
EXIT_INTERRUPTED = 143  # 128 + SIGTERM, as a shell reports a terminated process


def _ingest(cfg: Config, args: argparse.Namespace) -> None:
    from recfound.stages.ingest import run_ingest

    run_ingest(cfg)


def _validate(cfg: Config, args: argparse.Namespace) -> None:
    from recfound.stages.validate import run_validate

    run_validate(cfg)


def _build_tasks(cfg: Config, args: argparse.Namespace) -> None:
    from recfound.stages.build_tasks import run_build_tasks

    run_build_tasks(cfg)


def _pretrain(cfg: Config, args: argparse.Namespace) -> None:
    from recfound.stages.pretrain import run_pretrain

    run_pretrain(cfg)


def _train(cfg: Config, args: argparse.Namespace) -> None:
    from recfound.stages.train import run_train

    run_train(cfg, resume=args.resume)


STAGES: dict[str, tuple[Callable[[Config, argparse.Namespace], None], str, str]] = {
    "ingest": (
        _ingest,
        "read the configured source into normalized parquet tables",
        f"Reads data.source ({', '.join(SOURCES)}) and writes interactions, items and users as "
        "parquet under paths.interim (default data/interim/), with source.json describing the "
        "rating range and the signals the source carries. Options in params.yaml: "
        "data.path, data.dataset_name, data.rating_min/rating_max, data.rating_threshold "
        "(like = rating at or above it), data.min_user_interactions / data.min_item_interactions "
        "(k-core filtering), data.max_users (tiny runs).",
    ),
    "validate": (
        _validate,
        "check the normalized tables with Great Expectations",
        "Runs the expectation suites on the tables in paths.interim: ids not null, ratings in "
        "the source's range, plausible timestamps, every interaction's item and user known, "
        "unique item ids, non-empty titles. On failure prints each failed expectation and exits "
        f"with code {EXIT_INVALID_DATA}. Full results (JSON) and data docs (HTML) go to "
        "reports/validation/.",
    ),
    "build-tasks": (
        _build_tasks,
        "build the train/valid/test datasets of every configured task",
        "Builds each task in tasks.enabled that the source supports (others are skipped with the "
        "reason), splits per user chronologically (last interaction = test, second to last = "
        "valid), validates the datasets (including a leakage check) and only then replaces "
        "paths.tasks (default data/tasks/<task>/<split>.parquet). Record counts go to "
        f"reports/task_counts.json. Options in params.yaml: tasks.enabled (any of: "
        f"{', '.join(ALL_TASKS)}), tasks.history_length, tasks.num_candidates, "
        "tasks.max_train_per_task, tasks.max_eval_per_task, tasks.cold_item_fraction.",
    ),
    "pretrain": (
        _pretrain,
        "pretrain the builtin backbone (no-op for a given checkpoint)",
        "With model.backbone: builtin, trains a byte-level BPE tokenizer on the corpus (item "
        "texts and train-split prompts), builds the small Llama-style model sized by "
        "model.builtin, pretrains it with causal-LM loss (pretrain.steps, pretrain.batch_size, "
        "pretrain.seq_len, pretrain.learning_rate) and saves model + tokenizer with "
        "save_pretrained to paths.backbone (default models/backbone/). Loss curve and tokens/s "
        "go to MLflow and reports/pretrain.json. With model.backbone set to a local checkpoint "
        "directory it records that there was nothing to do.",
    ),
    "train": (
        _train,
        "train TMoLE adapters on all tasks at once with the S2Sched sampler",
        "Trains the adapter (model.adapter: tmole or lora) on every built task at once; "
        "train.strategy picks the sampler (s2sched, uniform, proportional). Writes checkpoints "
        "last/, best_generative/ and best_embedding/ under paths.train (default models/train/), "
        "reports/train.json and plots under reports/plots/; every step's per-task loss, "
        "sampling probabilities, learning rate and tokens/s go to MLflow. --resume continues "
        "from the last checkpoint; SIGTERM writes a checkpoint before exiting. For several "
        "processes: accelerate launch --num_processes N -m recfound.cli train.",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recfound",
        description=(
            "RecFound: a recommendation foundation model (generative + embedding tasks) as a "
            "DVC / Kubeflow / MLflow workflow. Each subcommand is one pipeline stage; "
            "`dvc repro` runs them in order."
        ),
    )
    parser.add_argument(
        "--params",
        default="params.yaml",
        help="path of the params file (default: params.yaml in the working directory)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages as well")
    sub = parser.add_subparsers(dest="command", metavar="STAGE", required=True)
    for name, (_, summary, description) in STAGES.items():
        stage = sub.add_parser(name, help=summary, description=description)
        stage.add_argument(
            "--params",
            default=argparse.SUPPRESS,
            help="path of the params file (default: params.yaml)",
        )
    sub.choices["train"].add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in paths.train"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for chatty in ("great_expectations", "alembic", "httpx", "urllib3", "filelock"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    from recfound.train.trainer import TrainingInterrupted
    from recfound.validation.validate import DataValidationError

    run, _, _ = STAGES[args.command]
    try:
        cfg = load_config(args.params)
        run(cfg, args)
    except ConfigError as exc:
        print(f"recfound: configuration error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except UserInputError as exc:
        print(f"recfound: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except TrainingInterrupted as exc:
        print(f"recfound: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except DataValidationError as exc:
        print(f"recfound: data validation failed:\n{exc}", file=sys.stderr)
        return EXIT_INVALID_DATA
    return 0


if __name__ == "__main__":
    sys.exit(main())
