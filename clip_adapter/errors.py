"""Errors a user can fix: the CLI prints them as one line and exits non-zero, without a traceback."""


class UserError(Exception):
    """Bad input that the user can fix; the message names the thing and the fix."""


class ConfigError(UserError):
    """An unknown key, a malformed file or a mistyped value in the configuration."""


class DatasetError(UserError):
    """A dataset folder, split file or image that is missing or unusable."""


class CheckpointError(UserError):
    """A model folder without the checkpoint that was asked for."""


class TransferError(UserError):
    """A trained model asked to classify classes that its learned weights cannot represent."""
