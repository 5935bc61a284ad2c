"""A blocking client of pricing's admin RPCs (the operator token travels as metadata)."""

from __future__ import annotations

import grpc

from pixelmesh.pricing.v1 import pricing_service_pb2 as pb
from pixelmesh.pricing.v1 import pricing_service_pb2_grpc
from svckit.accounts import ADMIN_TOKEN_METADATA

TIMEOUT = 15.0


class AdminClient:
    def __init__(self, address: str, admin_token: str) -> None:
        self._channel = grpc.insecure_channel(address)
        self._stub = pricing_service_pb2_grpc.PricingServiceStub(self._channel)
        self._metadata = ((ADMIN_TOKEN_METADATA, admin_token),)

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request):  # noqa: ANN001, ANN202
        return getattr(self._stub, method)(request, metadata=self._metadata, timeout=TIMEOUT)

    def create_key(
        self, *, plan: str, name: str, account_id: str = "", limits: pb.KeyLimits | None = None
    ) -> pb.CreateApiKeyResponse:
        return self._call(
            "CreateApiKey", pb.CreateApiKeyRequest(plan=plan, name=name, account_id=account_id, limits=limits)
        )

    def list_keys(self, account_id: str = "") -> pb.ListApiKeysResponse:
        return self._call("ListApiKeys", pb.ListApiKeysRequest(account_id=account_id))

    def revoke_key(self, key_id: str) -> pb.RevokeApiKeyResponse:
        return self._call("RevokeApiKey", pb.RevokeApiKeyRequest(api_key_id=key_id))

    def credit(self, account_id: str, tokens: int, *, reference: str = "", note: str = "") -> pb.CreditAccountResponse:
        return self._call(
            "CreditAccount",
            pb.CreditAccountRequest(account_id=account_id, tokens=tokens, reference=reference, note=note),
        )

    def balance(self, account_id: str) -> pb.GetBalanceResponse:
        return self._call("GetBalance", pb.GetBalanceRequest(account_id=account_id))

    def ledger(self, account_id: str) -> pb.ListLedgerEntriesResponse:
        return self._call("ListLedgerEntries", pb.ListLedgerEntriesRequest(account_id=account_id, page_size=5000))

    def usage(self, account_id: str, start_date: str = "", end_date: str = "") -> pb.GetUsageResponse:
        return self._call(
            "GetUsage", pb.GetUsageRequest(account_id=account_id, start_date=start_date, end_date=end_date)
        )
