"""Decoding consumed records and the CONSUMER span that continues the producer's trace."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

from aiokafka.structs import ConsumerRecord
from google.protobuf.message import DecodeError, Message
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind

M = TypeVar("M", bound=Message)
_tracer = trace.get_tracer("pixelmesh.bus")


class PoisonMessage(Exception):
    """A record that can never be handled (undecodable); it goes to the dead-letter topic."""


@dataclass(frozen=True)
class Record(Generic[M]):
    topic: str
    partition: int
    offset: int
    key: str
    message: M
    # False only when this consumer group cannot have handled the record before: it was
    # appended after this process took its partition over (bus.Consumer knows). A record
    # that may be a redelivery (a crash before its commit) has True.
    maybe_seen: bool = True


def decode(raw: ConsumerRecord, message_type: type[M], *, maybe_seen: bool = True) -> Record[M]:
    if raw.value is None:
        raise PoisonMessage("record has no value")
    try:
        msg = message_type.FromString(raw.value)
    except DecodeError as exc:
        raise PoisonMessage(f"not a {message_type.DESCRIPTOR.full_name}: {exc}") from exc
    key = raw.key.decode(errors="replace") if raw.key else ""
    return Record(raw.topic, raw.partition, raw.offset, key, msg, maybe_seen)


class _HeaderGetter(Getter[list[tuple[str, bytes]]]):
    def get(self, carrier: list[tuple[str, bytes]], key: str) -> list[str] | None:
        values = [v.decode() for k, v in carrier if k == key and v is not None]
        return values or None

    def keys(self, carrier: list[tuple[str, bytes]]) -> list[str]:
        return [k for k, _ in carrier]


_getter = _HeaderGetter()


@contextmanager
def process_span(raw: ConsumerRecord, group: str | None) -> Iterator[trace.Span]:
    """A `process <topic>` CONSUMER span, child of the span that produced the record."""
    parent = propagate.extract(list(raw.headers or []), getter=_getter)
    attrs = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": raw.topic,
        "messaging.destination.partition.id": str(raw.partition),
        "messaging.kafka.offset": raw.offset,
    }
    if raw.key:
        attrs["messaging.kafka.message.key"] = raw.key.decode(errors="replace")
    if group:
        attrs["messaging.consumer.group.name"] = group
    with _tracer.start_as_current_span(
        f"process {raw.topic}", context=parent, kind=SpanKind.CONSUMER, attributes=attrs
    ) as span:
        yield span
