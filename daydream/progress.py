"""A readable live run: a progress line every few seconds and a summary at the end.

Jobs run in threads of the Snakemake process (the profile's `force-use-threads`), so progress
is counted in-process, by the run's counters (`Run.counters`, `daydream.run`), which observe
the run's events: each document (`Run.document`, around `documents.write_document`), and the
calls, tokens and cost of every spend (`Run.spend`). This module only reads them. `start` (the Snakefile's `onstart:`, real runs
only) resets the counters and starts a thread that prints a line every `progress_interval_s`
seconds: documents done / failed / running per stage, calls and calls per second, tokens,
spend (and the tightest budget), and an ETA. `finish` (`onsuccess:` / `onerror:`) prints the
summary: documents, calls, failures and where each kind is recorded, tokens, cost, wall time;
a run with provider batches adds what it submitted and collected (their cost is in the cost,
`Run.batch_paid`) and the money still committed to batches in flight.
The line and the summary are meant for the person at the terminal: this module prints them to
stderr on purpose.

Snakemake's own terminal output is kept to what a person reads by daydream's logger plugin
(`daydream.terminal`), which also lowers daydream's log lines to warnings in a readable run;
`status` prints a line a person waits on even then.

The ETA assumes the run makes every missing document of the active cohorts.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter

from daydream import stages
from daydream.batch import ledger as batch_ledger
from daydream.budget import planning_only
from daydream.paths import GEN_FILES
from daydream.pricing import money
from daydream.run import BUDGET, batch_request_high
from daydream.runtime import Runtime, terminal_shows_info

_SNAKEMAKE_LOGGER = "snakemake.logging"


def _emit(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def status(logger: logging.Logger, text: str) -> None:
    """A line a person waits on (a provider batch's state while a round waits on it): printed
    on the terminal even when the readable output hides daydream's info lines (the logger plugin
    set the `daydream` logger to warnings: `daydream.terminal`), logged otherwise."""
    if not terminal_shows_info():
        _emit(f"daydream: {text}")
    else:
        logger.info("%s", text)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# -- the line and the summary ------------------------------------------------------------------------
def missing_documents(rt: Runtime) -> dict[str, set[str]]:
    """The gen_ids of the active cohorts' documents with a gens file missing, per stage."""
    missing: dict[str, set[str]] = {name: set() for name in stages.NAMES}
    for cohort_id in rt.cohort_ids:
        for member in rt.membership.members(cohort_id):
            folder = rt.paths.gen_dir(member.stage, member.gen_id)
            if member.gen_id not in missing[member.stage] and not all((folder / n).exists() for n in GEN_FILES):
                missing[member.stage].add(member.gen_id)
    return missing


def _call_rate(snap: dict, now: float) -> float:
    """Calls per second from the first call to the last one that ended (now, while any are in flight)."""
    if not snap["first_call"]:
        return 0.0
    end = now if snap["calls_in_flight"] or not snap["last_call"] else snap["last_call"]
    return snap["calls_made"] / max(end - snap["first_call"], 1e-6)


def _tokens(snap: dict) -> str:
    return f"tokens {snap['prompt_tokens']:,} in + {snap['completion_tokens']:,} out"


def _cost(snap: dict) -> str:
    unknown = f" + {snap['unknown_cost_calls']} call(s) of unknown cost" if snap["unknown_cost_calls"] else ""
    return f"{money(snap['cost_usd'])}{unknown}"


def progress_line(snap: dict, totals: Counter, budget_status: str | None, now: float | None = None) -> str:
    """One line: per stage done/total (running, failed), calls, tokens, spend, ETA."""
    now = time.monotonic() if now is None else now
    elapsed = now - snap["started"]
    parts = []
    for name in stages.NAMES:
        total = totals.get(name, 0)
        if not total and not snap["made"][name] and not snap["failed"][name]:
            continue
        extra = [f"{snap['running'][name]} running"] if snap["running"][name] else []
        extra += [f"{snap['failed'][name]} failed"] if snap["failed"][name] else []
        parts.append(f"{name} {snap['made'][name]:,}/{total:,}" + (f" ({', '.join(extra)})" if extra else ""))
    rate = _call_rate(snap, now)
    parts.append(f"calls {snap['calls_made']:,} ({rate:.1f}/s, {snap['calls_in_flight']} in flight)")
    parts.append(_tokens(snap))
    parts.append(f"spent {_cost(snap)}" + (f", {budget_status}" if budget_status else ""))
    made, failed = sum(snap["made"].values()), sum(snap["failed"].values())
    remaining = max(0, sum(totals.values()) - made - failed)
    shown = eta(made, remaining, elapsed)
    if shown is not None:
        parts.append(f"ETA {shown}")
    return f"daydream {_duration(elapsed)} | " + " | ".join(parts)


# An ETA from a handful of documents or seconds (the first drafts, a slow first call, the
# one-off import) is noise: none is shown until both are enough to extrapolate from.
ETA_MIN_DOCUMENTS = 20
ETA_MIN_FRACTION = 0.05
ETA_MIN_SECONDS = 30.0


def eta(made: int, remaining: int, elapsed: float) -> str | None:
    """The time left at the pace so far, or None while too few documents (ETA_MIN_DOCUMENTS,
    and ETA_MIN_FRACTION of the run) or seconds (ETA_MIN_SECONDS) have passed to tell."""
    if not remaining:
        return "0:00:00"
    if made < max(ETA_MIN_DOCUMENTS, ETA_MIN_FRACTION * (made + remaining)) or elapsed < ETA_MIN_SECONDS:
        return None
    return _duration(remaining * elapsed / made)


def summary(rt: Runtime, snap: dict, ok: bool, budget_status: str | None, now: float | None = None) -> str:
    """What the run did, what failed and where each kind of failure is recorded."""
    now = time.monotonic() if now is None else now
    made, failed = sum(snap["made"].values()), sum(snap["failed"].values())
    per_stage = ", ".join(f"{n} {snap['made'][n]:,}" for n in stages.NAMES if snap["made"][n])
    rate = f", {_call_rate(snap, now):.1f}/s" if snap["calls_made"] else ""
    sources = snap["sources"]
    lines = [
        f"daydream: run {'finished' if ok else 'ended with failures'} after {_duration(now - snap['started'])}",
        f"  documents: {made:,} made" + (f" ({per_stage})" if per_stage else "") + f", {failed:,} failed",
        f"  calls: {snap['calls_made']:,} made{rate}, {snap['calls_failed']:,} failed; no call for "
        f"{sources['copy']:,} copies, {sources['saved']:,} saved and {sources['restored']:,} restored replies",
        f"  {_tokens(snap)}; cost {_cost(snap)}" + (f"; {budget_status}" if budget_status else ""),
    ]
    if snap.get("batches_submitted") or snap.get("batch_replies") or _committed(rt)[0]:
        lines.append(f"  provider batches: {snap['batches_submitted']:,} submitted ({snap['batch_requests']:,} requests), "
                     f"{snap['batch_replies']:,} replies collected for {money(snap['batch_cost_usd'])} at batch "
                     f"prices (in the cost above)" + _in_flight(rt))
    if snap.get("records_recovered"):
        lines.append(f"  {snap['records_recovered']:,} call record(s) written for replies an earlier run saved and did "
                     f"not record (it was stopped in between): {money(snap['recovered_usd'])}, spent then, not in "
                     f"the cost above; see {rt.paths.llm_calls_jsonl}")
    if snap.get("billed_failures"):
        lines.append(f"  {snap['billed_failures']:,} failed attempt(s) may have been billed (no text, a refusal, "
                     f"a reply never read): counted in the cost above and recorded in {rt.paths.llm_calls_jsonl}")
    if snap["cached_tokens"]:
        lines.append(f"  prompt cache: {snap['cached_tokens']:,} input tokens read from the providers' caches, "
                     f"saving {money(snap['cache_saved_usd'])}")
    if snap["budget_stop"]:
        lines.append(f"  budget: {snap['budget_stop']}")
    if snap["failure_kinds"]:
        kinds = ", ".join(f"{n} {kind}" for kind, n in snap["failure_kinds"].most_common())
        lines.append(f"  failed documents: {kinds}")
        lines += [f"    {f.stage} {f.gen_id}: {f.kind}: {f.message}" for f in snap["failures"]]
    if set(snap["failure_kinds"]) - {BUDGET}:
        lines.append(f"  where to look: failed calls in {rt.paths.llm_errors_jsonl}, replies that did not parse in "
                     f"{rt.paths.parse_errors_jsonl}, each document's log under {rt.paths.data_root / 'logs'}, "
                     "and Snakemake's complete log (named below)")
    return "\n".join(lines + results(rt))


def _committed(rt: Runtime) -> tuple[int, float]:
    """Requests of provider batches still in flight, and their high estimate in USD."""
    live = batch_ledger.live_requests(rt.paths)[1]
    return len(live), sum(batch_request_high(rt, state, request) for state, request in live)


def _in_flight(rt: Runtime) -> str:
    requests, usd = _committed(rt)
    if not requests:
        return ""
    return (f"; {requests:,} requests still in flight, up to {money(usd)} committed (collected by the next run: "
            f"python scripts/batches.py list --data-root {rt.paths.data_root})")


def results(rt: Runtime) -> list[str]:
    """Where the results are: each active cohort's reports and results viewer, the stale report."""
    lines = ["  results:"]
    for cohort_id in rt.cohort_ids:
        lines.append(f"    {cohort_id}: reports in {rt.paths.reports_dir(cohort_id)}")
        viewer = rt.paths.cohort_site(cohort_id) / "index.html"
        if viewer.exists():
            lines.append(f"    {cohort_id}: open {viewer} in a browser")
    stale_csv = rt.paths.stale_generations_csv
    if stale_csv.exists():
        with stale_csv.open(encoding="utf-8") as handle:
            stale = max(0, sum(1 for line in handle if line.strip()) - 1)
        lines.append(f"    stale report: {stale_csv} ({stale} stale document(s)"
                     + ("; python scripts/regenerate.py --stale --dry-run lists them)" if stale else ")"))
    return lines


def nothing_to_do(rt: Runtime) -> str:
    """What a run with nothing to do prints (Snakemake calls neither onstart nor onsuccess then)."""
    cohorts = ", ".join(rt.cohort_ids)
    return "\n".join([f"daydream: nothing to do: every document and report of {cohorts} is up to date "
                      "(a missing file is what makes a job; the stale report lists what changed)", *results(rt)])


class _NothingToDo(logging.Filter):
    """On Snakemake's logger: when a real run finds nothing to do, say so and where the results are."""

    def __init__(self, rt: Runtime, dryrun) -> None:
        super().__init__()
        from snakemake.common import NOTHING_TO_BE_DONE_MSG

        self.rt, self.dryrun, self.message = rt, dryrun, NOTHING_TO_BE_DONE_MSG

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == self.message and not self.dryrun():
            _emit(nothing_to_do(self.rt))
        return True


def watch_nothing_to_do(rt: Runtime, dryrun) -> None:
    """From common.smk: `dryrun()` says whether this is a dry run (asked when the time comes)."""
    logging.getLogger(_SNAKEMAKE_LOGGER).addFilter(_NothingToDo(rt, dryrun))


def _budget_status(rt: Runtime) -> str | None:
    return rt.run.guard.status()


class _Reporter(threading.Thread):
    """Prints the progress line every `interval` seconds until stopped."""

    def __init__(self, rt: Runtime, interval: float):
        super().__init__(name="daydream-progress", daemon=True)
        self.rt, self.interval = rt, interval
        self.stopped = threading.Event()
        self._signature: tuple | None = None
        self.totals: Counter = Counter()

    def refresh_totals(self) -> None:
        """Documents this run has made or still misses (again after a checkpoint). Missing
        first, then made: a document made in between is in both, and counted once."""
        signature = self.rt.membership.signature()
        if signature != self._signature:
            missing = missing_documents(self.rt)
            made = self.rt.run.counters.snapshot()["made_ids"]
            self.totals = Counter({s: len(missing[s] | {g for g in made if stages.of_gen_id(g).name == s})
                                   for s in stages.NAMES})
            self._signature = signature

    def run(self) -> None:
        """A line each interval while documents run or something changed (none while only the
        reports are being built)."""
        last = None
        while not self.stopped.wait(self.interval):
            self.refresh_totals()
            snap = self.rt.run.counters.snapshot()
            state = (snap["made"], snap["failed"], snap["calls_made"])
            if sum(snap["running"].values()) or (state != last and (sum(snap["made"].values()) or
                                                                     sum(snap["failed"].values()))):
                _emit(progress_line(snap, self.totals, _budget_status(self.rt)))
            last = state


def start(rt: Runtime, targets=()) -> None:
    """`onstart:` (real runs): reset the counters and start the progress line (not for a run
    whose only target is the plan, nor with progress_interval_s 0); the run holds its thread."""
    rt.run.counters.reset()
    rt.run.planning_only = planning_only(targets)
    interval = float(rt.config["progress_interval_s"])
    if interval > 0 and not rt.run.planning_only:
        reporter = _Reporter(rt, interval)
        reporter.refresh_totals()
        reporter.start()
        rt.run.reporter = reporter


def finish(rt: Runtime, ok: bool) -> None:
    """`onsuccess:` / `onerror:`: stop the line and print the summary (when documents ran)."""
    reporter, rt.run.reporter = rt.run.reporter, None
    if isinstance(reporter, _Reporter):
        reporter.stopped.set()
        reporter.join(timeout=5)
    snap = rt.run.counters.snapshot()
    if (sum(snap["made"].values()) or sum(snap["failed"].values()) or snap["calls_made"] or snap["batches_submitted"]
            or snap["batch_replies"] or snap["records_recovered"] or _committed(rt)[0]):
        _emit(summary(rt, snap, ok, _budget_status(rt)))
    elif not rt.run.planning_only:
        what = "finished: no document needed making" if ok else "ended with failures before any document was made"
        _emit("\n".join([f"daydream: run {what}", *results(rt)]))
