"""Replays a whole topic from the beginning, without a consumer group.

Read models (status) and settlers rebuild their state this way on every start: all
partitions are assigned, read from the earliest offset, and `caught_up` turns true once
every partition has reached the end offset it had at start-up (the readiness signal).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from bus.consumer import IDLE_FETCH_WAIT_MS
from bus.records import M, PoisonMessage, Record, decode, process_span
from svckit.logging import get_logger

log = get_logger(__name__)


class TopicReader(Generic[M]):
    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topic: str,
        message_type: type[M],
        handler: Callable[[Record[M]], Awaitable[None] | None],
        client_id: str = "pixelmesh-reader",
        traced: bool = True,
    ) -> None:
        self.topic = topic
        # False for a topic of heartbeats (provider health): a trace per beat is noise.
        self._traced = traced
        self._message_type = message_type
        self._handler = handler
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=IDLE_FETCH_WAIT_MS,
            isolation_level="read_committed",
        )
        # End offset of each partition at start-up: reaching them all means "caught up".
        self._targets: dict[TopicPartition, int] = {}
        self.caught_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._connected = False

    async def start(self) -> None:
        """Assign every partition from the beginning; safe to call again after a failure."""
        if not self._connected:
            await self._consumer.start()
            self._connected = True
        partitions = None
        for _ in range(50):  # the topic may be created by another service a moment later
            partitions = self._consumer.partitions_for_topic(self.topic)
            if partitions:
                break
            await self._consumer._client.force_metadata_update()  # noqa: SLF001 (no public refresh)
            await asyncio.sleep(0.2)
        if not partitions:
            raise RuntimeError(f"topic {self.topic} does not exist")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        ends = await self._consumer.end_offsets(tps)
        self._targets = {tp: off for tp, off in ends.items() if off > 0}
        await self._check_caught_up()
        self._task = asyncio.create_task(self._run(), name=f"read {self.topic}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _check_caught_up(self) -> None:
        if self.caught_up.is_set():
            return
        for tp, target in self._targets.items():
            if await self._consumer.position(tp) < target:
                return
        self.caught_up.set()
        log.info("caught up", topic=self.topic)

    async def _run(self) -> None:
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=IDLE_FETCH_WAIT_MS)
            except KafkaError as exc:
                log.warning("fetch failed", topic=self.topic, error=repr(exc))
                await asyncio.sleep(1)
                continue
            for raws in batch.values():
                for raw in raws:
                    # Replaying history gets no spans: they would land in traces long closed.
                    live = self._traced and self.caught_up.is_set()
                    traced = process_span(raw, None) if live else contextlib.nullcontext()
                    with traced:
                        try:
                            result = self._handler(decode(raw, self._message_type))
                            if result is not None:
                                await result
                        except PoisonMessage as exc:
                            log.error("skipping undecodable record", topic=raw.topic, offset=raw.offset, error=str(exc))
                        except Exception as exc:
                            log.error("handler failed", topic=raw.topic, offset=raw.offset, error=repr(exc))
            await self._check_caught_up()
