"""The REST edge app: middleware, the one error mapping, health; the routes live in routers."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import Counter, Histogram, make_asgi_app
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge import catalog_routes, docs, jobs, kling_routes, mj, openai_routes, usage
from edge.errors import openai_error
from edge.generations import REQUEST_LABELS, Generations
from edge.mesh import Mesh
from edge.settings import EdgeSettings
from svckit.errors import ErrorCode, GatewayError, invalid
from svckit.logging import get_logger

log = get_logger(__name__)

HTTP_REQUESTS = Counter("pixelmesh_http_requests_total", "REST requests", ["route", "method", "status", "model"])
HTTP_LATENCY = Histogram(
    "pixelmesh_http_request_duration_seconds",
    "REST request latency",
    ["route", "method", "model"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)


class RequestMetrics:
    """Rate and latency (until the response starts) by route, method, status and model.

    A plain ASGI middleware: Starlette's BaseHTTPMiddleware runs every request through an
    extra task and memory streams, which cost more than most routes' own work."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        answered: dict[str, float | int] = {"status": 500}
        labels: dict[str, str] = {}
        token = REQUEST_LABELS.set(labels)

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                answered["status"], answered["at"] = message["status"], time.monotonic()
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            REQUEST_LABELS.reset(token)
            path = getattr(scope.get("route"), "path", "unmatched")  # the router sets scope["route"]
            model = labels.get("model", "")  # set by routes that submit a generation
            method = scope["method"]
            HTTP_REQUESTS.labels(path, method, str(answered["status"]), model).inc()
            HTTP_LATENCY.labels(path, method, model).observe(answered.get("at", time.monotonic()) - started)


def create_app(settings: EdgeSettings, mesh: Mesh) -> FastAPI:
    app = FastAPI(title="pixelmesh", version="0.1.0", description="Image-generation gateway")
    app.state.settings = settings
    app.state.mesh = mesh
    app.state.generations = Generations(mesh)
    app.mount("/metrics", make_asgi_app())

    app.add_middleware(RequestMetrics)

    @app.exception_handler(GatewayError)
    async def gateway_error(_request: Request, err: GatewayError) -> JSONResponse:
        return openai_error(err)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first["loc"][1:]) or None
        return openai_error(invalid(f"Invalid value for '{param}': {first['msg']}.", param))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = ErrorCode.NOT_FOUND if exc.status_code == 404 else ErrorCode.INVALID_REQUEST
        resp = openai_error(GatewayError(code, str(exc.detail)))
        resp.status_code = exc.status_code
        return resp

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return openai_error(GatewayError(ErrorCode.INTERNAL, "The server had an error processing your request."))

    app.include_router(openai_routes.router)
    app.include_router(catalog_routes.router)
    app.include_router(jobs.router)
    app.include_router(usage.router)
    app.include_router(mj.router)
    app.include_router(kling_routes.router)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        deps = await mesh.readiness()
        ok = all(deps.values())
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "dependencies": deps}, status_code=200 if ok else 503
        )

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearerAuth": {"type": "http", "scheme": "bearer"}
            }
            schema["security"] = [{"bearerAuth": []}]
            for path in ("/healthz", "/readyz"):
                schema["paths"][path]["get"]["security"] = []
            app.openapi_schema = docs.add_error_responses(schema)
        return app.openapi_schema

    # Replacing app.openapi is FastAPI's documented way to extend the schema; mypy refuses any method assignment.
    app.openapi = openapi  # type: ignore[method-assign]
    return app
