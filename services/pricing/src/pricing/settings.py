from pathlib import Path

from pydantic import SecretStr

from pricing.core import DEFAULT_PRICE_TABLE
from svckit.settings import ServiceSettings


class PricingSettings(ServiceSettings):
    service_name: str = "pricing"
    grpc_port: int = 50052
    # Development keys: `key` or `key@account`, comma-separated (`make up` creates one).
    pricing_dev_api_key: SecretStr
    pricing_price_table: Path = DEFAULT_PRICE_TABLE
