"""Options of a TMoLE adapter (Task-wise Mixture of Low-rank Experts, RecFound arXiv 2506.11999).

A sibling of peft's ``LoraConfig``: a dataclass validated once on construction, saved as JSON next
to the adapter tensors (``to_dict`` / ``from_dict`` round-trip exactly).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from recfound.errors import UserInputError

TASK_KINDS = ("embedding", "generative")


class TMoLEConfigError(UserInputError):
    """A TMoLE option is out of range or inconsistent with the tasks."""


@dataclass
class TMoLEConfig:
    """How many low-rank experts of which kind, how tasks route to them, and where they go.

    Experts are ordered ``[embedding-only | shared | generative-only]``; an embedding task may use
    the first two groups, a generative task the last two. Every targeted ``nn.Linear`` computes
    ``y = W0 x + sum_e g_e(task) * (alpha / r) * B_e A_e x``.
    """

    r: int = 8
    """Rank of each expert (each expert adds ``r * (in + out)`` weights per layer)."""
    alpha: float = 16.0
    """LoRA alpha: the low-rank update is scaled by ``alpha / r``."""
    num_embedding_experts: int = 2
    """Experts only embedding tasks route to."""
    num_shared_experts: int = 2
    """Experts every task may route to (may be 0)."""
    num_generative_experts: int = 2
    """Experts only generative tasks route to."""
    task_names: list[str] = field(default_factory=list)
    """Task names; a task's id is its position in this list (saved with the adapter)."""
    task_kinds: dict[str, str] = field(default_factory=dict)
    """Task name -> ``"embedding"`` or ``"generative"``; decides which experts the task may use."""
    task_embedding_dim: int = 32
    """Width of the learned per-task vector that every layer's router reads."""
    top_k: int | None = None
    """Keep only the ``top_k`` largest router logits per task (``None``: all usable experts)."""
    gate_temperature: float = 1.0
    """Router logits are divided by this before the softmax (lower = sharper gates)."""
    dropout: float = 0.0
    """Dropout on the adapter's input (training only), like ``LoraConfig.lora_dropout``."""
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    """Name suffixes of the ``nn.Linear`` layers to adapt (``q_proj`` matches ``*.q_proj``)."""
    seed: int = 0
    """Seed of the adapter's initial weights (A, routers, task embeddings)."""

    def __post_init__(self) -> None:
        self.task_names = list(self.task_names)
        self.task_kinds = dict(self.task_kinds)
        self.target_modules = list(self.target_modules)
        self._validate()

    def _validate(self) -> None:
        if self.r < 1:
            raise TMoLEConfigError(f"TMoLE rank r must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise TMoLEConfigError(f"TMoLE alpha must be > 0, got {self.alpha}")
        counts = {
            "num_embedding_experts": self.num_embedding_experts,
            "num_shared_experts": self.num_shared_experts,
            "num_generative_experts": self.num_generative_experts,
        }
        for name, value in counts.items():
            if value < 0:
                raise TMoLEConfigError(f"TMoLE {name} must be >= 0, got {value}")
        if not self.task_names:
            raise TMoLEConfigError("TMoLE needs at least one task in task_names")
        duplicates = sorted({t for t in self.task_names if self.task_names.count(t) > 1})
        if duplicates:
            raise TMoLEConfigError(f"TMoLE task_names has duplicates: {duplicates}")
        missing = [t for t in self.task_names if t not in self.task_kinds]
        if missing:
            raise TMoLEConfigError(
                f"tasks {missing} have no kind: add them to task_kinds as 'embedding' or "
                "'generative'"
            )
        extra = sorted(set(self.task_kinds) - set(self.task_names))
        if extra:
            raise TMoLEConfigError(f"task_kinds names tasks {extra} that are not in task_names")
        for task, kind in self.task_kinds.items():
            if kind not in TASK_KINDS:
                raise TMoLEConfigError(
                    f"task {task!r} has kind {kind!r}; use one of {list(TASK_KINDS)}"
                )
        used = set(self.task_kinds.values())
        if "embedding" in used and self.num_embedding_experts + self.num_shared_experts == 0:
            raise TMoLEConfigError(
                "embedding tasks have no expert: set num_embedding_experts or "
                "num_shared_experts > 0"
            )
        if "generative" in used and self.num_generative_experts + self.num_shared_experts == 0:
            raise TMoLEConfigError(
                "generative tasks have no expert: set num_generative_experts or "
                "num_shared_experts > 0"
            )
        if self.task_embedding_dim < 1:
            raise TMoLEConfigError(
                f"task_embedding_dim must be >= 1, got {self.task_embedding_dim}"
            )
        if self.top_k is not None and self.top_k < 1:
            raise TMoLEConfigError(f"top_k must be >= 1 or None, got {self.top_k}")
        if not self.gate_temperature > 0:
            raise TMoLEConfigError(f"gate_temperature must be > 0, got {self.gate_temperature}")
        if not 0 <= self.dropout < 1:
            raise TMoLEConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise TMoLEConfigError("target_modules is empty: name at least one nn.Linear suffix")

    @property
    def num_experts(self) -> int:
        """E, the total number of experts in every adapted layer."""
        return self.num_embedding_experts + self.num_shared_experts + self.num_generative_experts

    @property
    def scaling(self) -> float:
        """``alpha / r``, the LoRA scale of every expert."""
        return self.alpha / self.r

    def usable_experts(self, task: str) -> list[bool]:
        """Which of the E experts ``task`` may route to (length E, ordered like the experts)."""
        if task not in self.task_kinds:
            raise TMoLEConfigError(f"unknown task {task!r}; known tasks: {self.task_names}")
        emb = self.task_kinds[task] == "embedding"
        return (
            [emb] * self.num_embedding_experts
            + [True] * self.num_shared_experts
            + [not emb] * self.num_generative_experts
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``TMoLEConfig.from_dict(c.to_dict()) == c``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TMoLEConfig:
        """Build from :meth:`to_dict` output; unknown keys (a typo, a newer format) are errors."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TMoLEConfigError(
                f"unknown TMoLE config keys {unknown}; known keys: {sorted(known)}"
            )
        return cls(**data)
