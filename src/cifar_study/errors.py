"""Errors a user can act on: the stage CLIs print their message and exit non-zero, no traceback."""


class StudyError(Exception):
    """Base class for problems caused by input, configuration or environment, not by a bug."""


class ConfigError(StudyError):
    """A value in params.yaml (or an override) is unknown, of the wrong type or out of range."""


class DataError(StudyError):
    """Input data is missing, corrupt, unsafe or not in a layout the pipeline understands."""


class DownloadError(StudyError):
    """A remote file could not be fetched intact."""
