"""gRPC client channels to other services, and a health probe for readiness checks.

Every channel is a svckit.grpc_tracing.TracedChannel: each call through it is a CLIENT
span carrying the trace context to the peer."""

from __future__ import annotations

import json
from typing import cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from svckit.grpc_tracing import TracedChannel

# Transparent retries of calls that never reached the peer's handler (UNAVAILABLE),
# so a service restarting during a rolling update costs a little latency, not an error.
# Calls fail fast while a peer is down (callers have their own retries and fallbacks);
# reads that should ride out a peer's restart pass wait_for_ready=True themselves.
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# A peer that was down is tried again at least this often (gRPC's default backs off to
# 120 s): once it is back, calls through the channel stop failing within a second.
MAX_RECONNECT_BACKOFF_MS = 1000


def channel(address: str) -> grpc.aio.Channel:
    """A TracedChannel to `address`, typed as the grpc.aio.Channel it stands in for (it
    delegates everything to one, and its multicallables return the same awaitable and
    async-iterable calls), so that generated stubs built on it type as their AsyncStub."""
    traced = TracedChannel(
        grpc.aio.insecure_channel(
            address,
            options=[
                ("grpc.service_config", _SERVICE_CONFIG),
                ("grpc.enable_retries", 1),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
    )
    return cast(grpc.aio.Channel, traced)


async def is_serving(chan: grpc.aio.Channel, service: str = "", timeout: float = 1.0) -> bool:
    """True when the peer's grpc.health.v1 says SERVING for `service`."""
    try:
        # types-grpcio-health-checking declares HealthStub without its methods (the
        # generated __init__ sets Check and Watch on the instance).
        resp = await health_pb2_grpc.HealthStub(chan).Check(  # type: ignore[attr-defined]
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
    except grpc.aio.AioRpcError:
        return False
    return resp.status == health_pb2.HealthCheckResponse.SERVING
