"""The Runtime's process-wide helpers: the heap settled out of the garbage collector's reach."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest

from daydream import runtime


class Node:
    """An object that can be part of a reference cycle and be watched by a weak reference."""

    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def unfrozen():
    """Whatever a test freezes goes back to the collector, so the test process is left as it was."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_settle_heap_collects_garbage_then_freezes_what_is_alive(unfrozen):
    kept = Node()
    garbage, partner = Node(), Node()
    garbage.other, partner.other = partner, garbage  # a cycle only the collector can free
    gone = weakref.ref(garbage)
    del garbage, partner
    frozen = runtime.settle_heap()
    assert gone() is None  # collected before the freeze, not kept for the life of the process
    # frozen objects are still freed by reference counting (another thread may drop some meanwhile)
    assert 0 < gc.get_freeze_count() <= frozen
    assert not any(obj is kept for obj in gc.get_objects())  # the collector no longer scans it
    assert kept.other is None


def test_leave_heap_freezes_without_collecting_so_the_exit_frees_no_cycle(unfrozen):
    garbage, partner = Node(), Node()
    garbage.other, partner.other = partner, garbage  # a cycle only the collector can free
    gone = weakref.ref(garbage)
    del garbage, partner
    frozen = runtime.leave_heap()
    assert 0 < gc.get_freeze_count() <= frozen
    gc.collect()  # as the interpreter's exit collects: the frozen cycle is out of its reach
    assert gone() is not None
    assert not any(obj is gone() for obj in gc.get_objects())


def test_a_runtime_whose_process_settled_settles_again_at_its_first_document_only(rt, monkeypatch):
    settled = []
    monkeypatch.setattr(runtime, "settle_heap", lambda: settled.append(True) or 0)
    rt.settle_heap_once()
    assert settled == []  # a Runtime outside Snakemake (a test, a script) never freezes its process
    rt.settle_heap()  # common.smk, at parse
    rt.settle_heap_once()
    rt.settle_heap_once()
    assert settled == [True, True]


@pytest.fixture
def thresholds():
    """The collector's thresholds as they were, restored after the test (and no hold left)."""
    before = gc.get_threshold()
    yield before
    runtime._held.clear()
    gc.set_threshold(*before)


def test_full_collections_are_held_until_the_heap_is_settled_young_ones_never(thresholds, unfrozen):
    young, middle, full = thresholds
    runtime.hold_full_collections()  # common.smk, at parse
    assert gc.get_threshold() == (young, middle, runtime.HELD_THRESHOLD)
    runtime.hold_full_collections()  # held twice: the first threshold is still the one restored
    runtime.settle_heap()  # onstart, or the first document job
    assert gc.get_threshold() == (young, middle, full)
    runtime.settle_heap()  # the first document job after onstart: nothing more to restore
    assert gc.get_threshold() == (young, middle, full)


def test_a_held_collector_still_frees_a_short_lived_cycle(thresholds, unfrozen):
    runtime.hold_full_collections()
    garbage, partner = Node(), Node()
    garbage.other, partner.other = partner, garbage
    gone = weakref.ref(garbage)
    del garbage, partner
    made = [[] for _ in range(100_000)]  # enough allocations for the young generations' own collections
    assert gone() is None  # freed without a full collection: the collector is not disabled
    assert len(made) == 100_000


def test_the_cohort_checkpoint_holds_full_collections_until_the_next_document_job(rt, thresholds, unfrozen):
    young, middle, full = thresholds
    rt.settle_heap()  # common.smk, at parse
    rt.hold_full_collections()  # in Snakemake's main process only
    rt.settle_heap()  # onstart: the DAG of a first run holds only the checkpoint
    rt.settle_heap_once()  # a document job of another cohort, already planned
    assert gc.get_threshold() == (young, middle, full)
    rt.hold_after_checkpoint()  # the checkpoint's job ends; Snakemake plans its documents
    assert gc.get_threshold() == (young, middle, runtime.HELD_THRESHOLD)
    rt.settle_heap_once()  # the first document job after it: collected, frozen, the hold ended
    assert gc.get_threshold() == (young, middle, full)
    rt.hold_after_checkpoint()  # a second cohort's checkpoint: held again, ended again
    assert gc.get_threshold() == (young, middle, runtime.HELD_THRESHOLD)
    rt.settle_heap_once()
    assert gc.get_threshold() == (young, middle, full)


def test_a_process_that_never_held_never_holds_at_the_checkpoint(rt, thresholds, monkeypatch):
    settled = []
    monkeypatch.setattr(runtime, "settle_heap", lambda: settled.append(True) or 0)
    rt.settle_heap()  # a cluster job parses the Snakefile too, but never holds
    rt.hold_after_checkpoint()
    assert gc.get_threshold() == thresholds
    rt.settle_heap_once()
    rt.settle_heap_once()
    assert settled == [True, True]  # at parse and at the first document job, as without a checkpoint


def test_a_job_rate_limit_that_cannot_bind_is_removed_in_a_local_run_only():
    """Snakemake's own limiter objects, as `--max-jobs-per-timespan` makes them."""
    from snakemake.scheduling.job_scheduler import JobRateLimiter
    from snakemake.settings.types import MaxJobsPerTimespan

    def scheduler(limit: str | None) -> SimpleNamespace:
        limiter = None if limit is None else JobRateLimiter(MaxJobsPerTimespan.parse_choice(limit))
        return SimpleNamespace(job_rate_limiter=limiter)

    profile = scheduler("10000/1s")  # profiles/default
    assert runtime.drop_unbinding_rate_limit(profile, local=True) is True
    assert profile.job_rate_limiter is None
    for limit in ("1000/1s", "60000/1m"):  # 1,000 a second: at the bound
        assert runtime.drop_unbinding_rate_limit(scheduler(limit), local=True) is True
    for limit, local in (("100/1s", True), ("999/1s", True), ("50000/1m", True), ("10000/1s", False)):
        kept = scheduler(limit)
        assert runtime.drop_unbinding_rate_limit(kept, local=local) is False, (limit, local)
        assert kept.job_rate_limiter is not None  # a deliberate limit, or a cluster's queue
    assert runtime.drop_unbinding_rate_limit(scheduler(None), local=True) is False  # a dry run has none
    assert runtime.drop_unbinding_rate_limit(object(), local=True) is False  # not a JobScheduler


def test_the_snakemake_attributes_the_rate_limit_removal_uses_are_those_of_the_locked_version():
    """`onstart` passes `workflow.scheduler`; its limiter is read where the scheduler reads it."""
    import snakemake

    package = Path(snakemake.__file__).parent
    workflow = (package / "workflow.py").read_text()
    scheduler = (package / "scheduling" / "job_scheduler.py").read_text()
    assert "self.scheduler = JobScheduler(" in workflow
    assert "self.job_rate_limiter = (" in scheduler
    assert "if self.job_rate_limiter is not None:" in scheduler  # the timer after each round
    assert "if self.job_rate_limiter is None:" in scheduler  # the selection's limit
