"""Cancelling a generation: routing decides, as it does every other next step.

Routing reads the generation from status (the read model, as the caller's account), writes
CANCELLED one version above it on the events topic and the command on the control topic
(the worker holding the job stops it and its upstream task), then watches status until
the state that is kept comes back. Routing cannot know the worker's latest version, so the
first terminal state wins (`lifecycle.supersede`): a CANCELLED that wins releases the price
reservation (pricing); if the worker's result got there first, the cancel is answered
CONFLICT with that result.
"""

from __future__ import annotations

import asyncio

import grpc

import lifecycle
from bus import CONTROL_TOPIC, EVENTS_TOPIC, Producer, generation_event
from lifecycle import is_terminal
from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.events.v1 import events_pb2
from pixelmesh.status.v1 import status_service_pb2, status_service_pb2_grpc
from presenters.generation import state_name
from svckit.accounts import Metadata
from svckit.errors import ErrorCode, GatewayError, from_rpc_error
from svckit.logging import get_logger

log = get_logger(__name__)
PRODUCER = "routing"
# How long a cancel waits to see the kept state come back through status.
SETTLE_SECONDS = 10.0
DEFAULT_REASON = "Cancelled by the client."


def already_ended(generation: gen.Generation) -> GatewayError:
    return GatewayError(
        ErrorCode.CONFLICT,
        f"The generation {generation.id} already ended ({state_name(generation)}); it can no longer be cancelled.",
        state=state_name(generation),
        generation_id=generation.id,
    )


class Canceller:
    def __init__(self, status: status_service_pb2_grpc.StatusServiceAsyncStub, producer: Producer) -> None:
        self._status = status
        self._producer = producer

    async def cancel(self, generation_id: str, read_as: Metadata, reason: str = "") -> gen.Generation:
        """CANCELLED on the events topic, then the command on the control topic; the kept state.
        `read_as`: the caller's account (svckit.accounts), as status is read for it."""
        reason = reason or DEFAULT_REASON
        watch = self._status.WatchGeneration(
            status_service_pb2.WatchGenerationRequest(generation_id=generation_id),
            metadata=read_as,
            timeout=SETTLE_SECONDS + 5,
            wait_for_ready=True,
        )
        try:
            try:
                first = await watch.read()
            except grpc.aio.AioRpcError as exc:
                raise from_rpc_error(exc) from exc
            if not isinstance(first, status_service_pb2.WatchGenerationResponse):  # the stream ended at once
                raise GatewayError(ErrorCode.UNAVAILABLE, "The status service did not answer; try the cancel again.")
            current = first.generation
            if is_terminal(current):
                raise already_ended(current)
            cancelled = lifecycle.cancelled(
                current, gen.GenerationError(code=ErrorCode.CANCELLED.value, message=reason)
            )
            await self._publish(cancelled, reason)
            kept = await self._kept(watch, current)
        finally:
            watch.cancel()
        if kept is None or not is_terminal(kept):
            return cancelled  # not read back yet; it still wins unless a result is ahead of it
        if kept.state != gen.GENERATION_STATE_CANCELLED:
            raise already_ended(kept)
        return kept

    async def _publish(self, cancelled: gen.Generation, reason: str) -> None:
        try:
            await self._producer.send(EVENTS_TOPIC, cancelled.id, generation_event(cancelled, PRODUCER))
            command = events_pb2.ControlMessage(
                cancel_generation=events_pb2.CancelGeneration(generation_id=cancelled.id, reason=reason)
            )
            await self._producer.send(CONTROL_TOPIC, cancelled.id, command)
        except Exception as exc:
            log.error("could not record a cancel", generation_id=cancelled.id, error=repr(exc))
            raise GatewayError(ErrorCode.UNAVAILABLE, "The event bus is unavailable; try the cancel again.") from exc
        log.info("generation cancelled", generation_id=cancelled.id)

    @staticmethod
    async def _kept(
        watch: grpc.aio.UnaryStreamCall[
            status_service_pb2.WatchGenerationRequest, status_service_pb2.WatchGenerationResponse
        ],
        current: gen.Generation,
    ) -> gen.Generation | None:
        """The first terminal state status shows, or the latest state at SETTLE_SECONDS."""
        latest: gen.Generation | None = current
        try:
            async with asyncio.timeout(SETTLE_SECONDS):
                while latest is None or not is_terminal(latest):
                    message = await watch.read()
                    if not isinstance(message, status_service_pb2.WatchGenerationResponse):
                        break  # the stream ended (grpc.aio.EOF)
                    latest = message.generation
        except (TimeoutError, grpc.aio.AioRpcError):
            pass  # status is slow to show it: the cancel stands unless a result is ahead
        return latest
