"""The errors the CLI answers without a traceback, and their exit codes.

- :class:`UserInputError`: input a user can fix (bad settings, unreadable files, a wrong
  checkpoint path): its message and exit code 2.
- :class:`StageStopped`: a stage that stopped on purpose and said why (training interrupted on
  request, data that failed validation): its ``headline`` and message, and its ``exit_code``.

Each layer defines its own subclass next to the code that raises it; the CLI catches these bases,
so it never imports the layers (torch, Great Expectations) to recognise their errors.
"""

from __future__ import annotations

from typing import ClassVar

EXIT_USER_ERROR = 2
EXIT_INVALID_DATA = 3
EXIT_INTERRUPTED = 143  # 128 + SIGTERM, as a shell reports a terminated process


class UserInputError(ValueError):
    """Input the user controls is wrong; the message says what and how to fix it."""


class StageStopped(Exception):
    """A stage stopped on purpose; the message says why and what to do next."""

    exit_code: ClassVar[int] = 1
    headline: ClassVar[str] = ""  # printed before the message ("data validation failed:\n")
