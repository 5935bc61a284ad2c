from decimal import Decimal

import pytest

from pixelmesh.common.v1 import generation_pb2 as gen
from pricing.plans import Plans
from pricing.prices import ModelPrice, PriceTable
from svckit.errors import ErrorCode, GatewayError
from svckit.tariffs import final_cost


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
    # the v2 API: a flux-1.1-pro image spends 4 tokens
    assert prices.quote("flux-1.1-pro", "768x1344", "standard", 1).total_tokens == 4


def test_total_scales_with_n(prices: PriceTable) -> None:
    q = prices.quote("pixelmesh-sketch", "512x512", "standard", 3)
    assert q.per_image_tokens == 1
    assert q.total_tokens == 3
    assert q.tariff.per_image.tokens == 1 and q.tariff.reserved.tokens == 3


def test_unknown_model(prices: PriceTable) -> None:
    with pytest.raises(GatewayError) as exc:
        prices.quote("nope", "1024x1024", "standard", 1)
    assert exc.value.code is ErrorCode.MODEL_NOT_FOUND


def test_fixed_price_tariff_charges_the_images_that_came_back(prices: PriceTable) -> None:
    q = prices.quote("dall-e-2", "512x512", "standard", 4)
    assert q.total_tokens == 4 * 2  # $0.018 rounds up to 2 tokens an image
    assert final_cost(q.tariff, 3, None) == gen.Cost(tokens=6, usd_micros=54_000)
    assert final_cost(q.tariff, 0, None) == gen.Cost()


def test_token_priced_reservation_is_an_upper_bound_of_the_usage_charge(prices: PriceTable) -> None:
    prompt = "a watercolor fox in the snow"
    q = prices.quote("gpt-image-1", "1024x1536", "high", 2, prompt_bytes=len(prompt.encode()))
    # 2 x $0.25 of output, plus the prompt at $5 per million tokens, one token per byte
    assert q.total_usd == Decimal("0.50") + Decimal(len(prompt)) * 5 / 1_000_000
    assert q.tariff.output_usd_micros_per_million == 40_000_000
    # OpenAI's usage for two high 1024x1536 images: 6240 output tokens each, and the prompt
    usage = gen.Usage(input_tokens=9, input_text_tokens=9, output_tokens=12480, total_tokens=12489)
    cost = final_cost(q.tariff, 2, usage)
    assert cost.usd_micros == 499_200 + 45  # 12480 x $40/M + 9 x $5/M
    assert cost.tokens == 50  # rounded up at $0.01 a token
    assert cost.tokens <= q.total_tokens
    # a usage above the reservation is capped at it
    huge = gen.Usage(input_tokens=10, output_tokens=10_000_000, total_tokens=10_000_010)
    assert final_cost(q.tariff, 2, huge) == q.total
    # no usage reported: the per-image estimate
    assert final_cost(q.tariff, 1, gen.Usage()).tokens == 25


def test_quality_auto_reserves_at_the_high_rows(prices: PriceTable) -> None:
    assert prices.quote("gpt-image-1", "1024x1024", "auto", 1).per_image_usd == Decimal("0.167")


def test_every_price_row_is_listed(prices: PriceTable) -> None:
    rows = prices.rows()
    assert ("gpt-image-1", "tokens") in {(m, t) for m, _, t in rows}
    assert ("dall-e-3", "image") in {(m, t) for m, _, t in rows}
    assert ("flux-2-pro", "megapixels", Decimal("0.03")) in {(m, t, r.usd) for m, r, t in rows}


def test_plans_of_the_seeds() -> None:
    plans = Plans.load()
    assert plans.names == ["free", "basic", "pro", "vip", "elite"]
    free, pro = plans.get("free"), plans.get("pro")
    assert (free.images_per_minute, free.images_per_day, free.retention_class) == (5, 50, "days-7")
    assert (pro.images_per_minute, pro.images_per_day, pro.retention_class) == (30, 1000, "days-90")
    assert [plans.get(p).retention_class for p in plans.names] == ["days-7", "days-30", "days-90", "days-90", "forever"]
    limits = plans.limits("free", {"images_per_minute": 0})
    assert (limits.images_per_minute, limits.images_per_day) == (0, 50)
    with pytest.raises(GatewayError) as exc:
        plans.get("platinum")
    assert exc.value.param == "plan"


def test_gpt_image_2_is_token_priced_and_custom_sizes_reserve_the_largest(prices: PriceTable) -> None:
    square = prices.quote("gpt-image-2", "1024x1024", "medium", 1)
    assert square.per_image_usd == Decimal("0.053")
    assert square.tariff.output_usd_micros_per_million == 30_000_000
    assert square.tariff.input_image_usd_micros_per_million == 8_000_000
    largest = prices.quote("gpt-image-2", "3840x2160", "auto", 1).per_image_usd
    assert prices.quote("gpt-image-2", "1280x720", "high", 1).per_image_usd == largest == Decimal("1.669")
    assert prices.quote("gpt-image-2", "2048x2048", "low", 2).total_usd == Decimal("0.048")
    # usage is what is charged: a custom 1280x720 medium image of 1,000 output tokens costs 3 cents
    cost = final_cost(prices.quote("gpt-image-2", "1280x720", "medium", 1).tariff, 1, gen.Usage(output_tokens=1000))
    assert cost.usd_micros == 30_000 and cost.tokens == 3


def test_gpt_image_1_mini_is_token_priced(prices: PriceTable) -> None:
    q = prices.quote("gpt-image-1-mini", "1536x1024", "low", 1)
    assert q.per_image_usd == Decimal("0.006") and q.tariff.output_usd_micros_per_million == 8_000_000


def test_flux_2_is_priced_per_megapixel_of_output_and_input(prices: PriceTable) -> None:
    # BFL's figures: flux-2-pro 3c for the first megapixel, 1.5c for each further one and for
    # each input megapixel ("1MP T2I $0.03, 1MP I2I $0.045").
    assert prices.quote("flux-2-pro", "1024x1024", "", 1).per_image_usd == Decimal("0.03")
    assert prices.quote("flux-2-pro", "1024x1024", "", 1, input_images=1).per_image_usd == Decimal("0.045")
    assert prices.quote("flux-2-pro", "2048x2048", "", 1).per_image_usd == Decimal("0.075")  # 4 MP
    assert prices.quote("flux-2-max", "1024x1024", "", 1, input_images=1).per_image_usd == Decimal("0.10")
    # Pro rata beyond the first megapixel, rounded up to a micro-dollar; tokens round up:
    # 1.5c + 0.2c x 0.9921875 further MP + 3 inputs x 0.2c = 2.2984375c.
    q = prices.quote("flux-2-klein-9b", "1920x1088", "", 2, input_images=3)
    assert q.per_image_usd == Decimal("0.022985")
    assert (q.per_image_tokens, q.total_tokens) == (3, 6)
    # The capture charges per image what the tariff says, inputs included.
    assert final_cost(q.tariff, 1).usd_micros == 22_985


def test_a_megapixel_price_needs_a_pixel_size(prices: PriceTable) -> None:
    with pytest.raises(GatewayError) as exc:
        prices.quote("flux-2-pro", "auto", "", 1)
    assert exc.value.param == "size"


def test_a_model_is_priced_one_way() -> None:
    with pytest.raises(ValueError, match="no per_image rows"):
        ModelPrice.model_validate(
            {"megapixels": {"first": 0.03, "additional": 0.015, "input": 0.015}, "per_image": [{"usd": 0.03}]}
        )
    with pytest.raises(ValueError, match="needs per_image rows or megapixels"):
        ModelPrice.model_validate({})
