"""At-least-once consumer group with bounded concurrency.

- Offsets are committed only after the handler returned, i.e. after the events it
  produced were acknowledged; per partition, only the contiguous prefix of finished
  records is committed, so a crash redelivers every unfinished record.
- At most `max_in_flight` records are handled at once; when full, the assigned
  partitions are paused so the consumer keeps its group membership without fetching.
- A record that cannot be decoded, or whose handler keeps failing, goes to
  `<topic>.dlq` with the error in its headers, and is then committed: it never loops.
- On rebalance and on stop, in-flight records are finished (bounded by a grace period)
  and committed before the partitions are handed back.
- Commits are grouped: finished offsets are committed at most `commit_interval` seconds
  later, in one request for every partition (a commit per record cost the broker and the
  client more than most handlers). A crash in between redelivers those records, which
  at-least-once handlers absorb anyway.
- `accept` looks at a record's headers before anything else: a record it refuses is done
  at once, never decoded, traced or handed to the handler (the events topic carries every
  state of every generation, and most consumer groups act on a few of them).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord
from prometheus_client import Gauge

from bus.producer import Producer
from bus.records import M, PoisonMessage, Record, decode, process_span
from bus.topics import dlq_topic
from svckit.logging import get_logger

log = get_logger(__name__)

Handler = Callable[[Record[M]], Awaitable[None]]
# A filter on a record's headers: False means "not for this group", done without decoding.
Accept = Callable[[Sequence[tuple[str, bytes]]], bool]
# How long the broker holds a fetch open while the topic has nothing new (it answers at once
# when a record arrives), and how long getmany waits: long, so that an idle consumer wakes
# a few times a minute rather than several times a second.
IDLE_FETCH_WAIT_MS = 5_000
# Records fetched at once: enough to skip runs of refused records in one go.
FETCH_BATCH = 100
# What a delay-tolerant group's fetch waits to fill (or its max_delay_seconds to pass).
BATCH_FETCH_BYTES = 256 * 1024


class _PartitionProgress:
    """Offsets in flight on one partition, to know how far it is safe to commit."""

    def __init__(self) -> None:
        self.in_flight: set[int] = set()
        self.highest_done = -1

    def commit_offset(self) -> int | None:
        if self.in_flight:
            return min(self.in_flight)  # everything before the oldest unfinished record
        return self.highest_done + 1 if self.highest_done >= 0 else None


CONSUMER_LAG = Gauge(
    "pixelmesh_kafka_consumer_lag",
    "Records of the partition this group has not finished yet",
    ["topic", "group", "partition"],
)


class Consumer(Generic[M]):
    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topic: str,
        group_id: str,
        message_type: type[M],
        handler: Handler[M],
        producer: Producer,
        max_in_flight: int = 1,
        handler_attempts: int = 3,
        shutdown_grace_seconds: float = 30.0,
        client_id: str = "pixelmesh",
        # Where a group with no committed offset starts: "earliest" for work queues (no job
        # is lost), "latest" for reactions to live events that must not replay history.
        auto_offset_reset: str = "earliest",
        accept: Accept | None = None,
        commit_interval: float = 0.2,
        # How long a record may wait before this group sees it. 0 for work on the critical
        # path (jobs, the status read model, the ledger); groups that only react afterwards
        # (webhooks, fallbacks) take up to a second, and under load the broker then answers
        # each of their fetches with many records rather than one (idle, they wake once
        # per max_delay_seconds).
        max_delay_seconds: float = 0.0,
    ) -> None:
        self.topic = topic
        self.group_id = group_id
        self._message_type = message_type
        self._handler = handler
        self._producer = producer
        self._max_in_flight = max(1, max_in_flight)
        self._handler_attempts = handler_attempts
        self._grace = shutdown_grace_seconds
        self._accept = accept
        self._commit_interval = commit_interval
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=3_000,
            max_poll_interval_ms=600_000,
            fetch_max_wait_ms=int(max_delay_seconds * 1000) if max_delay_seconds > 0 else IDLE_FETCH_WAIT_MS,
            fetch_min_bytes=BATCH_FETCH_BYTES if max_delay_seconds > 0 else 1,
            isolation_level="read_committed",
        )
        self._progress: dict[TopicPartition, _PartitionProgress] = {}
        # Per partition, the end offset when this process was assigned it: records from
        # there on were appended since, so no other member of the group has handled them.
        self._fresh_from: dict[TopicPartition, int] = {}
        self._to_commit: set[TopicPartition] = set()
        self._commit_task: asyncio.Task[None] | None = None
        self._tasks: dict[asyncio.Task[None], TopicPartition] = {}
        self._slot_free = asyncio.Event()
        self._running = False
        self._connected = False
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        """Join the group and start consuming; safe to call again after a failed start."""
        if not self._connected:
            self._consumer.subscribe([self.topic], listener=_Rebalance(self))
            await self._consumer.start()
            self._connected = True
        self._running = True
        self._loop_task = asyncio.create_task(self._run(), name=f"consume {self.topic}")

    async def stop(self) -> None:
        """Stop fetching, finish what is in flight (bounded), commit, leave the group."""
        self._running = False
        if self._loop_task:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        await self._drain(set(self._progress))
        if self._commit_task:
            self._commit_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._commit_task
        await self._consumer.stop()

    async def _run(self) -> None:
        while self._running:
            try:
                batch = await self._consumer.getmany(
                    timeout_ms=IDLE_FETCH_WAIT_MS, max_records=max(FETCH_BATCH, self._max_in_flight)
                )
            except KafkaError as exc:
                log.warning("fetch failed", topic=self.topic, error=repr(exc))
                await asyncio.sleep(1)
                continue
            self._report_lag()
            for tp, raws in batch.items():
                for raw in raws:
                    if self._accept is not None and not self._accept(raw.headers or ()):
                        self._done(tp, raw.offset)
                        continue
                    if self.in_flight >= self._max_in_flight:
                        await self._wait_for_slot()
                    progress = self._progress.get(tp)
                    if progress is None:
                        break  # revoked while we waited: its new owner handles the rest
                    progress.in_flight.add(raw.offset)
                    task = asyncio.create_task(self._handle(raw))
                    self._tasks[task] = tp
                    task.add_done_callback(self._finished)

    async def _wait_for_slot(self) -> None:
        """Full: pause fetching (the group membership stays) until a handler finishes."""
        self._consumer.pause(*self._consumer.assignment())
        self._slot_free.clear()
        while self.in_flight >= self._max_in_flight:
            await self._slot_free.wait()
            self._slot_free.clear()
        self._consumer.resume(*self._consumer.assignment())

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        self._slot_free.set()

    async def _handle(self, raw: ConsumerRecord) -> None:
        tp = TopicPartition(raw.topic, raw.partition)
        try:
            with process_span(raw, self.group_id) as span:
                try:
                    fresh = raw.offset >= self._fresh_from.get(tp, 1 << 62)
                    record = decode(raw, self._message_type, maybe_seen=not fresh)
                    await self._call_with_retries(record)
                except PoisonMessage as exc:
                    span.record_exception(exc)
                    await self._dead_letter(raw, exc)
        except Exception as exc:
            # The dead-letter topic itself failed. The record stays in flight, so no commit
            # passes it; it is redelivered after a restart or a rebalance.
            log.error("record not handled", topic=raw.topic, offset=raw.offset, error=repr(exc))
            return
        # (A cancelled handler also stays in flight: handed back uncommitted.)
        self._done(tp, raw.offset)

    def _done(self, tp: TopicPartition, offset: int) -> None:
        """The record at `offset` is finished: its offset is committed with the next group."""
        progress = self._progress.get(tp)
        if progress is None:
            return  # partition revoked meanwhile; its new owner redoes the record
        progress.in_flight.discard(offset)
        progress.highest_done = max(progress.highest_done, offset)
        self._to_commit.add(tp)
        if self._commit_task is None or self._commit_task.done():
            self._commit_task = asyncio.create_task(self._commit_soon(), name=f"commit {self.topic}")

    async def _commit_soon(self) -> None:
        await asyncio.sleep(self._commit_interval)
        partitions, self._to_commit = self._to_commit, set()
        await self._commit(partitions)

    async def _call_with_retries(self, record: Record[M]) -> None:
        delay = 0.5
        for attempt in range(1, self._handler_attempts + 1):
            try:
                await self._handler(record)
                return
            except (asyncio.CancelledError, PoisonMessage):
                raise
            except Exception as exc:
                if attempt == self._handler_attempts:
                    raise PoisonMessage(f"handler failed {attempt} times: {exc!r}") from exc
                log.warning(
                    "handler failed, retrying", topic=record.topic, key=record.key, attempt=attempt, error=repr(exc)
                )
                await asyncio.sleep(delay)
                delay *= 2

    async def _dead_letter(self, raw: ConsumerRecord, exc: Exception) -> None:
        headers = list(raw.headers or []) + [
            ("pixelmesh-error", str(exc).encode()[:1000]),
            ("pixelmesh-original-topic", raw.topic.encode()),
            ("pixelmesh-original-partition", str(raw.partition).encode()),
            ("pixelmesh-original-offset", str(raw.offset).encode()),
        ]
        await self._producer.send_raw(dlq_topic(raw.topic), raw.key, raw.value, headers)
        log.error("record sent to dead-letter topic", topic=raw.topic, offset=raw.offset, error=str(exc))

    async def _commit(self, partitions: set[TopicPartition]) -> None:
        """Commit how far each of these partitions is done, in one request."""
        offsets = {}
        for tp in partitions:
            progress = self._progress.get(tp)
            offset = progress.commit_offset() if progress else None
            if offset is not None:
                offsets[tp] = offset
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Lost the partition in a rebalance: the new owner redelivers from the last commit.
            log.warning("commit failed", partitions=sorted(tp.partition for tp in offsets), error=repr(exc))
            return
        for tp in offsets:
            self._report_lag(tp)

    def _report_lag(self, only: TopicPartition | None = None) -> None:
        """Records not yet finished per partition: the broker's end offset minus what this
        group has done (KEDA scales workers on the same number, read from Kafka)."""
        for tp in [only] if only else self._consumer.assignment():
            end = self._consumer.highwater(tp)
            if end is None:
                continue
            progress = self._progress.get(tp)
            done = progress.commit_offset() if progress else None
            if done is None:
                continue
            CONSUMER_LAG.labels(tp.topic, self.group_id, str(tp.partition)).set(max(0, end - done))

    async def _drain(self, partitions: set[TopicPartition]) -> None:
        """Let in-flight records of these partitions finish (up to the grace period), then commit."""
        tasks = [t for t, tp in self._tasks.items() if tp in partitions]
        if tasks:
            log.info("finishing in-flight records", count=len(tasks))
            done, pending = await asyncio.wait(tasks, timeout=self._grace)
            for t in pending:
                t.cancel()  # handed back: the next owner redoes them
        await self._commit(partitions)
        for tp in partitions:
            self._progress.pop(tp, None)
            self._fresh_from.pop(tp, None)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, consumer: Consumer) -> None:
        self._c = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._c._drain(set(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            self._c._progress.setdefault(tp, _PartitionProgress())
        if not assigned:
            return
        try:
            ends = await self._c._consumer.end_offsets(list(assigned))
        except KafkaError as exc:  # unknown: every record counts as possibly seen
            log.warning("end offsets unknown", topic=self._c.topic, error=repr(exc))
            return
        self._c._fresh_from.update(ends)
