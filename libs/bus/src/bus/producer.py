"""Protobuf producer: acks=all, idempotent.

W3C trace context is written into the message headers by the aiokafka
instrumentation that svckit.telemetry installs (a PRODUCER `send <topic>` span).
"""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from google.protobuf.message import Message

CONTENT_TYPE = "application/x-protobuf"


def type_headers(message: Message) -> list[tuple[str, bytes]]:
    return [
        ("content-type", CONTENT_TYPE.encode()),
        ("pixelmesh-type", message.DESCRIPTOR.full_name.encode()),
    ]


class Producer:
    def __init__(self, bootstrap_servers: str, client_id: str) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            request_timeout_ms=15000,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(self, topic: str, key: str, message: Message) -> None:
        """Produce and wait until the broker (all in-sync replicas) acknowledged it."""
        await self._producer.send_and_wait(
            topic, value=message.SerializeToString(), key=key.encode(), headers=type_headers(message)
        )

    async def send_raw(self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        await self._producer.send_and_wait(topic, value=value, key=key, headers=headers)

    async def is_connected(self) -> bool:
        """Readiness: the cluster metadata can be fetched."""
        try:
            await self._producer.client.fetch_all_metadata()
        except Exception:
            return False
        return True
