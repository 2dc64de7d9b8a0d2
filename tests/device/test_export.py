"""The device artifact runs under onnxruntime and answers like the float folded model.

Tolerances: the float ONNX graph equals the torch model to 1e-4 (export is exact up to float
rounding); the int8 artifact's mean answer log-likelihoods stay within 0.02 of the float model's
(about 6.5 nats here) with the same best candidate, and its embeddings have cosine >= 0.99 with
the float model's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recfound.device.export import ExportError, export_task
from recfound.device.runtime import DeviceModel
from recfound.model.bundle import load_bundle, read_spec
from recfound.model.folded import fold_rec_model

PROMPTS = ["History: Toy Story (1995). Choose one:", "Which one?"]
CANDIDATES = [["GoldenEye (1995)", "Jumanji (1995)", "Casino (1995)"], ["Heat (1995)", "Sabrina"]]
ITEMS = pd.DataFrame(
    {
        "item_id": ["1", "2", "3"],
        "text": ["Toy Story (1995)", "Heat (1995) — genres: Action", "Sabrina (1995)"],
        "token": ["", "", ""],
    }
)


@pytest.fixture(scope="module")
def model(tiny_bundle: tuple[Path, Path]):
    backbone, bundle = tiny_bundle
    spec, _ = read_spec(bundle)
    rec = load_bundle(backbone, bundle)
    rec.pooling, rec.embedding_attention = "last", "causal"  # what the artifact embeds with
    return rec, dict(spec.task_kinds)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    rec, kinds = model
    root = tmp_path_factory.mktemp("device")
    export_task(rec, "genre", kinds, root / "genre", items=ITEMS, keep_float=True)
    export_task(rec, "match", kinds, root / "match", items=ITEMS)
    return {"genre": root / "genre", "match": root / "match"}


def _close(got: list[list[float]], want: list[list[float]], atol: float) -> None:
    for row, expected in zip(got, want, strict=True):
        np.testing.assert_allclose(row, expected, atol=atol)
        assert int(np.argmax(row)) == int(np.argmax(expected))


def test_float_graph_equals_the_folded_model(model, exported) -> None:
    rec, _ = model
    float_model = DeviceModel(exported["genre"], model_file="model.float.onnx")
    expected = fold_rec_model(rec, "genre").score(PROMPTS, CANDIDATES, "genre")
    _close(float_model.score(PROMPTS, CANDIDATES), expected, atol=1e-4)


def test_int8_artifact_scores_within_tolerance_and_is_smaller(model, exported) -> None:
    rec, _ = model
    device = DeviceModel(exported["genre"], threads=1)
    expected = fold_rec_model(rec, "genre").score(PROMPTS, CANDIDATES, "genre")
    _close(device.score(PROMPTS, CANDIDATES), expected, atol=0.02)
    manifest = device.manifest
    assert manifest["task"] == "genre" and manifest["kind"] == "generative"
    assert manifest["model_bytes"] * 2 <= manifest["float_model_bytes"]
    assert (exported["genre"] / "tokenizer" / "tokenizer.json").is_file()


def test_int8_embeddings_and_catalogue(model, exported) -> None:
    rec, _ = model
    device = DeviceModel(exported["match"])
    texts = ["Toy Story (1995)", "a user who likes thrillers\nHeat (1995)"]
    expected = fold_rec_model(rec, "match").embed(texts, "match").numpy()
    got = device.embed(texts)
    cosine = (got * expected).sum(1)
    assert np.all(cosine >= 0.99), cosine
    assert device.item_embeddings.shape == (3, expected.shape[1])
    scores = device.retrieve(["Toy Story (1995)"])
    assert scores.shape == (1, 3) and int(scores.argmax()) == 0


def test_refuses_unknown_task_and_unsupported_pooling(model, tiny_bundle, tmp_path: Path) -> None:
    rec, kinds = model
    with pytest.raises(ExportError, match="unknown task 'nope'"):
        export_task(rec, "nope", kinds, tmp_path / "x")
    mean_pooled = load_bundle(*tiny_bundle)  # the bundle's own settings: mean pooling
    with pytest.raises(ExportError, match="last-token pooling"):
        export_task(mean_pooled, "match", kinds, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(ExportError, match="not a device artifact"):
        DeviceModel(tmp_path)
