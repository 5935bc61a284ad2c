"""The bus's batching and filtering paths against the real Kafka of the test mesh:
grouped offset commits (nothing lost, nothing committed early, a crash redelivers),
header filters, one produce request for several records, and `maybe_seen`."""

from __future__ import annotations

import asyncio
import secrets

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bus import Consumer, EventHeaders, Producer, Record, generation_event
from bus.events import STATE_HEADER
from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.events.v1 import events_pb2


def bootstrap(mesh) -> str:  # noqa: ANN001
    return f"127.0.0.1:{mesh.ports['KAFKA_PORT']}"


async def new_topic(mesh, partitions: int = 1) -> str:  # noqa: ANN001
    name = f"pixelmesh.test.bus.{secrets.token_hex(4)}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap(mesh))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name


def event(i: int, state: int = gen.GENERATION_STATE_SUCCEEDED) -> events_pb2.GenerationEvent:
    return generation_event(gen.Generation(id=f"gen_{i:04d}", state=state, version=1), "test")


async def committed(mesh, topic: str, group: str) -> int | None:  # noqa: ANN001
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap(mesh), group_id=group, enable_auto_commit=False)
    await probe.start()
    try:
        return await probe.committed(TopicPartition(topic, 0))
    finally:
        await probe.stop()


class Handled:
    def __init__(self) -> None:
        self.records: list[Record[events_pb2.GenerationEvent]] = []

    async def __call__(self, record: Record[events_pb2.GenerationEvent]) -> None:
        self.records.append(record)


def consumer(mesh, topic: str, group: str, handler, producer: Producer, **kw) -> Consumer:  # noqa: ANN001
    return Consumer(
        bootstrap_servers=bootstrap(mesh), topic=topic, group_id=group, message_type=events_pb2.GenerationEvent,
        handler=handler, producer=producer, max_in_flight=8, **kw,
    )


async def wait_until(predicate, timeout: float = 30.0) -> None:  # noqa: ANN001
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_grouped_commits_lose_nothing_and_a_crash_redelivers(mesh) -> None:  # noqa: ANN001
    topic, group = await new_topic(mesh), f"test-commits-{secrets.token_hex(4)}"
    producer = Producer(bootstrap(mesh), client_id="test-bus")
    await producer.start()
    try:
        await producer.send_all([(topic, f"k{i}", event(i)) for i in range(200)])  # one produce request's worth

        handled = Handled()
        first = consumer(mesh, topic, group, handled, producer, commit_interval=0.2)
        await first.start()
        await wait_until(lambda: len(handled.records) == 200)
        await asyncio.sleep(0.5)  # a commit interval or two
        assert await committed(mesh, topic, group) == 200  # every record, in a few grouped commits
        await first.stop()

        # Records finished but not yet committed when the process dies are redelivered.
        await producer.send_all([(topic, f"k{i}", event(i)) for i in range(200, 210)])
        crashing = consumer(mesh, topic, group, Handled(), producer, commit_interval=60)
        await crashing.start()
        await wait_until(lambda: len(crashing._handler.records) == 10)
        # "Crash": the process forgets what it finished (no drain, no commit) and is gone.
        crashing._loop_task.cancel()
        crashing._commit_task.cancel()
        crashing._progress.clear()
        await crashing._consumer.stop()
        assert await committed(mesh, topic, group) == 200

        again = consumer(mesh, topic, group, Handled(), producer)
        await again.start()
        await wait_until(lambda: len(again._handler.records) == 10)
        assert [r.key for r in again._handler.records] == [f"k{i}" for i in range(200, 210)]
        assert all(r.maybe_seen for r in again._handler.records)  # they were there before it joined
        await again.stop()
        assert await committed(mesh, topic, group) == 210
    finally:
        await producer.stop()


async def test_refused_records_are_skipped_undecoded_but_committed(mesh) -> None:  # noqa: ANN001
    topic, group = await new_topic(mesh), f"test-accept-{secrets.token_hex(4)}"
    producer = Producer(bootstrap(mesh), client_id="test-bus")
    await producer.start()
    handled = Handled()
    seen_headers: list[EventHeaders] = []

    def terminal_only(headers) -> bool:  # noqa: ANN001
        h = EventHeaders.of(headers)
        seen_headers.append(h)
        return h.terminal

    try:
        states = [gen.GENERATION_STATE_QUEUED, gen.GENERATION_STATE_RUNNING, gen.GENERATION_STATE_SUCCEEDED] * 5
        await producer.send_all([(topic, f"k{i}", event(i, s)) for i, s in enumerate(states)])
        c = consumer(mesh, topic, group, handled, producer, accept=terminal_only, commit_interval=0.05)
        await c.start()
        await wait_until(lambda: len(handled.records) == 5)
        await wait_until(lambda: len(seen_headers) == 15)
        await asyncio.sleep(0.3)
        assert await committed(mesh, topic, group) == 15  # the skipped ones too
        assert {r.message.generation.state for r in handled.records} == {gen.GENERATION_STATE_SUCCEEDED}
        assert all(h.known and h.producer == b"test" for h in seen_headers)
        # Records appended after it joined cannot have been handled by another member.
        await producer.send(topic, "late", event(99))
        await wait_until(lambda: len(handled.records) == 6)
        assert handled.records[-1].key == "late" and not handled.records[-1].maybe_seen
        await c.stop()
    finally:
        await producer.stop()


async def test_events_carry_their_state_in_a_header(mesh) -> None:  # noqa: ANN001
    topic = await new_topic(mesh)
    producer = Producer(bootstrap(mesh), client_id="test-bus")
    await producer.start()
    try:
        cancelled = event(1, gen.GENERATION_STATE_CANCELLED)
        cancelled.generation.params.callback_url = "https://example.com/hook"
        await producer.send_all([(topic, "a", event(0, gen.GENERATION_STATE_RUNNING)), (topic, "b", cancelled)])
    finally:
        await producer.stop()
    reader = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap(mesh), auto_offset_reset="earliest")
    await reader.start()
    try:
        records = []
        while len(records) < 2:
            for batch in (await reader.getmany(timeout_ms=1000)).values():
                records += batch
    finally:
        await reader.stop()
    running, ended = (EventHeaders.of(r.headers) for r in records)
    assert dict(records[0].headers)[STATE_HEADER] == b"GENERATION_STATE_RUNNING"
    assert not running.terminal and not running.callback
    assert ended.terminal and ended.callback and ended.producer == b"test"
