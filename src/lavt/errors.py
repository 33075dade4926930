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


class ExportError(LAVTError):
    """An export that failed, or whose exported graph does not reproduce the PyTorch model."""


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT / SIGTERM after saving a checkpoint at ``step``.

    Not an error: the CLI prints one line saying how to resume and exits with 128 + ``signum``
    (130 for Ctrl-C, 143 for SIGTERM), the shell convention for a process ended by a signal.
    """

    def __init__(self, step: int, signum: int, output_dir: str) -> None:
        super().__init__(f"interrupted at step {step}")
        self.step, self.signum, self.output_dir = step, signum, output_dir


class LAVTWarning(UserWarning):
    """Base class of lavt's user-facing warnings (the CLI prints ``lavt: warning: <message>``)."""


class ExpressionTruncatedWarning(LAVTWarning):
    """An expression had more tokens than ``max_tokens`` and was cut."""


class UnknownWordsWarning(LAVTWarning):
    """Most of an expression's words are unknown to the text encoder's vocabulary ([UNK])."""


class EmptyMaskWarning(LAVTWarning):
    """The model found nothing for an expression (an all-background mask)."""


class InputSizeWarning(LAVTWarning):
    """The input size differs from the size the model was trained at, or is too small."""


class LargeImageWarning(LAVTWarning):
    """An image larger than Pillow's decompression-bomb limit is being decoded anyway."""
