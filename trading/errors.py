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


_STORE_MODULES = ("mlflow", "sqlalchemy", "sqlite3", "psycopg", "pyarrow", "botocore")


def store_failure(exc: BaseException) -> str | None:
    """One line for a failure of a store (the MLflow registry and its database, an
    artifact or data file), or None for anything else (a bug: its traceback is shown)."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__
    for item in chain:
        module = type(item).__module__ or ""
        if isinstance(item, OSError) or module.split(".")[0] in _STORE_MODULES:
            text = getattr(item, "message", None) or str(item) or type(item).__name__
            first = str(text).strip().splitlines()[0] if str(text).strip() else type(item).__name__
            kind = (
                "model registry"
                if module.startswith(("mlflow", "sqlalchemy", "sqlite3"))
                else "store"
            )
            return f"{kind}: {first[:400]}"
    return None
