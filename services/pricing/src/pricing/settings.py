from pathlib import Path

from pydantic import SecretStr

from bus import KafkaServiceSettings
from pricing.db import SCHEMA
from pricing.plans import DEFAULT_PLANS
from pricing.prices import DEFAULT_PRICE_TABLE
from pricing.settle import DEFAULT_GROUP


class PricingSettings(KafkaServiceSettings):
    service_name: str = "pricing"
    grpc_port: int = 50052
    # SQLAlchemy URL: a SQLite file by default; postgresql+asyncpg://... for several replicas.
    pricing_database_url: str = SCHEMA.default_url
    # Development keys: `key` or `key@account`, comma-separated (`make up` creates one).
    pricing_dev_api_key: SecretStr
    # Balance a development account starts with (tokens).
    pricing_dev_balance_tokens: int = 1_000_000_000
    # Operator token of the admin RPCs (keys, credits, ledger); empty disables them.
    pricing_admin_token: SecretStr = SecretStr("")
    pricing_price_table: Path = DEFAULT_PRICE_TABLE
    pricing_plans: Path = DEFAULT_PLANS
    # The operator's own price files (comma-separated paths): prices of self-hosted models.
    pricing_extra_price_tables: str = ""
    # Consumer group settling this database's reservations (one group per database).
    pricing_ledger_group: str = DEFAULT_GROUP
    # A reservation still open after this long is released (its generation never ended).
    pricing_reservation_ttl_seconds: float = 6 * 3600

    @property
    def extra_price_tables(self) -> tuple[Path, ...]:
        return tuple(Path(p.strip()) for p in self.pricing_extra_price_tables.split(",") if p.strip())
