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
- During a run: `metered`, the one hook in `ledger.answer` right before `calls.call_model`. A
  call starts only when the spend so far, the high estimates of the calls in flight and its own
  high estimate fit within every budget it counts against. When they do not and calls are in
  flight, it waits for them to end (they usually cost far less than their high estimate); when
  nothing is in flight it raises `BudgetReached`, and so does every later call against that
  budget. Calls in flight finish and are saved. Jobs run in threads of one process: the state
  is one `Guard` per Runtime behind one lock. As long as the high estimates hold (a prompt's
  tokens are counted with the model's tokenizer, not the provider's), spend never passes a
  budget. Cluster batches run in processes of their own, each with its own guard: there the
  bound is per process.
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from daydream import calls, cohorts, plan, pricing, progress, settings, store
from daydream.errors import UserError
from daydream.membership import Member
from daydream.prompts import Prompt
from daydream.runtime import Runtime

log = logging.getLogger(__name__)

PLAN_RULE = "plan"  # the target rule of rules/plan.smk: it makes no call and is never refused
_EPSILON = 1e-12


class BudgetRefused(RuntimeError, UserError):
    """The missing calls could cost more than a budget allows: refused before the first call."""


class BudgetReached(RuntimeError):
    """A call was not started: it could pass a budget. Calls in flight finish and are saved."""


@dataclass(frozen=True)
class Budget:
    """A budget and the documents it covers (`gen_ids` None: every document of the active
    cohorts); `where` says where it is set, `cohort_file` is None for the config's."""

    name: str
    usd: float
    where: str
    gen_ids: frozenset[str] | None
    cohort_file: str | None = None

    def covers(self, gen_id: str) -> bool:
        return self.gen_ids is None or gen_id in self.gen_ids

    def how_to_raise(self, needed: float | None = None) -> str:
        """Where to raise it; `needed` (USD) rounded up to the cent, else `<more>`."""
        amount = "<more>" if needed is None else f"{math.ceil(needed * 100) / 100:.2f}"
        if self.cohort_file is None:
            return f"--config budget_usd={amount}"
        return f"budget_usd: {amount} in {self.cohort_file}"


def budgets(rt: Runtime) -> list[Budget]:
    """The budgets of this run: the config's, then each active cohort's."""
    found = []
    if rt.config.get("budget_usd") is not None:
        found.append(Budget(f"all active cohorts ({', '.join(rt.cohort_ids)})", float(rt.config["budget_usd"]),
                            "budget_usd in the config", None))
    for cohort_id in rt.cohort_ids:
        usd, path = cohorts.cohort_budget(rt.paths, cohort_id)
        if usd is not None:
            gen_ids = frozenset(m.gen_id for m in rt.membership.members(cohort_id))
            found.append(Budget(f"cohort {cohort_id}", float(usd), f"budget_usd in {path}", gen_ids, str(path)))
    return found


def override(rt: Runtime) -> bool:
    return settings.as_bool(rt.config["budget_override"])


def planning_only(targets) -> bool:
    """True when the run's only target is the plan (it makes no call)."""
    return bool(targets) and set(targets) <= {PLAN_RULE}


# -- spend so far ------------------------------------------------------------------------------
@dataclass
class Spend:
    """USD per gen_id of the recorded calls, and how many records per gen_id have no cost."""

    usd: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    unknown: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def of(self, gen_ids) -> tuple[float, int]:
        """USD and calls of unknown cost of these documents (unreadable records count for all)."""
        return (math.fsum(self.usd.get(g, 0.0) for g in gen_ids),
                sum(self.unknown.get(g, 0) for g in gen_ids) + self.unknown.get(TORN, 0))


TORN = "(unreadable record)"  # the gen_id a torn line of llm_calls.jsonl is counted under


def recorded_spend(rt: Runtime) -> Spend:
    """What the calls recorded in llm_calls.jsonl cost, per document: `cost_usd`, else the
    record's usage at today's prices, else `cost_usd_max` (a failed attempt that may have been
    billed, counted at its call's high estimate), else a call of unknown cost. A line that is
    not a JSON record (a write torn by a crash or a full disk) is counted as one call of
    unknown cost, against every budget, and named in a warning: it never stops a run."""
    spend, path = Spend(), rt.paths.llm_calls_jsonl
    for number, record in store.jsonl_records(path):
        if record is None or "gen_id" not in record:
            log.warning("%s line %d is not a complete call record (a write cut short by a crash or a full "
                        "disk); it is counted as one call of unknown cost. Later records are read as usual; "
                        "to silence this, remove that line once you know what the call cost", path, number)
            spend.unknown[TORN] += 1
            continue
        gen_id = str(record["gen_id"])
        cost = record.get("cost_usd")
        if cost is None:
            cost = _priced(rt, record.get("model_id"), record.get("usage") or {})
        if cost is None:
            cost = record.get("cost_usd_max")
        if cost is None:
            spend.unknown[gen_id] += 1
        else:
            spend.usd[gen_id] += float(cost)
    return spend


def _priced(rt: Runtime, model_id: str | None, usage: dict) -> float | None:
    if not usage or model_id not in rt.experiment.models:
        return None
    prices = plan.model_prices(rt, model_id)[0]
    return pricing.usage_cost(prices, usage)


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
        text = (f"{self.budget.name}, {self.budget.where} = {plan.money(self.budget.usd)}: spent so far "
                f"{plan.money(self.spent)}{unknown} + {self.calls:,} missing call(s) at most {plan.money(self.high)} = "
                f"{plan.money(self.needed)}")
        if self.needed > self.budget.usd + _EPSILON:
            text += f", over the budget by {plan.money(self.needed - self.budget.usd)}"
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
    `rt.planning_only` tells the cohort checkpoint to skip the keys."""
    rt.planning_only = planning_only(targets)
    if rt.planning_only:
        return
    problems = missing_run_keys(rt)
    if problems:
        raise MissingKeys("daydream: no call is started:\n" + "\n".join(f"  - {p}" for p in problems))
    _check(rt)


def check_cohort(rt: Runtime, cohort_id: str) -> None:
    """The end of the cohort checkpoint: the same check, now that `cohort_id`'s membership is
    known (a `plan` run is never refused)."""
    if not rt.planning_only:
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


# -- the guard during a run ---------------------------------------------------------------------
@dataclass
class Ticket:
    """An admitted call: the budgets it counts against and its high estimate in USD."""

    member: Member
    budgets: tuple[str, ...]
    high: float
    paid: bool = False
    base: float = 0.0  # the high estimate before the model's overrun factor (Guard._overrun)
    billed: float = 0.0  # what its failed attempts cost so far


class Guard:
    """The in-run state of one Runtime's budgets: spend, reservations of the calls in flight,
    and the budgets that have stopped. Thread-safe (one condition variable)."""

    def __init__(self, rt: Runtime):
        self.rt = rt
        self._cond = threading.Condition()
        self._signature: tuple | None = None
        self._budgets: list[Budget] = []
        self._recorded: Spend | None = None
        self._paid_here: dict[str, float] = defaultdict(float)
        self._spent: dict[str, float] = {}
        self._reserved: dict[str, float] = defaultdict(float)
        self._stopped: dict[str, str] = {}
        self._every: frozenset[str] = frozenset()
        self._overrun: dict[str, float] = {}  # model_id -> the largest cost / high estimate seen

    def _refresh(self) -> None:
        """Budgets and their spend, again whenever a membership changes (a checkpoint ran)."""
        signature = self.rt.membership.signature()
        if signature == self._signature:
            return
        self._budgets = budgets(self.rt)
        if self._budgets and self._recorded is None:
            self._recorded = recorded_spend(self.rt)
        self._every = frozenset(m.gen_id for c in self.rt.cohort_ids for m in self.rt.membership.members(c))
        for item in self._budgets:
            gen_ids = self._every if item.gen_ids is None else item.gen_ids
            self._spent[item.name] = self._recorded.of(gen_ids)[0] + math.fsum(
                self._paid_here[g] for g in gen_ids if g in self._paid_here)
        self._signature = signature

    def _high(self, member: Member, prompt: Prompt) -> float:
        """The most the call may cost: every prompt token, max_tokens of completion, at direct
        prices (before `_overrun`)."""
        prices = plan.model_prices(self.rt, member.llm_model_id)[0]
        if prices is None:
            raise BudgetReached(
                f"{member.gen_id}: not called: model {member.llm_model_id} has no known price, so no budget can "
                f"bound its cost; add input_cost_per_mtok and output_cost_per_mtok to {self.rt.paths.models_csv}")
        tokens = plan.count_tokens(self.rt, member.llm_model_id, prompt.text)
        return prices.cost(tokens, self.rt.settings.stage(member.stage).max_tokens)

    def admit(self, member: Member, prompt: Prompt) -> Ticket:
        """Reserve the call's high estimate against its budgets, waiting while calls in flight
        might leave room; BudgetReached when none can."""
        with self._cond:
            self._refresh()
            against = [b for b in self._budgets if b.covers(member.gen_id)]
        if not against:
            return Ticket(member, (), 0.0)
        base = self._high(member, prompt)
        with self._cond:
            while True:
                self._refresh()
                # A model that has reported more than its high estimate is reserved at that ratio.
                high = base * self._overrun.get(member.llm_model_id, 1.0)
                against = [b for b in self._budgets if b.covers(member.gen_id)]
                stopped = [self._stopped[b.name] for b in against if b.name in self._stopped]
                if stopped:
                    raise BudgetReached(f"{member.gen_id}: not called: {stopped[0]}")
                over = [b for b in against
                        if self._spent[b.name] + self._reserved[b.name] + high > b.usd + _EPSILON]
                if not over:
                    for item in against:
                        self._reserved[item.name] += high
                    return Ticket(member, tuple(b.name for b in against), high, base=base)
                # Spent alone reaches the budget: no call can fit, whatever is in flight.
                idle = [b for b in over if self._reserved[b.name] <= _EPSILON
                        or self._spent[b.name] + high > b.usd + _EPSILON]
                if idle:
                    reason = self._stop(idle[0], member, high)
                    raise BudgetReached(f"{member.gen_id}: not called: {reason}")
                self._cond.wait()

    def _stop(self, item: Budget, member: Member, high: float) -> str:
        spent = self._spent[item.name]
        reason = (f"the budget of {item.name} ({item.where} = {plan.money(item.usd)}) is reached: spent "
                  f"{plan.money(spent)}, and a call ({member.stage} {member.llm_model_id}) may cost up to {plan.money(high)}; "
                  f"no new call starts, calls in flight finish and are saved. To make the rest: `snakemake plan` "
                  f"shows what it may cost; raise the budget ({item.how_to_raise()}) and run again")
        self._stopped[item.name] = reason
        progress.RUN.budget_stopped(reason)
        return reason

    def paid(self, ticket: Ticket, done: calls.Completion) -> None:
        """Count what the call cost as reported (its high estimate when its cost is unknown).
        A cost above the high estimate (usage past max_tokens) counts in full, and later calls
        of the model reserve that many times their estimate."""
        cost = done.cost_usd
        if cost is None:
            cost = _priced(self.rt, ticket.member.llm_model_id, done.usage or {})
        cost = ticket.high if cost is None else float(cost)
        with self._cond:
            self._count(ticket, cost)
            ticket.paid = True

    def billed(self, ticket: Ticket, attempt: calls.Attempt) -> tuple[float | None, str | None]:
        """Count a failed attempt the provider may have billed (`calls.Attempt`): its reported
        usage at its price, else (a reply nobody read, or no price) the call's high estimate.
        Returns the USD counted (None: unknown, no budget to bound it) and, when the spend so far
        and the calls in flight leave no room for another attempt, why none is made."""
        cost = attempt.cost_usd
        if cost is None and attempt.usage:
            cost = _priced(self.rt, ticket.member.llm_model_id, attempt.usage)
        if cost is None and ticket.budgets:
            cost = ticket.high
        with self._cond:
            if cost is not None:
                self._count(ticket, float(cost))
                ticket.billed += float(cost)
            over = [b for b in self._budgets if b.name in ticket.budgets
                    and self._spent.get(b.name, 0.0) + self._reserved[b.name] > b.usd + _EPSILON]
        if not over:
            return cost, None
        item = over[0]
        return cost, (f"{ticket.member.gen_id}: not tried again: the budget of {item.name} ({item.where} = "
                      f"{plan.money(item.usd)}) has no room for another attempt after a failed one that counts "
                      f"{plan.money(cost or 0.0)} (spent {plan.money(self._spent.get(item.name, 0.0))}); raise it "
                      f"({item.how_to_raise()}) and run again")

    def _count(self, ticket: Ticket, cost: float) -> None:
        """Under the lock: `cost` spent by the ticket's document, against its budgets."""
        self._paid_here[ticket.member.gen_id] += cost
        for name in ticket.budgets:
            self._spent[name] = self._spent.get(name, 0.0) + cost
        if ticket.base > _EPSILON and cost > ticket.high + _EPSILON:
            model = ticket.member.llm_model_id
            self._overrun[model] = max(self._overrun.get(model, 1.0), cost / ticket.base)

    def release(self, ticket: Ticket) -> None:
        with self._cond:
            for name in ticket.budgets:
                self._reserved[name] -= ticket.high
            self._cond.notify_all()

    def status(self) -> str | None:
        """The tightest budget's spend, for the progress line; None without budgets."""
        with self._cond:
            if not self._budgets:
                return None
            item = min(self._budgets, key=lambda b: b.usd - self._spent.get(b.name, 0.0))
            stopped = " (reached)" if item.name in self._stopped else ""
            return f"budget {plan.money(self._spent.get(item.name, 0.0))} of {plan.money(item.usd)}{stopped}"


_GUARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_GUARDS_LOCK = threading.Lock()


def guard(rt: Runtime) -> Guard:
    """The guard of `rt` (one per Runtime: the jobs of a Snakemake process share it)."""
    with _GUARDS_LOCK:
        if rt not in _GUARDS:
            _GUARDS[rt] = Guard(rt)
        return _GUARDS[rt]


@contextmanager
def metered(rt: Runtime, member: Member, prompt: Prompt) -> Iterator[Ticket]:
    """Around one call in `ledger.answer`: admit it (BudgetReached when it could pass a budget),
    count it in flight, and on `paid(ticket, done)` count its cost. Counts the call for the
    progress line too."""
    keeper = guard(rt)
    try:
        ticket = keeper.admit(member, prompt)
    except BudgetReached:
        progress.RUN.call_refused(member.stage)
        raise
    progress.RUN.call_started(member.stage)
    try:
        yield ticket
    finally:
        keeper.release(ticket)
        progress.RUN.call_ended(member.stage, ticket.paid)


def paid(rt: Runtime, ticket: Ticket, done: calls.Completion) -> None:
    """A call of `metered` came back: its cost counts against its budgets and the progress."""
    guard(rt).paid(ticket, done)
    progress.RUN.call_paid(ticket.member.stage, done, plan.cache_saving(rt, ticket.member.llm_model_id, done.usage or {}))


def billed(rt: Runtime, ticket: Ticket, attempt: calls.Attempt) -> tuple[float | None, BudgetReached | None]:
    """A failed attempt of a `metered` call that may have been billed: counted against its
    budgets and in the progress (`Guard.billed`). Returns the USD counted (None: unknown) and,
    when the budget leaves no room for another attempt, the BudgetReached to raise."""
    cost, no_room = guard(rt).billed(ticket, attempt)
    progress.RUN.attempt_billed(ticket.member.stage, attempt.usage, cost)
    return cost, (BudgetReached(no_room) if no_room else None)
