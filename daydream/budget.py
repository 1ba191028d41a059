"""Budgets: a hard stop before an experiment overspends (README "Budgets").

A budget is `budget_usd` in the config (over every document of the active cohorts) or in a
cohort file (over that cohort's documents; a document shared by two cohorts counts in both).
Spend is what the calls recorded in `7_reporting/llm_calls.jsonl` cost (`cost_usd`; a record
without a cost is priced from its usage with `pricing.direct_prices`, else it is counted as a
call of unknown cost and named in the messages). Every estimate uses direct prices: a batch
call costs less, so a batch run can only be overestimated.

Two checks:

- Before the first call: `check_before_run` (the Snakefile's `onstart:`, real runs only, after
  the DAG is built) and `check_cohort` (the end of the cohort checkpoint, for a membership the
  run has just made: Snakemake cannot see past a checkpoint before it has run). The spend so far
  plus the plan's high estimate of the missing calls (`plan.missing_calls`: every reply at
  max_tokens) must fit each budget, and every model still to be called needs a known price.
  Otherwise `BudgetRefused` gives the numbers and the ways on: raise the budget
  (`--config budget_usd=<x>`, or `budget_usd` in the cohort file), or `--config
  budget_override=true`, which skips this check only. A run whose only target is `plan` is
  never refused.
- During a run: the run's budget guard (`daydream.run`: `Run.spend` around every direct call,
  `Run.spend_batch` around every provider batch's submission) starts a spend only when it fits
  within every budget it counts against, and raises `BudgetReached` otherwise.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from daydream import calls, plan, settings
from daydream.errors import UserError
from daydream.pricing import money
from daydream.run import Budget, budgets, recorded_spend
from daydream.runtime import Runtime

log = logging.getLogger(__name__)

PLAN_RULE = "plan"  # the target rule of rules/plan.smk: it makes no call and is never refused
_EPSILON = 1e-12


class BudgetRefused(RuntimeError, UserError):
    """The missing calls could cost more than a budget allows: refused before the first call."""


def override(rt: Runtime) -> bool:
    return settings.as_bool(rt.config["budget_override"])


def planning_only(targets) -> bool:
    """True when the run's only target is the plan (it makes no call)."""
    return bool(targets) and set(targets) <= {PLAN_RULE}


# -- the check before the first call -----------------------------------------------------------
@dataclass(frozen=True)
class Standing:
    """A budget against the spend so far and the missing calls' high estimate."""

    budget: Budget
    spent: float
    unknown_calls: int
    high: float
    calls: int
    unpriced: tuple[str, ...]  # models of missing calls without a known price

    @property
    def needed(self) -> float:
        return self.spent + self.high

    @property
    def fits(self) -> bool:
        return not self.unpriced and self.needed <= self.budget.usd + _EPSILON

    def line(self) -> str:
        unknown = f" (and {self.unknown_calls} earlier call(s) of unknown cost)" if self.unknown_calls else ""
        text = (f"{self.budget.name}, {self.budget.where} = {money(self.budget.usd)}: spent so far "
                f"{money(self.spent)}{unknown} + {self.calls:,} missing call(s) at most {money(self.high)} = "
                f"{money(self.needed)}")
        if self.needed > self.budget.usd + _EPSILON:
            text += f", over the budget by {money(self.needed - self.budget.usd)}"
        if self.unpriced:
            text += (f"; no known price for {', '.join(self.unpriced)}, so no budget can bound their calls (add "
                     "input_cost_per_mtok and output_cost_per_mtok to llm_models.csv)")
        return text


def standings(rt: Runtime, the_plan: plan.Plan | None = None) -> list[Standing]:
    """Every budget of the run against its spend so far and the plan's high estimate."""
    found = budgets(rt)
    if not found:
        return []
    the_plan = the_plan if the_plan is not None else plan.missing_calls(rt, plan.NO_HISTORY)
    spend, every = recorded_spend(rt), the_plan.gen_ids
    prices = {m: plan.model_prices(rt, m)[0] for m in {c.model_id for c in the_plan.calls}}
    result = []
    for item in found:
        covered = [c for c in the_plan.calls if item.covers(c.gen_id)]
        spent, unknown = spend.of(every if item.gen_ids is None else item.gen_ids)
        highs = [c.bound_cost(prices[c.model_id]) for c in covered]
        unpriced = tuple(sorted({c.model_id for c in covered if prices[c.model_id] is None}))
        result.append(Standing(item, spent, unknown, math.fsum(h for h in highs if h is not None), len(covered),
                               unpriced))
    return result


def refusal(rt: Runtime, over: list[Standing]) -> str:
    ways = "; ".join(s.budget.how_to_raise(s.needed) for s in over if s.needed > s.budget.usd + _EPSILON)
    raise_it = f"raise the budget ({ways}), or " if ways else ""
    return "\n".join([
        "daydream: the missing calls could exceed a budget, so none of them is started:",
        *(f"  - {s.line()}" for s in over),
        "The high estimate counts every reply at its stage's max_tokens; `snakemake plan` shows the low-high "
        "range per stage and model.",
        f"To go on: {raise_it}skip this check with --config budget_override=true (calls then start only while "
        "they fit within the budget, and none after).",
    ])


class MissingKeys(RuntimeError):
    """A model still to be called has no API key in the environment: refused before any call."""


def missing_run_keys(rt: Runtime) -> list[str]:
    """One problem per model that a document still missing from the active cohorts' gens store
    would call while its key variable is unset. The checkpoint checks the keys of a membership
    it makes; this covers a membership made by a run that only planned (no key needed)."""
    used = {m.llm_model_id for c in rt.cohort_ids for m in rt.membership.members(c)
            if not plan.is_complete(rt, m)}
    rows = [rt.experiment.models[i] for i in sorted(used) if i in rt.experiment.models]
    return calls.missing_keys(rows, rt.settings, "the run")


def check_before_run(rt: Runtime, targets=()) -> None:
    """`onstart:`: refuse the run before its first call when a model still to be called has no
    key (MissingKeys) or the missing calls of the active cohorts could pass a budget
    (BudgetRefused; see the module's docstring). A run that only plans is never refused, and
    `rt.run.planning_only` tells the cohort checkpoint to skip the keys."""
    rt.run.planning_only = planning_only(targets)
    if rt.run.planning_only:
        return
    problems = missing_run_keys(rt)
    if problems:
        raise MissingKeys("daydream: no call is started:\n" + "\n".join(f"  - {p}" for p in problems))
    _check(rt)


def check_cohort(rt: Runtime, cohort_id: str) -> None:
    """The end of the cohort checkpoint: the same check, now that `cohort_id`'s membership is
    known (a `plan` run is never refused)."""
    if not rt.run.planning_only:
        _check(rt)


def _check(rt: Runtime) -> None:
    if override(rt):
        if budgets(rt):
            log.warning("budget_override=true: no check before the first call; calls stop before the "
                        "recorded spend could pass a budget")
        return
    over = [s for s in standings(rt) if not s.fits]
    if over:
        raise BudgetRefused(refusal(rt, over))


def describe(rt: Runtime, the_plan: plan.Plan) -> str:
    """The budgets against the plan, for `snakemake plan` (empty when there is none)."""
    found = standings(rt, the_plan)
    if not found:
        return ""
    lines = ["Budgets (the high estimate must fit, or the run is refused before its first call):"]
    lines += [f"  - {'fits' if s.fits else 'over: a run is refused'}: {s.line()}" for s in found]
    return "\n".join(lines)


def write_plan(rt: Runtime, log_path: str | None = None) -> plan.Plan:
    """The `plan` rule: plan.csv, and the table with the budgets against it (`plan.write_plan`)."""
    return plan.write_plan(rt, log_path, describe)
