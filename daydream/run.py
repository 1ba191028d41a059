"""`Run`: the state of one run (one Snakemake process), owned by its `Runtime`, and the one
object every spend passes through.

A direct call (`ledger.answer`, in a document job or a cluster batch) spends inside
`Run.spend`; a provider batch is submitted inside `Run.spend_batch` (`daydream.batch.rounds`).
Both reserve the spend's high estimate against every budget it counts against, raise
`BudgetReached` when it could pass one, and release the reservation when the spend has ended
(or, for a batch, once its requests are on disk as a live batch: from then on the batch ledger
holds the commitment). `Run.paid` counts a paid reply, `Run.billed` a failed attempt the
provider may have billed (its usage, else the call's high estimate; BudgetReached when no room
is left for another attempt), `Run.batch_paid` a reply a provider batch returned. A reply
costing more than its high estimate counts in full, and later spends of that model reserve
that many times their estimate. No module keeps run state in globals: everything below lives
on the Run.

- `guard` (`Guard`): the budgets' state during the run. A spend starts only when the spend so
  far, the money committed to provider batches in flight (every live batch of the durable batch
  ledger, each request at its high estimate), the high estimates of the calls in flight and its
  own high estimate fit within every budget it counts against. When they do not and calls are
  in flight, it waits for them to end (they usually cost far less than their high estimate);
  when none is in flight, or the spend so far and the commitments alone leave no room, it
  raises `BudgetReached`, and so does every later spend against that budget. Calls in flight finish and are saved. Jobs run in threads of one process: one lock.
  Cluster batches run in processes of their own, each with its own Run: there the bound is per
  process. The checks before the first call are `daydream.budget`'s.
- `counters` (`Counters`): documents and calls of this process, for the progress line and the
  summary (`daydream.progress` reads them).
- `batches` (`BatchRounds`): the batch rounds of this run (`daydream.batch.gate`).
- `limits`: the concurrency caps of model calls (`daydream.limits`); `reply_cuts`: the cluster
  batches cut from the membership (`daydream.batches`).

Observers (`observe`) are told of the run's events, by method name: `document_started`,
`document_made`, `document_failed`, `call_started`, `call_paid`, `attempt_billed`, `call_ended`,
`call_refused`, `budget_stopped`, `batch_submitted`, `batch_reply_paid`, `record_recovered`. The
counters are the first observer.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from daydream import calls, cohort_design, pricing, store
from daydream.batch import ledger as batch_ledger
from daydream.experiment import Experiment
from daydream.limits import ConcurrencyLimits
from daydream.membership import Member, MembershipIndex
from daydream.paths import Paths
from daydream.prompts import Prompt
from daydream.settings import BatchSettings, LLMSettings

log = logging.getLogger(__name__)

_EPSILON = 1e-12
SHOWN_FAILURES = 5  # failed documents the summary names
BUDGET, CALL, PARSE = "not started (budget)", "call failed", "reply did not parse"


class Owner(Protocol):
    """What a Run reads of the Runtime that owns it (`daydream.runtime.Runtime`)."""

    config: dict
    paths: Paths
    cohort_ids: list[str]
    settings: LLMSettings
    membership: MembershipIndex

    @property
    def experiment(self) -> Experiment: ...


class CallEngine(Protocol):
    """The call engine of a run (`daydream.engine.Engine`), as the ledger asks it: whether it
    makes a document's call, and the answer to a document's prompt (a `ledger.Answer`)."""

    def serves(self, member: Member) -> bool: ...

    def answer(self, member: Member, prompt: Prompt): ...


class BudgetReached(RuntimeError):
    """A spend was not started: it could pass a budget. Calls in flight finish and are saved."""

    failure_kind = BUDGET


# -- budgets and the spend so far ----------------------------------------------------------------
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


def budgets(owner: Owner) -> list[Budget]:
    """The budgets of this run: the config's, then each active cohort's."""
    found = []
    if owner.config.get("budget_usd") is not None:
        found.append(Budget(f"all active cohorts ({', '.join(owner.cohort_ids)})", float(owner.config["budget_usd"]),
                            "budget_usd in the config", None))
    for cohort_id in owner.cohort_ids:
        usd, path = cohort_design.cohort_budget(owner.paths, cohort_id)
        if usd is not None:
            gen_ids = frozenset(m.gen_id for m in owner.membership.members(cohort_id))
            found.append(Budget(f"cohort {cohort_id}", float(usd), f"budget_usd in {path}", gen_ids, str(path)))
    return found


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


def direct_prices(owner: Owner, model_id: str | None) -> pricing.Prices | None:
    """The direct prices of `model_id` as this run calls it; None when unknown."""
    if model_id not in owner.experiment.models:
        return None
    return pricing.model_prices(owner.experiment.models[model_id], owner.settings)[0]


def priced(owner: Owner, model_id: str | None, usage: dict) -> float | None:
    """What `usage` costs at the direct prices of `model_id` (cached tokens at their rate);
    None when that is unknown."""
    if not usage:
        return None
    return pricing.usage_cost(direct_prices(owner, model_id), usage)


def cache_saving(owner: Owner, model_id: str | None, usage: dict) -> float:
    """What a call of `model_id` saved by its prompt cache (`pricing.cache_saving`)."""
    if not usage:
        return 0.0
    return pricing.cache_saving(direct_prices(owner, model_id), usage)


def recorded_spend(owner: Owner) -> Spend:
    """What the calls recorded in llm_calls.jsonl cost, per document: `cost_usd`, else the
    record's usage at today's prices, else `cost_usd_max` (a failed attempt that may have been
    billed, counted at its call's high estimate), else a call of unknown cost. A line that is
    not a JSON record (a write torn by a crash or a full disk) is counted as one call of
    unknown cost, against every budget, and named in a warning: it never stops a run."""
    spend, path = Spend(), owner.paths.llm_calls_jsonl
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
            cost = priced(owner, record.get("model_id"), record.get("usage") or {})
        if cost is None:
            cost = record.get("cost_usd_max")
        if cost is None:
            spend.unknown[gen_id] += 1
        else:
            spend.usd[gen_id] += float(cost)
    return spend


def batch_request_high(owner: Owner, state: dict, request: dict) -> float:
    """A provider batch request's high estimate (USD at batch prices, the reply at max_tokens):
    recorded with the request when it was submitted, else estimated now (0 without a price)."""
    if request.get("high_usd") is not None:
        return float(request["high_usd"])
    row = owner.experiment.models.get(state.get("model_id"))
    prices = pricing.model_prices(row, owner.settings)[1] if row is not None else None
    if prices is None:
        return 0.0
    return prices.cost(pricing.count_tokens(row, owner.settings, request["prompt"]), request.get("max_tokens") or 0)


# -- the guard -------------------------------------------------------------------------------------
@dataclass
class Ticket:
    """An admitted spend: the USD it reserves against each budget, its high estimate in all
    (after the model's overrun factor, `Guard._overrun`; `base` before it), and what its failed
    attempts that may have been billed cost so far."""

    member: Member | None
    amounts: dict[str, float]
    high: float
    paid: bool = False
    base: float = 0.0
    billed: float = 0.0

    @property
    def budgets(self) -> tuple[str, ...]:
        return tuple(self.amounts)


class Guard:
    """The in-run state of the budgets: spend, money committed to provider batches in flight,
    reservations of the spends in flight, and the budgets that have stopped (see the module's
    docstring). Thread-safe (one condition variable). `stopped(reason)` is told of a stop."""

    def __init__(self, owner: Owner, stopped: Callable[[str], None]):
        self.owner = owner
        self._told = stopped
        self._cond = threading.Condition()
        self._signature: tuple | None = None
        self._budgets: list[Budget] = []
        self._recorded: Spend | None = None
        self._paid_here: dict[str, float] = defaultdict(float)
        self._spent: dict[str, float] = {}
        self._reserved: dict[str, float] = defaultdict(float)
        self._stopped: dict[str, str] = {}
        self._every: frozenset[str] = frozenset()
        self._commitments: tuple[object, dict[str, float]] = (None, {})
        self._overrun: dict[str, float] = {}  # model_id -> the largest cost / high estimate seen

    def _refresh(self) -> None:
        """Budgets and their spend, again whenever a membership changes (a checkpoint ran)."""
        signature = self.owner.membership.signature()
        if signature == self._signature:
            return
        self._budgets = budgets(self.owner)
        if self._budgets and self._recorded is None:
            self._recorded = recorded_spend(self.owner)
        self._every = frozenset(m.gen_id for c in self.owner.cohort_ids for m in self.owner.membership.members(c))
        for item in self._budgets:
            gen_ids = self._gen_ids(item)
            self._spent[item.name] = self._recorded.of(gen_ids)[0] + math.fsum(
                self._paid_here[g] for g in gen_ids if g in self._paid_here)
        self._signature = signature

    def _gen_ids(self, item: Budget) -> frozenset[str]:
        return self._every if item.gen_ids is None else item.gen_ids

    def _committed(self, item: Budget) -> float:
        """USD committed to provider batches in flight for the documents of `item`."""
        stamp, live = batch_ledger.live_requests(self.owner.paths)
        if stamp != self._commitments[0]:
            per_gen_id: dict[str, float] = defaultdict(float)
            for state, request in live:
                per_gen_id[request["gen_id"]] += batch_request_high(self.owner, state, request)
            self._commitments = (stamp, per_gen_id)
        commitments = self._commitments[1]
        if item.gen_ids is None:
            return math.fsum(v for g, v in commitments.items() if g in self._every)
        return math.fsum(v for g, v in commitments.items() if g in item.gen_ids)

    def _high(self, member: Member, prompt: Prompt) -> float:
        """The most the call may cost: every prompt token, max_tokens of completion, at direct
        prices (before `_overrun`)."""
        row = self.owner.experiment.models[member.llm_model_id]
        prices = pricing.model_prices(row, self.owner.settings)[0]
        if prices is None:
            raise BudgetReached(
                f"{member.gen_id}: not called: model {member.llm_model_id} has no known price, so no budget can "
                f"bound its cost; add input_cost_per_mtok and output_cost_per_mtok to {self.owner.paths.models_csv}")
        tokens = pricing.count_tokens(row, self.owner.settings, prompt.text)
        return prices.cost(tokens, self.owner.settings.stage(member.stage).max_tokens)

    def _against(self, gen_ids) -> list[Budget]:
        return [b for b in self._budgets if any(b.covers(g) for g in gen_ids)]

    def admit(self, member: Member, prompt: Prompt) -> Ticket:
        """Reserve a direct call's high estimate against its budgets, waiting while calls in
        flight might leave room; BudgetReached when none can."""
        with self._cond:
            self._refresh()
            if not self._against([member.gen_id]):
                return Ticket(member, {}, 0.0)
        high = self._high(member, prompt)
        what = f"a call ({member.stage} {member.llm_model_id})"
        return self._reserve(member, {member.gen_id: high}, what, f"{member.gen_id}: not called",
                             member.llm_model_id)

    def admit_batch(self, stage: str, model_id: str, highs: dict[str, float | None]) -> Ticket:
        """Reserve a provider batch's high estimate (`highs`: USD per gen_id of its requests,
        None where the price is unknown)."""
        refused = f"{stage} batch of {len(highs)} requests to {model_id}: not submitted"
        with self._cond:
            self._refresh()
            if not self._against(highs):
                return Ticket(None, {}, 0.0)
        if any(h is None for h in highs.values()):
            raise BudgetReached(
                f"{refused}: model {model_id} has no known price, so no budget can bound its cost; add "
                f"input_cost_per_mtok and output_cost_per_mtok to {self.owner.paths.models_csv}")
        return self._reserve(None, highs, f"a batch of {len(highs)} requests ({stage} {model_id})", refused,
                             model_id)

    def _reserve(self, member: Member | None, base: dict[str, float], what: str, refused: str,
                 model_id: str) -> Ticket:
        with self._cond:
            while True:
                self._refresh()
                # A model that has reported more than its high estimate is reserved at that ratio.
                factor = self._overrun.get(model_id, 1.0)
                highs = {g: h * factor for g, h in base.items()}
                amounts = {b.name: math.fsum(h for g, h in highs.items() if b.covers(g))
                           for b in self._against(highs)}
                against = [b for b in self._budgets if b.name in amounts]
                stopped = [self._stopped[b.name] for b in against if b.name in self._stopped]
                if stopped:
                    raise BudgetReached(f"{refused}: {stopped[0]}")
                committed = {b.name: self._committed(b) for b in against}
                over = [b for b in against if self._spent[b.name] + committed[b.name] + self._reserved[b.name]
                        + amounts[b.name] > b.usd + _EPSILON]
                if not over:
                    for name, amount in amounts.items():
                        self._reserved[name] += amount
                    return Ticket(member, amounts, math.fsum(highs.values()), base=math.fsum(base.values()))
                # Spent (and committed) alone reaches the budget: no spend can fit, whatever is in flight.
                idle = [b for b in over if self._reserved[b.name] <= _EPSILON
                        or self._spent[b.name] + committed[b.name] + amounts[b.name] > b.usd + _EPSILON]
                if idle:
                    item = idle[0]
                    raise BudgetReached(f"{refused}: {self._stop(item, committed[item.name], what, amounts[item.name])}")
                self._cond.wait()

    def _stop(self, item: Budget, committed: float, what: str, high: float) -> str:
        spent = pricing.money(self._spent[item.name])
        if committed > _EPSILON:
            spent += f" and {pricing.money(committed)} committed to provider batches in flight"
        reason = (f"the budget of {item.name} ({item.where} = {pricing.money(item.usd)}) is reached: spent "
                  f"{spent}, and {what} may cost up to {pricing.money(high)}; "
                  f"no new call starts, calls in flight finish and are saved. To make the rest: `snakemake plan` "
                  f"shows what it may cost; raise the budget ({item.how_to_raise()}) and run again")
        self._stopped[item.name] = reason
        self._told(reason)
        return reason

    def paid(self, ticket: Ticket, done: calls.Completion) -> None:
        """Count what a direct call cost as reported (its high estimate when its cost is unknown).
        A cost above the high estimate (usage past max_tokens) counts in full, and later calls
        of the model reserve that many times their estimate."""
        cost = done.cost_usd
        if cost is None:
            cost = priced(self.owner, ticket.member.llm_model_id, done.usage or {})
        cost = ticket.high if cost is None else float(cost)
        with self._cond:
            self._count(ticket.member.gen_id, cost, ticket.budgets, ticket)
            ticket.paid = True

    def billed(self, ticket: Ticket, attempt: calls.Attempt) -> tuple[float | None, str | None]:
        """Count a failed attempt the provider may have billed (`calls.Attempt`): its reported
        usage at its price, else (a reply nobody read, or no price) the call's high estimate.
        Returns the USD counted (None: unknown, no budget to bound it) and, when the spend so far,
        the money committed to provider batches and the spends in flight leave no room for
        another attempt, why none is made."""
        cost = attempt.cost_usd
        if cost is None and attempt.usage:
            cost = priced(self.owner, ticket.member.llm_model_id, attempt.usage)
        if cost is None and ticket.budgets:
            cost = ticket.high
        with self._cond:
            if cost is not None:
                self._count(ticket.member.gen_id, float(cost), ticket.budgets, ticket)
                ticket.billed += float(cost)
            over = [b for b in self._budgets if b.name in ticket.budgets
                    and self._spent.get(b.name, 0.0) + self._committed(b) + self._reserved[b.name] > b.usd + _EPSILON]
            spent = {b.name: self._spent.get(b.name, 0.0) for b in over}
        if not over:
            return cost, None
        item = over[0]
        return cost, (f"{ticket.member.gen_id}: not tried again: the budget of {item.name} ({item.where} = "
                      f"{pricing.money(item.usd)}) has no room for another attempt after a failed one that counts "
                      f"{pricing.money(cost or 0.0)} (spent {pricing.money(spent[item.name])}); raise it "
                      f"({item.how_to_raise()}) and run again")

    def batch_paid(self, gen_id: str, done: calls.Completion) -> None:
        """Count a reply a provider batch returned (the batch ledger stops counting it as
        committed once the batch is collected). A spend not read yet is read with the rest."""
        with self._cond:
            if self._recorded is None:
                return
            self._count(gen_id, float(done.cost_usd or 0.0), [b.name for b in self._against([gen_id])])

    def _count(self, gen_id: str, cost: float, names, ticket: Ticket | None = None) -> None:
        """Under the lock: `cost` spent by `gen_id`, against the budgets `names`; a direct call's
        `ticket` whose cost passed its high estimate raises its model's overrun factor."""
        self._paid_here[gen_id] += cost
        for name in names:
            self._spent[name] = self._spent.get(name, 0.0) + cost
        if ticket is not None and ticket.member is not None and ticket.base > _EPSILON \
                and cost > ticket.high + _EPSILON:
            model = ticket.member.llm_model_id
            self._overrun[model] = max(self._overrun.get(model, 1.0), cost / ticket.base)

    def release(self, ticket: Ticket) -> None:
        with self._cond:
            for name, amount in ticket.amounts.items():
                self._reserved[name] -= amount
            self._cond.notify_all()

    def status(self) -> str | None:
        """The tightest budget's spend, for the progress line; None without budgets."""
        with self._cond:
            if not self._budgets:
                return None
            item = min(self._budgets, key=lambda b: b.usd - self._spent.get(b.name, 0.0))
            stopped = " (reached)" if item.name in self._stopped else ""
            return f"budget {pricing.money(self._spent.get(item.name, 0.0))} of {pricing.money(item.usd)}{stopped}"


# -- the counters ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Failure:
    stage: str
    gen_id: str
    kind: str
    message: str


def failure_kind(error: BaseException) -> str:
    """How the summary counts a failed document: a budget stop, a failed call, a reply that did
    not parse (an error class's `failure_kind`), else the error's class name."""
    if isinstance(error, calls.LLMCallError):
        return CALL
    return getattr(error, "failure_kind", None) or type(error).__name__


class Counters:
    """What this process has done since `reset`: documents per stage and calls. Thread-safe.
    An observer of the Run: its methods are the run's events."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.started = time.monotonic()
            self.running: Counter = Counter()
            self.made: Counter = Counter()
            self.made_ids: set[str] = set()
            self.failed: Counter = Counter()
            self.sources: Counter = Counter()  # called, saved, restored, copy
            self.failures: list[Failure] = []
            self.failure_kinds: Counter = Counter()
            self.calls_in_flight = 0
            self.calls_made = 0
            self.calls_failed = 0
            self.calls_refused = 0
            self.first_call: float | None = None
            self.last_call: float | None = None
            self.prompt_tokens = 0
            self.completion_tokens = 0
            self.cost_usd = 0.0
            self.unknown_cost_calls = 0
            self.billed_failures = 0
            self.cached_tokens = 0  # prompt tokens read from a provider's cache, and what that saved
            self.cache_saved_usd = 0.0
            self.budget_stop: str | None = None
            self.batches_submitted = 0  # provider batches: submitted, their requests, the replies collected
            self.batch_requests = 0
            self.batch_replies = 0
            self.batch_cost_usd = 0.0
            self.records_recovered = 0  # saved replies of earlier runs whose call record line was written now
            self.recovered_usd = 0.0

    # documents
    def document_started(self, stage: str) -> None:
        with self._lock:
            self.running[stage] += 1

    def document_made(self, stage: str, gen_id: str, source: str) -> None:
        with self._lock:
            self.running[stage] -= 1
            self.made[stage] += 1
            self.made_ids.add(gen_id)
            self.sources[source] += 1

    def document_failed(self, stage: str, gen_id: str, error: BaseException) -> None:
        kind = failure_kind(error)
        message = " ".join(str(error).split())
        with self._lock:
            self.running[stage] -= 1
            self.failed[stage] += 1
            self.failure_kinds[kind] += 1
            if len(self.failures) < SHOWN_FAILURES and kind != BUDGET:
                self.failures.append(Failure(stage, gen_id, kind, message))

    # calls
    def call_started(self, stage: str) -> None:
        with self._lock:
            self.calls_in_flight += 1
            self.first_call = self.first_call or time.monotonic()

    def _spent(self, usage: dict, cost: float | None) -> None:
        """Tokens and cost of one paid reply or billed attempt (the caller holds the lock)."""
        self.prompt_tokens += usage.get("prompt_tokens") or 0
        self.completion_tokens += usage.get("completion_tokens") or 0
        if cost is None:
            self.unknown_cost_calls += 1
        else:
            self.cost_usd += float(cost)

    def call_paid(self, stage: str, done, cache_saved_usd: float = 0.0) -> None:
        usage = done.usage or {}
        with self._lock:
            self.cached_tokens += usage.get("cached_tokens") or 0
            self.cache_saved_usd += cache_saved_usd
            self.calls_made += 1
            self._spent(usage, done.cost_usd)

    def attempt_billed(self, stage: str, usage: dict | None, cost: float | None) -> None:
        """A failed attempt that may have been billed (no text, a refusal, a reply nobody read):
        its tokens and cost count in the run's spend."""
        usage = usage or {}
        with self._lock:
            self.billed_failures += 1
            self._spent(usage, cost)

    def batch_submitted(self, stage: str, requests: int) -> None:
        with self._lock:
            self.batches_submitted += 1
            self.batch_requests += requests

    def batch_reply_paid(self, stage: str, done) -> None:
        """A provider batch's reply was collected: its tokens and cost (batch prices) count in the
        run's spend, as a direct call's do."""
        usage = done.usage or {}
        with self._lock:
            self.batch_replies += 1
            self._spent(usage, done.cost_usd)
            self.batch_cost_usd += float(done.cost_usd or 0.0)

    def record_recovered(self, stage: str, done) -> None:
        """A reply an earlier run paid for and saved got its missing call record line now (not
        this run's spend)."""
        with self._lock:
            self.records_recovered += 1
            self.recovered_usd += float(done.cost_usd or 0.0)

    def call_ended(self, stage: str, paid: bool) -> None:
        with self._lock:
            self.calls_in_flight -= 1
            self.calls_failed += 0 if paid else 1
            self.last_call = time.monotonic()

    def call_refused(self, stage: str) -> None:
        with self._lock:
            self.calls_refused += 1

    def budget_stopped(self, reason: str) -> None:
        with self._lock:
            self.budget_stop = self.budget_stop or reason

    def snapshot(self) -> dict:
        with self._lock:
            return {key: (Counter(value) if isinstance(value, Counter) else list(value) if isinstance(value, list)
                          else set(value) if isinstance(value, set) else value)
                    for key, value in self.__dict__.items() if not key.startswith("_")}


# -- the batch rounds ------------------------------------------------------------------------------
@dataclass
class BatchRounds:
    """The provider-batch rounds of this run (`daydream.batch.gate` registers them)."""

    run_id: str
    rounds: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)  # (stage, round) -> gen_ids
    round_of: dict[str, tuple[str, str]] = field(default_factory=dict)  # gen_id -> (stage, round)
    outcomes: dict[str, tuple[str, str]] = field(default_factory=dict)  # gen_id -> (state, reason)
    records: dict[str, dict] = field(default_factory=dict)  # round path -> its finished record
    parent_failures: dict[str, str] = field(default_factory=dict)  # gen_id -> why this run cannot make it
    settings: BatchSettings | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)


class _Document:
    source = "?"


# -- the run ----------------------------------------------------------------------------------------
class Run:
    """One run's state and the one way to spend (see the module's docstring)."""

    def __init__(self, owner: Owner):
        self.owner = owner
        self.counters = Counters()
        self._observers: list[object] = [self.counters]
        self.guard = Guard(owner, lambda reason: self.emit("budget_stopped", reason))
        self.batches = BatchRounds(f"{time.strftime('%Y%m%dT%H%M%S')}_{os.getpid()}")
        self.limits = ConcurrencyLimits(owner.settings.max_concurrency)
        self.reply_cuts: dict[tuple, tuple[dict[str, list[str]], dict[str, str]]] = {}
        self.reply_cuts_lock = threading.Lock()
        self.planning_only = False  # the run's only target is the plan (daydream.budget)
        self.reporter: object | None = None  # the progress line's thread (daydream.progress)
        self.engine: CallEngine | None = None  # a real run's call engine (daydream.engine), set in onstart

    def observe(self, observer: object) -> None:
        """Tell `observer` of the run's events (the methods it has of those named above)."""
        self._observers.append(observer)

    def emit(self, event: str, *args) -> None:
        for observer in self._observers:
            handler = getattr(observer, event, None)
            if handler is not None:
                handler(*args)

    @contextmanager
    def document(self, stage: str, gen_id: str) -> Iterator[_Document]:
        """Count one document job: running, then made (set `.source`) or failed (re-raised)."""
        counted = _Document()
        self.emit("document_started", stage)
        try:
            yield counted
        except BaseException as error:
            self.emit("document_failed", stage, gen_id, error)
            raise
        self.emit("document_made", stage, gen_id, counted.source)

    @contextmanager
    def spend(self, member: Member, prompt: Prompt) -> Iterator[Ticket]:
        """Around one direct call: admit it (BudgetReached when it could pass a budget), count it
        in flight, and on `paid(ticket, done)` count its cost; release it when it ends."""
        ticket = self.admit_call(member, prompt)
        try:
            yield ticket
        finally:
            self.end_call(ticket)

    def admit_call(self, member: Member, prompt: Prompt) -> Ticket:
        """The start of `spend`, for a caller that cannot hold a `with` block across the call
        (the call engine: admitted in a thread, called on its event loop): end it with
        `end_call`, whatever happens."""
        try:
            ticket = self.guard.admit(member, prompt)
        except BudgetReached:
            self.emit("call_refused", member.stage)
            raise
        self.emit("call_started", member.stage)
        return ticket

    def end_call(self, ticket: Ticket) -> None:
        """The end of `spend`: the reservation released, the call counted as ended."""
        self.guard.release(ticket)
        self.emit("call_ended", ticket.member.stage, ticket.paid)

    def paid(self, ticket: Ticket, done: calls.Completion) -> None:
        """A call of `spend` came back: its cost counts against its budgets and in the counters."""
        self.guard.paid(ticket, done)
        self.emit("call_paid", ticket.member.stage, done,
                  cache_saving(self.owner, ticket.member.llm_model_id, done.usage or {}))

    def billed(self, ticket: Ticket, attempt: calls.Attempt) -> tuple[float | None, BudgetReached | None]:
        """A failed attempt of a `spend` that may have been billed: counted against its budgets
        and in the counters (`Guard.billed`). Returns the USD counted (None: unknown) and, when
        the budget leaves no room for another attempt, the BudgetReached to raise."""
        cost, no_room = self.guard.billed(ticket, attempt)
        self.emit("attempt_billed", ticket.member.stage, attempt.usage, cost)
        return cost, (BudgetReached(no_room) if no_room else None)

    @contextmanager
    def spend_batch(self, stage: str, model_id: str, highs: dict[str, float | None]) -> Iterator[Ticket]:
        """Around one provider batch's submission: reserve its high estimate (`highs`: USD per
        gen_id; BudgetReached when it could pass a budget) until its requests are on disk as a
        live batch, whose commitment the guard reads from the batch ledger from then on."""
        ticket = self.guard.admit_batch(stage, model_id, highs)
        try:
            yield ticket
        finally:
            self.guard.release(ticket)

    def batch_submitted(self, stage: str, requests: int) -> None:
        """A provider batch was created (its commitment is the batch ledger's from then on)."""
        self.emit("batch_submitted", stage, requests)

    def batch_paid(self, member: Member, done: calls.Completion) -> None:
        """A provider batch's reply was saved: its cost counts against its budgets and in the
        counters (the summary's spend)."""
        self.guard.batch_paid(member.gen_id, done)
        self.emit("batch_reply_paid", member.stage, done)

    def recovered(self, member: Member, done: calls.Completion) -> None:
        """A saved reply's missing line of llm_calls.jsonl was written now (`ledger.recover_record`):
        its cost counts against the budgets as a recorded spend (the guard counts it only when it
        read the record before the line was written), and the counters note it."""
        self.guard.batch_paid(member.gen_id, done)
        self.emit("record_recovered", member.stage, done)
