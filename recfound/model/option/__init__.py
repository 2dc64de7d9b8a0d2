"""Option tuning (M6-Rec): per-task trainable options on a frozen backbone, like peft's tuners."""

from __future__ import annotations

from recfound.model.option.config import OptionConfig, OptionConfigError
from recfound.model.option.layer import OptionLinear, OptionState
from recfound.model.option.model import OptionModel

__all__ = ["OptionConfig", "OptionConfigError", "OptionLinear", "OptionModel", "OptionState"]
