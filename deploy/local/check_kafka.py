"""Check that aiokafka works against the local broker the way pixelmesh uses it.

    .venv/bin/python deploy/local/check_kafka.py [--bootstrap 127.0.0.1:9092]

Default bootstrap: $KAFKA_BOOTSTRAP, else 127.0.0.1:$KAFKA_PORT (9092).
Steps, each must pass:
  1. admin: create a topic with cleanup.policy=compact,delete (3 partitions)
  2. producer: acks="all", enable_idempotence=True, keyed messages
  3. consumer group: enable_auto_commit=False, read everything, manual commit(),
     then a fresh consumer in the same group sees the committed offsets
  4. manual assignment (no group): seek_to_beginning re-reads all messages
  5. admin: delete the topic
Exits 0 and prints one line on success; non-zero with the failing step otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

PARTITIONS = 3
MESSAGES = 30
TIMEOUT_S = 30.0


async def consume_n(consumer: AIOKafkaConsumer, n: int) -> list:
    records: list = []
    deadline = time.monotonic() + TIMEOUT_S
    while len(records) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"got {len(records)} of {n} messages")
        batch = await consumer.getmany(timeout_ms=500)
        for recs in batch.values():
            records.extend(recs)
    return records


async def run(bootstrap: str) -> None:
    topic = f"pixelmesh-check-{uuid.uuid4().hex[:8]}"
    group = f"{topic}-group"
    step = "admin create_topics"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    name=topic,
                    num_partitions=PARTITIONS,
                    replication_factor=1,
                    topic_configs={"cleanup.policy": "compact,delete"},
                )
            ]
        )
        step = "admin describe_configs"
        described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        policy = None
        for resp in described:
            for res in resp.resources:
                for entry in res[4]:
                    if entry[0] == "cleanup.policy":
                        policy = entry[1]
        if policy != "compact,delete":
            raise AssertionError(f"cleanup.policy is {policy!r}")

        step = "idempotent producer"
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            futures = [
                await producer.send(topic, key=f"k{i % 10}".encode(), value=f"v{i}".encode()) for i in range(MESSAGES)
            ]
            metas = await asyncio.gather(*futures)
            if {m.topic for m in metas} != {topic}:
                raise AssertionError("unexpected record metadata")
        finally:
            await producer.stop()

        step = "consumer group + manual commit"
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        await consumer.start()
        try:
            records = await consume_n(consumer, MESSAGES)
            await consumer.commit()
            committed = {}
            for tp in consumer.assignment():
                committed[tp.partition] = await consumer.committed(tp)
        finally:
            await consumer.stop()
        if len(records) != MESSAGES or sum(v or 0 for v in committed.values()) != MESSAGES:
            raise AssertionError(f"records={len(records)} committed={committed}")

        step = "committed offsets survive a restart of the group member"
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            again = {tp.partition: await consumer.committed(tp) for tp in tps}
        finally:
            await consumer.stop()
        if again != committed:
            raise AssertionError(f"committed offsets {again} != {committed}")

        step = "manual assignment + seek_to_beginning"
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            await consumer.seek_to_beginning(*tps)
            replay = await consume_n(consumer, MESSAGES)
        finally:
            await consumer.stop()
        if sorted(r.value for r in replay) != sorted(r.value for r in records):
            raise AssertionError("replay differs from first read")

        step = "admin delete_topics"
        await admin.delete_topics([topic])
    except BaseException as exc:
        raise RuntimeError(f"step '{step}' failed: {exc!r}") from exc
    finally:
        await admin.close()


def main() -> int:
    default = os.environ.get("KAFKA_BOOTSTRAP") or f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=default)
    args = parser.parse_args()
    started = time.monotonic()
    try:
        asyncio.run(run(args.bootstrap))
    except Exception as exc:  # noqa: BLE001 - report and fail
        print(f"check_kafka: FAILED against {args.bootstrap}: {exc}", file=sys.stderr)
        return 1
    import aiokafka

    print(
        f"check_kafka: OK against {args.bootstrap} (aiokafka {aiokafka.__version__}, {time.monotonic() - started:.1f}s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
