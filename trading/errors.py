"""Exception types a user can act on; the CLI prints them as one line."""


class HmmTraderError(Exception):
    """Base of every expected failure: bad input, bad config, unreachable source."""


class ConfigError(HmmTraderError):
    """A configuration file, environment variable or option holds a bad value."""


class InputError(HmmTraderError):
    """A command argument is invalid (unknown symbol, reversed dates, ...)."""


class DataFormatError(HmmTraderError):
    """A data file cannot be parsed: wrong columns, malformed row, empty file."""


class ChecksumMismatchError(HmmTraderError):
    """A downloaded archive does not match its published SHA-256."""


class SourceError(HmmTraderError):
    """A remote source (archive site, REST API) failed or answered nonsense."""


class DataQualityError(HmmTraderError):
    """The data-quality gate blocked: nothing is trained or evaluated on this data."""
