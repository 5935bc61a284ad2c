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
