"""The app factory: the REST API (and the dashboard, when present) on one FastAPI app."""

from __future__ import annotations

import importlib
import importlib.util
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from pydantic.json_schema import models_json_schema

from pgqueue.async_queue import AsyncQueue
from pgqueue.http.api import router
from pgqueue.http.auth import require_role
from pgqueue.http.dependencies import REQUEST_MODELS
from pgqueue.http.errors import UnexpectedErrorMiddleware, install_error_handlers
from pgqueue.http.limits import BodyLimitMiddleware
from pgqueue.http.service import PushCoalescer
from pgqueue.http.settings import HttpSettings

DOCS_ASSETS_PATH = "/docs/assets"
OPENAPI_PATH = "/openapi.json"


def create_app(queue: AsyncQueue, settings: HttpSettings | None = None) -> FastAPI:
    """A FastAPI app serving pgqueue's REST API on ``queue``.

    The app does not start or close the queue: its owner does (``pgqueue serve`` does both).
    A host may mount it in its own ASGI app. The dashboard, when its package is present,
    mounts itself through ``pgqueue.http.dashboard.mount(app, queue, settings)``.
    """
    from pgqueue import __version__

    settings = settings or HttpSettings()
    app = FastAPI(
        title="pgqueue",
        version=__version__,
        description="REST API of pgqueue, a durable task queue on PostgreSQL.",
        docs_url=None,
        redoc_url=None,
        # Served below behind the read role, like every route but /healthz.
        openapi_url=None,
    )
    app.state.pgqueue_queue = queue
    app.state.pgqueue_settings = settings
    app.state.pgqueue_token_sources = []
    app.state.pgqueue_coalescer = PushCoalescer(queue)
    app.state.pgqueue_metrics_registry, app.state.pgqueue_metrics = _metrics_registry(queue)
    install_error_handlers(app)
    app.include_router(router)
    _document_request_bodies(app)
    _mount_docs(app)
    _mount_dashboard(app, queue, settings)
    app.add_middleware(UnexpectedErrorMiddleware)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    return app


def _document_request_bodies(app: FastAPI) -> None:
    """Add the request models the routes parse themselves to the OpenAPI components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        _, definitions = models_json_schema(
            [(model, "validation") for model in REQUEST_MODELS.values()],
            ref_template="#/components/schemas/{model}",
        )
        _drop_default_validation_responses(schema)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in definitions.get("$defs", {}).items():
            components.setdefault(name, definition)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get(OPENAPI_PATH, include_in_schema=False, dependencies=[Depends(require_role("read"))])
    async def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())


def _drop_default_validation_responses(schema: dict[str, Any]) -> None:
    """FastAPI documents 422 for invalid parameters; this API answers those with 400."""
    default = "#/components/schemas/HTTPValidationError"
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            responses = operation.get("responses", {})
            entry = responses.get("422", {})
            ref = entry.get("content", {}).get("application/json", {}).get("schema", {})
            if ref.get("$ref") == default:
                del responses["422"]
                responses.setdefault(
                    "400",
                    {
                        "description": "Bad JSON or fields",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ErrorBody"}
                            }
                        },
                    },
                )
    schemas = schema.get("components", {}).get("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)


def _mount_docs(app: FastAPI) -> None:
    """Swagger UI from the assets shipped in the package (no CDN)."""
    assets = resources.files("pgqueue.http").joinpath("assets")
    app.mount(DOCS_ASSETS_PATH, StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(require_role("read"))])
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")  # the prefix a host app mounted the API under
        assets = f"{root}{DOCS_ASSETS_PATH}"
        return get_swagger_ui_html(
            openapi_url=f"{root}{OPENAPI_PATH}",
            title="pgqueue API",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon-32x32.png",
        )


def _metrics_registry(queue: AsyncQueue) -> tuple[CollectorRegistry, Any]:
    """A registry for ``GET /metrics`` with pgqueue's collectors (and the object to close)."""
    from pgqueue.metrics import instrument

    registry = CollectorRegistry()
    return registry, instrument(queue, registry)


def close_app(app: FastAPI) -> None:
    """Release what the app holds besides the queue (the metrics' database connection)."""
    metrics = getattr(app.state, "pgqueue_metrics", None)
    if metrics is not None:
        metrics.close()


def _mount_dashboard(app: FastAPI, queue: AsyncQueue, settings: HttpSettings) -> None:
    if importlib.util.find_spec("pgqueue.http.dashboard") is None:
        return
    dashboard: Any = importlib.import_module("pgqueue.http.dashboard")
    mount = getattr(dashboard, "mount", None)
    if mount is not None:
        mount(app, queue, settings)
