"""Every bench script still imports against today's code and parses its command line.

The benches are run by hand (they need the pipeline's trained model and minutes of CPU), so
nothing else would notice when a refactor renames what one of them imports. Each is loaded the
way it is run (``python bench/NAME.py``: bench/ and the checkout on ``sys.path``) and asked for
``--help``, which builds its whole argument parser and exits before any work.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from recfound.evaluation.outputs import BootstrapSettings, ChoiceOutputs, RankOutputs

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
# modules the scripts import, not scripts themselves
HELPERS = {"paired", "scratch", "serving_pyfunc"}
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if p.stem not in HELPERS)


def load_bench_module(name: str, monkeypatch: pytest.MonkeyPatch):
    """bench/NAME.py as a module, imported the way its scripts import it."""
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.syspath_prepend(str(BENCH))
    path = BENCH / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_script_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_bench_file_is_listed() -> None:
    """A new bench is either a script (with ``main``) or a helper named here."""
    assert len(SCRIPTS) >= 15
    for path in SCRIPTS:
        text = path.read_text()
        assert "def main(" in text and '__name__ == "__main__"' in text, path.name


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_bench_script_imports_and_prints_help(
    path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = load_bench_module(path.stem, monkeypatch)
    monkeypatch.setattr(sys, "argv", [str(path), "--help"])
    with pytest.raises(SystemExit) as exited:
        module.main()
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:"), out[:200]


def test_serving_bench_models_load_and_answer(
    tiny_bundle: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench/serving.py's pyfunc rows load a bundle the way serving does and answer a request;
    the bare row answers without the adapter, so its generation scores differ."""
    module = load_bench_module("serving_pyfunc", monkeypatch)
    models = module.pyfunc_models(*tiny_bundle)
    assert sorted(models) == ["pyfunc_bare", "pyfunc_folded", "pyfunc_unfolded"]
    request = [
        {"task": "genre", "input": "Toy Story (1995)", "candidates": ["Comedy", "Drama"]},
        {"task": "match", "input": "GoldenEye (1995)", "candidates": None},
    ]
    answers = {name: model.predict(None, request, {}) for name, model in models.items()}
    for frame in answers.values():
        assert frame["output_type"].tolist() == ["scores", "embedding"]
    adapted = answers["pyfunc_folded"].iloc[0]["scores"]
    bare = answers["pyfunc_bare"].iloc[0]["scores"]
    assert len(adapted) == len(bare) == 2
    assert adapted != pytest.approx(bare, abs=1e-4)


def test_serving_bench_drops_carry_paired_intervals(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/serving.py reports each variant's drop against the float folded model with a paired
    interval: a variant that answers as the reference does drops exactly 0, one that misses
    records the reference gets right drops by their share, with an interval above 0."""
    module = load_bench_module("serving", monkeypatch)
    n = 60
    truth = np.zeros(n, dtype=np.int64)
    right = truth.copy()
    wrong = truth.copy()
    wrong[: n // 3] = 1  # a third of the records answered wrongly

    def outputs(predicted: np.ndarray) -> ChoiceOutputs:
        keys = {"record": np.arange(n), "user_id": [str(i) for i in range(n)]}
        return ChoiceOutputs(**keys, labels=["a", "b"], target=truth, predicted=predicted)

    quality = module.variant_quality(
        {"recmodel_folded": outputs(right), "same": outputs(right), "worse": outputs(wrong)},
        "accuracy",
    )
    assert quality["recmodel_folded"] == 1.0 and quality["worse"] == pytest.approx(2 / 3)
    assert quality["drop"]["same"]["difference"] == 0.0
    assert quality["drop"]["same"]["ci"] == [0.0, 0.0]
    worse = quality["drop"]["worse"]
    assert worse["difference"] == pytest.approx(1 / 3) and worse["excludes_zero"]
    assert 0 < worse["ci"][0] < 1 / 3 < worse["ci"][1]
    assert "recmodel_folded" not in quality["drop"]
    low, high = quality["interval"]["worse"]
    assert low < 2 / 3 < high


def test_embedding_budget_pairs_every_arm_with_the_default_record_by_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bench/embedding_budget.py compares each arm with the default's on the same records: an arm
    that ranks as the default does (its records in another order) differs by exactly 0 with an
    interval of [0, 0], one that loses a third of its hits by what they were worth, with a paired
    interval below 0."""
    module = load_bench_module("embedding_budget", monkeypatch)
    n = 60

    def arm(ranks: np.ndarray, order: np.ndarray) -> dict[str, RankOutputs]:
        keys = {"record": order, "user_id": [str(i) for i in order]}
        return {"query2item": RankOutputs(**keys, ranks=ranks[order])}

    hits = 1 + np.arange(n) % 5  # every record's item in the top 5, at different ranks
    misses = hits.copy()
    misses[: n // 3] = 1000  # a third of them ranked beyond 20
    lost = -np.sum(1 / hits[: n // 3]) / n
    rows = [
        {
            "queries_per_train_item": q,
            "embedding_batch_size": b,
            "score_metrics": {"query2item": "mrr@20"},
        }
        for q, b in ((1, 32), (4, 32), (4, 64))
    ]
    outputs = [arm(hits, np.arange(n)[::-1]), arm(misses, np.arange(n)), arm(hits, np.arange(n))]
    assert module.versus_reference(rows, outputs, 2, BootstrapSettings()) == "4:64"
    assert "minus_default" not in rows[2]
    same, worse = rows[0]["minus_default"]["query2item"], rows[1]["minus_default"]["query2item"]
    assert same["difference"] == 0.0 and same["ci"] == [0.0, 0.0] and same["n_records"] == n
    assert worse["difference"] == pytest.approx(lost) and worse["excludes_zero"]
    assert worse["ci"][0] < lost < worse["ci"][1] < 0
