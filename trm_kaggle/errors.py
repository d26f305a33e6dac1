"""The one exception type a user can fix by changing their input.

Library code raises `UserError` (or a subclass) with a message that fits on one line and
names the file, task, pair and problem. Every console script turns it into that line on
stderr and exit code 2 (see `trm_kaggle.cli.common`); anything else is a bug and keeps its
traceback.
"""


class UserError(Exception):
    """Bad input or a bad request: reported as one line, exit code 2."""

    def __init__(self, message: str):
        # One line, always: a multi-line message would read like a traceback.
        super().__init__(" ".join(str(message).split()))


class NonFiniteError(UserError):
    """NaN or inf where a number must be finite: a training step's loss or gradient norm (a
    divergent run), or a checkpoint's tensor. Never trained on, saved or loaded."""
