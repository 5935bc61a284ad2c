"""What every shape of a generation shares: state names, the error of a finished
generation, money, timestamps."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode, GatewayError

TERMINAL = (gen.GENERATION_STATE_SUCCEEDED, gen.GENERATION_STATE_FAILED, gen.GENERATION_STATE_CANCELLED)
STATE_NAMES = {
    gen.GENERATION_STATE_QUEUED: "queued",
    gen.GENERATION_STATE_RUNNING: "running",
    gen.GENERATION_STATE_SUCCEEDED: "completed",
    gen.GENERATION_STATE_FAILED: "failed",
    gen.GENERATION_STATE_CANCELLED: "cancelled",
}
TERMINAL_NAMES = frozenset(STATE_NAMES[s] for s in TERMINAL)
KIND_NAMES = {
    gen.GENERATION_KIND_UNSPECIFIED: "generate",
    gen.GENERATION_KIND_GENERATE: "generate",
    gen.GENERATION_KIND_EDIT: "edit",
    gen.GENERATION_KIND_VARIATION: "variation",
    gen.GENERATION_KIND_ACTION: "action",
    gen.GENERATION_KIND_BLEND: "blend",
    gen.GENERATION_KIND_DESCRIBE: "describe",
}


def state_name(generation: gen.Generation) -> str:
    return STATE_NAMES.get(generation.state, "queued")


def error_of(generation: gen.Generation) -> GatewayError:
    """The error of a failed or cancelled generation, naming it: CANCELLED for a cancel,
    else the code the generation failed with (INTERNAL for a code this gateway does not know)."""
    if generation.state == gen.GENERATION_STATE_CANCELLED:
        code, fallback = ErrorCode.CANCELLED, "The generation was cancelled."
    else:
        try:
            code = ErrorCode(generation.error.code)
        except ValueError:
            code = ErrorCode.INTERNAL
        fallback = "The generation failed."
    return GatewayError(code, generation.error.message or fallback, generation_id=generation.id)


def usd(micros: int) -> float:
    """Micro-dollars (the mesh's integer money) as the USD amount the APIs answer."""
    return round(micros / 1_000_000, 6)


def iso(ts: Timestamp) -> str | None:
    if not ts.seconds and not ts.nanos:
        return None
    return ts.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch_ms(ts: Timestamp) -> int | None:
    if not ts.seconds and not ts.nanos:
        return None
    return ts.seconds * 1000 + ts.nanos // 1_000_000
