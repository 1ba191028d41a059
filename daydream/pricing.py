"""Prices per token of a model, direct and through a provider's batch API: the one place.

In order: the model row's own prices (`input_cost_per_mtok`, `output_cost_per_mtok`, USD per
million tokens: a negotiated rate or a self-hosted model), else litellm's local price map,
looked up by the resolved model string and by the bare model name. An unknown price is None,
never 0. litellm's `get_model_info` answers 0 for some models its map lacks, so the map's
entries are read directly and a price counts only when the entry states it.

Batch prices: litellm's `input_cost_per_token_batches` / `output_cost_per_token_batches` where
its map has them, else `BATCH_DISCOUNT` of the direct price (the OpenAI, Anthropic and Google
batch APIs all bill half).

Also the helpers every estimate uses: `model_prices` (a model as this run calls it),
`count_tokens` (a text in the model's tokens) and `money` (USD for people).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from daydream import calls
from daydream.experiment import ModelRow
from daydream.providers import OFFLINE_ROUTE
from daydream.providers.litellm_import import litellm_module
from daydream.settings import LLMSettings

BATCH_DISCOUNT = 0.5


@dataclass(frozen=True)
class Prices:
    """USD per token, and where the prices come from (`offline`, `row`, `litellm`, plus
    `+batch` or `+batch discount` for batch prices)."""

    input_per_token: float
    output_per_token: float
    source: str

    def cost(self, prompt_tokens: float | None, completion_tokens: float | None) -> float | None:
        if prompt_tokens is None or completion_tokens is None:
            return None
        return prompt_tokens * self.input_per_token + completion_tokens * self.output_per_token


@functools.lru_cache(maxsize=1024)
def _price_map_entry(route: str, model: str) -> dict | None:
    """The price-map entry of a model (looked up once per process and model)."""
    cost_map = litellm_module().model_cost
    for key in (f"{route}/{model}", model):
        entry = cost_map.get(key)
        if entry and "input_cost_per_token" in entry and "output_cost_per_token" in entry:
            return entry
    return None


def direct_prices(row: ModelRow, route: str) -> Prices | None:
    """The prices of one direct call; None when neither the row nor litellm's map has them."""
    if route == OFFLINE_ROUTE:
        return Prices(0.0, 0.0, "offline")
    if row.input_cost_per_mtok is not None and row.output_cost_per_mtok is not None:
        return Prices(row.input_cost_per_mtok / 1e6, row.output_cost_per_mtok / 1e6, "row")
    entry = _price_map_entry(route, row.model)
    if entry is None:
        return None
    return Prices(float(entry["input_cost_per_token"]), float(entry["output_cost_per_token"]), "litellm")


def batch_prices(row: ModelRow, route: str) -> Prices | None:
    """The prices of one request sent through the provider's batch API."""
    direct = direct_prices(row, route)
    if direct is None or direct.source in ("offline", "row"):
        return _discounted(direct)
    entry = _price_map_entry(route, row.model) or {}
    if "input_cost_per_token_batches" in entry and "output_cost_per_token_batches" in entry:
        return Prices(float(entry["input_cost_per_token_batches"]), float(entry["output_cost_per_token_batches"]),
                      "litellm+batch")
    return _discounted(direct)


def _discounted(prices: Prices | None) -> Prices | None:
    if prices is None or prices.source == "offline":
        return prices
    return Prices(prices.input_per_token * BATCH_DISCOUNT, prices.output_per_token * BATCH_DISCOUNT,
                  f"{prices.source}+batch discount")


def model_prices(row: ModelRow, settings: LLMSettings) -> tuple[Prices | None, Prices | None]:
    """Direct and batch prices of a model as this run would call it (None: unknown)."""
    route = calls.route_of(row, settings)
    return direct_prices(row, route), batch_prices(row, route)


@functools.lru_cache(maxsize=1)
def _litellm_token_counter():
    # litellm counts with a bundled tokenizer or tiktoken's and downloads none in offline mode
    os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
    return litellm_module().token_counter


def count_tokens(row: ModelRow, settings: LLMSettings, text: str) -> int:
    """`text` in tokens of the model of `row`, with its tokenizer through `litellm.token_counter`
    (litellm's default tokenizer for a model it has none for; never a download), and as words for
    the offline model, as `offline_model.generate` counts them."""
    if calls.route_of(row, settings) == OFFLINE_ROUTE:
        return len(text.split())
    return int(_litellm_token_counter()(model=calls.model_string(row, settings), text=text))


def money(value: float | None) -> str:
    """USD for people: `unknown` (never 0) where the price is unknown."""
    if value is None:
        return "unknown"
    return f"${value:,.2f}" if value >= 100 else f"${value:,.4f}"
