"""Plain LoRA through peft: the single-adapter baseline behind TMoLE's interface.

One adapter serves every task, so ``task(...)`` is accepted and ignored. Saving and loading use
the one adapter format (:mod:`recfound.model.adapter_format`: ``adapter_config.json`` with the
LoRA's options + ``adapter_model.safetensors``), as TMoLE and option tuning do; failures are
reported as :class:`AdapterLoadError`.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers.pytorch_utils import Conv1D

from recfound.model.adapter_format import (
    WEIGHTS_FILE,
    AdapterLoadError,
    adapter_parameters,
    copy_adapter_tensors,
    read_adapter,
    save_adapter,
)
from recfound.model.families import in_out_features, is_projection
from recfound.model.tmole.model import _matches


class LoRAAdapter:
    """One LoRA of rank ``r`` on ``target_modules`` of a causal LM (peft ``LoraConfig``).

    ``.model`` is the peft model to call; the base weights are frozen and the update of each
    targeted layer is ``(alpha / r) * B A x`` with ``A`` (r, in) kaiming-initialised, ``B = 0``.
    """

    def __init__(
        self,
        base: nn.Module,
        r: int,
        alpha: float,
        dropout: float = 0.0,
        target_modules: Sequence[str] = ("q_proj", "v_proj"),
        seed: int = 0,
    ) -> None:
        if r < 1:
            raise ValueError(f"LoRA rank r must be >= 1, got {r}")
        targeted = [m for n, m in base.named_modules() if n and _matches(n, target_modules)]
        config = LoraConfig(
            r=r,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=list(target_modules),
            bias="none",
            # GPT-2's Conv1D stores its weight (in, out): peft must transpose the update
            fan_in_fan_out=any(isinstance(m, Conv1D) for m in targeted),
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model: PeftModel = get_peft_model(base, config)
        # what save_pretrained writes and from_pretrained rebuilds the LoRA from
        self.options = {
            "r": r,
            "alpha": alpha,
            "dropout": dropout,
            "target_modules": list(target_modules),
            "seed": seed,
        }

    def trainable_parameters(self) -> int:
        """Number of trainable scalars (the LoRA A and B matrices)."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    @contextlib.contextmanager
    def task(self, task: str | Sequence[str] | torch.Tensor) -> Iterator[None]:
        """Accepted for interface parity with TMoLE and ignored: one adapter for all tasks."""
        yield

    def set_task(self, task: str | Sequence[str] | torch.Tensor | None) -> None:
        """Ignored (one adapter for all tasks)."""

    @torch.no_grad()
    def merge_into_base(self, task: str | None = None) -> nn.Module:
        """A deep copy of the base model with ``W0 += scale * B A``; no adapter left."""
        return copy.deepcopy(self.model).merge_and_unload()

    def unload(self) -> nn.Module:
        """Remove the LoRA layers and return the base model (weights unchanged)."""
        return self.model.unload()

    def save_pretrained(self, directory: str | Path) -> None:
        """The LoRA's options and its A and B matrices in the adapter format
        (:mod:`recfound.model.adapter_format`), each file written atomically."""
        save_adapter(directory, "lora", adapter_parameters(self.model), self.options)

    @classmethod
    def from_pretrained(cls, base: nn.Module, directory: str | Path) -> LoRAAdapter:
        """Wrap ``base`` with the trainable LoRA saved in ``directory``.

        Raises :class:`AdapterLoadError` naming the file when it is missing, damaged, or does not
        fit ``base`` (other layer sizes or module names); ``base`` is then left unchanged.
        """
        config, _, tensors = read_adapter(directory, "lora", f"{cls.__name__}.save_pretrained")
        source = Path(directory) / WEIGHTS_FILE
        check_lora_fits(base, tensors, source)
        adapter = cls(base, **config)
        try:
            copy_adapter_tensors(adapter_parameters(adapter.model), tensors, source)
        except AdapterLoadError:
            adapter.unload()
            raise
        return adapter


def check_lora_fits(base: nn.Module, tensors: dict[str, torch.Tensor], weights_path: Path) -> None:
    """Check every saved ``lora_A`` / ``lora_B`` against the layer it adapts in ``base``.

    Runs before peft touches ``base``, so a mismatch leaves the model unchanged. A LoRA tensor is
    named ``base_model.model.<module>.lora_A.default.weight`` (A: (r, in); B: (out, r)).
    """
    wrong = []
    for key, tensor in sorted(tensors.items()):
        shape = tuple(tensor.shape)
        module_name, marker, kind = key.removeprefix("base_model.model.").rpartition(".lora_")
        kind = kind.replace(".default.", ".")
        if not marker or kind not in ("A.weight", "B.weight"):
            continue
        try:
            module = base.get_submodule(module_name)
        except AttributeError:
            wrong.append(f"{key}: this model has no module {module_name!r}")
            continue
        if not is_projection(module):
            wrong.append(
                f"{key}: {module_name!r} is a {type(module).__name__}, not nn.Linear or Conv1D"
            )
            continue
        in_features, out_features = in_out_features(module)
        size = shape[1] if kind == "A.weight" else shape[0]
        need = in_features if kind == "A.weight" else out_features
        if len(shape) != 2 or size != need:
            wrong.append(
                f"{key}: file {shape} vs layer {module_name} ({in_features} -> {out_features})"
            )
    if wrong:
        raise AdapterLoadError(
            f"{weights_path} does not fit this model: {len(wrong)} tensors differ, e.g. "
            f"{'; '.join(wrong[:3])}; it was saved for another model or other target modules"
        )
