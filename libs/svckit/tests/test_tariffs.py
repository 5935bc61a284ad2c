from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.tariffs import final_cost, is_token_priced, usage_usd_micros

FIXED = gen.Tariff(
    per_image=gen.Cost(tokens=4, usd_micros=40_000),
    token_usd_micros=10_000,
    reserved=gen.Cost(tokens=16, usd_micros=160_000),
)
TOKENS = gen.Tariff(
    per_image=gen.Cost(tokens=17, usd_micros=167_000),
    input_text_usd_micros_per_million=5_000_000,
    input_image_usd_micros_per_million=10_000_000,
    output_usd_micros_per_million=40_000_000,
    token_usd_micros=10_000,
    reserved=gen.Cost(tokens=40, usd_micros=400_000),
)


def test_fixed_price_charges_each_image_that_came_back() -> None:
    assert not is_token_priced(FIXED)
    assert final_cost(FIXED, 4) == gen.Cost(tokens=16, usd_micros=160_000)
    assert final_cost(FIXED, 1, gen.Usage(output_tokens=999)) == gen.Cost(tokens=4, usd_micros=40_000)
    assert final_cost(FIXED, 0) == gen.Cost()


def test_token_priced_charges_the_usage_rounded_up_and_capped() -> None:
    usage = gen.Usage(input_tokens=300, input_text_tokens=100, input_image_tokens=200, output_tokens=4160)
    assert usage_usd_micros(TOKENS, usage) == 500 + 2000 + 166_400
    assert final_cost(TOKENS, 1, usage) == gen.Cost(tokens=17, usd_micros=168_900)
    # input tokens without a split count as text
    assert usage_usd_micros(TOKENS, gen.Usage(input_tokens=3)) == 15
    assert final_cost(TOKENS, 2, gen.Usage(output_tokens=1_000_000)) == TOKENS.reserved
    assert final_cost(TOKENS, 2, gen.Usage()) == gen.Cost(tokens=34, usd_micros=334_000)


def test_fractions_of_a_micro_dollar_round_up() -> None:
    cheap = gen.Tariff(output_usd_micros_per_million=250_000, token_usd_micros=10_000)  # $0.25 per million
    assert usage_usd_micros(cheap, gen.Usage(output_tokens=1)) == 1
    assert final_cost(cheap, 1, gen.Usage(output_tokens=1)) == gen.Cost(tokens=1, usd_micros=1)


def test_a_tariff_without_a_reservation_is_not_capped() -> None:
    open_ended = gen.Tariff(per_image=gen.Cost(tokens=1, usd_micros=10_000))
    assert final_cost(open_ended, 50) == gen.Cost(tokens=50, usd_micros=500_000)
