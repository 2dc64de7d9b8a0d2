"""Write one task's model as a small int8 ONNX artifact for CPUs and devices.

The artifact directory holds

- ``model.onnx``: the task-folded model (TMoLE experts folded into W0,
  :meth:`TMoLEModel.merge_into_base`) as one ONNX graph, weights int8 (onnxruntime dynamic
  quantisation: int8 weights, activations quantised per batch at run time);
- ``tokenizer/``: the tokenizer (``save_pretrained``);
- ``items.parquet``: the item catalogue (``item_id``, ``text``, ``token``) and, for an embedding
  task, ``item_embeddings.npy`` (the catalogue embedded by this artifact itself, L2-normalised);
- ``manifest.json``: task, kind, settings the runtime needs, sizes and provenance.

Why ONNX + onnxruntime rather than ``torch.export``: the file runs without torch (onnxruntime is
a ~15 MB CPU wheel and has mobile/web builds), and its dynamic int8 quantisation needs no
calibration data and quantises the embedding table (Gather) too. The graph is built from
:class:`~recfound.inference.decoder.DecoderSteps` (plain tensor ops), so it traces without
transformers' mask/cache machinery.

The graph: ``(input_ids, attention_mask, positions) -> (hidden, logprobs)``, right-padded
inputs ``(batch, seq)``; ``positions`` ``(batch, k)`` picks the positions whose final-normed
hidden state ``(batch, k, hidden)`` and vocabulary log-probabilities ``(batch, k, vocab)`` come
out. Scoring asks for the positions before each answer token, embedding for the last token.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from recfound import artifacts
from recfound.device.artifact import (
    FLOAT_MODEL_FILE,
    FORMAT_VERSION,
    ITEM_EMBEDDINGS_FILE,
    ITEMS_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    TOKENIZER_DIR,
    ExportError,
)
from recfound.device.runtime import DeviceModel
from recfound.inference.decoder import DecoderSteps
from recfound.model.folded import fold_rec_model
from recfound.model.recmodel import RecModel

log = logging.getLogger(__name__)

OPSET = 17


class ScoringGraph(nn.Module):
    """The exported computation (see the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.steps = DecoderSteps(model)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, _ = self.steps.run(input_ids, attention_mask)
        normed = self.steps.norm(hidden)
        index = positions.unsqueeze(-1).expand(-1, -1, normed.shape[-1])
        picked = normed.gather(1, index)
        logprobs = torch.log_softmax(self.steps.lm_head(picked).float(), dim=-1)
        return picked, logprobs


@dataclass(frozen=True)
class ExportedArtifact:
    """Where the artifact went and what it weighs."""

    directory: Path
    task: str
    kind: str
    model_bytes: int
    float_model_bytes: int
    total_bytes: int

    def to_dict(self) -> dict:
        return {**asdict(self), "directory": str(self.directory)}


def check_exportable(rec: RecModel, task: str, task_kinds: dict[str, str]) -> str:
    """The task's kind; raises :class:`ExportError` for what the artifact cannot answer."""
    if task not in task_kinds:
        raise ExportError(
            f"unknown task {task!r}; this model answers: {', '.join(sorted(task_kinds))}"
        )
    kind = task_kinds[task]
    if kind == "embedding" and (rec.pooling, rec.embedding_attention) != ("last", "causal"):
        raise ExportError(
            f"the device artifact embeds with last-token pooling and causal attention; this model "
            f"uses pooling {rec.pooling!r} and embedding_attention {rec.embedding_attention!r} "
            "(model.pooling / model.embedding_attention in params.yaml)"
        )
    return kind


def export_onnx(model: nn.Module, path: Path, tokenizer) -> None:
    """Trace :class:`ScoringGraph` of ``model`` to ``path`` (float32, dynamic batch/seq/k)."""
    graph = ScoringGraph(model).eval()
    sample = tokenizer(["a sample request", "two"], padding=True, return_tensors="pt")
    ids, mask = sample["input_ids"], sample["attention_mask"]
    positions = torch.zeros((ids.shape[0], 2), dtype=torch.long)
    with torch.no_grad():
        torch.onnx.export(
            graph,
            (ids, mask, positions),
            str(path),
            dynamo=False,
            input_names=["input_ids", "attention_mask", "positions"],
            output_names=["hidden", "logprobs"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "seq"},
                "attention_mask": {0: "batch", 1: "seq"},
                "positions": {0: "batch", 1: "k"},
                "hidden": {0: "batch", 1: "k"},
                "logprobs": {0: "batch", 1: "k"},
            },
            opset_version=OPSET,
        )


def quantize_int8(source: Path, target: Path) -> None:
    """onnxruntime dynamic quantisation: int8 weights of every MatMul and Gather."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)


def export_task(
    rec: RecModel,
    task: str,
    task_kinds: dict[str, str],
    directory: str | Path,
    items: pd.DataFrame | None = None,
    quantize: bool = True,
    keep_float: bool = False,
    provenance: dict | None = None,
) -> ExportedArtifact:
    """Fold ``task`` into a copy of ``rec``'s weights and write the artifact to ``directory``
    (atomically: readers see the old directory or the new one).

    ``items`` (``item_id``, ``text``, ``token``) is the catalogue; an embedding task's artifact
    also stores the catalogue's embeddings, computed by the artifact itself. ``quantize=False``
    writes a float32 ``model.onnx`` (for comparisons); ``keep_float`` keeps the float file next
    to the int8 one.
    """
    kind = check_exportable(rec, task, task_kinds)
    folded = fold_rec_model(rec, task)
    directory = Path(directory)
    with artifacts.staged_directory(directory) as staging, tempfile.TemporaryDirectory() as tmp:
        float_path = Path(tmp) / FLOAT_MODEL_FILE
        export_onnx(folded.model, float_path, rec.tokenizer)
        if quantize:
            quantize_int8(float_path, staging / MODEL_FILE)
        else:
            float_path.replace(staging / MODEL_FILE)
        float_bytes = (float_path if quantize else staging / MODEL_FILE).stat().st_size
        if quantize and keep_float:
            float_path.replace(staging / FLOAT_MODEL_FILE)
        rec.tokenizer.save_pretrained(staging / TOKENIZER_DIR)
        manifest = {
            "format_version": FORMAT_VERSION,
            "task": task,
            "kind": kind,
            "max_length": rec.max_length,
            "pooling": rec.pooling,
            "quantization": "onnxruntime dynamic int8 (QInt8 weights)" if quantize else None,
            "opset": OPSET,
            "float_model_bytes": float_bytes,
            "provenance": provenance or {},
        }
        artifacts.write_json(staging / MANIFEST_FILE, manifest)
        if items is not None:
            table = items[[c for c in ("item_id", "text", "token") if c in items.columns]]
            table.to_parquet(staging / ITEMS_FILE, index=False)
            if kind == "embedding":
                vectors = DeviceModel(staging).embed(table["text"].astype(str).tolist())
                np.save(staging / ITEM_EMBEDDINGS_FILE, vectors.astype(np.float32))
        # the sizes go into the manifest before the swap: the folder is never seen without them
        model_bytes = (staging / MODEL_FILE).stat().st_size
        total = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
        result = ExportedArtifact(directory, task, kind, model_bytes, float_bytes, total)
        artifacts.write_json(staging / MANIFEST_FILE, {**manifest, **result.to_dict()})
    log.info(
        "exported %s (%s) to %s: model %.2f MB (float %.2f MB)",
        task,
        kind,
        directory,
        model_bytes / 1e6,
        float_bytes / 1e6,
    )
    return result
