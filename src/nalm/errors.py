"""Exceptions that nalm raises on purpose. Each names the bad value and what was expected."""


class NalmError(Exception):
    """Base class of every error nalm raises on purpose."""


class ConfigError(NalmError, ValueError):
    """An unknown name or option, or an option value outside its allowed range."""


class ShapeError(NalmError, ValueError):
    """An input of the wrong shape or dtype."""


class DataError(NalmError):
    """A data file or results store that is missing, corrupt or of the wrong kind."""
