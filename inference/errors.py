"""Errors the pipeline raises on purpose; each carries a message a user can act on."""


class AvatarError(Exception):
    """Base class. ``code`` is a stable machine-readable name (for the CLI's JSON and the API)."""

    code = "avatar_error"
    exit_code = 1


class InputError(AvatarError):
    """The input (photo, height, weight, gender) cannot produce an avatar."""

    code = "invalid_input"
    exit_code = 2

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code:
            self.code = code


class MissingWeightError(AvatarError):
    """A model file is missing or corrupt; the message names the command that fixes it."""

    code = "missing_weight"
    exit_code = 3


class CancelledError(AvatarError):
    """The caller's cancel flag was raised between stages."""

    code = "cancelled"
    exit_code = 4
