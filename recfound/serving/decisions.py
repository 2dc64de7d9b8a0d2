"""How the served model decides a two-label answer: at the cut evaluation chose, not the argmax.

Evaluation answers a two-label task (ctr_prediction, product_matching, …) with its first label
where the margin ``log p(first) - log p(second)`` exceeds a cut chosen on the task's validation
records (:func:`recfound.evaluation.protocols.decision_threshold`); the cut is in each task's
per-record outputs (``eval_records.json``). Registration writes those cuts next to the model
(``decisions.json``: task → its two labels in order and the cut) and the served model answers with
them, so a served answer is the answer evaluation scored.

A request whose candidates are a task's two labels (in either order) gets the label the cut
chooses; any other candidate list, or a task without a cut, gets the best-scored candidate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from recfound import artifacts
from recfound.evaluation.outputs import ChoiceOutputs, RecordOutputs, chooses_first

DECISIONS_FILE = "decisions.json"


class DecisionsError(ValueError):
    """A decisions file that cannot be read as task → labels and cut."""


@dataclass(frozen=True)
class LabelCut:
    """``labels[0]`` is chosen where its log-probability exceeds ``labels[1]``'s by more than
    ``threshold``."""

    labels: tuple[str, str]
    threshold: float

    def choose(self, candidates: Sequence[str], scores: Sequence[float]) -> int | None:
        """The index into ``candidates`` of the label the cut chooses; None when the candidates
        are not exactly this task's two labels (the caller answers with the best score)."""
        if len(candidates) != 2 or set(candidates) != set(self.labels):
            return None
        first, second = (list(candidates).index(label) for label in self.labels)
        margin = float(scores[first]) - float(scores[second])
        return first if chooses_first(margin, self.threshold) else second


def cuts_from_records(
    records: Mapping[str, RecordOutputs], tasks: Sequence[str]
) -> dict[str, LabelCut]:
    """The cut of every task of ``tasks`` whose evaluated answers were decided at one."""
    return {
        task: LabelCut((str(out.labels[0]), str(out.labels[1])), float(out.threshold))
        for task, out in records.items()
        if task in tasks
        and isinstance(out, ChoiceOutputs)
        and out.threshold is not None
        and len(out.labels) == 2
    }


def write_decisions(path: str | Path, cuts: Mapping[str, LabelCut]) -> Path:
    document = {
        task: {"labels": list(cut.labels), "threshold": cut.threshold}
        for task, cut in sorted(cuts.items())
    }
    artifacts.write_json(path, document)
    return Path(path)


def read_decisions(path: str | Path | None) -> dict[str, LabelCut]:
    """Task → cut from a decisions file; {} when there is none (a version registered without
    one answers with the best-scored candidate)."""
    if path is None or not Path(path).is_file():
        return {}
    try:
        document = json.loads(Path(path).read_text())
        cuts = {}
        for task, entry in document.items():
            first, second = entry["labels"]
            cuts[task] = LabelCut((str(first), str(second)), float(entry["threshold"]))
        return cuts
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DecisionsError(
            f"{path} is not a decisions file (task -> {{labels: [first, second], threshold}}): "
            f"{type(exc).__name__}: {exc}"
        ) from None
