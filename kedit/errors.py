"""Exceptions and warnings raised by kedit.

Every error names the input that is wrong and, where there is one, the fix.
"""


class KeditError(Exception):
    """Base class for all kedit errors."""


class RequestError(KeditError, ValueError):
    """An edit request or case is malformed (the message names the field)."""


class DataError(RequestError):
    """A dataset file or one of its records is malformed (the message names the file, record and field).

    A subclass of :class:`RequestError` because a malformed record is a malformed request at its source.
    """


class DownloadError(KeditError):
    """A dataset could not be fetched: an HTTP error, a short transfer or a checksum mismatch."""


class ModelLoadError(KeditError):
    """A model could not be found, converted or loaded."""


class AnatomyError(KeditError):
    """The model's module tree does not match any layout kedit understands."""


class CacheError(KeditError):
    """A cache entry is missing, partial or corrupted."""


class EditStateError(KeditError):
    """An edit was applied twice, reverted without being applied, or applied to the wrong model."""


class KeditWarning(UserWarning):
    """Something is suspicious but not wrong, e.g. a target the model already predicts."""
