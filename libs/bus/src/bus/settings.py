from svckit.settings import ServiceSettings


class KafkaServiceSettings(ServiceSettings):
    """Settings of a service that talks to Kafka."""

    kafka_bootstrap_servers: str
    kafka_replication_factor: int = 1
    kafka_partitions: int = 6
