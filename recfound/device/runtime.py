"""Run an exported device artifact with onnxruntime (no torch needed at run time).

:class:`DeviceModel` answers what the registered model answers for its one task: candidate
scores (mean log-likelihood per answer token, as :meth:`RecModel.score`) and embeddings
(last-token pooling, L2-normalised), with the catalogue's embeddings read from the artifact for
retrieval. Free text generation is not part of the artifact.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recfound.device.artifact import (
    ITEM_EMBEDDINGS_FILE,
    ITEMS_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    TOKENIZER_DIR,
    ExportError,
)
from recfound.model.recmodel import IGNORE_INDEX, answer_rows, flat_pairs, per_request


class DeviceModel:
    """An exported artifact directory, loaded for inference on CPU."""

    def __init__(
        self, directory: str | Path, threads: int | None = None, model_file: str = MODEL_FILE
    ) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        directory = Path(directory)
        manifest_path = directory / MANIFEST_FILE
        if not manifest_path.is_file() or not (directory / model_file).is_file():
            raise ExportError(
                f"{directory} is not a device artifact (no {MANIFEST_FILE} or {model_file}); "
                "write one with `recfound export --task TASK`"
            )
        self.directory = directory
        self.manifest = json.loads(manifest_path.read_text())
        self.task: str = self.manifest["task"]
        self.kind: str = self.manifest["kind"]
        self.max_length: int = int(self.manifest["max_length"])
        self.tokenizer = AutoTokenizer.from_pretrained(
            directory / TOKENIZER_DIR, local_files_only=True
        )
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(directory / model_file), options, providers=["CPUExecutionProvider"]
        )
        items = directory / ITEMS_FILE
        self.items = pd.read_parquet(items) if items.is_file() else None
        vectors = directory / ITEM_EMBEDDINGS_FILE
        self.item_embeddings = np.load(vectors) if vectors.is_file() else None

    def _run(
        self, rows: Sequence[Sequence[int]], positions: Sequence[Sequence[int]]
    ) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.tokenizer.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        k = max(len(p) for p in positions)
        pos = np.zeros((len(rows), k), dtype=np.int64)
        for i, p in enumerate(positions):
            pos[i, : len(p)] = p
        hidden, logprobs = self.session.run(
            None, {"input_ids": ids, "attention_mask": mask, "positions": pos}
        )
        return hidden, logprobs

    def score(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        length_normalize: bool = True,
    ) -> list[list[float]]:
        """Log-likelihood of each candidate after its prompt (mean per token by default)."""
        flat_prompts, flat_answers = flat_pairs(prompts, candidates)
        if not flat_answers:
            return [[] for _ in prompts]
        rows, labels = answer_rows(self.tokenizer, flat_prompts, flat_answers, self.max_length)
        # position j predicts token j + 1: ask for the positions before each answer token
        before = [[j for j in range(len(lab) - 1) if lab[j + 1] != IGNORE_INDEX] for lab in labels]
        _, logprobs = self._run(rows, before)
        values = []
        for i, (lab, where) in enumerate(zip(labels, before, strict=True)):
            tokens = [lab[j + 1] for j in where]
            total = float(logprobs[i, np.arange(len(where)), tokens].sum())
            values.append(total / max(1, len(where)) if length_normalize else total)
        return per_request(values, candidates)

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """``(len(texts), hidden)`` L2-normalised last-token embeddings."""
        parts = []
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start : start + batch_size])
            rows = self.tokenizer(chunk, truncation=True, max_length=self.max_length)["input_ids"]
            hidden, _ = self._run(rows, [[len(r) - 1] for r in rows])
            vectors = hidden[:, 0]
            parts.append(vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12))
        return np.concatenate(parts) if parts else np.empty((0, 0), dtype=np.float32)

    def retrieve(self, queries: Sequence[str]) -> np.ndarray:
        """``(len(queries), items)`` cosine similarities to the stored catalogue embeddings."""
        if self.item_embeddings is None:
            raise ExportError(
                f"{self.directory} holds no item embeddings: export an embedding task with the "
                "item catalogue"
            )
        return self.embed(queries) @ self.item_embeddings.T
