"""What the OpenAPI document (/openapi.json) says about bodies and answers.

The routes read their bodies themselves (so a bad body is an OpenAI error object, not
FastAPI's 422), so the request schemas are attached here from the same pydantic models
that parse them; the response models below describe what the presenters write.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from edge.errors import HTTP_ERRORS


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None
    generation_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class MjResult(BaseModel):
    """The Midjourney proxies' submit/cancel answer, also their way of failing."""

    code: int
    description: str
    result: str | None = None
    properties: dict[str, Any] = {}


class KlingEnvelope(BaseModel):
    """Kling's answer: `code` 0 with the task in `data`, or an error code without `data`."""

    code: int
    message: str
    request_id: str
    data: dict[str, Any] | None = None


class ImageData(BaseModel):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class InputTokensDetails(BaseModel):
    text_tokens: int
    image_tokens: int


class Usage(BaseModel):
    total_tokens: int
    input_tokens: int
    output_tokens: int
    input_tokens_details: InputTokensDetails


class Perf(BaseModel):
    """The perf API's performance block."""

    request_id: str
    model_used: str
    size: str
    quality: str
    cost_usd: float
    latency_ms: int


class ImagesResponse(BaseModel):
    """OpenAI's ImagesResponse, plus the v2 API's cost fields and the perf API's `perf`."""

    created: int
    data: list[ImageData]
    output_format: str | None = None
    quality: str | None = None
    size: str | None = None
    background: str | None = None
    safety_identifier: str | None = None
    usage: Usage | None = None
    id: str
    model: str
    seed: int
    tokens_spent: int
    cost_usd: float
    perf: Perf


class ModelPrice(BaseModel):
    size: str
    quality: str
    tokens: int
    usd: float


class ModelInfo(BaseModel):
    id: str
    object: str
    created: int
    owned_by: str
    type: str
    model_config = {"extra": "allow"}


class ModelList(BaseModel):
    object: str
    data: list[ModelInfo]


class PriceQuote(BaseModel):
    model: str
    size: str
    quality: str
    n: int
    width: int
    height: int
    tokens: int
    cost_usd: float
    per_image: ModelPrice
    base_per_image: ModelPrice
    surcharge_per_image_usd: float
    currency: str


ERROR_STATUSES = sorted({status for status, _ in HTTP_ERRORS.values()})
SSE_DOC = (
    "With stream=true: text/event-stream of `image_generation.partial_image` / `image_generation.completed` "
    "(`image_edit.*` for edits) events, each `data` a JSON object with `type`, `b64_json`, ..."
)


def error_responses() -> dict[int | str, dict[str, Any]]:
    """Every status the error table can answer, each an OpenAI error object."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in ERROR_STATUSES:
        out[status] = {"model": ErrorResponse, "description": "OpenAI error object"}
    out[429]["headers"] = {
        "Retry-After": {"schema": {"type": "string"}, "description": "Seconds to wait"},
        "x-ratelimit-limit-requests": {"schema": {"type": "string"}},
        "x-ratelimit-remaining-requests": {"schema": {"type": "string"}},
        "x-ratelimit-reset-requests": {"schema": {"type": "string"}},
    }
    return out


def image_responses(stream: bool) -> dict[int | str, dict[str, Any]]:
    ok: dict[str, Any] = {"model": ImagesResponse, "description": "The images"}
    if stream:
        ok["description"] += ". " + SSE_DOC
        ok["content"] = {"text/event-stream": {"schema": {"type": "string"}}}
    return {200: ok, **error_responses()}


IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A retried submit with the same key returns the first generation, never a second charge.",
    "schema": {"type": "string", "maxLength": 255},
}


def json_body(model: type[BaseModel], *, idempotent: bool = False) -> dict[str, Any]:
    schema = model.model_json_schema()
    out: dict[str, Any] = {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
    if idempotent:
        out["parameters"] = [IDEMPOTENCY_HEADER]
    return out


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its nested models written in place (no `$defs` to resolve)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)


def multipart_body(
    model: type[BaseModel], files: tuple[str, ...], required: tuple[str, ...], json: type[BaseModel] | None = None
) -> dict[str, Any]:
    """A multipart/form-data body: the model's fields as text, plus binary file parts (and,
    with `json`, the same operation's JSON body)."""
    schema = model.model_json_schema()
    props: dict[str, Any] = {}
    for name in files:
        props[name] = {"type": "string", "format": "binary"}
    for name, prop in schema["properties"].items():  # multipart has no null: a field is sent or not
        options = [o for o in prop.get("anyOf", [prop]) if o.get("type") != "null"]
        props[name] = {**options[0], **({"title": prop["title"]} if "title" in prop else {})}
    body = {"type": "object", "properties": props, "required": list(required)}
    encoding = {name: {"contentType": "image/png, image/webp, image/jpeg"} for name in files}
    content: dict[str, Any] = {"multipart/form-data": {"schema": body, "encoding": encoding}}
    if json is not None:
        content["application/json"] = {"schema": inline_schema(json)}
    return {"parameters": [IDEMPOTENCY_HEADER], "requestBody": {"required": True, "content": content}}


def add_error_responses(openapi: dict[str, Any]) -> dict[str, Any]:
    """Every operation can answer any gateway error (auth, rate limit, dependencies down);
    the Midjourney routes may also fail in the proxies' own result shape, the Kling routes
    answer every error in Kling's envelope."""

    def errors(schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {
            str(status): {"description": description, "content": {"application/json": {"schema": schema}}}
            for status in ERROR_STATUSES
        }

    openai = errors({"$ref": "#/components/schemas/ErrorResponse"}, "OpenAI error object")
    mj = errors(
        {"anyOf": [{"$ref": "#/components/schemas/ErrorResponse"}, {"$ref": "#/components/schemas/MjResult"}]},
        "OpenAI error object, or the Midjourney proxies' result with a failure code",
    )
    kling = errors({"$ref": "#/components/schemas/KlingEnvelope"}, "Kling's envelope with its error code")
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorResponse, MjResult, KlingEnvelope):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas.setdefault(name, sub)
        schemas.setdefault(model.__name__, schema)
    for route, path in openapi.get("paths", {}).items():
        for op in path.values():
            responses = op.setdefault("responses", {})
            shapes = mj if route.startswith("/mj/") else kling if route.startswith("/kling/") else openai
            for status, resp in shapes.items():
                responses.setdefault(status, resp)
            responses.pop("422", None)  # validation errors are 400 OpenAI error objects here
    return openapi
