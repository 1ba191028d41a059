"""Prices per token of a model, direct and through a provider's batch API: the one place.

In order: the model row's own prices (`input_cost_per_mtok`, `output_cost_per_mtok`, USD per
million tokens: a negotiated rate or a self-hosted model), else litellm's local price map,
looked up by the resolved model string and by the bare model name. An unknown price is None,
never 0. litellm's `get_model_info` answers 0 for some models its map lacks, so the map's
entries are read directly and a price counts only when the entry states it.

Cached input (prompt caching): a prompt prefix the provider has seen recently is billed at
`cache_read_per_token`, and where the provider bills writing it (Anthropic) at
`cache_write_per_token`: litellm's `cache_read_input_token_cost` and
`cache_creation_input_token_cost`, else the input price (no discount assumed). A model row's
own cache rates are `cached_input_cost_per_mtok` and `cache_write_cost_per_mtok` (empty: the
input price). `usage_cost` prices a
reply's usage as recorded (`prompt_tokens` counts every input token, cached or not;
`cached_tokens` and `cache_creation_tokens` say how many of them were read from or written to
the cache). `cache_min_tokens`: the shortest prefix a provider caches (litellm's
`prompt_cache_min_tokens`, else `DEFAULT_CACHE_MIN_TOKENS`).

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
DEFAULT_CACHE_MIN_TOKENS = 1024  # OpenAI's automatic caching and most Claude models
# Routes whose provider caches a long shared prompt prefix: OpenAI by itself, Anthropic where the
# request marks it (`cache_control`; writing it is billed).
MARKED_CACHE_ROUTES = frozenset({"anthropic"})
CACHE_ROUTES = frozenset({"openai"}) | MARKED_CACHE_ROUTES
CACHED_KEY, CACHE_WRITE_KEY = "cached_tokens", "cache_creation_tokens"  # in a recorded `usage`


@dataclass(frozen=True)
class Prices:
    """USD per token, and where the prices come from (`offline`, `row`, `litellm`, plus
    `+batch` or `+batch discount` for batch prices). Cache rates None: the input price."""

    input_per_token: float
    output_per_token: float
    source: str
    cache_read_per_token: float | None = None
    cache_write_per_token: float | None = None

    @property
    def cache_read(self) -> float:
        return self.input_per_token if self.cache_read_per_token is None else self.cache_read_per_token

    @property
    def cache_write(self) -> float:
        return self.input_per_token if self.cache_write_per_token is None else self.cache_write_per_token

    def cost(self, prompt_tokens: float | None, completion_tokens: float | None, cached: float = 0,
             cache_write: float = 0) -> float | None:
        """USD of a call: `prompt_tokens` is every input token, of which `cached` were read from
        the cache and `cache_write` written to it."""
        if prompt_tokens is None or completion_tokens is None:
            return None
        plain = prompt_tokens - cached - cache_write
        return (plain * self.input_per_token + cached * self.cache_read + cache_write * self.cache_write
                + completion_tokens * self.output_per_token)


def cache_saving(prices: Prices | None, usage: dict) -> float:
    """What a recorded call saved by its prompt cache: its cost without the cache less its cost
    (0 without cached tokens or a known price)."""
    if prices is None or not (usage.get(CACHED_KEY) or usage.get(CACHE_WRITE_KEY)):
        return 0.0
    full = prices.cost(usage.get("prompt_tokens"), usage.get("completion_tokens"))
    return 0.0 if full is None else full - usage_cost(prices, usage)


def usage_cost(prices: Prices | None, usage: dict) -> float | None:
    """A recorded usage's cost at `prices`, cached and cache-write tokens at their rates; None
    when the price or the token counts are unknown."""
    if prices is None:
        return None
    return prices.cost(usage.get("prompt_tokens"), usage.get("completion_tokens"),
                       usage.get(CACHED_KEY) or 0, usage.get(CACHE_WRITE_KEY) or 0)


_ENTRIES: dict[tuple[str, str], dict | None] = {}  # (route, model): its price-map entry, None: none


def _price_map_entry(route: str, model: str) -> dict | None:
    """The price-map entry of a model (looked up once per process and model, or learned from
    the process that looked it up, `learn_entries`)."""
    key = (route, model)
    if key not in _ENTRIES:
        cost_map = litellm_module().model_cost
        found = (cost_map.get(name) for name in (f"{route}/{model}", model))
        _ENTRIES[key] = next((dict(entry) for entry in found
                              if entry and "input_cost_per_token" in entry and "output_cost_per_token" in entry),
                             None)
    return _ENTRIES[key]


def price_map_entries(route: str, model: str) -> dict[tuple[str, str], dict | None]:
    """A model's price-map entry as `learn_entries` takes it: the call process
    (`daydream.call_process`) sends it with a model's first reply, so the Snakemake process
    prices its calls without importing litellm (seconds and about 200 MB)."""
    return {(route, model): _price_map_entry(route, model)}


def learn_entries(entries: dict[tuple[str, str], dict | None]) -> None:
    """Price-map entries looked up by another process of this run (the same litellm)."""
    _ENTRIES.update(entries)


def direct_prices(row: ModelRow, route: str) -> Prices | None:
    """The prices of one direct call; None when neither the row nor litellm's map has them."""
    if route == OFFLINE_ROUTE:
        return Prices(0.0, 0.0, "offline")
    if row.input_cost_per_mtok is not None and row.output_cost_per_mtok is not None:
        return Prices(row.input_cost_per_mtok / 1e6, row.output_cost_per_mtok / 1e6, "row",
                      _per_token(row.cached_input_cost_per_mtok), _per_token(row.cache_write_cost_per_mtok))
    entry = _price_map_entry(route, row.model)
    if entry is None:
        return None
    return Prices(float(entry["input_cost_per_token"]), float(entry["output_cost_per_token"]), "litellm",
                  _rate(entry, "cache_read_input_token_cost"), _rate(entry, "cache_creation_input_token_cost"))


def _per_token(per_mtok: float | None) -> float | None:
    return None if per_mtok is None else per_mtok / 1e6


def _rate(entry: dict, key: str) -> float | None:
    return float(entry[key]) if entry.get(key) is not None else None


def cache_min_tokens(row: ModelRow, route: str) -> int:
    """The shortest prompt prefix the provider caches, in tokens."""
    if route == OFFLINE_ROUTE:
        return DEFAULT_CACHE_MIN_TOKENS
    entry = _price_map_entry(route, row.model) or {}
    return int(entry.get("prompt_cache_min_tokens") or DEFAULT_CACHE_MIN_TOKENS)


def batch_prices(row: ModelRow, route: str) -> Prices | None:
    """The prices of one request sent through the provider's batch API."""
    direct = direct_prices(row, route)
    if direct is None or direct.source in ("offline", "row"):
        return _discounted(direct)
    entry = _price_map_entry(route, row.model) or {}
    if "input_cost_per_token_batches" in entry and "output_cost_per_token_batches" in entry:
        return Prices(float(entry["input_cost_per_token_batches"]), float(entry["output_cost_per_token_batches"]),
                      "litellm+batch", _rate(entry, "cache_read_input_token_cost_batches"),
                      _rate(entry, "cache_creation_input_token_cost_batches"))
    return _discounted(direct)


def _discounted(prices: Prices | None) -> Prices | None:
    if prices is None or prices.source == "offline":
        return prices

    def half(rate: float | None) -> float | None:
        return None if rate is None else rate * BATCH_DISCOUNT

    return Prices(prices.input_per_token * BATCH_DISCOUNT, prices.output_per_token * BATCH_DISCOUNT,
                  f"{prices.source}+batch discount", half(prices.cache_read_per_token),
                  half(prices.cache_write_per_token))


def model_prices(row: ModelRow, settings: LLMSettings) -> tuple[Prices | None, Prices | None]:
    """Direct and batch prices of a model as this run would call it (None: unknown)."""
    route = calls.route_of(row, settings)
    return direct_prices(row, route), batch_prices(row, route)


@functools.lru_cache(maxsize=1)
def _litellm_token_counter():
    # litellm counts with a bundled tokenizer or tiktoken's and downloads none in offline mode
    os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
    return litellm_module().token_counter


def count_tokens(row: ModelRow, settings: LLMSettings, text: str, route: str | None = None) -> int:
    """`text` in tokens of the model of `row` on `route` (default: the route this run calls),
    with its tokenizer through `litellm.token_counter` (litellm's default tokenizer for a model
    it has none for; never a download), and as words for the offline model, as
    `offline_model.generate` counts them."""
    route = route or calls.route_of(row, settings)
    if route == OFFLINE_ROUTE:
        return len(text.split())
    return int(_litellm_token_counter()(model=f"{route}/{row.model}", text=text))


def money(value: float | None) -> str:
    """USD for people: `unknown` (never 0) where the price is unknown."""
    if value is None:
        return "unknown"
    return f"${value:,.2f}" if value >= 100 else f"${value:,.4f}"
