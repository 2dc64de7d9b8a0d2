"""Options of an option-tuning adapter (M6-Rec's option tuning, Cui et al. arXiv 2205.08084).

A sibling of :class:`~recfound.model.tmole.TMoLEConfig`: validated on construction and saved as
JSON next to the adapter tensors (``to_dict`` / ``from_dict`` round-trip exactly). The settings
are the fields of params.yaml's ``model.option`` section (:class:`~recfound.config.OptionParams`),
declared once there; this class adds the tasks and the seed.
"""

from __future__ import annotations

from recfound.config import OptionParams
from recfound.errors import UserInputError
from recfound.model.options import AdapterOptions


class OptionConfigError(UserInputError):
    """An option-tuning setting is out of range or inconsistent."""


class OptionConfig(AdapterOptions, OptionParams):
    """Task-specific trainable prompt vectors ("options") on a frozen backbone.

    Every task owns ``prompt_length`` vectors of the backbone's width that are put in front of the
    sample's tokens (prompt tuning). With ``deep`` the options are re-inserted at the input of every
    decoder layer (P-tuning v2 style), which costs ``num_layers`` times the parameters. With
    ``adapter_rank > 0`` every task also gets a low-rank update ``(alpha / r) B_t A_t x`` on each
    ``adapter_modules`` linear layer (M6-Rec's option of adding small adapters).
    Task parameters: ``T * P * H * (num_layers if deep else 1) + T * r * (in + out) * layers``.
    """

    error = OptionConfigError
    label = "option"

    seed: int = 0
    """Seed of the initial options (rows of the token embedding) and adapter ``A`` matrices."""

    @classmethod
    def for_tasks(cls, settings: OptionParams, task_names: list[str], seed: int) -> OptionConfig:
        """params.yaml's ``model.option`` settings applied to these tasks."""
        return cls(**settings.model_dump(), task_names=sorted(task_names), seed=seed)

    @property
    def scaling(self) -> float:
        """``adapter_alpha / adapter_rank`` (0 without adapters)."""
        return self.adapter_alpha / self.adapter_rank if self.adapter_rank else 0.0
