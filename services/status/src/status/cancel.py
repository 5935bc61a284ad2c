"""Cancelling a generation: the first terminal state wins, wherever it comes from.

Status cannot know the worker's latest version, so it writes CANCELLED one version above
the state it has; `bus.supersede` makes every consumer keep whichever terminal state
reaches the generation's partition first. A CANCELLED that wins releases the price
reservation (pricing) and stops the job (workers read the control topic); if the worker's
result got there first, the cancel is answered CONFLICT with that result.
"""

from __future__ import annotations

from bus import CONTROL_TOPIC, EVENTS_TOPIC, Producer, advance, generation_event, is_terminal
from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.events.v1 import events_pb2
from presenters.generation import state_name
from status.core import GenerationStore
from svckit.errors import ErrorCode, GatewayError
from svckit.logging import get_logger

log = get_logger(__name__)
PRODUCER = "status"
# How long a cancel waits to see its own event come back through the events topic.
SETTLE_SECONDS = 10.0
DEFAULT_REASON = "Cancelled by the client."


def already_ended(generation: gen.Generation) -> GatewayError:
    return GatewayError(
        ErrorCode.CONFLICT,
        f"The generation {generation.id} already ended ({state_name(generation)}); it can no longer be cancelled.",
        state=state_name(generation),
        generation_id=generation.id,
    )


async def cancel_generation(
    store: GenerationStore, producer: Producer, generation_id: str, account: str, reason: str = ""
) -> gen.Generation:
    """CANCELLED on the events topic, then the command on the control topic; the kept state.
    `account` scopes the cancel (another account's generation is NOT_FOUND)."""
    current = await store.get(generation_id, account)
    if is_terminal(current):
        raise already_ended(current)
    cancelled = advance(current, gen.GENERATION_STATE_CANCELLED)
    cancelled.error.CopyFrom(gen.GenerationError(code=ErrorCode.CANCELLED.value, message=reason or DEFAULT_REASON))
    try:
        await producer.send(EVENTS_TOPIC, generation_id, generation_event(cancelled, PRODUCER))
        command = events_pb2.ControlMessage(
            cancel_generation=events_pb2.CancelGeneration(generation_id=generation_id, reason=reason or DEFAULT_REASON)
        )
        await producer.send(CONTROL_TOPIC, generation_id, command)
    except Exception as exc:
        log.error("could not record a cancel", generation_id=generation_id, error=repr(exc))
        raise GatewayError(ErrorCode.UNAVAILABLE, "The event bus is unavailable; try the cancel again.") from exc
    log.info("generation cancelled", generation_id=generation_id)
    kept = await store.terminal(generation_id, SETTLE_SECONDS)
    if kept is None or not is_terminal(kept):
        return cancelled  # not read back yet; it still wins unless a result is ahead of it
    if kept.state != gen.GENERATION_STATE_CANCELLED:
        raise already_ended(kept)
    return kept
