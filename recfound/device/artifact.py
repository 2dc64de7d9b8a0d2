"""The device artifact's on-disk layout: what :mod:`recfound.device.export` writes and
:mod:`recfound.device.runtime` reads (one place for both, so neither imports the other for it)."""

from __future__ import annotations

from recfound.errors import UserInputError

MODEL_FILE = "model.onnx"
FLOAT_MODEL_FILE = "model.float.onnx"
MANIFEST_FILE = "manifest.json"
TOKENIZER_DIR = "tokenizer"
ITEMS_FILE = "items.parquet"
ITEM_EMBEDDINGS_FILE = "item_embeddings.npy"
FORMAT_VERSION = 1


class ExportError(UserInputError):
    """The model or the task cannot be exported as asked (or an artifact cannot be read)."""
