"""`Runtime`: what every job of one Snakemake process shares, built once from the config.

The validated config, the `Paths`, the model-call settings, the membership index of the
active cohorts, the run's state (`run`: a `daydream.run.Run`, the one object every spend
passes through) and, loaded on first use, the experiment tables. Rules pass it to the package
with the wildcards; the package never sees the `snakemake` object.
"""

from __future__ import annotations

import gc
import logging
import threading
from pathlib import Path

from daydream import settings
from daydream.experiment import Experiment, Template, load_experiment
from daydream.membership import Member, MembershipIndex
from daydream.paths import Paths
from daydream.run import Run

log = logging.getLogger(__name__)


def configure_logging(terminal_level: int = logging.INFO) -> None:
    """Send the package's log lines (one per model call, retries, warnings) to stderr, at
    `terminal_level` and above. The logger itself stays at INFO, so each job's own log
    (`daydream.job_log`) gets every line whatever the terminal shows."""
    logger = logging.getLogger("daydream")
    terminal = _terminal_handler()
    if terminal is None:
        terminal = logging.StreamHandler()
        terminal.set_name(_TERMINAL)
        terminal.setFormatter(logging.Formatter("daydream %(levelname)s %(message)s"))
        logger.addHandler(terminal)
        logger.propagate = False
    terminal.setLevel(terminal_level)
    logger.setLevel(logging.INFO)


_TERMINAL = "daydream-terminal"


def _terminal_handler() -> logging.Handler | None:
    return next((h for h in logging.getLogger("daydream").handlers if h.get_name() == _TERMINAL), None)


def terminal_shows_info() -> bool:
    """Whether daydream's info lines reach the terminal (not when the readable run lowered them
    to warnings: `daydream.terminal`)."""
    terminal = _terminal_handler()
    return terminal is None or terminal.level <= logging.INFO


# The full collections' threshold while Snakemake builds its DAG (`hold_full_collections`): a
# full collection comes after this many collections of the middle generation, i.e. not before
# billions of allocations; the young generations are collected as before.
HELD_THRESHOLD = 10**9
_held: list[int] = []  # the full collections' threshold before the hold, while it holds


def hold_full_collections() -> None:
    """From the Snakefile's parse until `settle_heap` (`onstart`, or the first document job): no
    full collection while Snakemake builds the DAG. Each one scans every object made since the
    last (the DAG's jobs, files and dependency sets, which live until the process ends), and
    their number grows with the heap: at 10,000 documents 17 of them cost about 2.5 CPU s of a
    15 CPU s no-op rerun or dry run, which build the DAG and end without `onstart`. Short-lived
    cycles still die in the young generations' collections; a cycle that outlives them waits
    for `settle_heap`, or for the process's end (a dry run, a rerun with nothing to do)."""
    young, middle, full = gc.get_threshold()
    if not _held:
        _held.append(full)
    gc.set_threshold(young, middle, HELD_THRESHOLD)


def settle_heap() -> int:
    """Collect the garbage, then move every object alive out of the cyclic garbage collector's
    reach (`gc.freeze`): the modules imported, the Runtime, and (again at `onstart` and at the
    first document job) Snakemake's DAG, its jobs and their files, which all live until the
    process ends. Each full collection then scans only what was made since, where it scanned
    the whole heap each time (at 1,000 documents a full run spent seconds in them). Reference
    counting still frees frozen objects; a cycle among them that becomes garbage later stays
    until the process ends. Ends a `hold_full_collections`. Returns the objects frozen so far
    (`gc.get_freeze_count`)."""
    gc.collect()
    gc.freeze()
    if _held:
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, _held.pop())
    return gc.get_freeze_count()


def leave_heap() -> int:
    """At the run's end (`onsuccess:` / `onerror:`): move every object alive out of the cyclic
    garbage collector's reach without collecting first (`gc.freeze`). The interpreter's exit
    then neither scans what the run made since `settle_heap` (its full collections) nor frees
    the cycles of Snakemake's DAG one object at a time: the process's memory goes back to the
    system at once. Files, locks and logs are closed as before (atexit, then the modules'
    teardown). Returns the objects frozen so far (`gc.get_freeze_count`)."""
    gc.freeze()
    return gc.get_freeze_count()


# A job-rate limit this high never binds in a local run (document jobs start at about 100 a
# second on 2 cores; the profile's `max-jobs-per-timespan: 10000/1s`).
UNBINDING_JOBS_PER_S = 1000


def drop_unbinding_rate_limit(scheduler: object, local: bool) -> bool:
    """At `onstart`, in a local run: remove Snakemake's job-rate limiter (`--max-jobs-per-
    timespan`, which cannot be turned off from the command line) when its limit is at least
    `UNBINDING_JOBS_PER_S`, so it could never hold a job back. Its only effect then is its
    cost: Snakemake's scheduler starts a `threading.Timer` after every scheduling round (to
    look again once the timespan has passed), and `Thread.start` waits for the new thread to
    take the GIL from the document jobs' threads: 17% of the scheduler thread's samples in a
    3,000-document run (bench/README, "The job-rate limiter's timers"). A lower limit (a
    deliberate `--max-jobs-per-timespan`) and a cluster run (the limit guards its queue) keep
    it. `scheduler` is Snakemake's `JobScheduler` (`workflow.scheduler`); True when removed."""
    limiter = getattr(scheduler, "job_rate_limiter", None)
    if not local or limiter is None or limiter.max_jobs / limiter.timespan < UNBINDING_JOBS_PER_S:
        return False
    scheduler.job_rate_limiter = None
    log.debug("Snakemake's job-rate limit (%s jobs over %s s) cannot bind in a local run: removed",
              limiter.max_jobs, limiter.timespan)
    return True


class Runtime:
    """Everything a job needs, built once per Snakemake process from the config."""

    def __init__(self, config: dict):
        self.config = settings.validated(config)
        self.paths = Paths.from_str(self.config["data_root"], self.config.get("cohorts_dir"))
        self.cohort_ids = settings.cohort_list(self.config["cohorts"])
        self.settings = settings.LLMSettings.from_config(self.config)
        self.membership = MembershipIndex(self.paths, self.cohort_ids)
        self.reply_batch_size = int(self.config["reply_batch_size"])  # cluster runs: see batches
        self._experiment: Experiment | None = None
        self._lock = threading.Lock()
        self._heap = ""  # "" never settled (a test's or a script's Runtime), "run", then "documents"
        self._holds = False  # Snakemake's main process: full collections held while a DAG is built
        self.run = Run(self)  # budget guard, counters, batch rounds, concurrency caps
        if self.settings.offline and self.paths.data_root.resolve() == Path("data").resolve():
            log.warning("offline=true writes rehearsal replies into %s; they would stand in for paid "
                        "ones (the stale report flags them). Use --config data_root=<another folder>.",
                        self.paths.data_root)

    @property
    def experiment(self) -> Experiment:
        with self._lock:
            if self._experiment is None:
                self._experiment = load_experiment(self.paths)
            return self._experiment

    def settle_heap(self) -> None:
        """`settle_heap` for the Snakemake process this Runtime serves (common.smk at parse and
        at `onstart`); it also arms `settle_heap_once`."""
        settle_heap()
        self._heap = self._heap or "run"

    def hold_full_collections(self) -> None:
        """`hold_full_collections` for Snakemake's main process (common.smk at parse; never in a
        cluster job, whose Snakefile is parsed again); it also arms `hold_after_checkpoint`."""
        hold_full_collections()
        self._holds = True

    def hold_after_checkpoint(self) -> None:
        """At the end of the cohort checkpoint's job: Snakemake then builds the DAG of the new
        membership's documents (after `onstart` on a first run, which ended the parse's hold),
        whose jobs, files and dependency sets live until the process ends; at 10,000 documents
        the full collections while it does cost about 2.5 CPU s. They are held again until the
        next document job settles the heap (`settle_heap_once`, armed again here); a run with
        no document job after the checkpoint keeps the hold through its reports, as a dry run
        does, to the end (`leave_heap`). Nothing in a process that never held (a cluster job, a
        test's or a script's Runtime)."""
        if not self._holds:
            return
        with self._lock:
            hold_full_collections()
            self._heap = "run"

    def settle_heap_once(self) -> None:
        """`settle_heap` again at the first document job of a process whose heap was settled
        (`settle_heap`): Snakemake has built the DAG of every document by then (after the
        cohort checkpoint, where `onstart` comes before it). Nothing for any other Runtime."""
        if self._heap == "run":
            with self._lock:
                if self._heap == "run":
                    settle_heap()
                    self._heap = "documents"

    def template(self, member: Member) -> Template:
        return self.experiment.templates[member.stage][member.template_id]
