"""The Run: observers are told of its events, and a provider batch's reservation counts against
the same budgets as the direct calls, until its requests are on disk as a live batch."""

import threading

import pytest

from daydream import pricing
from daydream.run import BudgetReached
from daydream.runtime import Runtime
from tests.test_budget import HIGH, PROMPT, completion, priced_member, priced_runtime


@pytest.fixture(autouse=True)
def words_as_tokens(monkeypatch):
    monkeypatch.setattr(pricing, "count_tokens", lambda row, settings, text: len(text.split()))


class Recorder:
    def __init__(self):
        self.events = []

    def call_started(self, stage):
        self.events.append(("call_started", stage))

    def call_paid(self, stage, done, cache_saved_usd):
        self.events.append(("call_paid", stage, done.cost_usd))

    def call_ended(self, stage, paid):
        self.events.append(("call_ended", stage, paid))

    def budget_stopped(self, reason):
        self.events.append(("budget_stopped", reason[:20]))


def test_observers_are_told_of_each_spend_and_of_a_budget_stop(data_root, cohorts_dir):
    rt = priced_runtime(data_root, cohorts_dir, budget_usd=1.5 * HIGH)
    seen = Recorder()
    rt.run.observe(seen)
    member = priced_member(rt)
    with rt.run.spend(member, PROMPT) as ticket:
        rt.run.paid(ticket, completion(HIGH))
    with pytest.raises(BudgetReached):
        with rt.run.spend(member, PROMPT):
            pass
    assert seen.events == [("call_started", "evaluation"), ("call_paid", "evaluation", HIGH),
                           ("call_ended", "evaluation", True), ("budget_stopped", "the budget of all ac")]
    assert rt.run.counters.snapshot()["calls_made"] == 1, "the counters are an observer too"


def test_a_batch_reservation_holds_the_budget_until_it_is_released(data_root, cohorts_dir):
    rt = priced_runtime(data_root, cohorts_dir, budget_usd=1.5 * HIGH)
    member, called = priced_member(rt), threading.Event()

    def direct_call():
        with rt.run.spend(member, PROMPT) as ticket:
            rt.run.paid(ticket, completion(0.0))
        called.set()

    with rt.run.spend_batch("evaluation", "priced", {member.gen_id: HIGH}) as ticket:
        assert ticket.high == HIGH and ticket.budgets == ("all active cohorts (tiny)",)
        waiting = threading.Thread(target=direct_call)
        waiting.start()
        assert not called.wait(0.3), "HIGH reserved of 1.5 HIGH: a call of HIGH waits"
    waiting.join(10)
    assert called.is_set(), "released: the call goes on"


def test_a_batch_of_a_model_without_a_price_is_refused_under_a_budget(data_root, cohorts_dir):
    rt = priced_runtime(data_root, cohorts_dir, budget_usd=1.0)
    member = priced_member(rt)
    with pytest.raises(BudgetReached, match="not submitted: model priced has no known price"):
        with rt.run.spend_batch("evaluation", "priced", {member.gen_id: None}):
            pass


def test_each_runtime_has_its_own_run_and_caps(data_root, cohorts_dir):
    first = priced_runtime(data_root, cohorts_dir)
    second = Runtime(first.config)
    assert first.run is not second.run and first.run.limits is not second.run.limits
    assert first.run.batches.run_id and first.run.guard.status() is None
