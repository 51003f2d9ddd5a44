"""Interactive API docs that work where there is no internet, and an OpenAPI document that validates.

/docs (Swagger UI) and /redoc load their bundles from fastapi-offline, installed with the API; nothing is
fetched from a CDN at run time. Routes that declare a request body by hand (the job spec, which is also
accepted as multipart) embed pydantic's JSON schema with its `$defs`; `hoist_definitions` moves those into
`components/schemas`, where their `$ref`s point, so every reference resolves and /docs shows the job
spec pass by pass."""

from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline


def offline_app(**kwargs: Any) -> FastAPI:
    """A FastAPI application whose /docs and /redoc are served from local assets."""
    app = FastAPIOffline(docs_url="/docs", redoc_url="/redoc", **kwargs)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = hoist_definitions(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def hoist_definitions(document: dict[str, Any]) -> dict[str, Any]:
    """Every `$defs` block anywhere in the document, moved into components/schemas (where pydantic's
    ref_template points); a name defined twice must be the same schema."""
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    pending: list[Any] = [document["paths"]]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            for name, schema in node.pop("$defs", {}).items():
                if name in schemas and schemas[name] != schema:
                    raise ValueError(f"two different schemas named {name!r} in the OpenAPI document")
                schemas[name] = schema
                pending.append(schema)
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return document
