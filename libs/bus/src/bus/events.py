"""Building generation events: every change is a full copy of the state, one version newer."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.events.v1 import events_pb2

TERMINAL_STATES = frozenset(
    {gen.GENERATION_STATE_SUCCEEDED, gen.GENERATION_STATE_FAILED, gen.GENERATION_STATE_CANCELLED}
)


def now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


def generation_event(generation: gen.Generation, producer: str) -> events_pb2.GenerationEvent:
    return events_pb2.GenerationEvent(generation=generation, producer=producer, emit_time=now())


def advance(generation: gen.Generation, state: int | None = None) -> gen.Generation:
    """A copy of the generation, one version newer, in `state` (or the same state)."""
    nxt = gen.Generation()
    nxt.CopyFrom(generation)
    nxt.version = generation.version + 1
    ts = now()
    nxt.update_time.CopyFrom(ts)
    if state is not None:
        nxt.state = state
        if state == gen.GENERATION_STATE_RUNNING and not nxt.HasField("start_time"):
            nxt.start_time.CopyFrom(ts)
        if state in TERMINAL_STATES:
            nxt.end_time.CopyFrom(ts)
    return nxt


def is_terminal(generation: gen.Generation) -> bool:
    return generation.state in TERMINAL_STATES


def supersede(current: gen.Generation | None, incoming: gen.Generation) -> gen.Generation | None:
    """The state a consumer keeps when `incoming` arrives after `current`, or None to ignore it.

    Every consumer of the events topic (status, pricing, webhooks, routing) applies this one
    rule to the same per-generation order (one key, one partition), so they all agree:
    - a newer version of a non-terminal state replaces it;
    - the first terminal state wins, whatever its version: a cancel, written by a service
      that cannot know the worker's latest version, still ends the generation; its version
      is lifted above the current one so watchers see a change;
    - after that, only newer versions of the same terminal state apply (annotations such
      as webhook deliveries); any other state is ignored, terminal states never go back.
    """
    if current is None:
        return incoming
    if is_terminal(current):
        if incoming.state == current.state and incoming.version > current.version:
            return incoming
        return None
    if is_terminal(incoming):
        if incoming.version <= current.version:
            lifted = gen.Generation()
            lifted.CopyFrom(incoming)
            lifted.version = current.version + 1
            return lifted
        return incoming
    return incoming if incoming.version > current.version else None
