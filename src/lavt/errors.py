"""Errors that reach users as one clear line (the CLI prints ``lavt: error: <message>``).

Anything raised as a :class:`LAVTError` is a problem with the user's input (a file, an
expression, a checkpoint, a config), not a bug; its message must name the problem.
"""


class LAVTError(Exception):
    """Base class of every user-facing lavt error."""


class InputError(LAVTError, ValueError):
    """Bad image, video or expression given to a model or predictor."""


class CheckpointError(LAVTError):
    """A checkpoint that cannot be read, or whose layout or shapes do not fit the model."""


class ConfigError(LAVTError, ValueError):
    """A configuration that cannot describe a valid model or run."""
