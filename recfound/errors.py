"""The error a user can cause and fix (bad settings, unreadable files, a wrong checkpoint path).

The CLI turns any :class:`UserInputError` into its message and exit code 2, without a traceback.
Each layer defines its own subclass next to the code that raises it.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """Input the user controls is wrong; the message says what and how to fix it."""
