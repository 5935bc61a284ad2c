"""Kafka bus: topic names and creation, protobuf producer, at-least-once consumers."""

from bus.consumer import Consumer, Record
from bus.events import EventHeaders, generation_event
from bus.producer import Producer
from bus.reader import TopicReader
from bus.records import PoisonMessage
from bus.settings import KafkaServiceSettings
from bus.topics import (
    CONTROL_TOPIC,
    EVENTS_TOPIC,
    PROVIDER_HEALTH_TOPIC,
    WEBHOOK_DELIVERIES_TOPIC,
    TopicSpec,
    dlq_topic,
    ensure_topics,
    requests_topic,
    worker_group,
)

__all__ = [
    "CONTROL_TOPIC",
    "generation_event",
    "EVENTS_TOPIC",
    "PROVIDER_HEALTH_TOPIC",
    "WEBHOOK_DELIVERIES_TOPIC",
    "Consumer",
    "EventHeaders",
    "KafkaServiceSettings",
    "PoisonMessage",
    "Producer",
    "Record",
    "TopicReader",
    "TopicSpec",
    "dlq_topic",
    "ensure_topics",
    "requests_topic",
    "worker_group",
]
