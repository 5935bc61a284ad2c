"""Building generation events: every change is a full copy of the state, one version newer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


# Headers of every GenerationEvent record, so that a consumer can skip the events it does
# not act on without parsing the generation (every consumer group reads every event).
STATE_HEADER = "pixelmesh-state"
PRODUCER_HEADER = "pixelmesh-producer"
# Present ("1") when the generation has a callback_url (the webhook dispatcher's events).
CALLBACK_HEADER = "pixelmesh-callback"


def event_headers(event: events_pb2.GenerationEvent) -> list[tuple[str, bytes]]:
    headers = [
        (STATE_HEADER, gen.GenerationState.Name(event.generation.state).encode()),
        (PRODUCER_HEADER, event.producer.encode()),
    ]
    if event.generation.params.callback_url:
        headers.append((CALLBACK_HEADER, b"1"))
    return headers


_TERMINAL_NAMES = frozenset(gen.GenerationState.Name(s).encode() for s in TERMINAL_STATES)


@dataclass(frozen=True)
class EventHeaders:
    """The headers event_headers() wrote; `known` is False for a record without them (written
    by an older producer), which a filter must then let through to be decoded."""

    state: bytes = b""
    producer: bytes = b""
    callback: bool = False
    known: bool = False

    @classmethod
    def of(cls, headers: Sequence[tuple[str, bytes]] | None) -> EventHeaders:
        values = dict(headers or ())
        state = values.get(STATE_HEADER)
        if state is None:
            return cls()
        return cls(state, values.get(PRODUCER_HEADER, b""), values.get(CALLBACK_HEADER) == b"1", True)

    @property
    def terminal(self) -> bool:
        return self.state in _TERMINAL_NAMES


def advance(generation: gen.Generation, state: gen.GenerationState.ValueType | None = None) -> gen.Generation:
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
