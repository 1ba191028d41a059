"""The cost plan (`snakemake plan`): every model call the active cohorts still miss, what it
will send and what it may cost, before anything is paid.

`missing_calls` walks the members of the active cohorts stage by stage, root first, each
document once (a document shared by two cohorts is made and paid for once). A document whose
four gens files exist is done. A missing document makes no call when it is a copy, or when the
paid-reply ledger holds a reply for it (`ledger.saved_reply` for its prompt, or the record of an
earlier prompt, which `ledger.answer` restores). Every other missing document is one call:

- prompt tokens: counted on the rendered prompt where it can be rendered (every root document,
  and every document whose parent's parsed text exists or is already known: a copy of an
  existing text, a saved reply). Otherwise the template is rendered without its parent, and
  the parent's estimated reply is added as often as the template uses it (`prompt_tokens_est`
  with the parent's low estimate, `prompt_tokens_high` with its max_tokens). Tokens are counted
  with the model's tokenizer through `litellm.token_counter` (litellm's default tokenizer for a
  model it has none for; never a download: LITELLM_OFFLINE_MODE), and as words for the offline
  model, as `offline_model.generate` counts them.
- completion tokens: low = the median completion tokens of the finished calls of the same
  template and model in the gens store (their metadata.json `usage`), else
  `plan_default_completion_tokens` (default 0: the low estimate is then the prompt's cost
  alone); high = the stage's `max_tokens`.
- prices: `pricing.direct_prices` and `pricing.batch_prices`; an unknown price stays unknown.

`plan_rows` sums the calls per stage and model, plus a total row; `write_plan` (the `plan` rule,
through `budget.write_plan`) writes `data/7_reporting/plan.csv` and prints the same as a table: the plan is meant for the
person at the terminal, so this module prints it to stdout on purpose.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from daydream import documents, ledger, parsers, pricing, prompts, stages, store
from daydream.columns import PLAN_COLUMNS
from daydream.membership import Member
from daydream.paths import GEN_FILES
from daydream.pricing import Prices, money
from daydream.runtime import Runtime

TOTAL = "total"
UNKNOWN = "unknown"
# Stands for the parent's text when a template is rendered before its parent exists.
_PARENT = "\x00daydream-parent\x00"


class PlanError(RuntimeError):
    """A membership the plan cannot walk; the message names the document and the fix."""


# -- tokens and prices ---------------------------------------------------------------------------
def count_tokens(rt: Runtime, model_id: str, text: str) -> int:
    """`text` in tokens of the model `model_id` (`pricing.count_tokens`)."""
    return pricing.count_tokens(rt.experiment.models[model_id], rt.settings, text)


def model_prices(rt: Runtime, model_id: str) -> tuple[Prices | None, Prices | None]:
    """Direct and batch prices of a model as this run would call it (None: unknown)."""
    return pricing.model_prices(rt.experiment.models[model_id], rt.settings)


def finished_completion_tokens(paths) -> dict[tuple[str, str, str], int]:
    """The median completion tokens of the finished calls in the gens store by (stage,
    template_id, model_id), from each document's metadata.json (copies have no call)."""
    found: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for stage in stages.NAMES:
        folder = paths.stage_dir(stage)
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            try:
                meta = json.loads((Path(entry.path) / "metadata.json").read_text(encoding="utf-8"))
            except (FileNotFoundError, NotADirectoryError):
                continue
            tokens = (meta.get("usage") or {}).get("completion_tokens")
            if meta.get("mode") == "llm" and tokens is not None:
                found[(stage, meta["template_id"], meta["model_id"])].append(int(tokens))
    return {key: int(statistics.median(values)) for key, values in found.items()}


# -- the missing calls ---------------------------------------------------------------------------
@dataclass(frozen=True)
class MissingCall:
    """One call a run would make. `prompt_rendered`: its prompt tokens are counted on the
    prompt itself, not estimated from the template and the parent's estimate."""

    stage: str
    gen_id: str
    template_id: str
    model_id: str
    prompt_tokens: int
    prompt_tokens_high: int
    completion_low: int
    completion_high: int
    prompt_rendered: bool

    def cost(self, prices: Prices | None, *, high: bool) -> float | None:
        """USD at `prices`: low (prompt estimate, low completion) or high (every token at its
        ceiling); None when the price is unknown."""
        if prices is None:
            return None
        if high:
            return prices.cost(self.prompt_tokens_high, self.completion_high)
        return prices.cost(self.prompt_tokens, self.completion_low)


@dataclass(frozen=True)
class _Text:
    """A missing document's parsed text as its children will read it: the text where it is
    known already, else its size in tokens (low, high)."""

    text: str | None = None
    low: int = 0
    high: int = 0


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

    def __init__(self, rt: Runtime, completion_low: dict, default_low: int):
        self.rt, self.completion_low, self.default_low = rt, completion_low, default_low
        self.texts: dict[str, _Text] = {}  # missing documents' parsed texts, for their children
        self._shapes: dict[tuple[str, str, str], tuple[int, int]] = {}

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

    def shape(self, member: Member) -> tuple[int, int]:
        """(tokens of the template rendered without its parent, times it shows the parent)."""
        key = (member.stage, member.template_id, member.llm_model_id)
        if key not in self._shapes:
            template = prompts.load_template(self.rt.paths.template_path(member.stage, member.template_id))
            text = prompts.render(template, stages.get(member.stage).variables((), _PARENT))
            base = count_tokens(self.rt, member.llm_model_id, text.replace(_PARENT, ""))
            self._shapes[key] = (base, text.count(_PARENT))
        return self._shapes[key]

    def parsed_of_reply(self, member: Member, reply: str) -> _Text:
        template = self.rt.template(member)
        try:
            return _Text(parsers.parse(member.stage, template.parser, reply, score_min=template.score_min,
                                       score_max=template.score_max))
        except parsers.ParseError:
            return _Text(reply)  # the document will fail to parse; its whole reply bounds what follows

    def call(self, member: Member, parent: _Text | None, prompt_text: str | None) -> MissingCall:
        high = self.rt.settings.stage(member.stage).max_tokens
        low = min(high, self.completion_low.get((member.stage, member.template_id, member.llm_model_id),
                                                self.default_low))
        if prompt_text is not None:
            prompt_low = prompt_high = count_tokens(self.rt, member.llm_model_id, prompt_text)
        else:
            base, times = self.shape(member)
            prompt_low, prompt_high = base + times * parent.low, base + times * parent.high
        return MissingCall(member.stage, member.gen_id, member.template_id, member.llm_model_id, prompt_low,
                           prompt_high, low, high, prompt_text is not None)


def missing_calls(rt: Runtime, completion_low: dict | None = None) -> Plan:
    """The plan of the active cohorts (see the module's docstring). `completion_low` maps
    (stage, template_id, model_id) to a reply's low estimate in tokens; None reads them from
    the gens store (`finished_completion_tokens`); the budget check, which needs only the
    high estimate, passes {}."""
    if completion_low is None:
        completion_low = finished_completion_tokens(rt.paths)
    plan = Plan()
    by_stage: dict[str, dict[str, Member]] = {name: {} for name in stages.NAMES}
    for cohort_id in rt.cohort_ids:
        members = rt.membership.members(cohort_id)
        plan.cohort_gen_ids[cohort_id] = frozenset(m.gen_id for m in members)
        for member in members:
            by_stage[member.stage].setdefault(member.gen_id, member)
    walk = _Walk(rt, completion_low, int(rt.config["plan_default_completion_tokens"]))
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
            walk.texts[member.gen_id] = _Text(None, missing.completion_low, missing.completion_high)
    return plan


# -- the table -----------------------------------------------------------------------------------
def _sum(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else math.fsum(values)


def _unknown_price_note(rt: Runtime) -> str:
    return f"price unknown: add input_cost_per_mtok and output_cost_per_mtok to {rt.paths.models_csv}"


def plan_rows(rt: Runtime, plan: Plan) -> list[dict]:
    """One row per stage and model with missing calls (stage order, then model id), then the
    total. Costs are None where the price is unknown; the total's costs then sum the known
    prices and its note says they are a lower bound ("at least")."""
    groups: dict[tuple[str, str], list[MissingCall]] = defaultdict(list)
    for call in plan.calls:
        groups[(call.stage, call.model_id)].append(call)
    order = {name: i for i, name in enumerate(stages.NAMES)}
    rows, unknown = [], []
    for (stage, model_id), group in sorted(groups.items(), key=lambda item: (order[item[0][0]], item[0][1])):
        direct, batch = model_prices(rt, model_id)
        if direct is None:
            unknown.append(model_id)
        rows.append({
            "stage": stage, "model_id": model_id, "calls": len(group),
            "prompt_tokens_est": sum(c.prompt_tokens for c in group),
            "prompt_tokens_high": sum(c.prompt_tokens_high for c in group),
            "completion_tokens_low": sum(c.completion_low for c in group),
            "completion_tokens_high": sum(c.completion_high for c in group),
            "cost_usd_low": _sum([c.cost(direct, high=False) for c in group]),
            "cost_usd_high": _sum([c.cost(direct, high=True) for c in group]),
            "cost_usd_batch_low": _sum([c.cost(batch, high=False) for c in group]),
            "cost_usd_batch_high": _sum([c.cost(batch, high=True) for c in group]),
            "price_source": direct.source if direct else UNKNOWN,
            "note": "" if direct else _unknown_price_note(rt),
        })
    total = {"stage": TOTAL, "model_id": "", "price_source": "", "note": ""}
    for key in ("calls", "prompt_tokens_est", "prompt_tokens_high", "completion_tokens_low", "completion_tokens_high"):
        total[key] = sum(r[key] for r in rows)
    for key in ("cost_usd_low", "cost_usd_high", "cost_usd_batch_low", "cost_usd_batch_high"):
        total[key] = math.fsum(r[key] for r in rows if r[key] is not None)
    if unknown:
        total["note"] = f"at least: the price of {', '.join(sorted(set(unknown)))} is unknown"
    return rows + [total]


def _csv_value(value: object) -> object:
    if value is None:
        return ""
    return round(value, 8) if isinstance(value, float) else value


def _range(low: object, high: object, fmt=str) -> str:
    return fmt(low) if low == high else f"{fmt(low)} - {fmt(high)}"


def format_table(rows: list[dict]) -> str:
    """The plan rows as an aligned text table (the CSV's columns, paired as ranges)."""
    header = ("stage", "model", "calls", "prompt tokens", "completion tokens", "cost USD", "batch cost USD")
    lines = [header]
    for row in rows:
        at_least = "at least " if row["stage"] == TOTAL and row["note"] else ""
        lines.append((
            row["stage"], row["model_id"], f"{row['calls']:,}",
            _range(row["prompt_tokens_est"], row["prompt_tokens_high"], lambda n: f"{n:,}"),
            _range(row["completion_tokens_low"], row["completion_tokens_high"], lambda n: f"{n:,}"),
            at_least + _range(row["cost_usd_low"], row["cost_usd_high"], money),
            at_least + _range(row["cost_usd_batch_low"], row["cost_usd_batch_high"], money),
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {2, 3, 4, 5, 6}
    return "\n".join("  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip()
                     for line in lines)


def describe(rt: Runtime, plan: Plan, rows: list[dict]) -> str:
    """The table with what it counts and how, for the terminal."""
    counted = sum(plan.done.values()) + sum(plan.copies.values()) + sum(plan.paid.values()) + len(plan.calls)
    lines = [f"Cost plan of cohorts {', '.join(rt.cohort_ids)}: {len(plan.calls):,} calls still to make "
             f"({counted:,} documents: {sum(plan.done.values()):,} done, {sum(plan.copies.values()):,} copies and "
             f"{sum(plan.paid.values()):,} with a paid reply in the ledger make no call)", "",
             format_table(rows), ""]
    lines += [f"note: {r['stage']} {r['model_id']}: {r['note']}".replace("total : ", "total: ")
              for r in rows if r["note"]]
    lines += [
        "low: prompt tokens as estimated, replies at the median of finished calls of the same template and model "
        f"(else plan_default_completion_tokens={rt.config['plan_default_completion_tokens']}); high: every reply at "
        "its stage's max_tokens, also inside the prompts of what follows.",
        f"Written to {rt.paths.plan_csv}.",
    ]
    return "\n".join(lines)


def write_plan(rt: Runtime, log_path: str | None = None,
               budgets: Callable[[Runtime, Plan], str] | None = None) -> Plan:
    """Write plan.csv and print the table, and the budgets against it when `budgets` says them
    (the `plan` rule runs `budget.write_plan`, which passes `budget.describe`); stdout, on purpose."""
    plan = missing_calls(rt)
    rows = plan_rows(rt, plan)
    store.write_csv_atomic(rt.paths.plan_csv, PLAN_COLUMNS,
                           [{k: _csv_value(v) for k, v in row.items()} for row in rows])
    text = describe(rt, plan, rows)
    budget_text = budgets(rt, plan) if budgets is not None else ""
    print(text + ("\n\n" + budget_text if budget_text else ""), flush=True)
    store.write_job_log(log_path, f"plan of {', '.join(rt.cohort_ids)}: {len(plan.calls)} calls missing; "
                                  f"{rt.paths.plan_csv}")
    return plan
