"""Prices per token: the row's own, else litellm's map; unknown stays unknown; batch prices."""

import pytest

from daydream import pricing
from daydream.experiment import ModelRow


def row(model="m", **prices) -> ModelRow:
    return ModelRow(id="x", model=model, provider="p", display_name="X", **prices)


def test_the_rows_prices_win_and_are_per_million_tokens():
    prices = pricing.direct_prices(row("gpt-4o-mini", input_cost_per_mtok=3, output_cost_per_mtok=15), "openai")
    assert prices.source == "row" and prices.cost(1_000_000, 1_000_000) == pytest.approx(18.0)


def test_litellms_map_gives_direct_and_batch_prices_where_it_knows_the_model():
    direct = pricing.direct_prices(row("gpt-4o-mini"), "openai")
    batch = pricing.batch_prices(row("gpt-4o-mini"), "openai")
    assert direct.source == "litellm" and batch.source == "litellm+batch"
    assert batch.input_per_token == pytest.approx(direct.input_per_token / 2)


def test_a_model_the_map_lacks_has_unknown_prices_never_zero():
    assert pricing.direct_prices(row("claude-sonnet-4-20250514"), "anthropic") is None
    assert pricing.batch_prices(row("fake-model"), "openai") is None


def test_row_prices_get_the_batch_discount_and_the_offline_model_is_free():
    batch = pricing.batch_prices(row(input_cost_per_mtok=2, output_cost_per_mtok=8), "openai")
    assert batch.source == "row+batch discount" and batch.cost(1e6, 1e6) == pytest.approx(5.0)
    assert pricing.direct_prices(row(), "offline").cost(100, 100) == 0.0
