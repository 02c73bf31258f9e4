"""What POST /infer accepts, as /openapi.json states it: InferRequest's schema plus what
this server checks beyond it (rows per request and, while a model is served, its feature
version, row width and columns). What JSON Schema cannot say (one timestamp per row,
increasing; a stream's order) is in the field descriptions and answered 422 / 409."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from trading.regime.slots import LoadedModel
from trading.strategy.remote import InferRequest

INFER_REQUEST_REF = {"$ref": "#/components/schemas/InferRequest"}
INFER_BODY = {"required": True, "content": {"application/json": {"schema": INFER_REQUEST_REF}}}


def is_json(content_type: str) -> bool:
    """What FastAPI reads as a JSON body: application/json or application/*+json."""
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def infer_request_schema(max_rows: int, loaded: LoadedModel | None) -> dict[str, Any]:
    schema = InferRequest.model_json_schema()
    props = schema["properties"]
    props["rows"]["maxItems"] = props["ts_ns"]["maxItems"] = max_rows
    if loaded is not None:
        columns = loaded.model.columns
        props["rows"]["items"].update(minItems=len(columns), maxItems=len(columns))
        props["feature_version"]["enum"] = [loaded.feature_version]
        props["columns"]["anyOf"] = [{"const": columns}, {"type": "null"}]
    return schema


def install_openapi(app: FastAPI, served: Callable[[], LoadedModel | None], max_rows: int) -> None:
    """app.openapi(): FastAPI's schema with `infer_request_schema` as the InferRequest
    component, rebuilt when the served model's feature version or columns change."""
    described: list[Any] = [None]

    def openapi() -> dict[str, Any]:
        loaded = served()
        key = (loaded.feature_version, tuple(loaded.model.columns)) if loaded else None
        if app.openapi_schema is None or described[0] != key:
            app.openapi_schema = None
            schema = FastAPI.openapi(app)
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas["InferRequest"] = infer_request_schema(max_rows, loaded)
            app.openapi_schema, described[0] = schema, key
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
