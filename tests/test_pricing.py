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


def test_cache_rates_come_from_litellms_map_or_the_row_and_default_to_the_input_price():
    claude = pricing.direct_prices(row("claude-sonnet-4-5"), "anthropic")
    assert (claude.cache_read, claude.cache_write) == (pytest.approx(3e-7), pytest.approx(3.75e-6))
    assert pricing.cache_min_tokens(row("claude-sonnet-4-5"), "anthropic") == 1024
    assert pricing.cache_min_tokens(row("claude-haiku-4-5"), "anthropic") == 4096
    own = pricing.direct_prices(row(input_cost_per_mtok=2, output_cost_per_mtok=8, cached_input_cost_per_mtok=0.5),
                                "openai")
    assert own.cache_read == pytest.approx(0.5e-6) and own.cache_write == own.input_per_token
    assert pricing.batch_prices(row(input_cost_per_mtok=2, output_cost_per_mtok=8, cached_input_cost_per_mtok=0.5),
                                "openai").cache_read == pytest.approx(0.25e-6)


def test_a_usage_is_priced_with_its_cached_and_cache_write_tokens():
    prices = pricing.Prices(2e-6, 10e-6, "row", 0.5e-6, 2.5e-6)
    usage = {"prompt_tokens": 3000, "completion_tokens": 100, "cached_tokens": 1000, "cache_creation_tokens": 1000}
    assert pricing.usage_cost(prices, usage) == pytest.approx((1000 * 2 + 1000 * 0.5 + 1000 * 2.5 + 100 * 10) / 1e6)
    assert pricing.usage_cost(prices, {"prompt_tokens": 10, "completion_tokens": 1}) == pytest.approx(30e-6)
    assert pricing.usage_cost(None, usage) is None
