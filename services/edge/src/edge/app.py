"""The REST edge: OpenAI's Images API and the aggregators' submit-then-poll API."""

from __future__ import annotations

import json
import time
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry import trace
from prometheus_client import Counter, Histogram, make_asgi_app
from starlette.exceptions import HTTPException as StarletteHTTPException

from bus import is_terminal
from edge.errors import openai_error
from edge.mesh import Caller, Mesh
from edge.presenters import failure, openai_images, v2_generation
from edge.schemas import GenerateBody, OpenAIImageBody, parse_body
from edge.settings import EdgeSettings
from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode, GatewayError, invalid
from svckit.logging import get_logger

log = get_logger(__name__)

HTTP_REQUESTS = Counter("pixelmesh_http_requests_total", "REST requests", ["route", "method", "status"])
HTTP_LATENCY = Histogram(
    "pixelmesh_http_request_duration_seconds",
    "REST request latency",
    ["route", "method"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


async def _json_body(request: Request) -> object:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise invalid("We could not parse the JSON body of your request. Send a valid JSON object.") from None


def create_app(settings: EdgeSettings, mesh: Mesh) -> FastAPI:
    app = FastAPI(title="pixelmesh", version="0.1.0", description="Image-generation gateway")
    app.mount("/metrics", make_asgi_app())

    @app.middleware("http")
    async def measure(request: Request, call_next):
        started = time.monotonic()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        HTTP_REQUESTS.labels(path, request.method, str(response.status_code)).inc()
        HTTP_LATENCY.labels(path, request.method).observe(time.monotonic() - started)
        return response

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

    async def caller(request: Request) -> Caller:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise GatewayError(ErrorCode.UNAUTHENTICATED, NO_KEY)
        who = await mesh.authenticate(key.strip())
        span = trace.get_current_span()
        span.set_attribute("pixelmesh.account.id", who.account_id)
        return who

    auth = Depends(caller)

    @app.post("/v1/images/generations")
    async def images_generations(request: Request, who: Caller = auth) -> JSONResponse:
        started = time.monotonic()
        body = parse_body(OpenAIImageBody, await _json_body(request))
        if body.stream:
            raise invalid("Streaming is not supported by this model.", "stream")
        if body.partial_images is not None:
            raise invalid("partial_images needs stream=true.", "partial_images")
        generation = await mesh.submit(who, body.to_params(default_format="png"))
        _annotate(generation)
        final = await _wait(mesh, generation, settings.edge_sync_timeout_seconds)
        if final.state != gen.GENERATION_STATE_SUCCEEDED:
            raise failure(final)
        return JSONResponse(await openai_images(mesh, final, body.response_format or "url", started))

    @app.post("/api/v2/generate")
    async def v2_submit(request: Request, who: Caller = auth) -> JSONResponse:
        body = parse_body(GenerateBody, await _json_body(request))
        generation = await mesh.submit(who, body.to_params(default_format="webp"))
        _annotate(generation)
        return JSONResponse(await v2_generation(mesh, generation))

    @app.get("/api/v2/generate/{generation_id}")
    async def v2_get(generation_id: str, who: Caller = auth) -> JSONResponse:
        return JSONResponse(await v2_generation(mesh, await mesh.generation(who, generation_id)))

    @app.get("/v1/models")
    async def models(who: Caller = auth) -> JSONResponse:
        data = [
            {
                "id": m.id,
                "object": "model",
                "created": m.created,
                "owned_by": m.owned_by,
                "type": "image",
                "aliases": list(m.aliases),
                "sizes": list(m.sizes),
                "default_size": m.default_size,
                "max_images": m.max_images,
                "max_prompt_chars": m.max_prompt_chars,
                "qualities": list(m.qualities),
                "styles": list(m.styles),
                "output_formats": list(m.output_formats),
                "parameters": list(m.parameters),
            }
            for m in await mesh.list_models()
        ]
        return JSONResponse({"object": "list", "data": data})

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        deps = await mesh.readiness()
        ok = all(deps.values())
        return JSONResponse({"status": "ok" if ok else "unavailable", "dependencies": deps}, status_code=200 if ok else 503)

    return app


def _annotate(generation: gen.Generation) -> None:
    span = trace.get_current_span()
    span.set_attribute("pixelmesh.generation.id", generation.id)
    span.set_attribute("pixelmesh.model", generation.model)


async def _wait(mesh: Mesh, generation: gen.Generation, timeout: float) -> gen.Generation:
    """Follow the generation to a terminal state; past the timeout, 504 naming its id."""
    latest = generation
    try:
        async for state in mesh.watch(generation.id, timeout):
            latest = state
            if is_terminal(state):
                return state
    except GatewayError as err:
        if err.code is not ErrorCode.TIMEOUT:
            raise
    raise GatewayError(
        ErrorCode.TIMEOUT,
        f"The generation did not finish within {timeout:g} s. Poll GET /api/v2/generate/{generation.id} for its result.",
        generation_id=latest.id,
    )
