"""Prices and API keys, free of any transport.

Until accounts and the ledger land, the gateway has one development key, given to the
process in PRICING_DEV_API_KEY; it is kept only as a SHA-256 digest.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from svckit.errors import ErrorCode, GatewayError

DEFAULT_PRICE_TABLE = Path(__file__).with_name("prices.yaml")


class PriceRow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    quality: str = "*"
    size: str = "*"
    usd: Decimal = Field(ge=0)

    def matches(self, quality: str, size: str) -> bool:
        return self.quality in ("*", quality) and self.size in ("*", size)


class PriceTableFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int
    token_usd: Decimal = Field(gt=0)
    models: dict[str, list[PriceRow]]


@dataclass(frozen=True)
class Quote:
    per_image_usd: Decimal
    total_usd: Decimal
    per_image_tokens: int
    total_tokens: int

    @staticmethod
    def usd_micros(usd: Decimal) -> int:
        return int((usd * 1_000_000).to_integral_value())


class PriceTable:
    def __init__(self, table: PriceTableFile) -> None:
        self._table = table

    @classmethod
    def load(cls, path: Path = DEFAULT_PRICE_TABLE) -> PriceTable:
        return cls(PriceTableFile.model_validate(yaml.safe_load(path.read_text())))

    @property
    def models(self) -> list[str]:
        return sorted(self._table.models)

    def quote(self, model: str, size: str, quality: str, n: int) -> Quote:
        rows = self._table.models.get(model)
        if rows is None:
            raise GatewayError(ErrorCode.MODEL_NOT_FOUND, f"The model '{model}' has no price.", param="model")
        if n < 1:
            raise GatewayError(ErrorCode.INVALID_REQUEST, "n must be at least 1.", param="n")
        for row in rows:
            if row.matches(quality, size):
                tokens = self._tokens(row.usd)
                return Quote(row.usd, row.usd * n, tokens, tokens * n)
        raise GatewayError(
            ErrorCode.INVALID_REQUEST, f"No price for {model} at size {size}, quality {quality}.", param="size"
        )

    def _tokens(self, usd: Decimal) -> int:
        """Tokens per image, rounded up: a paid image never costs zero tokens."""
        return max(1, math.ceil(usd / self._table.token_usd)) if usd > 0 else 0


@dataclass(frozen=True)
class Principal:
    account_id: str
    api_key_id: str
    plan: str
    retention_class: str


def _digest(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


class KeyStore:
    """Resolves API keys (stored as digests) to principals."""

    def __init__(self) -> None:
        self._keys: dict[bytes, Principal] = {}

    def add(self, api_key: str, principal: Principal) -> None:
        self._keys[_digest(api_key)] = principal

    @classmethod
    def with_dev_keys(cls, spec: str) -> KeyStore:
        """Development keys from PRICING_DEV_API_KEY: comma-separated `key` or `key@account`
        (a bare key belongs to acct_dev), each on the pro plan."""
        store = cls()
        for entry in filter(None, (e.strip() for e in spec.split(","))):
            api_key, _, account = entry.partition("@")
            key_id = "key_" + hashlib.sha256(api_key.encode()).hexdigest()[:12]
            store.add(api_key, Principal(account or "acct_dev", key_id, "pro", "days-90"))
        return store

    def authenticate(self, api_key: str) -> Principal:
        digest = _digest(api_key)
        for known, principal in self._keys.items():
            if hmac.compare_digest(known, digest):
                return principal
        raise GatewayError(ErrorCode.UNAUTHENTICATED, "Incorrect API key provided.")
