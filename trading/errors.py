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


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an error's message (MLflow's `message` when it has one: without
    the SQL and parameters SQLAlchemy appends), or its type's name."""
    text = str(getattr(exc, "message", None) or exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


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
            kind = (
                "model registry"
                if module.startswith(("mlflow", "sqlalchemy", "sqlite3"))
                else "store"
            )
            return f"{kind}: {first_line(item, 400)}"
    return None
