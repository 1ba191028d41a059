"""The cost plan (`snakemake plan`): every model call the active cohorts still miss, what it
will send and what it may cost, before anything is paid.

`missing_calls` walks the members of the active cohorts stage by stage, root first, each
document once (a document shared by two cohorts is made and paid for once). A document whose
four gens files exist is done. A missing document makes no call when it is a copy, or when the
paid-reply ledger holds a reply for it (`ledger.saved_reply` for its prompt, or the record of an
earlier prompt, which `ledger.answer` restores). Every other missing document is one call:

The history (`read_history`: every finished call in the gens store, read through
`store.read_document_metadata`) is keyed by stage, template, model id and the model string the
bill is about (`bill_route`: the configured route, also under offline=true, whose own calls
cost nothing), so replies of the offline rehearsal never stand in for a real model's.

- completion tokens: with history (`basis` `history n=…`), low and high are the 10th and 90th
  percentiles of the finished calls' completion tokens; without (`max_tokens`), low is
  `plan_default_completion_tokens` (default 0) and high the stage's `max_tokens`.
- prompt tokens: counted on the rendered prompt where it can be rendered (every root document,
  and every document whose parent's parsed text exists or is already known: a copy of an
  existing text, a saved reply), with the model's tokenizer through `litellm.token_counter`
  (litellm's default tokenizer for a model it has none for; never a download:
  LITELLM_OFFLINE_MODE), as words for the offline model, and scaled by the spread of the ratio
  between the provider's count and ours over earlier prompts (`History.factor`). Otherwise the
  history's prompt tokens of the same key, else the template rendered without its parent plus
  the parent's estimated reply as often as the template uses it.
- the budgets' bound (`MissingCall.bound_cost`): our count of the prompt, every reply (and every
  parent inside a prompt) at max_tokens, no cache discount.
- prompt cache (`cache_tokens`): on a caching route (`pricing.CACHE_ROUTES`), a template whose
  shared prefix (`prompts.shared_prefix`) reaches the model's minimum is written by its first
  call and read by every later one.
- prices: `pricing.direct_prices` and `pricing.batch_prices` on the configured route; an unknown
  price stays unknown, and the total counts the calls without one.

`plan_rows` sums the calls per stage, template and model, plus a total row; `write_plan` (the
`plan` rule, through `budget.write_plan`) writes `data/7_reporting/plan.csv` and prints the same
as a table, with the stale documents and the prompt cache's recorded savings: the plan is meant
for the person at the terminal, so this module prints it to stdout on purpose.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from daydream import documents, integrity, ledger, parsers, pricing, prompts, regenerate, stages, stale, store
from daydream.columns import PLAN_COLUMNS
from daydream.errors import UserError
from daydream.membership import Member, UnknownGenerationError
from daydream.paths import GEN_FILES
from daydream.pricing import Prices, money
from daydream.runtime import Runtime

TOTAL = "total"
UNKNOWN = "unknown"
# Stands for the parent's text when a template is rendered before its parent exists.
_PARENT = "\x00daydream-parent\x00"


class PlanError(RuntimeError, UserError):
    """A membership the plan cannot walk; the message names the document and the fix."""


# -- tokens and prices ---------------------------------------------------------------------------
def bill_route(rt: Runtime, row) -> str:
    """The route the bill is about: the model's configured route, also under `offline=true`
    (whose own calls cost nothing)."""
    return row.route or rt.settings.default_route


def count_tokens(rt: Runtime, model_id: str, text: str, route: str | None = None) -> int:
    """`text` in tokens of the model `model_id` on `route` (default: the route this run calls;
    `pricing.count_tokens`)."""
    return pricing.count_tokens(rt.experiment.models[model_id], rt.settings, text, route)


def model_prices(rt: Runtime, model_id: str) -> tuple[Prices | None, Prices | None]:
    """Direct and batch prices of a model as this run would call it (None: unknown)."""
    return pricing.model_prices(rt.experiment.models[model_id], rt.settings)


def bill_prices(rt: Runtime, model_id: str) -> tuple[Prices | None, Prices | None]:
    """Direct and batch prices of a model on its configured route (`bill_route`)."""
    row = rt.experiment.models[model_id]
    route = bill_route(rt, row)
    return pricing.direct_prices(row, route), pricing.batch_prices(row, route)


def cache_saving(rt: Runtime, model_id: str | None, usage: dict) -> float:
    """What a recorded call saved by its prompt cache (`pricing.cache_saving`; 0 without cached
    tokens or a known price)."""
    if model_id not in rt.experiment.models:
        return 0.0
    return pricing.cache_saving(model_prices(rt, model_id)[0], usage)


def recorded_cache_savings(rt: Runtime) -> tuple[int, float]:
    """(tokens read from a cache, USD saved) over every call in llm_calls.jsonl."""
    tokens, saved = 0, 0.0
    for _, record in store.jsonl_records(rt.paths.llm_calls_jsonl):
        usage = (record or {}).get("usage") or {}  # a torn line: run.recorded_spend names it
        tokens += usage.get(pricing.CACHED_KEY) or 0
        saved += cache_saving(rt, (record or {}).get("model_id"), usage)
    return tokens, saved


# -- history: what earlier replies of the same template and model took --------------------------
@dataclass(frozen=True)
class Spread:
    """A sample's size and its 10th and 90th percentiles (the plan's low and high)."""

    n: int
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        ordered = sorted(values)
        return cls(len(ordered), _percentile(ordered, 0.1), _percentile(ordered, 0.9))


ONE = Spread(0, 1.0, 1.0)  # no calibration: the tokenizer's count as it is


def _percentile(ordered: list[float], q: float) -> float:
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


@dataclass
class History:
    """Finished calls in the gens store by (stage, template_id, model_id, model string): their
    completion and prompt tokens as the provider counted them, and per (model_id, model
    string), and per (stage, template_id, model_id, model string), a few documents whose prompt
    can be counted again with our tokenizer."""

    completion: dict[tuple, list[int]] = field(default_factory=lambda: defaultdict(list))
    prompt: dict[tuple, list[int]] = field(default_factory=lambda: defaultdict(list))
    samples: dict[tuple, list[tuple[str, str, int]]] = field(default_factory=lambda: defaultdict(list))
    _factors: dict = field(default_factory=dict)

    def completion_spread(self, key: tuple) -> Spread | None:
        return Spread.of(self.completion[key]) if self.completion.get(key) else None

    def prompt_spread(self, key: tuple) -> Spread | None:
        return Spread.of(self.prompt[key]) if self.prompt.get(key) else None

    def factor(self, rt: Runtime, model_id: str, model: str, route: str, template: tuple = ()) -> Spread:
        """How the provider's prompt tokens compare with our tokenizer's count of the same
        prompts (the ratio's spread over `CALIBRATION_SAMPLES` documents): those of the same
        `template` (stage, template_id) where there are some, else the model's; ONE without any."""
        key = (*template, model_id, model)
        if template and not self.samples.get(key):
            return self.factor(rt, model_id, model, route)
        if key not in self._factors:
            ratios = []
            for stage, gen_id, tokens in self.samples.get(key, []):
                try:
                    text = rt.paths.prompt_path(stage, gen_id).read_text(encoding="utf-8")
                except FileNotFoundError:
                    continue
                counted = count_tokens(rt, model_id, text, route)
                if counted:
                    ratios.append(tokens / counted)
            self._factors[key] = Spread.of(ratios) if ratios else ONE
        return self._factors[key]


CALIBRATION_SAMPLES = 24
NO_HISTORY = History()


def read_history(paths) -> History:
    """Every finished call of the gens store (`mode` llm with recorded usage), read through the
    one metadata reader (`store.read_document_metadata`), so the original pipeline's
    documents count too."""
    found = History()
    for stage in stages.NAMES:
        folder = paths.stage_dir(stage)
        if not folder.is_dir():
            continue
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            try:
                meta = store.read_document_metadata(paths, stage, entry.name, lineage=False)
            except FileNotFoundError:
                continue
            usage = meta.get("usage") or {}
            if meta.get("mode") != "llm" or usage.get("completion_tokens") is None:
                continue
            key = (stage, meta.get("template_id"), meta.get("model_id"), meta.get("model"))
            found.completion[key].append(int(usage["completion_tokens"]))
            if usage.get("prompt_tokens"):
                found.prompt[key].append(int(usage["prompt_tokens"]))
                for sample in (found.samples[key[2:]], found.samples[key]):
                    if len(sample) < CALIBRATION_SAMPLES:
                        sample.append((stage, entry.name, int(usage["prompt_tokens"])))
    return found


# -- the missing calls ---------------------------------------------------------------------------
@dataclass(frozen=True)
class MissingCall:
    """One call a run would make: its prompt and completion tokens, low and high (see the
    module's docstring), and what bounds it for the budgets (`bound_*`: our tokenizer's count,
    every reply at max_tokens). `basis`: where the completion estimate comes from (`history
    n=…` or `max_tokens`). `cache_prefix`: tokens of its template's shared prefix when the
    provider caches it (0: none), `cache_writes`: whether the provider bills writing it."""

    stage: str
    gen_id: str
    template_id: str
    model_id: str
    prompt_tokens: int
    prompt_tokens_high: int
    completion_low: int
    completion_high: int
    prompt_rendered: bool
    basis: str = "max_tokens"
    bound_prompt_tokens: int = 0
    bound_completion_tokens: int = 0
    cache_prefix: int = 0
    cache_writes: bool = False

    def cost(self, prices: Prices | None, *, high: bool) -> float | None:
        """USD at `prices` without prompt caching: low or high; None when the price is unknown."""
        if prices is None:
            return None
        if high:
            return prices.cost(self.prompt_tokens_high, self.completion_high)
        return prices.cost(self.prompt_tokens, self.completion_low)

    def bound_cost(self, prices: Prices | None) -> float | None:
        """The budgets' high estimate: every reply at max_tokens, no cache discount."""
        return None if prices is None else prices.cost(self.bound_prompt_tokens, self.bound_completion_tokens)


@dataclass(frozen=True)
class _Text:
    """A missing document's parsed text as its children will read it: the text where it is
    known already, else its size in tokens (low, high, and the budgets' bound)."""

    text: str | None = None
    low: int = 0
    high: int = 0
    bound: int = 0


@dataclass
class Plan:
    """The missing calls of the active cohorts and what else the walk found, per stage:
    `done` documents, missing `copies` and missing documents with a `paid` reply (no call)."""

    calls: list[MissingCall] = field(default_factory=list)
    done: Counter = field(default_factory=Counter)
    copies: Counter = field(default_factory=Counter)
    paid: Counter = field(default_factory=Counter)
    cohort_gen_ids: dict[str, frozenset[str]] = field(default_factory=dict)

    @property
    def gen_ids(self) -> frozenset[str]:
        return frozenset().union(*self.cohort_gen_ids.values())


def is_complete(rt: Runtime, member: Member) -> bool:
    """All four gens files exist: Snakemake makes no job for the document."""
    folder = rt.paths.gen_dir(member.stage, member.gen_id)
    return all((folder / name).exists() for name in GEN_FILES)


def _paid_reply(rt: Runtime, member: Member, prompt_text: str | None) -> str | None:
    """The reply text `ledger.answer` would return without a call, or None (a call)."""
    sha = prompts.sha256_text(prompt_text) if prompt_text is not None else ""
    if prompt_text is not None:
        saved = ledger.saved_reply(rt.paths, member, sha)
        if saved is not None:
            return saved.text
    earlier = ledger.earlier_replies(rt.paths, member, sha)
    if not earlier:
        return None
    records = [json.loads(p.read_text(encoding="utf-8")) for p in earlier]
    return max(records, key=lambda r: r.get("saved_at", ""))["text"]


class _Walk:
    """One pass over the members; caches what every document of a template shares."""

    def __init__(self, rt: Runtime, history: History, default_low: int, caching: bool):
        self.rt, self.history, self.default_low, self.caching = rt, history, default_low, caching
        self.texts: dict[str, _Text] = {}  # missing documents' parsed texts, for their children
        self._shapes: dict[tuple[str, str, str], tuple[int, int]] = {}
        self._prefixes: dict[tuple[str, str, str], tuple[int, bool]] = {}

    def bill(self, member: Member) -> tuple[str, str]:
        """(route, model string) of the model the bill is about."""
        row = self.rt.experiment.models[member.llm_model_id]
        route = bill_route(self.rt, row)
        return route, f"{route}/{row.model}"

    def parent_text(self, member: Member) -> _Text | None:
        stage = stages.get(member.stage)
        if stage.is_root:
            return None
        path = self.rt.paths.parsed_path(stage.parent, member.parent_gen_id)
        if path.exists():
            return _Text(path.read_text(encoding="utf-8"))
        if member.parent_gen_id not in self.texts:
            raise PlanError(f"{member.gen_id}: its parent {member.parent_gen_id} is neither in the gens store nor "
                            f"in the membership of cohort {member.cohort_id}; run the cohort checkpoint again "
                            f"(delete {self.rt.paths.membership_csv(member.cohort_id)})")
        return self.texts[member.parent_gen_id]

    def prompt_text(self, member: Member, parent: _Text | None) -> str | None:
        """The prompt exactly as the job will send it, where it can be rendered today."""
        if parent is None:
            return documents.document_prompt(self.rt, member).text
        if parent.text is None:
            return None
        template = prompts.load_template(self.rt.paths.template_path(member.stage, member.template_id))
        return prompts.render(template, stages.get(member.stage).variables((), parent.text))

    def shape(self, member: Member, route: str) -> tuple[int, int]:
        """(tokens of the template rendered without its parent, times it shows the parent)."""
        key = (member.stage, member.template_id, member.llm_model_id)
        if key not in self._shapes:
            template = prompts.load_template(self.rt.paths.template_path(member.stage, member.template_id))
            text = prompts.render(template, stages.get(member.stage).variables((), _PARENT))
            base = count_tokens(self.rt, member.llm_model_id, text.replace(_PARENT, ""), route)
            self._shapes[key] = (base, text.count(_PARENT))
        return self._shapes[key]

    def cache_prefix(self, member: Member, route: str, factor: Spread) -> tuple[int, bool]:
        """(tokens of the template's shared prefix where the provider caches it, else 0;
        whether writing it is billed)."""
        key = (member.stage, member.template_id, member.llm_model_id)
        if key not in self._prefixes:
            self._prefixes[key] = (0, False)
            if self.caching and route in pricing.CACHE_ROUTES:
                template = prompts.load_template(self.rt.paths.template_path(member.stage, member.template_id))
                prefix = prompts.shared_prefix(template, member.stage)
                row = self.rt.experiment.models[member.llm_model_id]
                counted = count_tokens(self.rt, member.llm_model_id, prefix, route) if prefix else 0
                if counted >= pricing.cache_min_tokens(row, route):
                    tokens = round(counted * (factor.low + factor.high) / 2)
                    self._prefixes[key] = (tokens, route in pricing.MARKED_CACHE_ROUTES)
        return self._prefixes[key]

    def parsed_of_reply(self, member: Member, reply: str) -> _Text:
        template = self.rt.template(member)
        try:
            return _Text(parsers.parse(member.stage, template.parser, reply, score_min=template.score_min,
                                       score_max=template.score_max))
        except parsers.ParseError:
            return _Text(reply)  # the document will fail to parse; its whole reply bounds what follows

    def call(self, member: Member, parent: _Text | None, prompt_text: str | None) -> MissingCall:
        route, model = self.bill(member)
        key = (member.stage, member.template_id, member.llm_model_id, model)
        max_tokens = self.rt.settings.stage(member.stage).max_tokens
        factor = self.history.factor(self.rt, member.llm_model_id, model, route, key[:2])
        replies = self.history.completion_spread(key)
        if replies is not None:
            low, high, basis = round(replies.low), round(replies.high), f"history n={replies.n}"
        else:
            low, high, basis = min(max_tokens, self.default_low), max_tokens, "max_tokens"
        if prompt_text is not None:
            counted = count_tokens(self.rt, member.llm_model_id, prompt_text, route)
            prompt_low, prompt_high, bound = round(counted * factor.low), round(counted * factor.high), counted
        else:
            base, times = self.shape(member, route)
            bound = base + times * parent.bound
            sent = self.history.prompt_spread(key)
            if sent is not None:
                prompt_low, prompt_high = round(sent.low), round(sent.high)
            else:
                prompt_low = round(base * factor.low) + times * parent.low
                prompt_high = round(base * factor.high) + times * parent.high
        prefix, writes = self.cache_prefix(member, route, factor)
        return MissingCall(member.stage, member.gen_id, member.template_id, member.llm_model_id, prompt_low,
                           prompt_high, low, high, prompt_text is not None, basis, bound, max_tokens,
                           min(prefix, prompt_low), writes)


def missing_calls(rt: Runtime, history: History | None = None) -> Plan:
    """The plan of the active cohorts (see the module's docstring). `history` gives the
    estimates (None: read from the gens store, `read_history`); the budget check, which needs
    only the bound, passes NO_HISTORY (and no cache projection is made)."""
    caching = history is not NO_HISTORY
    if history is None:
        history = read_history(rt.paths)
    plan = Plan()
    by_stage: dict[str, dict[str, Member]] = {name: {} for name in stages.NAMES}
    for cohort_id in rt.cohort_ids:
        members = rt.membership.members(cohort_id)
        plan.cohort_gen_ids[cohort_id] = frozenset(m.gen_id for m in members)
        for member in members:
            by_stage[member.stage].setdefault(member.gen_id, member)
    walk = _Walk(rt, history, int(rt.config["plan_default_completion_tokens"]), caching)
    for stage in stages.STAGES:
        for member in by_stage[stage.name].values():
            if is_complete(rt, member):
                plan.done[stage.name] += 1
                continue
            parent = walk.parent_text(member)
            if rt.template(member).generator == "copy":
                plan.copies[stage.name] += 1
                walk.texts[member.gen_id] = parent
                continue
            prompt_text = walk.prompt_text(member, parent)
            reply = _paid_reply(rt, member, prompt_text)
            if reply is not None:
                plan.paid[stage.name] += 1
                walk.texts[member.gen_id] = walk.parsed_of_reply(member, reply)
                continue
            missing = walk.call(member, parent, prompt_text)
            plan.calls.append(missing)
            walk.texts[member.gen_id] = _Text(None, missing.completion_low, missing.completion_high,
                                              missing.bound_completion_tokens)
    return plan


# -- the table -----------------------------------------------------------------------------------
def _sum(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else math.fsum(values)


def price_hint(rt: Runtime) -> str:
    """How to give a model a price."""
    return (f"add input_cost_per_mtok and output_cost_per_mtok (USD per million tokens) to its row of "
            f"{rt.paths.models_csv}")


def cache_tokens(group: list[MissingCall]) -> tuple[int, int]:
    """(read, written) tokens the prompt cache is projected to serve for the calls of one
    template and model: the first call writes the shared prefix, every later one reads it
    (the calls of a template run close together, within the cache's lifetime: 5 minutes,
    refreshed by each read)."""
    cached = [c for c in group if c.cache_prefix]
    if not cached:
        return 0, 0
    prefix = cached[0].cache_prefix
    return prefix * (len(cached) - 1), prefix if cached[0].cache_writes else 0


def _group_cost(group: list[MissingCall], prices: Prices | None, *, high: bool, reads: int, writes: int):
    total = _sum([c.cost(prices, high=high) for c in group])
    if total is None:
        return None
    saved = reads * (prices.input_per_token - prices.cache_read) - writes * (prices.cache_write - prices.input_per_token)
    return total - saved


def plan_rows(rt: Runtime, plan: Plan) -> list[dict]:
    """One row per stage, template and model with missing calls (stage order, then ids), then
    the total. Costs are on the configured models (`bill_prices`; under `offline=true` this
    run's own cost is 0), with the projected prompt cache; None where the price is unknown: the
    total then sums the priced calls, and its note says how many calls have no price."""
    groups: dict[tuple[str, str, str], list[MissingCall]] = defaultdict(list)
    for call in plan.calls:
        groups[(call.stage, call.template_id, call.model_id)].append(call)
    order = {name: i for i, name in enumerate(stages.NAMES)}
    rows = []
    for (stage, template_id, model_id), group in sorted(groups.items(), key=lambda i: (order[i[0][0]], i[0][1:])):
        direct, batch = bill_prices(rt, model_id)
        reads, writes = cache_tokens(group)
        bases = sorted({c.basis for c in group})
        row = {
            "stage": stage, "template_id": template_id, "model_id": model_id, "calls": len(group),
            "basis": "; ".join(bases),
            "prompt_tokens_est": sum(c.prompt_tokens for c in group),
            "prompt_tokens_high": sum(c.prompt_tokens_high for c in group),
            "completion_tokens_low": sum(c.completion_low for c in group),
            "completion_tokens_high": sum(c.completion_high for c in group),
            "cache_read_tokens": reads, "cache_write_tokens": writes,
            "cost_usd_low": _group_cost(group, direct, high=False, reads=reads, writes=writes),
            "cost_usd_high": _group_cost(group, direct, high=True, reads=reads, writes=writes),
            "cost_usd_batch_low": _group_cost(group, batch, high=False, reads=reads, writes=writes),
            "cost_usd_batch_high": _group_cost(group, batch, high=True, reads=reads, writes=writes),
            "cache_savings_usd": None, "price_source": direct.source if direct else UNKNOWN,
            "note": "" if direct else f"price unknown: {price_hint(rt)}",
        }
        if direct is not None:
            row["cache_savings_usd"] = _sum([c.cost(direct, high=False) for c in group]) - row["cost_usd_low"]
        rows.append(row)
    return rows + [_total(rows)]


def _total(rows: list[dict]) -> dict:
    total = {"stage": TOTAL, "template_id": "", "model_id": "", "basis": "", "price_source": "", "note": ""}
    for key in ("calls", "prompt_tokens_est", "prompt_tokens_high", "completion_tokens_low", "completion_tokens_high",
                "cache_read_tokens", "cache_write_tokens"):
        total[key] = sum(r[key] for r in rows)
    for key in ("cost_usd_low", "cost_usd_high", "cost_usd_batch_low", "cost_usd_batch_high", "cache_savings_usd"):
        total[key] = math.fsum(r[key] for r in rows if r[key] is not None)
    unpriced = unpriced_calls(rows)
    if unpriced:
        named = ", ".join(f"{model} ({calls:,} calls)" for model, calls in unpriced.items())
        total["note"] = (f"unknown for {sum(unpriced.values()):,} calls: no price for {named}; the costs shown are "
                         "those of the priced calls only")
    return total


def unpriced_calls(rows: list[dict]) -> dict[str, int]:
    """Calls per model without a known price."""
    found: Counter = Counter()
    for row in rows:
        if row["stage"] != TOTAL and row["price_source"] == UNKNOWN:
            found[row["model_id"]] += row["calls"]
    return dict(sorted(found.items()))


def _csv_value(value: object) -> object:
    if value is None:
        return ""
    return round(value, 8) if isinstance(value, float) else value


def _range(low: object, high: object, fmt=str) -> str:
    return fmt(low) if low == high else f"{fmt(low)} - {fmt(high)}"


def format_table(rows: list[dict]) -> str:
    """The plan rows as an aligned text table (the CSV's columns, paired as ranges)."""
    header = ("stage", "template", "model", "calls", "basis", "prompt tokens", "completion tokens", "cache read/write",
              "cost USD", "batch cost USD")
    lines = [header]
    for row in rows:
        unknown = unpriced_calls(rows) if row["stage"] == TOTAL else {}
        tail = f" + unknown for {sum(unknown.values()):,} calls" if unknown else ""
        lines.append((
            row["stage"], row["template_id"], row["model_id"], f"{row['calls']:,}", row["basis"],
            _range(row["prompt_tokens_est"], row["prompt_tokens_high"], lambda n: f"{n:,}"),
            _range(row["completion_tokens_low"], row["completion_tokens_high"], lambda n: f"{n:,}"),
            f"{row['cache_read_tokens']:,}/{row['cache_write_tokens']:,}" if row["cache_read_tokens"] else "",
            _range(row["cost_usd_low"], row["cost_usd_high"], money) + tail,
            _range(row["cost_usd_batch_low"], row["cost_usd_batch_high"], money) + tail,
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {3, 5, 6, 7, 8, 9}
    return "\n".join("  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip()
                     for line in lines)


def describe(rt: Runtime, plan: Plan, rows: list[dict], stale_lines: list[str] | None = None) -> str:
    """The table with what it counts and how, for the terminal."""
    counted = sum(plan.done.values()) + sum(plan.copies.values()) + sum(plan.paid.values()) + len(plan.calls)
    lines = [f"Cost plan of cohorts {', '.join(rt.cohort_ids)}: {len(plan.calls):,} calls still to make "
             f"({counted:,} documents: {sum(plan.done.values()):,} done, {sum(plan.copies.values()):,} copies and "
             f"{sum(plan.paid.values()):,} with a paid reply in the ledger make no call)"]
    if rt.settings.offline:
        lines.append("This run costs $0 (offline=true: the offline model answers every call); the costs below are "
                     "what the same calls would cost on the configured models.")
    lines += ["", format_table(rows), ""]
    lines += [f"note: {r['stage']} {r['template_id']} {r['model_id']}: {r['note']}".replace("total  : ", "total: ")
              for r in rows if r["note"]]
    total = rows[-1]
    if total["cache_read_tokens"]:
        lines.append(f"prompt cache: {total['cache_read_tokens']:,} input tokens projected to be read from the cache "
                     f"and {total['cache_write_tokens']:,} written, saving about {money(total['cache_savings_usd'])} "
                     "(a template's shared prefix, before its first per-document variable: the first call writes it, "
                     "the rest read it while the cache lasts)")
    read, saved = recorded_cache_savings(rt)
    if read:
        lines.append(f"prompt cache so far: {read:,} input tokens of the calls recorded in {rt.paths.llm_calls_jsonl} "
                     f"were read from a provider's cache, saving {money(saved)}")
    lines += stale_lines or []
    lines += [
        "low - high: each reply at the 10th - 90th percentile of finished calls of the same stage, template and "
        "model (basis `history n=…`), prompts counted with the model's tokenizer and scaled by how the provider "
        "counted earlier prompts; where there is no history (basis `max_tokens`) low = "
        f"plan_default_completion_tokens={rt.config['plan_default_completion_tokens']} and high = the stage's "
        "max_tokens, also inside the prompts of what follows. Budgets bound every reply at max_tokens.",
        f"Written to {rt.paths.plan_csv}.",
    ]
    return "\n".join(lines)


def stale_summary(rt: Runtime, history: History) -> list[str]:
    """How many documents are stale (their prompt or model changed since they were paid for)
    and what paying for them again (`scripts/regenerate.py --stale`: each with its
    descendants) would cost, at the history's estimates."""
    rows = [r for r in stale.stale_rows(rt) if not r["reason"].startswith(integrity.RAW_DIFFERS)]
    if not rows:
        return []
    chosen = regenerate.with_descendants(rt.paths, [r["gen_id"] for r in rows])
    low = high = 0.0
    unknown = calls_made = 0
    for gen_id in chosen:
        try:
            member = rt.membership.member(gen_id)
        except UnknownGenerationError:
            continue  # a descendant in no active cohort: regenerate.py archives it, this run does not make it
        if rt.template(member).generator != "llm":
            continue
        calls_made += 1
        cost = _again(rt, member, history)
        if cost is None:
            unknown += 1
        else:
            low, high = low + cost[0], high + cost[1]
    note = f" + unknown for {unknown:,} calls" if unknown else ""
    return [f"stale: {len(rows):,} documents were paid for with a prompt or model that has changed since (see "
            f"{rt.paths.stale_generations_csv}); `python scripts/regenerate.py --stale` would pay for {calls_made:,} "
            f"calls (them and their descendants): {_range(low, high, money)}{note}"]


def _again(rt: Runtime, member: Member, history: History) -> tuple[float, float] | None:
    """(low, high) USD of paying for a made document again."""
    row = rt.experiment.models[member.llm_model_id]
    route = bill_route(rt, row)
    prices = bill_prices(rt, member.llm_model_id)[0]
    if prices is None:
        return None
    key = (member.stage, member.template_id, member.llm_model_id, f"{route}/{row.model}")
    try:
        text = rt.paths.prompt_path(member.stage, member.gen_id).read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    prompt = count_tokens(rt, member.llm_model_id, text, route)
    factor = history.factor(rt, member.llm_model_id, key[3], route, key[:2])
    replies = history.completion_spread(key)
    max_tokens = rt.settings.stage(member.stage).max_tokens
    low, high = (replies.low, replies.high) if replies else (0, max_tokens)
    return prices.cost(prompt * factor.low, low), prices.cost(prompt * factor.high, high)


def write_plan(rt: Runtime, log_path: str | None = None,
               budgets: Callable[[Runtime, Plan], str] | None = None) -> Plan:
    """Write plan.csv and print the table, the stale documents, and the budgets against it when
    `budgets` says them (the `plan` rule runs `budget.write_plan`, which passes
    `budget.describe`); stdout, on purpose."""
    history = read_history(rt.paths)
    plan = missing_calls(rt, history)
    rows = plan_rows(rt, plan)
    store.write_csv_atomic(rt.paths.plan_csv, PLAN_COLUMNS,
                           [{k: _csv_value(v) for k, v in row.items()} for row in rows])
    text = describe(rt, plan, rows, stale_summary(rt, history))
    budget_text = budgets(rt, plan) if budgets is not None else ""
    print(text + ("\n\n" + budget_text if budget_text else ""), flush=True)
    store.write_job_log(log_path, f"plan of {', '.join(rt.cohort_ids)}: {len(plan.calls)} calls missing; "
                                  f"{rt.paths.plan_csv}")
    return plan
