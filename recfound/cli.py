"""The ``recfound`` command: one subcommand per pipeline stage (what ``dvc.yaml`` runs).

Each subcommand reads params.yaml once, calls the stage function and turns the errors a user can
cause (bad config, bad data, failed validation) into a short message and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from recfound.config import ALL_TASKS, SOURCES, Config, ConfigError, load_config
from recfound.errors import (
    EXIT_INVALID_DATA,
    EXIT_USER_ERROR,
    StageStopped,
    UserInputError,
)

log = logging.getLogger("recfound")


def _stage(name: str) -> Callable[[Config, argparse.Namespace], None]:
    """The command of a stage without options: ``recfound.stages.<name>.run_<name>(cfg)``.
    The stage is imported when its command runs, so one command does not import what the
    others need (torch, Great Expectations, MLflow)."""

    def command(cfg: Config, args: argparse.Namespace) -> None:
        getattr(importlib.import_module(f"recfound.stages.{name}"), f"run_{name}")(cfg)

    return command


def _fetch_data(cfg: Config, args: argparse.Namespace) -> None:
    from recfound.data.versioned import DataLocation
    from recfound.stages.fetch_data import run_fetch_data

    location = DataLocation(args.repo, rev=args.rev, remote=args.remote, path=args.path)
    print(f"fetched {run_fetch_data(cfg, location).describe()} into {cfg.paths.interim}")


def _train(cfg: Config, args: argparse.Namespace) -> None:
    from recfound.stages.train import run_train

    run_train(cfg, resume=args.resume)


def _promote(cfg: Config, args: argparse.Namespace) -> None:
    from recfound.stages.register import run_promote

    run_promote(cfg, version=args.version, force=args.force)


def _export(cfg: Config, args: argparse.Namespace) -> None:
    from recfound.stages.export import run_export

    report = run_export(cfg, args.task, out=args.out)
    print(f"wrote {report['directory']} ({report['model_bytes'] / 1e6:.2f} MB int8 model)")


def _export_split(cfg: Config, args: argparse.Namespace) -> None:
    from recfound.data.export import export_recbole_split, load_split_inputs

    interactions, items, users = load_split_inputs(cfg.paths.tasks, cfg.paths.interim)
    written = export_recbole_split(interactions, items, users, args.dir, name=args.name)
    rows = ", ".join(f"{split} {count}" for split, count in written.rows.items())
    print(f"wrote {len(written.files)} files to {written.folder} (interactions: {rows})")
    for filename in written.files:
        print(f"  {written.folder / filename}")


def _pipeline(cfg: Config, args: argparse.Namespace) -> None:
    # pipelines/ and components/ are installed with recfound (they need kfp; the library doesn't)
    from pipelines.commands import run_command

    run_command(cfg, args)


STAGES: dict[str, tuple[Callable[[Config, argparse.Namespace], None], str, str]] = {
    "ingest": (
        _stage("ingest"),
        "read the configured source into normalized parquet tables",
        f"Reads data.source ({', '.join(SOURCES)}) and writes interactions, items and users as "
        "parquet under paths.interim (default data/interim/), with source.json describing the "
        "rating range and the signals the source carries. Options in params.yaml: "
        "data.path, data.dataset_name, data.rating_min/rating_max, data.rating_threshold "
        "(like = rating at or above it), data.min_user_interactions / data.min_item_interactions "
        "(k-core filtering), data.max_users (tiny runs).",
    ),
    "fetch-data": (
        _fetch_data,
        "fetch the normalized tables of a data repository at a Git revision (DVC)",
        "Instead of `ingest` (which re-reads the raw source): downloads the DVC-tracked output "
        "of `ingest` (the repository's paths.interim, or --path) at --rev from the "
        "repository's DVC remote (--remote, default: its default remote) into paths.interim, "
        "with data_version.json (the commit and the md5 from that revision's dvc.lock). "
        "This is the first data step of a Kubeflow run (pipeline parameters data_repo, "
        "data_rev, data_remote).",
    ),
    "validate": (
        _stage("validate"),
        "check the normalized tables with Great Expectations",
        "Runs the expectation suites on the tables in paths.interim: ids not null, ratings in "
        "the source's range, plausible timestamps, every interaction's item and user known, "
        "unique item ids, non-empty titles. On failure prints each failed expectation and exits "
        f"with code {EXIT_INVALID_DATA}. Full results (JSON) and data docs (HTML) go to "
        "reports/validation/.",
    ),
    "build-tasks": (
        _stage("build_tasks"),
        "build the train/valid/test datasets of every configured task",
        "Builds each task in tasks.enabled that the source supports (others are skipped with the "
        "reason), splits per user chronologically (last interaction = test, second to last = "
        "valid), validates the datasets (including a leakage check) and only then replaces "
        "paths.tasks (default data/tasks/<task>/<split>.parquet). Record counts go to "
        f"reports/task_counts.json. Options in params.yaml: tasks.enabled (any of: "
        f"{', '.join(ALL_TASKS)}), tasks.history_length, tasks.num_candidates, "
        "tasks.max_train_per_task, tasks.max_eval_per_task, tasks.cold_item_fraction.",
    ),
    "baselines": (
        _stage("baselines"),
        "train the learned baselines (SASRec, biased MF) once per data version",
        "Trains SASRec (full-softmax cross-entropy over the catalogue, early stopping on the "
        "validation split's full-ranking NDCG with train items excluded) and a biased matrix "
        "factorisation (early stopping on validation RMSE) on the interactions in paths.tasks, "
        "and saves both under paths.baselines (default models/baselines/{sasrec,mf}); fit time, "
        "epochs and best validation figures go to reports/baselines.json, every epoch's "
        "validation figures to MLflow. `evaluate` scores them beside the model. Options in "
        "params.yaml: baselines.sasrec.*, baselines.mf.*, baselines.threads.",
    ),
    "pretrain": (
        _stage("pretrain"),
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
        "Trains the adapter (model.adapter: tmole, lora or option) on every built task at once; "
        "train.strategy picks the sampler (s2sched, uniform, proportional). Writes checkpoints "
        "last/, best_generative/ and best_embedding/ under paths.train (default models/train/), "
        "reports/train.json and plots under reports/plots/; every step's per-task loss, "
        "sampling probabilities, learning rate and tokens/s go to MLflow. --resume continues "
        "from the last checkpoint; SIGTERM writes a checkpoint before exiting. For several "
        "processes: accelerate launch --num_processes N -m recfound.cli train.",
    ),
    "merge": (
        _stage("merge"),
        "merge the kept checkpoints; Optuna tunes method, coefficients and density",
        "Merges the training checkpoints in merge.checkpoints (default best_generative, "
        "best_embedding, last) by linear averaging, SLERP or TIES (magnitude or random "
        "sparsification) of their task vectors. An Optuna study (TPE, seeded, sqlite next to "
        "paths.merged so an interrupted run resumes) runs merge.trials trials maximising the "
        "mean over tasks of the validation score divided by the best single checkpoint's "
        "(merge.max_per_task validation records per task); every trial is an MLflow child "
        "run. Writes the model bundle to paths.merged (default models/merged/), "
        "reports/merge.json and the study's figures under reports/plots/.",
    ),
    "evaluate": (
        _stage("evaluate"),
        "evaluate the merged model and the baselines on every task's test split",
        "Full ranking over all items for retrieval tasks (Recall/NDCG@K, MRR; history "
        "excluded), HR/NDCG for candidate ranking, RMSE/MAE and F1 for ratings, AUC/F1 for "
        "like/dislike, accuracy/F1 for labels, token F1/BLEU/ROUGE-L for text; baselines "
        "(popularity, item-kNN, BM25, majority answer) on the same records. Writes "
        "reports/metrics.json, reports/evaluation.md and reports/plots/evaluation_scores.*; "
        "options: evaluate.max_per_task, evaluate.ks, evaluate.max_new_tokens.",
    ),
    "ablate": (
        _stage("ablate"),
        "RecFound's ablation rows: without merge, S2Sched, TMoLE, all three",
        "Trains the ablation variants with the main run's budget and seed (uniform sampling; "
        "one LoRA with the TMoLE parameter count; both) under models/ablation/, evaluates every "
        "row on the same test records as `evaluate`, and writes reports/ablation.json and "
        "reports/ablation.md (one table per task group).",
    ),
    "register": (
        _stage("register"),
        "register the merged model in MLflow; alias champion only if it passes the gates",
        "Logs the merged model (paths.merged on the backbone in paths.backbone) as an MLflow "
        "pyfunc model that answers {task, input, candidates} rows with generations, embeddings "
        "or scores, and registers it as registry.model_name: the run holds the params, the "
        "scores of reports/metrics.json and the datasets; the version a few tags (data version, "
        "git commit, primary metric, gate result) and a description of its scores against the "
        "champion. Gates from params.yaml: the "
        "registry.primary_metric must beat the champion's by registry.min_improvement and no "
        "task may drop more than registry.max_regression; a passing version gets alias "
        "champion, any other alias challenger. Writes reports/registry.json. Tracking store: "
        "tracking.tracking_uri, or MLFLOW_TRACKING_URI when set.",
    ),
    "recommend": (
        _stage("recommend"),
        "write every user's top-k from the merged model (batch recommendation lists)",
        "Builds the serving catalogue of paths.tasks (every item; each user's train + valid "
        "history) and its ANN index, then every user's top recommend.k items on each path of "
        "recommend.paths (generative: identifier logits; embedding: user2item query against "
        "the index; fused: reciprocal-rank fusion), seen items excluded. Writes "
        "paths.recommendations/recommendations.parquet and reports/recommend.json (users per "
        "second; Recall/NDCG@10 against the test items, and on validation whether fusion "
        "helps) and logs both to an MLflow run.",
    ),
    "promote": (
        _promote,
        "make a registered version champion by hand (same gates unless --force)",
        "Moves alias champion of registry.model_name to --version N when that version passes "
        "the promotion gates against the current champion (registry.primary_metric, "
        "registry.min_improvement, registry.max_regression; the scores are read from the "
        "versions' runs). A version that fails is left as it is and the failed gates are "
        f"printed (exit code {EXIT_USER_ERROR}); --force promotes it anyway.",
    ),
    "export": (
        _export,
        "write one task's folded, int8-quantised ONNX model for CPUs and devices",
        "Folds the task's TMoLE experts into the backbone's weights (paths.backbone + "
        "paths.merged), exports the model as ONNX and quantises its weights to int8 "
        "(onnxruntime dynamic quantisation); writes model.onnx, the tokenizer, the item "
        "catalogue (and, for an embedding task, the catalogue's embeddings) and manifest.json to "
        "models/device/TASK/ (or --out), and logs the folder next to the registered version of "
        "reports/registry.json (artifact device/TASK of its run, version tag device.TASK). "
        "Run it with recfound.device.runtime.DeviceModel (onnxruntime, no torch).",
    ),
    "export-split": (
        _export_split,
        "write the train/valid/test split for another library (RecBole atomic files)",
        "Writes the exact per-user leave-one-out split that build-tasks made "
        "(paths.tasks/interactions.parquet, with the catalogue and the user attributes from "
        "paths.interim) as RecBole benchmark files in DIR: NAME.{train,valid,test}.inter for "
        "general models, NAME.seq_{train,valid,test}.inter (with each target's item_id_list) for "
        "sequential models, NAME.item, NAME.user, and recbole.yaml / recbole_sequential.yaml, "
        "the RecBole configs that reproduce our protocol. RecBole reads DATA_PATH/NAME/, so DIR "
        "must be named NAME (default recfound, e.g. exports/recfound). See README.md, "
        "'Check our figures with RecBole'.",
    ),
    "pipeline": (
        _pipeline,
        "compile, submit or locally run the Kubeflow pipeline",
        "The stages as a Kubeflow Pipelines (v2) pipeline whose parameters mirror params.yaml "
        "(one per section; defaults from the params file) plus the train step's GPUs, CPU and "
        "memory. compile writes the YAML package; submit starts a run on a KFP endpoint "
        "(--param KEY=VALUE overrides a dotted params.yaml key such as train.steps=500, or a "
        "resource: train_gpus, gpu_type, train_cpu, train_memory, step_cpu, step_memory); "
        "run-local runs every step here with kfp.local's subprocess runner. See README.md, "
        "'Run on Kubeflow'.",
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
        "--resume",
        action="store_true",
        help="continue the interrupted run (its partial directory beside paths.train), else from "
        "the last checkpoint in paths.train",
    )
    fetch = sub.choices["fetch-data"]
    fetch.add_argument("--repo", required=True, help="Git URL or path of the data repository")
    fetch.add_argument("--rev", default=None, help="branch, tag or commit (default: HEAD)")
    fetch.add_argument("--remote", default=None, help="DVC remote (default: the repo's default)")
    fetch.add_argument("--path", default=None, help="DVC output (default: its paths.interim)")
    promote = sub.choices["promote"]
    promote.add_argument(
        "--version", type=int, required=True, help="the registered version to promote"
    )
    promote.add_argument("--force", action="store_true", help="skip the promotion gates")
    device = sub.choices["export"]
    device.add_argument("--task", required=True, help="the task to export (one of the model's)")
    device.add_argument("--out", default=None, help="folder to write (default models/device/TASK)")
    export = sub.choices["export-split"]
    export.add_argument("dir", metavar="DIR", help="folder to write (replaced as a whole)")
    export.add_argument(
        "--format", choices=["recbole"], default="recbole", help="file format (default: recbole)"
    )
    export.add_argument("--name", default="recfound", help="dataset name (default: recfound)")
    _add_pipeline_actions(sub.choices["pipeline"])
    return parser


def _add_pipeline_actions(pipeline: argparse.ArgumentParser) -> None:
    actions = pipeline.add_subparsers(dest="action", metavar="ACTION", required=True)
    compile_ = actions.add_parser("compile", help="write the pipeline package (YAML)")
    compile_.add_argument("-o", "--output", required=True, help="path of the YAML package")
    submit = actions.add_parser("submit", help="start a run on a Kubeflow Pipelines endpoint")
    submit.add_argument("--host", required=True, help="KFP endpoint, e.g. http://localhost:8080")
    submit.add_argument("--experiment", required=True, help="KFP experiment of the run")
    submit.add_argument("--run-name", default=None, help="name of the run in the KFP UI")
    submit.add_argument("--namespace", default=None, help="profile namespace (multi-user KFP)")
    submit.add_argument(
        "--no-cache", action="store_true", help="run every step, even those KFP has cached"
    )
    local = actions.add_parser(
        "run-local", help="run every step here with kfp.local (no cluster, no image)"
    )
    local.add_argument(
        "--output-dir", default="kfp_local", help="where the steps' outputs go (default: kfp_local)"
    )
    for action in (compile_, submit, local):
        action.add_argument("--params", default=argparse.SUPPRESS, help="path of the params file")
    for action in (compile_, submit):
        action.add_argument(
            "--image",
            default=None,
            help="container image of every step (default: $RECFOUND_IMAGE, else the project's)",
        )
    for action in (submit, local):
        action.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a setting (train.steps=500) or a resource (train_gpus=4); repeatable",
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # faiss.loader logs each CPU build it tries and fails to load (AVX512-SPR, AVX512) as INFO
    for chatty in ("great_expectations", "alembic", "httpx", "urllib3", "filelock", "faiss"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
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
    except StageStopped as exc:
        print(f"recfound: {exc.headline}{exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
