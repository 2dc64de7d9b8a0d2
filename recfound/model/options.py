"""What every adapter's options class shares: its task list, validation errors as the adapter's
own error type, and a JSON round trip that names unknown keys (a typo, a newer format)."""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import BaseModel, Field, ValidationError, model_validator

from recfound.config import describe_error
from recfound.errors import UserInputError


class AdapterOptions(BaseModel):
    """Mixed in before an adapter's params.yaml section (``class TMoLEConfig(AdapterOptions,
    TMoLEParams)``): the section declares the settings once, the subclass adds what a built
    adapter also needs (its tasks, its seed)."""

    error: ClassVar[type[UserInputError]] = UserInputError
    """Raised, naming every bad key, when the options do not validate."""
    label: ClassVar[str] = "adapter"
    """How messages name the adapter ("TMoLE", "option")."""

    task_names: list[str] = Field(default_factory=list)
    """Task names; a task's id is its position in this list (saved with the adapter)."""

    def __init__(self, **options: Any) -> None:
        try:
            super().__init__(**options)
        except ValidationError as error:
            lines = "; ".join(describe_error(e) for e in error.errors())
            raise self.error(f"invalid {self.label} config: {lines}") from None

    @model_validator(mode="after")
    def _one_name_per_task(self) -> Self:
        if not self.task_names:
            raise ValueError(f"{self.label} needs at least one task in task_names")
        duplicates = sorted({t for t in self.task_names if self.task_names.count(t) > 1})
        if duplicates:
            raise ValueError(f"task_names has duplicates: {duplicates}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``cls.from_dict(c.to_dict()) == c``."""
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build from :meth:`to_dict` output; unknown keys are errors that list the known ones."""
        known = set(cls.model_fields)
        unknown = sorted(set(data) - known)
        if unknown:
            raise cls.error(
                f"unknown {cls.label} config keys {unknown}; known keys: {sorted(known)}"
            )
        return cls(**data)
