"""A throw-away PostgreSQL database per test run on the local server (127.0.0.1:5432,
trust auth): created with a unique name, dropped afterwards. Tests skip with the reason
when PostgreSQL is unreachable, except under CI=true, where they fail."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"


def postgres_problem() -> str | None:
    """None when the local PostgreSQL answers, else why not."""
    try:
        import psycopg
    except ImportError as exc:
        return f"psycopg is not installed ({exc})"
    try:
        with psycopg.connect(_dsn("postgres"), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {PG_HOST}:{PG_PORT} is unreachable: {' '.join(str(exc).split())}"
    return None


def _dsn(database: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def sqlalchemy_uri(database: str) -> str:
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def pg_query(database: str, sql: str) -> list[tuple[object, ...]]:
    import psycopg

    with psycopg.connect(_dsn(database), connect_timeout=5) as conn:
        return list(conn.execute(sql).fetchall())  # type: ignore[arg-type]


@contextmanager
def postgres_database(prefix: str = "hmmtrader_test") -> Iterator[str]:
    """A new, uniquely named database; dropped afterwards (connections terminated)."""
    import psycopg
    from psycopg import sql

    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_dsn("postgres"), autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(_dsn("postgres"), autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def database_exists(name: str) -> bool:
    return bool(pg_query("postgres", f"SELECT 1 FROM pg_database WHERE datname = '{name}'"))


def require_postgres() -> None:
    """Skip when no PostgreSQL answers, except under CI=true (there it must run)."""
    problem = postgres_problem()
    if problem and os.environ.get("CI") != "true":
        pytest.skip(problem)
    assert problem is None, problem
