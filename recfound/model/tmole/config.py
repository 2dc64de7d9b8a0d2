"""Options of a TMoLE adapter (Task-wise Mixture of Low-rank Experts, RecFound arXiv 2506.11999).

A sibling of peft's ``LoraConfig``: validated once on construction, saved as JSON next to the
adapter tensors (``to_dict`` / ``from_dict`` round-trip exactly, see :class:`AdapterOptions`).
The adapter's settings are the fields of params.yaml's ``model.tmole`` section
(:class:`~recfound.config.TMoLEParams`), declared once there; this class adds what a built adapter
also needs: the tasks, the targeted layers and the seed.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from recfound.config import TMoLEParams
from recfound.errors import UserInputError
from recfound.model.options import AdapterOptions

TASK_KINDS = ("embedding", "generative")


class TMoLEConfigError(UserInputError):
    """A TMoLE option is out of range or inconsistent with the tasks."""


class TMoLEConfig(AdapterOptions, TMoLEParams):
    """How many low-rank experts of which kind, how tasks route to them, and where they go.

    Experts are ordered ``[embedding-only | shared | generative-only]``; an embedding task may use
    the first two groups, a generative task the last two. Every targeted ``nn.Linear`` computes
    ``y = W0 x + sum_e g_e(task) * (alpha / rank) * B_e A_e x``.
    """

    error = TMoLEConfigError
    label = "TMoLE"

    task_kinds: dict[str, str] = Field(default_factory=dict)
    """Task name -> ``"embedding"`` or ``"generative"``; decides which experts the task may use."""
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    """Name suffixes of the ``nn.Linear`` layers to adapt (``q_proj`` matches ``*.q_proj``)."""
    seed: int = 0
    """Seed of the adapter's initial weights (A, routers, task embeddings)."""

    @classmethod
    def for_tasks(
        cls,
        settings: TMoLEParams,
        task_kinds: dict[str, str],
        target_modules: list[str],
        seed: int,
    ) -> TMoLEConfig:
        """params.yaml's ``model.tmole`` settings applied to these tasks and layers."""
        return cls(
            **settings.model_dump(),
            task_names=sorted(task_kinds),
            task_kinds=dict(task_kinds),
            target_modules=list(target_modules),
            seed=seed,
        )

    @model_validator(mode="after")
    def _tasks_fit(self) -> TMoLEConfig:
        missing = [t for t in self.task_names if t not in self.task_kinds]
        if missing:
            raise ValueError(
                f"tasks {missing} have no kind: add them to task_kinds as 'embedding' or "
                "'generative'"
            )
        extra = sorted(set(self.task_kinds) - set(self.task_names))
        if extra:
            raise ValueError(f"task_kinds names tasks {extra} that are not in task_names")
        for task, kind in self.task_kinds.items():
            if kind not in TASK_KINDS:
                raise ValueError(f"task {task!r} has kind {kind!r}; use one of {list(TASK_KINDS)}")
        if not self.target_modules:
            raise ValueError("target_modules is empty: name at least one nn.Linear suffix")
        return self

    @property
    def num_experts(self) -> int:
        """E, the total number of experts in every adapted layer."""
        return self.num_embedding_experts + self.num_shared_experts + self.num_generative_experts

    @property
    def scaling(self) -> float:
        """``alpha / rank``, the LoRA scale of every expert."""
        return self.alpha / self.rank

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
