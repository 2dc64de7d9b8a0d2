"""Optuna search over merge method, coefficients and density (RecFound sets them by hand).

The objective of a candidate merge is the mean over tasks of ``score / best single-checkpoint
score`` on a validation sample: 1.0 means "as good as the best kept checkpoint on every task",
above 1.0 means the merge beats every checkpoint on average. Tasks where every checkpoint scores 0
carry no information and are left out.

The study uses a seeded TPE sampler and sqlite storage: an interrupted ``recfound merge`` resumes
the same study (same name) and only runs the trials still missing. The study name is derived from
the checkpoints' contents and the search settings, so a new training run starts a new study.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
from safetensors.torch import load_file

from recfound.errors import UserInputError
from recfound.merge.methods import StateDict, merge
from recfound.model.adapter_format import WEIGHTS_FILE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MergeChoice:
    """One point of the search space (what a trial proposes, and what the stage writes)."""

    method: str
    coefficients: tuple[float, ...]
    density: float = 1.0
    sparsify: str = "magnitude"

    def to_dict(self) -> dict:
        return {**asdict(self), "coefficients": list(self.coefficients)}


def read_checkpoint_tensors(train_dir: str | Path, names: Sequence[str]) -> dict[str, StateDict]:
    """Adapter tensors of each named training checkpoint (optimizer state left out).

    Missing checkpoints are skipped with a warning; fewer than two left is an error.
    """
    found: dict[str, StateDict] = {}
    for name in names:
        path = Path(train_dir) / name / WEIGHTS_FILE
        if not path.is_file():
            log.warning("checkpoint %s is missing under %s; merging without it", name, train_dir)
            continue
        found[name] = load_file(str(path))
    if len(found) < 2:
        raise UserInputError(
            f"merge needs at least 2 of the checkpoints {list(names)} under {train_dir}, found "
            f"{list(found)}: run `recfound train` first (or list other checkpoints in "
            "merge.checkpoints)"
        )
    return found


def study_name(checkpoints: Mapping[str, StateDict], settings: Mapping[str, object]) -> str:
    """A stable name from the checkpoints' bytes and the search settings."""
    digest = hashlib.sha256(repr(sorted(settings.items())).encode())
    for name in sorted(checkpoints):
        digest.update(name.encode())
        for key in sorted(checkpoints[name]):
            digest.update(key.encode())
            digest.update(checkpoints[name][key].float().numpy().tobytes())
    return f"merge-{digest.hexdigest()[:16]}"


MAX_RATIO = 1.5  # a task's score over its best checkpoint's counts at most this much


def normalised_objective(
    scores: Mapping[str, float], reference: Mapping[str, float]
) -> tuple[float, dict[str, float]]:
    """Mean of ``scores[t] / reference[t]`` over tasks with a positive reference, each ratio at
    most :data:`MAX_RATIO`: a task whose best checkpoint scores near zero (a collapsed embedding,
    a rare label) would otherwise decide the mean with one lucky record (seen here: a merge
    "won" the selection slice 1.32 to 0.92 and lost the report slice 0.85 to 0.92)."""
    ratios = {
        t: min(scores[t] / ref, MAX_RATIO)
        for t, ref in reference.items()
        if ref > 0 and t in scores
    }
    if not ratios:
        raise UserInputError("no task has a positive validation score in any checkpoint")
    return float(sum(ratios.values()) / len(ratios)), ratios


def suggest_choice(
    trial: optuna.Trial, names: Sequence[str], methods: Sequence[str], density_min: float
) -> MergeChoice:
    """The search space: method; a weight per checkpoint (linear, TIES) or t (SLERP of the first
    two); TIES density and sparsification."""
    method = trial.suggest_categorical("method", list(methods))
    if method == "slerp":
        t = trial.suggest_float("slerp_t", 0.0, 1.0)
        return MergeChoice("slerp", (1.0 - t, t))
    weights = tuple(trial.suggest_float(f"w_{name}", 0.0, 1.0) for name in names)
    if sum(weights) <= 0:
        weights = tuple(1.0 for _ in names)
    if method == "ties":
        density = trial.suggest_float("density", density_min, 1.0)
        sparsify = trial.suggest_categorical("sparsify", ["magnitude", "random"])
        return MergeChoice("ties", weights, density, sparsify)
    return MergeChoice("linear", weights)


def apply_choice(
    choice: MergeChoice,
    checkpoints: Mapping[str, StateDict],
    base: StateDict,
    seed: int,
) -> StateDict:
    """The merged adapter tensors of ``choice`` (SLERP uses the first two checkpoints)."""
    states = list(checkpoints.values())
    if choice.method == "slerp":
        states = states[:2]
    return merge(
        choice.method,
        states,
        choice.coefficients[: len(states)],
        density=choice.density,
        sparsify=choice.sparsify,  # type: ignore[arg-type]
        seed=seed,
        base=base,
    )


@dataclass
class TuneResult:
    choice: MergeChoice
    objective: float
    trial: int
    study: optuna.Study


def tune_merge(
    checkpoints: Mapping[str, StateDict],
    base: StateDict,
    score: Callable[[StateDict], dict[str, float]],
    reference: Mapping[str, float],
    *,
    methods: Sequence[str],
    trials: int,
    density_min: float,
    seed: int,
    storage: str,
    scored_on: str,
    on_trial: Callable[[int, MergeChoice, float, dict[str, float]], None] | None = None,
) -> TuneResult:
    """Run (or resume) the study and return its best merge.

    ``score`` maps merged tensors to per-task validation scores; ``scored_on`` names what it
    scores on (a digest of the selection records and the scoring settings, see
    :func:`recfound.merge.from_config.selection_digest`): it is part of the study's name, so a
    study is resumed only when its finished trials were scored on the same records as the new
    ones. ``on_trial`` is called after each new trial (MLflow child runs).
    """
    names = list(checkpoints)
    if "slerp" in methods and len(names) < 2:
        raise UserInputError("SLERP needs two checkpoints")
    settings = {
        "methods": tuple(methods),
        "density_min": density_min,
        "seed": seed,
        "scored_on": scored_on,
    }
    store = optuna.storages.get_storage(storage)
    study = optuna.create_study(
        study_name=study_name(checkpoints, settings),
        storage=store,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        load_if_exists=True,
    )
    fail_stale_trials(study, store)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    if done:
        log.info(
            "resuming merge study %s: %d of %d trials done", study.study_name, len(done), trials
        )
    elif "linear" in methods and not waiting:  # start from the plain average (the usual merge)
        study.enqueue_trial({"method": "linear", **{f"w_{n}": 1.0 for n in names}})

    def objective(trial: optuna.Trial) -> float:
        choice = suggest_choice(trial, names, methods, density_min)
        scores = score(apply_choice(choice, checkpoints, base, seed))
        value, ratios = normalised_objective(scores, reference)
        trial.set_user_attr("choice", choice.to_dict())
        trial.set_user_attr("scores", scores)
        if on_trial:
            on_trial(trial.number, choice, value, scores)
        return value

    remaining = trials - len(done)
    if remaining > 0:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study.optimize(objective, n_trials=remaining, show_progress_bar=True)
    best = study.best_trial
    raw = best.user_attrs["choice"]
    choice = MergeChoice(
        raw["method"], tuple(raw["coefficients"]), float(raw["density"]), raw["sparsify"]
    )
    return TuneResult(choice, float(best.value), best.number, study)


def fail_stale_trials(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
    """Mark trials ``FAIL`` that a killed merge left ``RUNNING``; returns their numbers.

    Only the merge stage uses its study storage, one process at a time, so a trial still running
    when a study is loaded belongs to a process that is gone. Failed trials do not count as done,
    so the resumed study runs that many trials again (TPE ignores failed ones).
    """
    stale = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in stale:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        log.warning(
            "merge study %s: trial %d was left running by a killed merge; marked FAIL and run "
            "again",
            study.study_name,
            trial.number,
        )
    return [t.number for t in stale]


def study_figures(study: optuna.Study, directory: Path) -> list[Path]:
    """Optimisation history and parameter importances as PNG files (what can be drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    makers = {
        "merge_optimization_history.png": ovm.plot_optimization_history,
        "merge_param_importances.png": ovm.plot_param_importances,
    }
    for filename, make in makers.items():
        try:
            with warnings.catch_warnings():  # "experimental" API notes and few-trial caveats
                warnings.simplefilter("ignore")
                axes = make(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # e.g. too few trials
            log.warning("cannot draw %s: %s", filename, exc)
            (directory / filename).unlink(missing_ok=True)  # no stale figure of an older study
            continue
        figure = axes.figure if hasattr(axes, "figure") else plt.gcf()
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        figure.savefig(directory / filename, dpi=110)
        plt.close(figure)
        written.append(directory / filename)
    return written
