"""Errors that lmtrain reports to users as one clear line.

Library code raises these; only the CLI turns them into a red message and an exit code:
2 for usage and configuration mistakes, 1 for failures at run time (data, checkpoints, disk).
"""


class LmtrainError(Exception):
    """A problem the user can fix. The message says what is wrong, where, and how to fix it."""

    exit_code = 1


class ConfigError(LmtrainError):
    """The config file, an override or a command-line value is invalid."""

    exit_code = 2


class DataError(LmtrainError):
    """A corpus file is missing, unreadable, or unusable for training."""


class CheckpointError(LmtrainError):
    """A checkpoint file is missing, corrupt, unsafe, or not an lmtrain checkpoint."""


class RunDirectoryError(LmtrainError):
    """The run directory cannot be used (already holds a run, not writable, locked)."""

    exit_code = 2


class TrainingError(LmtrainError):
    """Training cannot continue (for example, the loss became NaN or infinite)."""
