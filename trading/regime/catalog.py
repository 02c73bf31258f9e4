"""A read-only view of the registered model, read straight from MLflow's database
(SQLite or PostgreSQL): what `hmmtrader models` lists, without importing MLflow (about
1.5 s of imports on a 2-core machine, most of a listing's time).

`Registry` (MLflow's client) stays the only writer and the reader of every other store
(an `http://` tracking server): `read_catalog` returns None there, and the caller falls
back to it. MLflow's registry tables (registered_models, model_versions and their tags and
aliases) have kept their names and columns since aliases arrived (MLflow 2.3);
`tests/integration/test_registry_catalog.py` holds this view equal to the client's."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trading.errors import first_line
from trading.regime.registry import (
    Move,
    ProductionGuard,
    RegistryError,
    VersionInfo,
    guard_of,
    moves_of,
)

# MLflow deletes a model version by moving it to this stage (its search never shows it)
DELETED_STAGE = "Deleted_Internal"


@dataclass(frozen=True)
class Catalog:
    """One registered model as its database holds it now (read in one transaction)."""

    name: str
    uri: str
    model_tags: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    version_list: list[VersionInfo] = field(default_factory=list)

    def versions(self) -> list[VersionInfo]:
        return list(self.version_list)

    def version_tags(self, version: int) -> dict[str, str]:
        return next((dict(v.tags) for v in self.version_list if v.version == version), {})

    def moves(self) -> list[Move]:
        return moves_of(self.model_tags)

    def guard(self) -> ProductionGuard:
        return guard_of(self.model_tags, self.aliases, self.version_tags)


def read_catalog(uri: str, name: str) -> Catalog | None:
    """The model `name` in the MLflow database at `uri`; an empty catalog when the
    database or the model does not exist yet; None when `uri` is not a database URI
    (the caller asks MLflow's client)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_file():
            return Catalog(name, uri)  # nothing trained yet (and nothing created here)
        url = "sqlite:///file:" + str(db) + "?mode=ro&uri=true"  # never writes
    elif uri.startswith(("postgresql://", "postgresql+psycopg2://", "postgresql+psycopg://")):
        url = uri
    else:
        return None
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as con:
            return _read(con, uri, name)
    except sa.exc.SQLAlchemyError as exc:
        raise RegistryError(f"model registry at {uri}: {first_line(exc)}") from None
    finally:
        engine.dispose()


def _read(con: Any, uri: str, name: str) -> Catalog:
    import sqlalchemy as sa

    def rows(sql: str) -> list[Any]:
        return list(con.execute(sa.text(sql), {"name": name}))

    tables = set(sa.inspect(con).get_table_names())
    if "registered_models" not in tables:
        return Catalog(name, uri)  # a store no model was ever registered in
    if not rows("SELECT name FROM registered_models WHERE name = :name"):
        return Catalog(name, uri)
    model_tags = {
        k: v or ""
        for k, v in rows("SELECT key, value FROM registered_model_tags WHERE name = :name")
    }
    aliases = {
        a: int(v)
        for a, v in rows("SELECT alias, version FROM registered_model_aliases WHERE name = :name")
    }
    tags: dict[int, dict[str, str]] = {}
    for version, key, value in rows(
        "SELECT version, key, value FROM model_version_tags WHERE name = :name"
    ):
        tags.setdefault(int(version), {})[key] = value or ""
    versions = []
    for version, created_ms, run_id in rows(
        "SELECT version, creation_time, run_id FROM model_versions WHERE name = :name "
        f"AND current_stage != '{DELETED_STAGE}' ORDER BY version"
    ):
        v = int(version)
        versions.append(
            VersionInfo(
                version=v,
                aliases=sorted(a for a, of in aliases.items() if of == v),
                created=dt.datetime.fromtimestamp((created_ms or 0) / 1000, dt.UTC),
                run_id=run_id or "",
                tags=tags.get(v, {}),
            )
        )
    return Catalog(name, uri, model_tags, aliases, versions)
