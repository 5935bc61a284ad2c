"""The operator's own price files (PRICING_EXTRA_PRICE_TABLES): merged with the bundled table,
priced in its token, refused at start-up with the file and the entry named."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from pricing.prices import PriceTable, PriceTableError

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "deploy/selfhosted/prices.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    return path


def test_the_example_file_prices_its_models_in_the_bundled_token() -> None:
    prices = PriceTable.load(extra=(EXAMPLE,))
    quote = prices.quote("sdxl-selfhosted", "1024x1024", "standard", 3)
    assert quote.per_image_usd == Decimal("0.002") and quote.total_tokens == 3  # at least one token an image
    assert prices.quote("dall-e-3", "1024x1024", "standard", 1).total_usd == Decimal("0.040")


def test_rows_and_token_rates_are_taken(tmp_path) -> None:
    path = write(
        tmp_path, "models:\n  big:\n    per_image:\n      - {size: 2048x2048, usd: 0.05}\n      - {usd: 0.02}\n"
    )
    prices = PriceTable.load(extra=(path,))
    assert prices.quote("big", "2048x2048", "standard", 1).total_tokens == 5
    assert prices.quote("big", "1024x1024", "standard", 1).total_tokens == 2


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("models:\n  mine:\n    - {usd: -1}\n", "models.mine: "),
        ("models:\n  mine:\n    - {usd: 0.01, steps: 30}\n", "models.mine: "),
        ("models:\n  mine: []\n", "models.mine: "),
        ("models:\n  dall-e-3:\n    - {usd: 0.001}\n", "models.dall-e-3: already priced in"),
        ("token_usd: 1\nmodels: {}\n", "an extra price file has `models` (a mapping) only"),
        ("models: [a, b]\n", "an extra price file has `models` (a mapping) only"),
        ("models: {\n", "cannot be read as YAML"),
    ],
)
def test_a_bad_entry_is_refused_naming_it(tmp_path, text, named) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PriceTableError) as exc:
        PriceTable.load(extra=(path,))
    assert str(path) in str(exc.value) and named in str(exc.value), str(exc.value)
