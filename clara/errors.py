"""Exceptions raised by the library; user-facing surfaces turn them into one clear line."""


class ClaraError(Exception):
    """Base class for every error clara raises on purpose."""


class ModelNotFoundError(ClaraError):
    """A base model could not be found locally (and could not be fetched)."""


class CheckpointError(ClaraError):
    """A CLaRa checkpoint is missing, malformed or made for another base model."""


class IndexMismatchError(ClaraError):
    """An index was built with a different checkpoint than the one loaded."""


class ContextLengthError(ClaraError):
    """A prompt does not fit the model's context window."""
