"""A readable live run: a progress line every few seconds, a summary at the end, and
Snakemake's own terminal output kept to what a person reads.

Jobs run in threads of the Snakemake process (the profile's `force-use-threads`), so progress
is counted in-process, by the run's counters (`Run.counters`, `daydream.run`), which observe
the run's events: each document (`Run.document`, around `documents.write_document`), and the
calls, tokens and cost of every spend (`Run.spend`). This module only reads them. `start` (the Snakefile's `onstart:`, real runs
only) resets the counters and starts a thread that prints a line every `progress_interval_s`
seconds: documents done / failed / running per stage, calls and calls per second, tokens,
spend (and the tightest budget), and an ETA. `finish` (`onsuccess:` / `onerror:`) prints the
summary: documents, calls, failures and where each kind is recorded, tokens, cost, wall time.
The line and the summary are meant for the person at the terminal: this module prints them to
stderr on purpose.

`shape_terminal_output` (rules/common.smk, while the Snakefile is parsed) keeps Snakemake's
terminal output readable when the profile's `quiet: [rules, host]` is in effect and
`--verbose` is not given. The profile's quiet choices drop the per-job blocks (and the `rule
all` block listing every gens file); this filter also drops, from the terminal only, the
per-job lines no quiet choice covers (`Select jobs to execute...`, `Execute N jobs...`,
`Finished jobid`, `N of M steps done`), shows the first `SHOWN_JOB_ERRORS` job errors and the
first budget stop, and lowers daydream's own log lines to warnings. Snakemake's log file
(`.snakemake/log/`) keeps everything. `--quiet host` brings Snakemake's per-job output back,
`--verbose` also its debug lines and daydream's line per call.

The ETA assumes the run makes every missing document of the active cohorts.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter

from daydream import stages
from daydream.budget import planning_only
from daydream.paths import GEN_FILES
from daydream.pricing import money
from daydream.run import BUDGET
from daydream.runtime import Runtime

SHOWN_JOB_ERRORS = 10  # job errors shown on the terminal before the rest are only counted
_SNAKEMAKE_LOGGER = "snakemake.logging"


_READABLE: list[bool] = [False]  # set by shape_terminal_output: daydream's info lines are off the terminal


def _emit(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def status(logger: logging.Logger, text: str) -> None:
    """A line a person waits on (a provider batch's state while a round waits on it): printed
    on the terminal even when the readable output hides daydream's info lines, logged otherwise."""
    if _READABLE[0]:
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
    eta = _duration(remaining * elapsed / made) if made and remaining else ("0:00:00" if not remaining else "?")
    parts.append(f"ETA {eta}")
    return f"daydream {_duration(elapsed)} | " + " | ".join(parts)


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
    if snap["budget_stop"]:
        lines.append(f"  budget: {snap['budget_stop']}")
    if snap["failure_kinds"]:
        kinds = ", ".join(f"{n} {kind}" for kind, n in snap["failure_kinds"].most_common())
        lines.append(f"  failed documents: {kinds}")
        lines += [f"    {f.stage} {f.gen_id}: {f.kind}: {f.message[:200]}" for f in snap["failures"]]
    if set(snap["failure_kinds"]) - {BUDGET}:
        lines.append(f"  where to look: failed calls in {rt.paths.llm_errors_jsonl}, replies that did not parse in "
                     f"{rt.paths.parse_errors_jsonl}, each document's log under {rt.paths.data_root / 'logs'}, "
                     "and Snakemake's complete log (named below)")
    return "\n".join(lines)


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
    interval = float(rt.config["progress_interval_s"])
    if interval > 0 and not planning_only(targets):
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
    if sum(snap["made"].values()) or sum(snap["failed"].values()) or snap["calls_made"]:
        _emit(summary(rt, snap, ok, _budget_status(rt)))


# -- Snakemake's terminal output --------------------------------------------------------------------
class TerminalFilter(logging.Filter):
    """On Snakemake's terminal handler: drops the per-job lines, shows the first job errors
    and the first budget stop (the summary counts the rest)."""

    def __init__(self) -> None:
        super().__init__()
        from snakemake_interface_logger_plugins.common import LogEvent

        self._chatter_events = frozenset({LogEvent.JOB_STARTED, LogEvent.JOB_FINISHED, LogEvent.PROGRESS})
        self._error_event = LogEvent.ERROR
        self._chatter_messages = frozenset({"Select jobs to execute..."})
        self._lock = threading.Lock()
        self.job_errors = 0
        self.budget_stops = 0

    def filter(self, record: logging.LogRecord) -> bool:
        event = getattr(record, "event", None)
        if event in self._chatter_events:
            return False
        if event is None and isinstance(record.msg, str) and record.msg in self._chatter_messages:
            return False
        if event == self._error_event and getattr(record, "exception", None) == "RuleException":
            return self._job_error(str(record.msg))
        return True

    def _job_error(self, text: str) -> bool:
        with self._lock:
            if "BudgetReached" in text:
                self.budget_stops += 1
                return self.budget_stops == 1
            self.job_errors += 1
            if self.job_errors == SHOWN_JOB_ERRORS + 1:
                _emit(f"daydream: more job errors are not shown here (the first {SHOWN_JOB_ERRORS} are above); the "
                      "summary at the end counts them and says where each is recorded")
            return self.job_errors <= SHOWN_JOB_ERRORS


def _names(quiet) -> set[str]:
    return {getattr(q, "name", str(q)).lower() for q in (quiet or ())}


def shape_terminal_output(quiet, verbose: bool) -> bool:
    """Install `TerminalFilter` on Snakemake's terminal handler and lower daydream's terminal
    lines to warnings, when Snakemake is quiet about rules (the profile) and not verbose.
    `quiet` is Snakemake's set of quiet choices. Returns whether the readable output is on."""
    if "rules" not in _names(quiet) or verbose:
        return False
    for handler in logging.getLogger(_SNAKEMAKE_LOGGER).handlers:
        terminal = isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
        if terminal and not any(isinstance(f, TerminalFilter) for f in handler.filters):
            handler.addFilter(TerminalFilter())
    logging.getLogger("daydream").setLevel(logging.WARNING)
    _READABLE[0] = True
    return True
