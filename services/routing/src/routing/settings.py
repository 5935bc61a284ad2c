from pathlib import Path

from bus import KafkaServiceSettings
from routing.catalog import DEFAULT_CATALOG
from routing.idempotency import SCHEMA


class RoutingSettings(KafkaServiceSettings):
    service_name: str = "routing"
    grpc_port: int = 50051
    pricing_addr: str
    # The read model: a cancel reads the generation and watches for the state that is kept.
    status_addr: str
    # Comma-separated provider pools that have workers (e.g. "local,openai,bfl").
    routing_providers: str = "local"
    routing_catalog: Path = DEFAULT_CATALOG
    # The operator's own catalog files (comma-separated paths): models of self-hosted pools.
    routing_extra_catalogs: str = ""
    # SQLAlchemy URL of routing's own store (idempotency keys): a SQLite file by default;
    # postgresql+asyncpg://... when routing runs as several replicas (they must share it).
    routing_database_url: str = SCHEMA.default_url
    # How long an Idempotency-Key returns the generation it made (then it makes a new one).
    routing_idempotency_ttl_seconds: float = 24 * 3600
    # A provider's circuit opens after this many consecutive retryable failures...
    routing_circuit_failure_threshold: int = 5
    # ...and lets a probe through again after this long.
    routing_circuit_open_seconds: float = 30.0

    @property
    def extra_catalogs(self) -> tuple[Path, ...]:
        return tuple(Path(p.strip()) for p in self.routing_extra_catalogs.split(",") if p.strip())

    @property
    def providers(self) -> set[str]:
        return {p.strip() for p in self.routing_providers.split(",") if p.strip()}
