"""Options of an option-tuning adapter (M6-Rec's option tuning, Cui et al. arXiv 2205.08084).

A sibling of :class:`~recfound.model.tmole.TMoLEConfig`: a dataclass validated on construction and
saved as JSON next to the adapter tensors (``to_dict`` / ``from_dict`` round-trip exactly).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from recfound.errors import UserInputError


class OptionConfigError(UserInputError):
    """An option-tuning setting is out of range or inconsistent."""


@dataclass
class OptionConfig:
    """Task-specific trainable prompt vectors ("options") on a frozen backbone.

    Every task owns ``prompt_length`` vectors of the backbone's width that are put in front of the
    sample's tokens (prompt tuning). With ``deep`` the options are re-inserted at the input of every
    decoder layer (P-tuning v2 style), which costs ``num_layers`` times the parameters. With
    ``adapter_rank > 0`` every task also gets a low-rank update ``(alpha / r) B_t A_t x`` on each
    ``adapter_modules`` linear layer (M6-Rec's option of adding small adapters).
    Task parameters: ``T * P * H * (num_layers if deep else 1) + T * r * (in + out) * layers``.
    """

    task_names: list[str] = field(default_factory=list)
    """Task names; a task's id is its position in this list (saved with the adapter)."""
    prompt_length: int = 8
    """P: option vectors per task in front of every sequence."""
    deep: bool = False
    """Re-insert a layer's own options at the input of every decoder layer."""
    adapter_rank: int = 0
    """Rank r of the per-task low-rank adapters (0: options only)."""
    adapter_alpha: float = 2.0
    """The adapters' update is scaled by ``adapter_alpha / adapter_rank``."""
    adapter_modules: list[str] = field(default_factory=lambda: ["down_proj"])
    """Name suffixes of the ``nn.Linear`` layers that get adapters (when ``adapter_rank > 0``)."""
    seed: int = 0
    """Seed of the initial options (rows of the token embedding) and adapter ``A`` matrices."""

    def __post_init__(self) -> None:
        self.task_names = list(self.task_names)
        self.adapter_modules = list(self.adapter_modules)
        if not self.task_names:
            raise OptionConfigError("option tuning needs at least one task in task_names")
        duplicates = sorted({t for t in self.task_names if self.task_names.count(t) > 1})
        if duplicates:
            raise OptionConfigError(f"option task_names has duplicates: {duplicates}")
        if self.prompt_length < 1:
            raise OptionConfigError(f"prompt_length must be >= 1, got {self.prompt_length}")
        if self.adapter_rank < 0:
            raise OptionConfigError(f"adapter_rank must be >= 0, got {self.adapter_rank}")
        if self.adapter_rank and not self.adapter_modules:
            raise OptionConfigError("adapter_rank > 0 needs adapter_modules (nn.Linear suffixes)")
        if not self.adapter_alpha > 0:
            raise OptionConfigError(f"adapter_alpha must be > 0, got {self.adapter_alpha}")

    @property
    def scaling(self) -> float:
        """``adapter_alpha / adapter_rank`` (0 without adapters)."""
        return self.adapter_alpha / self.adapter_rank if self.adapter_rank else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``OptionConfig.from_dict(c.to_dict()) == c``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OptionConfig:
        """Build from :meth:`to_dict` output; unknown keys (a typo, a newer format) are errors."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise OptionConfigError(
                f"unknown option config keys {unknown}; known keys: {sorted(known)}"
            )
        return cls(**data)
