"""Kafka bus: topic names and creation, protobuf producer, at-least-once consumers."""

from bus.consumer import Consumer, Record
from bus.producer import Producer
from bus.reader import TopicReader
from bus.topics import CONTROL_TOPIC, EVENTS_TOPIC, TopicSpec, dlq_topic, ensure_topics, requests_topic, worker_group

__all__ = [
    "CONTROL_TOPIC",
    "EVENTS_TOPIC",
    "Consumer",
    "Producer",
    "Record",
    "TopicReader",
    "TopicSpec",
    "dlq_topic",
    "ensure_topics",
    "requests_topic",
    "worker_group",
]
