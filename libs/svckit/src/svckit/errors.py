"""Gateway errors and their one mapping to gRPC status codes.

Every service raises `GatewayError`; servicers turn it into a rich gRPC status
(`google.rpc.Status` with an `ErrorInfo` detail) through `abort_with`, and clients turn
an `AioRpcError` back into the same `GatewayError` with `from_rpc_error`. The edge maps
the same codes to HTTP statuses and OpenAI error objects in one table of its own.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from typing import NoReturn

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "pixelmesh.dev"


class ErrorCode(str, enum.Enum):
    INVALID_REQUEST = "invalid_request"
    MODEL_NOT_FOUND = "model_not_found"
    CONTENT_POLICY_VIOLATION = "content_policy_violation"
    UNAUTHENTICATED = "invalid_api_key"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    RATE_LIMITED = "rate_limit_exceeded"
    NOT_FOUND = "not_found"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    # One of the gateway's own dependencies (Kafka, object store, a peer service) is down.
    UNAVAILABLE = "service_unavailable"
    PROVIDER_ERROR = "provider_error"
    # The gateway's own upstream credentials were refused: an operator problem, never
    # reported to the client as if its key were wrong.
    PROVIDER_AUTH = "provider_auth_error"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    # The request conflicts with the resource's state (cancelling a generation that ended).
    CONFLICT = "conflict"
    INTERNAL = "internal_error"


GRPC_CODES: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.INVALID_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.MODEL_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.CONTENT_POLICY_VIOLATION: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.INSUFFICIENT_BALANCE: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.PROVIDER_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.PROVIDER_ERROR: grpc.StatusCode.INTERNAL,
    ErrorCode.PROVIDER_AUTH: grpc.StatusCode.INTERNAL,
    ErrorCode.TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.CANCELLED: grpc.StatusCode.CANCELLED,
    ErrorCode.CONFLICT: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
}

# gRPC codes seen without our ErrorInfo (transport failures, other servers).
_FALLBACK: dict[grpc.StatusCode, ErrorCode] = {
    grpc.StatusCode.INVALID_ARGUMENT: ErrorCode.INVALID_REQUEST,
    grpc.StatusCode.NOT_FOUND: ErrorCode.NOT_FOUND,
    grpc.StatusCode.UNAUTHENTICATED: ErrorCode.UNAUTHENTICATED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ErrorCode.RATE_LIMITED,
    grpc.StatusCode.DEADLINE_EXCEEDED: ErrorCode.TIMEOUT,
    grpc.StatusCode.CANCELLED: ErrorCode.CANCELLED,
    grpc.StatusCode.UNAVAILABLE: ErrorCode.UNAVAILABLE,
}


class GatewayError(Exception):
    """A failure the caller should see, with a stable code and the offending parameter."""

    def __init__(self, code: ErrorCode, message: str, *, param: str | None = None, **metadata: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.metadata = {k: str(v) for k, v in metadata.items()}

    def __repr__(self) -> str:
        return f"GatewayError({self.code.value!r}, {self.message!r}, param={self.param!r})"

    def to_status(self) -> status_pb2.Status:
        grpc_code = GRPC_CODES[self.code]
        info = error_details_pb2.ErrorInfo(reason=self.code.value, domain=DOMAIN, metadata=dict(self.metadata))
        if self.param:
            info.metadata["param"] = self.param
        status = status_pb2.Status(code=grpc_code.value[0], message=self.message)
        status.details.add().Pack(info)
        return status


def invalid(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(ErrorCode.INVALID_REQUEST, message, param=param)


@contextlib.contextmanager
def rpc_errors() -> Iterator[None]:
    """Around a call to a peer: its AioRpcError becomes the GatewayError it carried."""
    try:
        yield
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from exc


async def abort_with(context: grpc.aio.ServicerContext, err: GatewayError) -> NoReturn:
    """End the RPC with the error's rich status (never returns)."""
    await context.abort_with_status(rpc_status.to_status(err.to_status()))
    raise AssertionError("abort_with_status returned")  # it raises; this keeps NoReturn honest


def from_rpc_error(exc: grpc.aio.AioRpcError | grpc.RpcError) -> GatewayError:
    """Recover the GatewayError a peer raised, or classify a transport failure."""
    # The stub types from_call's argument as grpc.Call, but it only calls trailing_metadata(),
    # code() and details(), which AioRpcError has without being a grpc.Call.
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                if info.domain == DOMAIN:
                    meta = dict(info.metadata)
                    param = meta.pop("param", None)
                    try:
                        code = ErrorCode(info.reason)
                    except ValueError:
                        code = ErrorCode.INTERNAL
                    return GatewayError(code, status.message, param=param, **meta)
    grpc_code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    return GatewayError(_FALLBACK.get(grpc_code, ErrorCode.INTERNAL), exc.details() or str(grpc_code))


__all__ = [
    "ErrorCode",
    "GatewayError",
    "GRPC_CODES",
    "abort_with",
    "from_rpc_error",
    "rpc_errors",
    "invalid",
]
