"""The one table from gateway error codes to HTTP statuses and OpenAI error objects."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from svckit.errors import ErrorCode, GatewayError

# code -> (HTTP status, OpenAI error type)
HTTP_ERRORS: dict[ErrorCode, tuple[int, str]] = {
    ErrorCode.INVALID_REQUEST: (400, "invalid_request_error"),
    ErrorCode.CONTENT_POLICY_VIOLATION: (400, "invalid_request_error"),
    ErrorCode.UNAUTHENTICATED: (401, "invalid_request_error"),
    ErrorCode.INSUFFICIENT_BALANCE: (402, "insufficient_quota"),
    ErrorCode.MODEL_NOT_FOUND: (404, "invalid_request_error"),
    ErrorCode.NOT_FOUND: (404, "invalid_request_error"),
    ErrorCode.CANCELLED: (409, "invalid_request_error"),
    ErrorCode.CONFLICT: (409, "invalid_request_error"),
    ErrorCode.RATE_LIMITED: (429, "rate_limit_error"),
    ErrorCode.INTERNAL: (500, "server_error"),
    ErrorCode.PROVIDER_ERROR: (502, "server_error"),
    ErrorCode.PROVIDER_AUTH: (502, "server_error"),
    ErrorCode.PROVIDER_UNAVAILABLE: (503, "server_error"),
    ErrorCode.UNAVAILABLE: (503, "server_error"),
    ErrorCode.TIMEOUT: (504, "server_error"),
}

# GatewayError metadata (set by pricing's rate limiter) -> HTTP response header.
RATE_LIMIT_HEADERS: dict[str, str] = {
    "retry_after_seconds": "Retry-After",
    "ratelimit_limit_requests": "x-ratelimit-limit-requests",
    "ratelimit_remaining_requests": "x-ratelimit-remaining-requests",
    "ratelimit_reset_requests": "x-ratelimit-reset-requests",
}
# Retry-After of a 429 whose error named no wait (a peer's bare RESOURCE_EXHAUSTED).
DEFAULT_RETRY_AFTER = "1"
# Metadata copied into the error object: a 504's generation can still be polled.
BODY_METADATA = ("generation_id",)


def error_headers(err: GatewayError) -> dict[str, str]:
    """Rate-limit headers from the error's metadata; every 429 carries Retry-After."""
    headers = {name: err.metadata[key] for key, name in RATE_LIMIT_HEADERS.items() if err.metadata.get(key)}
    if err.code is ErrorCode.RATE_LIMITED and "Retry-After" not in headers:
        headers["Retry-After"] = DEFAULT_RETRY_AFTER
    if "generation_id" in err.metadata:
        headers["x-generation-id"] = err.metadata["generation_id"]
    return headers


def error_object(err: GatewayError) -> dict[str, object]:
    """OpenAI's `{"message", "type", "param", "code"}`, plus the generation id where there is one."""
    _status, kind = HTTP_ERRORS[err.code]
    body: dict[str, object] = {"message": err.message, "type": kind, "param": err.param, "code": err.code.value}
    body.update({k: err.metadata[k] for k in BODY_METADATA if k in err.metadata})
    return body


def openai_error(err: GatewayError, headers: dict[str, str] | None = None, **extra: object) -> JSONResponse:
    """`{"error": {"message", "type", "param", "code"}}` with the status and headers of the error."""
    status, _kind = HTTP_ERRORS[err.code]
    body = error_object(err)
    body.update(extra)
    return JSONResponse({"error": body}, status_code=status, headers={**error_headers(err), **(headers or {})})
