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


def openai_error(err: GatewayError, headers: dict[str, str] | None = None, **extra: object) -> JSONResponse:
    """`{"error": {"message", "type", "param", "code"}}` with the status of the error's code."""
    status, kind = HTTP_ERRORS[err.code]
    body: dict[str, object] = {"message": err.message, "type": kind, "param": err.param, "code": err.code.value}
    body.update(extra)
    return JSONResponse({"error": body}, status_code=status, headers=headers)
