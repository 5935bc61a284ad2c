from decimal import Decimal

import pytest

from pricing.core import KeyStore, PriceTable
from svckit.errors import ErrorCode, GatewayError


@pytest.fixture(scope="module")
def prices() -> PriceTable:
    return PriceTable.load()


def test_dalle3_square_standard_is_four_cents(prices: PriceTable) -> None:
    q = prices.quote("dall-e-3", "1024x1024", "standard", 1)
    assert q.total_usd == Decimal("0.040")
    assert q.total_tokens == 4


def test_dalle3_hd_and_non_square_surcharges(prices: PriceTable) -> None:
    assert prices.quote("dall-e-3", "1024x1024", "hd", 1).total_usd == Decimal("0.080")
    assert prices.quote("dall-e-3", "1792x1024", "standard", 1).total_usd == Decimal("0.080")
    assert prices.quote("dall-e-3", "1024x1792", "hd", 1).total_usd == Decimal("0.120")


def test_flux_matches_seed_token_count(prices: PriceTable) -> None:
    # seed 000: a flux-1.1-pro image spends 4 tokens
    assert prices.quote("flux-1.1-pro", "768x1344", "standard", 1).total_tokens == 4


def test_total_scales_with_n(prices: PriceTable) -> None:
    q = prices.quote("pixelmesh-sketch", "512x512", "standard", 3)
    assert q.per_image_tokens == 1
    assert q.total_tokens == 3


def test_unknown_model(prices: PriceTable) -> None:
    with pytest.raises(GatewayError) as exc:
        prices.quote("nope", "1024x1024", "standard", 1)
    assert exc.value.code is ErrorCode.MODEL_NOT_FOUND


def test_dev_key_authenticates_and_others_do_not() -> None:
    keys = KeyStore.with_dev_keys("pm-dev-secret")
    p = keys.authenticate("pm-dev-secret")
    assert p.account_id == "acct_dev"
    assert "pm-dev-secret" not in p.api_key_id
    with pytest.raises(GatewayError) as exc:
        keys.authenticate("pm-dev-secreT")
    assert exc.value.code is ErrorCode.UNAUTHENTICATED


def test_dev_keys_of_several_accounts() -> None:
    keys = KeyStore.with_dev_keys("pm-a, pm-b@acct_other")
    assert keys.authenticate("pm-a").account_id == "acct_dev"
    other = keys.authenticate("pm-b")
    assert other.account_id == "acct_other"
    assert other.api_key_id != keys.authenticate("pm-a").api_key_id
