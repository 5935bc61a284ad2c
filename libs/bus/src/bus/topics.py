"""Topic names, their configuration, and idempotent creation at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

EVENTS_TOPIC = "pixelmesh.generation.events"
CONTROL_TOPIC = "pixelmesh.generation.control"
# Workers' reports of their upstream's health (events.v1.ProviderHealth), read by routing.
PROVIDER_HEALTH_TOPIC = "pixelmesh.provider.health"
# The webhook dispatcher's attempts (events.v1.WebhookDeliveryRecord), read by status.
WEBHOOK_DELIVERIES_TOPIC = "pixelmesh.webhook.deliveries"
_REQUESTS_PREFIX = "pixelmesh.generation.requests."

# The events topic keeps every generation's latest state (compaction) for longer than
# any plan keeps its images, so replaying it rebuilds the status read model.
EVENTS_RETENTION_MS = 366 * 24 * 3600 * 1000


def requests_topic(provider: str) -> str:
    return f"{_REQUESTS_PREFIX}{provider}"


def worker_group(provider: str) -> str:
    return f"pixelmesh-worker-{provider}"


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 6
    config: dict[str, str] = field(default_factory=dict)


def events_spec(partitions: int = 6) -> TopicSpec:
    return TopicSpec(
        EVENTS_TOPIC,
        partitions,
        {
            "cleanup.policy": "compact,delete",
            "retention.ms": str(EVENTS_RETENTION_MS),
            "min.compaction.lag.ms": "60000",
        },
    )


def requests_spec(provider: str, partitions: int = 6) -> TopicSpec:
    return TopicSpec(requests_topic(provider), partitions, {"retention.ms": str(7 * 24 * 3600 * 1000)})


def control_spec() -> TopicSpec:
    return TopicSpec(CONTROL_TOPIC, 1, {"retention.ms": str(24 * 3600 * 1000)})


def webhook_deliveries_spec(partitions: int = 6) -> TopicSpec:
    """Every attempt is kept (not compacted) as long as the generations they belong to."""
    return TopicSpec(
        WEBHOOK_DELIVERIES_TOPIC, partitions, {"cleanup.policy": "delete", "retention.ms": str(EVENTS_RETENTION_MS)}
    )


def provider_health_spec() -> TopicSpec:
    """One report per worker instance matters (compacted); an hour of them is plenty."""
    return TopicSpec(PROVIDER_HEALTH_TOPIC, 1, {"cleanup.policy": "compact,delete", "retention.ms": str(3600 * 1000)})


def dlq_spec(topic: str) -> TopicSpec:
    return TopicSpec(dlq_topic(topic), 1, {"retention.ms": str(30 * 24 * 3600 * 1000)})


async def ensure_topics(bootstrap_servers: str, specs: list[TopicSpec], replication_factor: int = 1) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="pixelmesh-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(s.name, s.partitions, replication_factor, topic_configs=dict(s.config))
            for s in specs
            if s.name not in existing
        ]
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # another service created it first
    finally:
        await admin.close()
