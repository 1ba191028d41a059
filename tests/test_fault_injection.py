"""Money and files as invariants (issue 18), checked in-process against the loopback server.

1. Every reply a provider answered is recorded (llm_calls.jsonl) with its usage and cost, success
   or not, and counted by the budget guard; refusals are not retried.
2. No reply is lost to a local fault; a rerun never re-sends a prompt whose reply was paid.
3. The budget is an upper bound on spend, whatever the provider reports.
4. Every score is the parse of the reply that was paid for, or it is flagged.

Two walks: every kind of provider reply (`test_each_kind_of_reply_...`), and a failure injected
at every step of a document job followed by a rerun (`test_a_failure_at_each_step_...`).
Documents are made with `documents.write_document` on a Runtime, as the rule does. Batch mode
has its own (at the end): a failure at each step of a batch round then a rerun, failed and
expired lines and batches that fail, expire or are cancelled as a whole, a failed parent, the
batch run's summary, and a kill between saving a reply and recording it. Rounds run in-process
(`rounds.write_round`, as the checkpoint does) against the loopback server's batch API.
"""

from __future__ import annotations

import csv
import errno
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from daydream import calls, cohorts, documents, integrity, ledger, plan, pricing, progress, stale, store
from daydream import run as run_module
from daydream.run import BudgetReached
from daydream.runtime import Runtime
from tests.conftest import write_cohort
from tests.openai_server import (
    FakeOpenAIServer,
    bad_request,
    expire,
    hang,
    malformed,
    reply,
    server_error,
)

pytest_plugins = ["tests.openai_fixtures"]

PRICES = {"input": 2.0, "output": 10.0}  # USD per million tokens
MAX_TOKENS = 200
SETTINGS = {"llm": {"max_attempts": 2, "backoff_initial_s": 0.01, "backoff_max_s": 0.02, "max_total_wait_s": 5,
                    "stages": {"draft": {"max_tokens": MAX_TOKENS, "timeout_s": 1.0}}}}
COHORT = {
    "concepts": {"level": "paragraph", "k": 2, "ids": ["default-mode-network", "exaptation", "weak-ties"]},
    "draft": {"templates": ["links-brainstorm"], "models": ["loop"], "replicates": 1},
    "essay": {"templates": ["copy-draft"], "models": ["draft"], "replicates": 1},
    "evaluation": {"templates": ["novelty-judge"], "models": ["loop"], "replicates": 1},
}


@pytest.fixture(autouse=True)
def words_as_tokens(monkeypatch):
    monkeypatch.setattr(pricing, "count_tokens", lambda row, settings, text, route=None: len(text.split()))


def add_loop_model(data_root: Path, server: FakeOpenAIServer, model_id: str = "loop", **extra: str) -> None:
    path = data_root / "1_raw" / "llm_models.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns, rows = list(reader.fieldnames), list(reader)
    columns += [c for c in extra if c not in columns]
    rows = [{c: row.get(c) or "" for c in columns} for row in rows]
    rows.append({c: "" for c in columns} | {
        "id": model_id, "model": "fake-model", "provider": "test", "display_name": model_id, "route": "openai",
        "api_base": server.base_url, "input_cost_per_mtok": str(PRICES["input"]),
        "output_cost_per_mtok": str(PRICES["output"]), **extra})
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def loop_runtime(data_root: Path, cohorts_dir: Path, server: FakeOpenAIServer, **config) -> Runtime:
    add_loop_model(data_root, server)
    write_cohort(cohorts_dir, "tiny", COHORT)
    rt = Runtime({"data_root": str(data_root), "cohorts_dir": str(cohorts_dir), "cohorts": ["tiny"],
                  **SETTINGS, **config})
    cohorts.build_cohort(rt.paths, "tiny", rt.paths.cohort_file("tiny"))
    return rt


def rerun(rt: Runtime) -> Runtime:
    """A new process on the same data root: a fresh Runtime (and its Run: guard and counters)."""
    return Runtime(dict(rt.config))


@pytest.fixture
def rt(data_root, cohorts_dir, openai_server):
    return loop_runtime(data_root, cohorts_dir, openai_server)


def drafts(rt: Runtime):
    return rt.membership.members("tiny", "draft")


def make(rt: Runtime, member) -> BaseException | None:
    """One document job, as the rule runs it; the error it failed with, or None."""
    try:
        documents.write_document(rt, member.stage, member.gen_id)
    except Exception as error:  # noqa: BLE001 - the test looks at which error it was
        return error
    return None


def records(rt: Runtime) -> list[dict]:
    path = rt.paths.llm_calls_jsonl
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def cost_of(usage: dict) -> float:
    return (usage["prompt_tokens"] * PRICES["input"] + usage["completion_tokens"] * PRICES["output"]) / 1e6


def high_of(rt: Runtime, member) -> float:
    prompt = documents.document_prompt(rt, member)
    return (len(prompt.text.split()) * PRICES["input"] + MAX_TOKENS * PRICES["output"]) / 1e6


def spent(rt: Runtime) -> float:
    """The spend a new run reads back from llm_calls.jsonl (all documents)."""
    return sum(run_module.recorded_spend(rt).usd.values())


# -- invariant 1 and 3: every kind of provider reply -----------------------------------------------
@dataclass(frozen=True)
class Kind:
    name: str
    actions: tuple  # what the server answers, in order (then its default: an ok reply)
    requests: int  # requests the first run sends
    failed_records: int  # `outcome: failed` lines of llm_calls.jsonl
    billed: str | None  # their `billed`
    ok: bool  # the document is made
    kept: bool  # a reply is saved, so a rerun sends nothing


USAGE = {"prompt_tokens": 50, "completion_tokens": 40, "total_tokens": 90}
KINDS = [
    Kind("ok", (reply(usage=USAGE),), 1, 0, None, True, True),
    Kind("empty with usage", (reply("", usage=USAGE), reply("", usage=USAGE)), 2, 2, "billed", False, True),
    Kind("content_filter", (reply("I cannot", finish_reason="content_filter", usage=USAGE),), 1, 1, "billed", False,
         True),
    Kind("malformed 200", (malformed(), malformed()), 2, 2, "maybe", False, False),
    Kind("late after a client timeout", (hang(1.5, answer=True), hang(1.5, answer=True)), 2, 2, "maybe", False,
         False),
    # Counted as reported; the reply is kept, and fails its parse as truncated (past max_tokens).
    Kind("usage above max_tokens", (reply(usage={"prompt_tokens": 50, "completion_tokens": 3 * MAX_TOKENS}),), 1, 0,
         None, False, True),
    Kind("4xx", (bad_request(),), 1, 0, None, False, False),
    Kind("5xx", (server_error(500), server_error(503)), 2, 0, None, False, False),
    Kind("connection reset", (hang(0.05), hang(0.05)), 2, 0, None, False, False),
]


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_each_kind_of_reply_is_recorded_with_its_cost_and_counted_by_the_budget(
        data_root, cohorts_dir, openai_server, kind):
    rt = loop_runtime(data_root, cohorts_dir, openai_server, budget_usd=100.0, budget_override=True)
    member = drafts(rt)[0]
    high = high_of(rt, member)
    openai_server.enqueue(*kind.actions)
    error = make(rt, member)
    assert (error is None) == kind.ok, error
    assert openai_server.request_count == kind.requests
    lines = records(rt)
    failed = [r for r in lines if r["outcome"] == "failed"]
    assert len(failed) == kind.failed_records
    assert all(r["billed"] == kind.billed and r["gen_id"] == member.gen_id for r in failed)
    expected = 0.0
    for record in lines:
        if record["usage"]:  # reported usage counts as reported, past max_tokens too
            assert record["cost_usd"] == pytest.approx(cost_of(record["usage"]))
            expected += record["cost_usd"]
        else:  # a reply nobody read counts at the call's high estimate
            assert record["cost_usd"] is None and record["cost_usd_max"] == pytest.approx(high)
            expected += high
    if kind.kept and not kind.billed:
        assert [r["outcome"] for r in lines] == ["ok"]
    assert spent(rt) == pytest.approx(expected)
    assert rt.run.guard.status() == f"budget {plan.money(expected)} of {plan.money(100.0)}"
    snap = rt.run.counters.snapshot()
    assert snap["cost_usd"] == pytest.approx(expected)
    if not kind.kept:
        errors = [json.loads(line) for line in rt.paths.llm_errors_jsonl.read_text().splitlines()]
        assert [e["gen_id"] for e in errors] == [member.gen_id]
    # The rerun: a kept reply is never sent again (the document fails with the reason instead).
    again = rerun(rt)
    before = openai_server.request_count
    openai_server.set_default(reply())
    error = make(again, member)
    if kind.kept:
        assert openai_server.request_count == before
        if not kind.ok:
            assert isinstance(error, documents.DocumentError) and "regenerate" in str(error)
            assert member.gen_id in str(error)
    else:
        assert error is None and openai_server.request_count == before + 1


def test_a_refusal_is_not_retried_and_says_why(rt, openai_server):
    member = drafts(rt)[0]
    openai_server.set_default(reply("no", finish_reason="content_filter", usage=USAGE))
    error = make(rt, member)
    assert isinstance(error, calls.LLMCallError) and "not retried" in str(error)
    assert openai_server.request_count == 1


def test_billed_failures_count_against_the_budget_and_stop_retries_that_cannot_fit(
        data_root, cohorts_dir, openai_server):
    """The probe: replies without text but with usage were retried on every run and never counted;
    here each counts, and no attempt starts that the budget cannot hold."""
    probe = loop_runtime(data_root, cohorts_dir, openai_server)
    member = drafts(probe)[0]
    high = high_of(probe, member)
    rt = rerun(probe)
    rt.config["budget_usd"] = 1.5 * high
    rt.config["budget_override"] = True
    rt = Runtime(dict(rt.config))
    big = {"prompt_tokens": 50, "completion_tokens": MAX_TOKENS}  # each empty reply costs about `high`
    openai_server.set_default(reply("", usage=big))
    error = make(rt, member)
    assert isinstance(error, BudgetReached) and "not tried again" in str(error)
    assert openai_server.request_count == 1
    assert len(records(rt)) == 1 and spent(rt) == pytest.approx(cost_of(big))
    assert "budget $0.0000" not in rt.run.guard.status()


# -- invariant 3: the budget is an upper bound -----------------------------------------------------
def budget_runtime(data_root, cohorts_dir, server, multiple: float) -> tuple[Runtime, float]:
    probe = loop_runtime(data_root, cohorts_dir, server)
    high = max(high_of(probe, m) for m in drafts(probe))
    rt = Runtime({**probe.config, "budget_usd": multiple * high, "budget_override": True})
    return rt, high


def test_usage_above_max_tokens_is_counted_as_reported_and_later_calls_reserve_what_it_cost(
        data_root, cohorts_dir, openai_server):
    """The probe: 6,000 output tokens reported against max_tokens 2,000. The first call counts in
    full; the guard then reserves that much for each call of the model, so spend stays within a
    budget that its high estimate alone would have let a second call pass."""
    rt, high = budget_runtime(data_root, cohorts_dir, openai_server, 4.0)
    usage = {"prompt_tokens": 50, "completion_tokens": 3 * MAX_TOKENS}
    assert 2.0 * high < cost_of(usage) < 3.0 * high
    openai_server.set_default(reply(usage=usage))
    results = [make(rt, m) for m in drafts(rt)]
    assert isinstance(results[0], documents.DocumentError) and "truncated" in str(results[0])  # paid, kept
    assert all(isinstance(r, BudgetReached) for r in results[1:])
    assert openai_server.request_count == 1
    assert spent(rt) == pytest.approx(cost_of(usage)) and spent(rt) <= rt.config["budget_usd"]
    assert "(reached)" in rt.run.guard.status()


def test_two_calls_in_flight_pass_the_budget_by_at_most_themselves(data_root, cohorts_dir, openai_server):
    rt, high = budget_runtime(data_root, cohorts_dir, openai_server, 2.5)
    usage = {"prompt_tokens": 50, "completion_tokens": 3 * MAX_TOKENS}
    openai_server.set_default(reply(usage=usage, latency=0.3))
    members = drafts(rt)
    results: dict[str, BaseException | None] = {}
    threads = [threading.Thread(target=lambda m=m: results.__setitem__(m.gen_id, make(rt, m))) for m in members]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    made = [g for g, r in results.items() if not isinstance(r, BudgetReached)]  # called (then truncated)
    assert len(made) <= 2 and openai_server.request_count == len(made)
    assert spent(rt) <= rt.config["budget_usd"] + len(made) * cost_of(usage) + 1e-12
    # Later calls of that model reserve what it was seen to cost: none starts now.
    again = [make(rt, m) for m in members if m.gen_id not in made]
    assert all(isinstance(r, BudgetReached) for r in again)
    assert openai_server.request_count == len(made)


def test_a_torn_last_line_of_the_call_record_is_named_and_later_records_stay_whole(
        data_root, cohorts_dir, openai_server, caplog):
    rt, high = budget_runtime(data_root, cohorts_dir, openai_server, 10)
    path = rt.paths.llm_calls_jsonl
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"gen_id": "d_old", "cost_usd": 0.5}) + "\n" + '{"gen_id": "d_torn", "cost')
    member = drafts(rt)[0]
    assert make(rt, member) is None
    assert f"{path} line 2 is not a complete call record" in caplog.text
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["gen_id"] == member.gen_id
    spend = run_module.recorded_spend(rt)
    assert spend.usd["d_old"] == 0.5 and spend.of([member.gen_id])[1] == 1  # the torn one: unknown cost


# -- invariant 2: a full disk loses no reply and pays for none twice ----------------------------------
def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_no_call_starts_without_room_for_its_reply(data_root, cohorts_dir, openai_server, monkeypatch):
    rt = loop_runtime(data_root, cohorts_dir, openai_server, min_free_mb=10**9)
    member = drafts(rt)[0]
    error = make(rt, member)
    assert isinstance(error, ledger.NoRoomForReply) and "min_free_mb" in str(error) and member.gen_id in str(error)
    assert openai_server.request_count == 0


def test_enospc_while_saving_the_reply_spills_it_and_a_rerun_pays_nothing(rt, openai_server, monkeypatch):
    member = drafts(rt)[0]
    real = store.write_json_atomic
    reply_dir = rt.paths.replies_dir(member.stage, member.gen_id)

    def full_disk_in_the_gens_store(path, data, **kwargs):
        if Path(path).is_relative_to(rt.paths.gens_root):
            no_space()
        return real(path, data, **kwargs)

    monkeypatch.setattr(store, "write_json_atomic", full_disk_in_the_gens_store)
    monkeypatch.setattr(store, "write_text_atomic", lambda path, *a, **k: no_space()
                        if Path(path).is_relative_to(rt.paths.gens_root) and Path(path).name != "prompt.txt"
                        else store.write_bytes_atomic(path, a[0].encode(), **k))
    error = make(rt, member)
    assert isinstance(error, documents.DocumentError) and member.gen_id in str(error)
    assert "No space left" in str(error) and "next run makes no call" in str(error)
    spill = rt.paths.spill_paths(member.stage, member.gen_id, documents.document_prompt(rt, member).sha256)[0]
    assert spill.is_file() and not reply_dir.exists()
    assert len(records(rt)) == 1
    monkeypatch.undo()
    again = rerun(rt)
    assert make(again, member) is None
    assert openai_server.request_count == 1 and not spill.exists()
    assert ledger.saved_reply(again.paths, member, documents.document_prompt(again, member).sha256) is not None


def test_a_reply_that_cannot_be_written_anywhere_names_the_document_and_the_files(rt, openai_server, monkeypatch,
                                                                                    caplog):
    member = drafts(rt)[0]
    monkeypatch.setattr(store, "write_json_atomic", no_space)
    error = make(rt, member)
    assert isinstance(error, ledger.ReplyNotKept) and member.gen_id in str(error)
    assert str(rt.paths.replies_dir(member.stage, member.gen_id)) in str(error) and ".spill" in str(error)
    assert "paid reply that could not be written anywhere" in caplog.text  # the record itself, in the log
    assert len(records(rt)) == 1  # still counted


def test_the_summary_does_not_crash_after_a_full_disk(rt, openai_server, monkeypatch):
    member = drafts(rt)[0]
    monkeypatch.setattr(store, "write_json_atomic", no_space)
    make(rt, member)
    text = progress.summary(rt, rt.run.counters.snapshot(), False, rt.run.guard.status())
    assert "ReplyNotKept" in text and member.gen_id in text


# -- every step of a document job ---------------------------------------------------------------------
STEPS = ["render", "reserve", "call", "save reply", "record call", "write metadata", "parse", "write parsed"]


def inject(step: str, rt: Runtime, monkeypatch, fault: BaseException) -> None:
    def boom(*args, **kwargs):
        raise fault

    if step == "render":
        monkeypatch.setattr(documents, "document_prompt", boom)
    elif step == "reserve":
        monkeypatch.setattr(run_module.Guard, "admit", boom)
    elif step == "call":
        monkeypatch.setattr(calls, "call_model", boom)
    elif step == "save reply":
        real_json = store.write_json_atomic

        def reply_fails(path, data, **kwargs):
            if Path(path).parent.name == ".replies":
                raise fault
            return real_json(path, data, **kwargs)

        monkeypatch.setattr(store, "write_json_atomic", reply_fails)
    elif step == "record call":
        monkeypatch.setattr(ledger, "record_call", boom)
    elif step == "write metadata":
        monkeypatch.setattr(store, "write_metadata", boom)
    elif step == "parse":
        monkeypatch.setattr(documents, "parse_reply", boom)
    elif step == "write parsed":
        real = store.write_text_atomic

        def parsed_fails(path, text, **kwargs):
            if Path(path).name == "parsed.txt":
                raise fault
            return real(path, text, **kwargs)

        monkeypatch.setattr(store, "write_text_atomic", parsed_fails)


class Killed(BaseException):
    """A kill at that step (not an Exception: nothing may catch it)."""


@pytest.mark.parametrize("fault", [RuntimeError("injected"), OSError(errno.ENOSPC, "No space left on device"),
                                   Killed()], ids=["exception", "ENOSPC", "kill"])
@pytest.mark.parametrize("step", STEPS)
def test_a_failure_at_each_step_then_a_rerun_keeps_the_invariants(data_root, cohorts_dir, openai_server, monkeypatch,
                                                                   step, fault):
    rt = loop_runtime(data_root, cohorts_dir, openai_server, budget_usd=10.0, budget_override=True)
    member = drafts(rt)[0]
    usage = {"prompt_tokens": 50, "completion_tokens": 40, "total_tokens": 90}
    openai_server.set_default(reply(usage=usage))
    with monkeypatch.context() as patched:
        inject(step, rt, patched, fault)
        try:
            documents.write_document(rt, member.stage, member.gen_id)
        except (Exception, Killed):  # noqa: BLE001 - any failure; the rerun must mend it
            pass
    sent_first = openai_server.request_count
    again = rerun(rt)
    assert make(again, member) is None
    # 2: a reply paid for is never paid again (at most one request reached the provider in all).
    assert openai_server.request_count == 1
    # 1: every reply the provider answered is in the call record, once, with its cost (a line lost
    # with the step that writes it is written by the rerun, from the saved reply, and only once).
    lines = [r for r in records(again) if r["outcome"] == "ok"]
    assert len(lines) == 1 and lines[0]["cost_usd"] == pytest.approx(cost_of(usage))
    assert bool(lines[0].get("recovered")) == (step == "record call" and sent_first == 1)
    assert make(rerun(again), member) is None and len(records(again)) == 1
    assert spent(again) == pytest.approx(cost_of(usage))
    # 4: what is in the gens store is the paid reply and its parse.
    prompt = documents.document_prompt(again, member)
    saved = ledger.saved_reply(again.paths, member, prompt.sha256)
    assert saved is not None and again.paths.raw_path(member.stage, member.gen_id).read_text() == saved.text
    assert integrity.document_change(again.paths, member.stage, member.gen_id) is None
    assert stale.check_member(again, member) is None


# -- invariant 4: parsed.txt and metadata.json against the saved reply ---------------------------------
def made_draft(rt, server):
    member = drafts(rt)[0]
    server.set_default(reply())
    assert make(rt, member) is None
    return member


def test_an_edited_parsed_txt_is_reported_and_flagged(rt, openai_server):
    member = made_draft(rt, openai_server)
    path = rt.paths.parsed_path(member.stage, member.gen_id)
    path.write_text(path.read_text() + "\nA line nobody was paid for.\n")
    change = integrity.document_change(rt.paths, member.stage, member.gen_id)
    assert change and "parsed.txt" in change and str(path) in change
    assert stale.check_member(rt, member)["reason"] == change
    flags = integrity.evaluation_flags(rt.paths, [member.gen_id])
    assert flags == [f"parsed.txt changed: {member.stage} {member.gen_id}"]


def test_an_edited_metadata_json_is_reported_and_regenerate_stale_does_not_pay_again(rt, openai_server):
    from daydream import regenerate

    member = made_draft(rt, openai_server)
    path = rt.paths.metadata_path(member.stage, member.gen_id)
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "model": "openai/another-model", "model_id": "offline_a"}))
    row = stale.check_member(rt, member)
    assert row is not None and "metadata.json" in row["reason"]
    assert "model changed" not in row["reason"]  # the paid reply's model is the one that counts
    store.write_csv_atomic(rt.paths.stale_generations_csv, tuple(row), [row])
    assert member.gen_id not in regenerate.stale_gen_ids(rt.paths)
    assert member.gen_id in regenerate.restorable_gen_ids(rt.paths)


def test_the_reports_after_a_failed_run_do_not_stop_the_summary_on_a_full_disk(rt, monkeypatch, caplog):
    monkeypatch.setattr(store, "write_csv_atomic", no_space)
    stale.write_reports_after_failure(rt)  # onerror: then the summary
    assert "reports not rebuilt" in caplog.text and "No space left" in caplog.text


# -- invariant 4: a rehearsal never stands in for a paid reply -------------------------------------------
def test_a_paid_run_after_a_rehearsal_on_the_same_root_is_refused_until_the_rehearsal_is_archived(
        data_root, cohorts_dir, openai_server):
    from daydream import regenerate, rehearsal, targets

    paid = loop_runtime(data_root, cohorts_dir, openai_server)
    rehearsed = Runtime({**paid.config, "offline": True})
    member = drafts(rehearsed)[0]
    assert make(rehearsed, member) is None and openai_server.request_count == 0
    with pytest.raises(rehearsal.RehearsalMixError, match=rf"{member.gen_id} \(offline/fake-model\).*--offline"):
        targets.cohort_outputs(Runtime(dict(paid.config)), "tiny")
    found = rehearsal.rehearsal_gen_ids(paid.paths)
    assert found == [member.gen_id]
    regenerate.archive_for_regeneration(paid.paths, found)
    rehearsal.clear_marker(paid.paths)
    again = Runtime(dict(paid.config))
    targets.cohort_outputs(again, "tiny")  # no refusal now
    assert make(again, member) is None and openai_server.request_count == 1


def test_a_rehearsal_on_a_root_holding_paid_replies_of_its_documents_is_refused(rt, openai_server):
    from daydream import rehearsal, targets

    made_draft(rt, openai_server)
    with pytest.raises(rehearsal.RehearsalMixError, match="offline=true.*another data root"):
        targets.cohort_outputs(Runtime({**rt.config, "offline": True}), "tiny")


def test_documents_of_offline_rows_are_the_experiments_own_and_never_refused(data_root, cohorts_dir):
    from daydream import targets

    write_cohort(cohorts_dir, "tiny", {**COHORT, "draft": {"templates": ["links-brainstorm"], "models": ["offline_a"]},
                                       "evaluation": {"templates": ["novelty-judge"], "models": ["offline_b"]}})
    rt = Runtime({"data_root": str(data_root), "cohorts_dir": str(cohorts_dir), "cohorts": ["tiny"], "offline": True})
    cohorts.build_cohort(rt.paths, "tiny", rt.paths.cohort_file("tiny"))
    assert make(rt, drafts(rt)[0]) is None
    assert targets.cohort_outputs(Runtime({**rt.config, "offline": False}), "tiny")


# -- invariant 5: definitions cannot reach outside the data root -------------------------------------------
def add_concept_row(data_root: Path, concept_id: str) -> None:
    path = data_root / "1_raw" / "concepts_metadata.csv"
    text = path.read_text(encoding="utf-8")
    header = text.splitlines()[0].split(",")
    cells = {"concept_id": concept_id, "name": "Secret"}
    path.write_text(text.rstrip("\n") + "\n" + ",".join(cells.get(c, "") for c in header) + "\n", encoding="utf-8")


def checkpoint_problems(rt: Runtime) -> str:
    with pytest.raises(Exception) as caught:  # noqa: PT011 - CohortError or ExperimentError, by where it is read
        cohorts.build_cohort(rt.paths, "tiny", rt.paths.cohort_file("tiny"))
    return str(caught.value)


@pytest.fixture
def outside_secret(tmp_path):
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("THE SECRET\n")
    return "../../../../outside/secret"


def test_a_concept_id_that_is_a_path_is_refused_where_the_table_is_read(data_root, cohorts_dir, outside_secret):
    from daydream.experiment import ExperimentError, load_experiment
    from daydream.paths import Paths

    add_concept_row(data_root, outside_secret)
    with pytest.raises(ExperimentError, match=r"concepts_metadata.csv line \d+: concept_id .* is not a valid id"):
        load_experiment(Paths(data_root))


@pytest.mark.parametrize("where", ["concepts.ids", "concepts.combos", "draft.templates", "evaluation.models"])
def test_an_id_that_is_a_path_in_a_cohort_file_is_refused_and_never_registered(data_root, cohorts_dir,
                                                                               outside_secret, where):
    spec = json.loads(json.dumps(COHORT))
    if where == "concepts.ids":
        spec["concepts"]["ids"] = ["exaptation", outside_secret]
    elif where == "concepts.combos":
        spec["concepts"] = {"level": "paragraph", "k": 2, "combos": [["exaptation", outside_secret]]}
    elif where == "draft.templates":
        spec["draft"]["templates"] = [outside_secret]
    else:
        spec["evaluation"]["models"] = [outside_secret]
    write_cohort(cohorts_dir, "tiny", spec)
    rt = Runtime({"data_root": str(data_root), "cohorts_dir": str(cohorts_dir), "cohorts": ["tiny"], "offline": True})
    text = checkpoint_problems(rt)
    assert "is not a valid id" in text
    register = rt.paths.combo_mappings_csv
    assert not register.exists() or "outside" not in register.read_text()


@pytest.mark.parametrize("concepts", [{"ids": ["exaptation", "exaptation", "weak-ties"]},
                                      {"combos": [["exaptation", "exaptation"]]}], ids=["ids", "combos"])
def test_a_concept_appears_at_most_once_per_combination(data_root, cohorts_dir, concepts):
    write_cohort(cohorts_dir, "tiny", {**COHORT, "concepts": {"level": "paragraph", "k": 2, **concepts}})
    rt = Runtime({"data_root": str(data_root), "cohorts_dir": str(cohorts_dir), "cohorts": ["tiny"], "offline": True})
    assert "more than once" in checkpoint_problems(rt)
    assert not rt.paths.combo_mappings_csv.exists() or rt.paths.combo_mappings_csv.read_text().count("exaptation") == 0


def test_a_prompt_file_outside_1_raw_is_never_read(data_root, cohorts_dir, tmp_path):
    write_cohort(cohorts_dir, "tiny", {**COHORT, "draft": {"templates": ["links-brainstorm"], "models": ["offline_a"]},
                                       "evaluation": {"templates": ["novelty-judge"], "models": ["offline_b"]}})
    rt = Runtime({"data_root": str(data_root), "cohorts_dir": str(cohorts_dir), "cohorts": ["tiny"], "offline": True})
    cohorts.build_cohort(rt.paths, "tiny", rt.paths.cohort_file("tiny"))
    member = drafts(rt)[0]
    template = rt.paths.template_path("draft", "links-brainstorm")
    outside = tmp_path / "outside.txt"
    outside.write_text(template.read_text() + "\nTHE SECRET")
    template.unlink()
    template.symlink_to(outside)
    error = make(rt, member)
    assert isinstance(error, documents.DocumentError) and "outside" in str(error) and str(template) in str(error)


def test_an_api_key_pasted_into_api_key_env_is_refused_without_echoing_it(data_root, openai_server, caplog):
    from daydream.experiment import ExperimentError, load_experiment
    from daydream.paths import Paths

    key = "sk-or-v1-0123456789abcdef0123456789abcdef"
    path = data_root / "1_raw" / "llm_models.csv"
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns, rows = list(reader.fieldnames) + ["api_key_env"], list(reader)
    rows.append({c: "" for c in columns} | {"id": "pasted", "model": "m", "route": "openai", "api_key_env": key})
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(ExperimentError) as caught:
        load_experiment(Paths(data_root))
    assert "api_key_env" in str(caught.value) and "rotate the key" in str(caught.value)
    assert key not in str(caught.value) and key[:12] not in str(caught.value) and key not in caught.value.__repr__()
    assert key not in caplog.text


# -- invariant 6: every failure names the document, the file and the fix ------------------------------------
def test_regenerate_refuses_an_id_that_is_no_document(rt, openai_server):
    import subprocess
    import sys

    from daydream import regenerate
    from tests.conftest import REPO

    made_draft(rt, openai_server)
    with pytest.raises(regenerate.RegenerateError, match="d_doesnotexist1: .* does not exist"):
        regenerate.archive_for_regeneration(rt.paths, ["d_doesnotexist1"])
    with pytest.raises(regenerate.RegenerateError, match="is not a gen_id"):
        regenerate.archive_for_regeneration(rt.paths, ["d_../../x"])
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "regenerate.py"), "--data-root",
                           str(rt.paths.data_root), "d_doesnotexist1"], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "d_doesnotexist1" in done.stderr and "archived" not in done.stdout


def test_a_truncated_saved_reply_names_its_file_and_the_fix(rt, openai_server):
    member = made_draft(rt, openai_server)
    prompt = documents.document_prompt(rt, member)
    path = rt.paths.reply_path(member.stage, member.gen_id, prompt.sha256)
    path.write_text(path.read_text()[:40])
    rt.paths.raw_path(member.stage, member.gen_id).unlink()
    error = make(rerun(rt), member)
    assert isinstance(error, ledger.ReplyRecordError) and str(path) in str(error) and "restore" in str(error)
    assert openai_server.request_count == 1  # not paid again


def test_a_parsed_txt_that_is_a_folder_names_the_file_and_the_fix(rt, openai_server):
    member = drafts(rt)[0]
    rt.paths.parsed_path(member.stage, member.gen_id).mkdir(parents=True)
    error = make(rt, member)
    assert isinstance(error, documents.DocumentError) and "is a folder" in str(error)
    assert str(rt.paths.parsed_path(member.stage, member.gen_id)) in str(error)


def test_a_read_only_data_root_names_the_file_and_the_fix(rt, openai_server, monkeypatch):
    member = drafts(rt)[0]

    def read_only(path, data, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(store, "write_bytes_atomic", read_only)
    error = make(rt, member)
    assert isinstance(error, documents.DocumentError) and member.gen_id in str(error)
    assert "prompt.txt" in str(error) and "writable" in str(error)
    assert openai_server.request_count == 0


def test_a_run_that_cannot_start_says_so_before_it_holds_the_data_root(tmp_path):
    from daydream import writer_lock

    with pytest.raises(writer_lock.CannotStart, match="--cores 0"):
        writer_lock.check_can_start(tmp_path, cores=0, local_exec=True)
    writer_lock.check_can_start(tmp_path, cores=None, local_exec=False)  # a cluster run: its own cores
    (tmp_path / "ro").mkdir()
    import os
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "ro").chmod(0o555)
        with pytest.raises(writer_lock.CannotStart, match="cannot be written"):
            writer_lock.check_can_start(tmp_path / "ro", cores=2, local_exec=True)


@pytest.mark.e2e
def test_cores_0_is_refused_at_once_and_holds_no_lock(data_root, cohorts_dir):
    from tests.conftest import run_workflow

    write_cohort(cohorts_dir, "tiny", {**COHORT, "draft": {"templates": ["links-brainstorm"], "models": ["offline_a"]},
                                       "evaluation": {"templates": ["novelty-judge"], "models": ["offline_b"]}})
    done = run_workflow(data_root, cohorts_dir, ["tiny"], "--cores", "0", check=False, timeout=300)
    assert done.returncode != 0 and "--cores 0: no job can start" in done.stderr + done.stdout
    assert not list(data_root.parent.glob(".snakemake/locks/*"))


# -- batch mode --------------------------------------------------------------------------------------
def test_a_batch_that_fails_validation_as_a_whole_is_resubmitted_and_collect_and_cancel_work(
        data_root, cohorts_dir, openai_server, monkeypatch):
    """The probe: `.get` on the SDK's BatchError objects blocked the stage for good. Through the
    real OpenAI batch provider: the failed batch is collected, its requests are submitted again,
    `scripts/batches.py collect` and `cancel` work, and every reply is saved once."""
    from dataclasses import replace

    from daydream.batch import commands as batch_commands
    from daydream.batch import ledger as batch_ledger
    from daydream.batch import policy as batch_policy
    from daydream.batch import rounds
    from tests.test_provider_batches import evaluations, wanted

    monkeypatch.setenv("OPENAI_API_KEY", "sk-loop")
    write_cohort(cohorts_dir, "tiny", {**COHORT, "draft": {"templates": ["links-brainstorm"], "models": ["offline_a"]},
                                       "evaluation": {"templates": ["novelty-judge"], "models": ["offline_b"]}})
    runtime = Runtime({"data_root": str(data_root), "cohorts_dir": str(cohorts_dir), "cohorts": ["tiny"]})
    cohorts.build_cohort(runtime.paths, "tiny", runtime.paths.cohort_file("tiny"))
    models = runtime.experiment.models
    models["offline_b"] = replace(models["offline_b"], route="openai", batch=True, api_base=openai_server.base_url,
                                  model="gpt-4o-mini", input_cost_per_mtok=2.0, output_cost_per_mtok=8.0)
    items, states = wanted(runtime, evaluations(runtime)), {}
    config = batch_policy.batch_settings(runtime)
    openai_server.fail_batch_validation("Enqueued token limit reached.", code="token_limit_exceeded")
    with batch_ledger.locked(runtime.paths):
        rounds._decide_and_submit(runtime, "evaluation", config, items, states)
    (failed,) = batch_ledger.live_states(runtime.paths)
    import time
    deadline = time.monotonic() + 20
    while batch_ledger.live_states(runtime.paths):  # scripts/batches.py collect
        batch_commands.collect(runtime)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    outcomes = json.loads(runtime.paths.provider_batch_state(failed["local_id"]).read_text())["outcomes"]
    assert all("token_limit_exceeded" in o for o in outcomes.values())
    with batch_ledger.locked(runtime.paths):  # the next round: collected as failed, submitted again
        rounds.collect_live(runtime, items, states)
        rounds._decide_and_submit(runtime, "evaluation", config, items, states)
    (again,) = batch_ledger.live_states(runtime.paths)
    assert again["local_id"] != failed["local_id"]
    # scripts/batches.py cancel: the batch has ended on the server already, and no 400 stops it.
    assert batch_commands.cancel(runtime, []) == [again["local_id"]]
    deadline = time.monotonic() + 20
    while batch_ledger.live_states(runtime.paths):
        batch_commands.collect(runtime)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for item in items.values():
        assert ledger.saved_reply(runtime.paths, item.member, item.prompt.sha256) is not None
    paid = [r for r in records(runtime) if r["stage"] == "evaluation"]
    assert sorted(r["gen_id"] for r in paid) == sorted(items)


# -- batch mode: a fault at each step of a batch round, then a rerun ---------------------------------
BATCH_PRICES = {"input": PRICES["input"] / 2, "output": PRICES["output"] / 2}  # the row's, half in a batch


def batch_runtime(data_root: Path, cohorts_dir: Path, server: FakeOpenAIServer, monkeypatch, cohort: dict = COHORT,
                  **config) -> Runtime:
    """The loopback model in batch mode (every stage it serves), key set, rounds that poll fast."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-loop")
    add_loop_model(data_root, server, batch="true")
    write_cohort(cohorts_dir, "tiny", cohort)
    rt = Runtime({"data_root": str(data_root), "cohorts_dir": str(cohorts_dir), "cohorts": ["tiny"], **SETTINGS,
                  "batch": {"poll_interval_s": 0.02, **config.pop("batch", {})}, **config})
    cohorts.build_cohort(rt.paths, "tiny", rt.paths.cohort_file("tiny"))
    return rt


def stage_round(rt: Runtime, stage: str, members) -> dict:
    """The round job of these documents, as the checkpoint `provider_batch` runs it; its record."""
    from daydream.batch import gate as batch_gate
    from daydream.batch import rounds

    stage, round_id = batch_gate.register(rt, stage, [m.gen_id for m in members])
    out = rt.paths.batch_round_path(rt.run.batches.run_id, stage, round_id)
    rounds.write_round(rt, stage, rt.run.batches.run_id, round_id, str(out))
    return json.loads(out.read_text())


def batch_cost(usage: dict) -> float:
    return (usage["prompt_tokens"] * BATCH_PRICES["input"] + usage["completion_tokens"] * BATCH_PRICES["output"]) / 1e6


def check_paid_once(rt: Runtime, server: FakeOpenAIServer, members) -> float:
    """Invariants 1-3 after a batch round: each document's reply saved, one `ok` line each in
    llm_calls.jsonl at the batch price of its usage, with its batch's id; nothing left committed to
    a batch in flight; each request sent to the provider once; no direct call. The total cost."""
    from daydream.batch import ledger as batch_ledger

    lines = [r for r in records(rt) if r["outcome"] == "ok" and r["stage"] == members[0].stage]
    assert sorted(r["gen_id"] for r in lines) == sorted(m.gen_id for m in members)
    for line in lines:
        assert line["batch_id"] and line["cost_usd"] == pytest.approx(batch_cost(line["usage"]))
    for member in members:
        saved = ledger.saved_reply(rt.paths, member, documents.document_prompt(rt, member).sha256)
        assert saved is not None
    assert batch_ledger.live_requests(rt.paths)[1] == [], "no money left committed to a batch in flight"
    assert server.custom_id_counts("openai") == {m.gen_id: 1 for m in members}, "each request sent once"
    assert server.request_count == 0, "no direct call"
    total = sum(r["cost_usd"] for r in lines)
    assert spent(rt) == pytest.approx(total)
    return total


BATCH_STEPS = ["write requests", "submit", "record the submission", "poll", "download results", "save a reply",
               "record a call", "mark collected", "write the round record"]


def inject_batch(step: str, patched, fault: BaseException) -> None:
    """`fault` raised at `step` of a batch round: a kill there is a kill between it and the step before.
    Per-reply steps fail at the second reply, so the first one is whole."""
    from daydream.batch import ledger as batch_ledger
    from daydream.batch import rounds
    from daydream.providers.openai_batch import OpenAIBatchProvider

    def boom(*args, **kwargs):
        raise fault

    def second(real):
        seen = []

        def fails_second(*args, **kwargs):
            seen.append(1)
            if len(seen) == 2:
                raise fault
            return real(*args, **kwargs)
        return fails_second

    def state_write(state_name):
        real = batch_ledger.write_state

        def fails(paths, state):
            if state["state"] == state_name:
                raise fault
            return real(paths, state)
        return fails

    if step == "write requests":
        patched.setattr(batch_ledger, "write_requests", boom)
    elif step == "submit":
        patched.setattr(OpenAIBatchProvider, "submit", boom)
    elif step == "record the submission":  # the provider made the batch; our record still says `preparing`
        patched.setattr(batch_ledger, "write_state", state_write(batch_ledger.SUBMITTED))
    elif step == "poll":
        patched.setattr(OpenAIBatchProvider, "status", boom)
    elif step == "download results":
        patched.setattr(OpenAIBatchProvider, "results", boom)
    elif step == "save a reply":
        patched.setattr(ledger, "save_reply", second(ledger.save_reply))
    elif step == "record a call":
        patched.setattr(ledger, "record_call", second(ledger.record_call))
    elif step == "mark collected":
        patched.setattr(batch_ledger, "write_state", state_write(batch_ledger.COLLECTED))
    elif step == "write the round record":
        real = store.write_json_atomic
        patched.setattr(store, "write_json_atomic", lambda path, data, **kw: boom() if "batch_rounds" in str(path)
                        else real(path, data, **kw))
    assert rounds  # imported for the patches' modules to be loaded


@pytest.mark.parametrize("fault", [RuntimeError("injected"), Killed()], ids=["exception", "kill"])
@pytest.mark.parametrize("step", BATCH_STEPS)
def test_a_failure_at_each_step_of_a_batch_round_then_a_rerun_pays_each_reply_once_and_records_it_once(
        data_root, cohorts_dir, openai_server, monkeypatch, step, fault):
    rt = batch_runtime(data_root, cohorts_dir, openai_server, monkeypatch, budget_usd=10.0, budget_override=True)
    members = drafts(rt)
    with monkeypatch.context() as patched:
        inject_batch(step, patched, fault)
        with pytest.raises((Exception, Killed)):  # noqa: PT011 - any failure; the rerun must mend it
            stage_round(rt, "draft", members)
    first = rt.run.counters.snapshot()
    again = rerun(rt)
    record = stage_round(again, "draft", members)
    assert record["documents"] == {m.gen_id: "collected" for m in members}
    total = check_paid_once(again, openai_server, members)
    assert openai_server.batches_created["openai"] == 1, "no batch submitted twice"
    # The spend each run counted (its summary): every reply once, in the run that saved it.
    second = again.run.counters.snapshot()
    assert first.get("batch_cost_usd", 0.0) + second.get("batch_cost_usd", 0.0) == pytest.approx(total)
    assert second.get("records_recovered") == (1 if step == "record a call" else 0)
    # The documents are made from the saved replies, with no call; a third run changes nothing.
    for member in members:
        assert make(again, member) is None
    third = rerun(again)
    stage_round(third, "draft", members)
    assert check_paid_once(third, openai_server, members) == pytest.approx(total)


# -- a kill between saving a reply and appending its call record --------------------------------------
KILL_AFTER_SAVE = """
import json, os, signal, sys
from daydream import documents, ledger
from daydream.runtime import Runtime

real = ledger.record_call
def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # the reply is saved; its line is never written
ledger.record_call = killed
rt = Runtime(json.loads(sys.argv[1]))
member = rt.membership.members("tiny", "draft")[0]
documents.write_document(rt, member.stage, member.gen_id)
"""


@pytest.mark.parametrize("kill", ["SIGKILL", "BaseException"])
def test_a_process_killed_between_saving_a_reply_and_recording_it_gets_its_line_once_on_the_rerun(
        data_root, cohorts_dir, openai_server, monkeypatch, kill):
    """Killed right after the reply is saved (a real SIGKILL of a subprocess, or a BaseException
    injected in-process at that step): the rerun writes the missing call record line from the
    saved reply (once: a third run writes none), pays nothing again, and the budget counts the
    reply once, whether its guard read the spend after the line was written (the SIGKILL case:
    the recovered document is made first) or before (the other: a call is admitted first)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    rt = loop_runtime(data_root, cohorts_dir, openai_server, budget_usd=10.0, budget_override=True)
    usage = {"prompt_tokens": 50, "completion_tokens": 40, "total_tokens": 90}
    openai_server.set_default(reply(usage=usage))
    first, second = drafts(rt)[:2]
    if kill == "SIGKILL":
        killed = subprocess.run([sys.executable, "-c", KILL_AFTER_SAVE, json.dumps(rt.config)], cwd=REPO,
                                capture_output=True, text=True, timeout=300)
        assert killed.returncode == -9, killed.stderr
    else:
        with monkeypatch.context() as patched:
            patched.setattr(ledger, "record_call", lambda *a, **k: (_ for _ in ()).throw(Killed()))
            with pytest.raises(Killed):
                documents.write_document(rt, first.stage, first.gen_id)
    assert openai_server.request_count == 1 and records(rt) == []
    prompt = documents.document_prompt(rt, first)
    assert ledger.saved_reply(rt.paths, first, prompt.sha256) is not None
    assert not rt.paths.raw_path(first.stage, first.gen_id).exists()

    again = rerun(rt)
    order = [first, second] if kill == "SIGKILL" else [second, first]
    for member in order:
        assert make(again, member) is None
    assert openai_server.request_count == 2, "the saved reply is not paid for again"
    lines = records(again)
    assert sorted((r["gen_id"], bool(r.get("recovered"))) for r in lines) == sorted(
        [(first.gen_id, True), (second.gen_id, False)])
    assert spent(again) == pytest.approx(2 * cost_of(usage))
    assert again.run.guard.status() == f"budget {plan.money(2 * cost_of(usage))} of {plan.money(10.0)}"
    snap = again.run.counters.snapshot()
    assert snap["records_recovered"] == 1 and snap["cost_usd"] == pytest.approx(cost_of(usage))
    assert "1 call record(s) written for replies an earlier run saved" in progress.summary(
        again, snap, True, again.run.guard.status())
    rt.paths.raw_path(first.stage, first.gen_id).unlink()  # a third run reads the saved reply again
    third = rerun(again)
    assert make(third, first) is None and len(records(third)) == 2 and openai_server.request_count == 2


# -- batch mode: failed and expired lines, batches that fail as a whole ----------------------------------
def first_time(chosen: set[str]):
    """A batch rule's selector: these requests, the first time each is sent only."""
    seen: set[str] = set()

    def where(custom_id, body):
        if custom_id in chosen and custom_id not in seen:
            seen.add(custom_id)
            return True
        return False
    return where


def ok_lines(rt: Runtime, stage: str) -> list[dict]:
    return [r for r in records(rt) if r["outcome"] == "ok" and r["stage"] == stage]


BATCH_FAULTS = ["errored line 503", "errored line 400", "expired line", "batch failed validation",
                "batch expired as a whole", "batch cancelled"]


@pytest.mark.parametrize("fault", BATCH_FAULTS)
def test_failed_lines_and_failed_batches_record_what_was_paid_release_the_budget_and_a_rerun_asks_only_for_the_rest(
        data_root, cohorts_dir, openai_server, monkeypatch, fault):
    """Each reply a batch returned is recorded once with its batch price and counted in the spend;
    a request without a reply costs nothing and commits nothing once its batch has ended; the next
    run submits again exactly the requests without a paid reply, and none twice."""
    from daydream.batch import commands as batch_commands
    from daydream.batch import ledger as batch_ledger

    cancelled = fault == "batch cancelled"
    rt = batch_runtime(data_root, cohorts_dir, openai_server, monkeypatch, budget_usd=10.0, budget_override=True,
                       batch={"max_submissions": 1, "wait": not cancelled})
    members = drafts(rt)
    ids = {m.gen_id for m in members}
    one = members[0].gen_id
    if fault == "errored line 503":
        openai_server.on_batch_request(server_error(503), where=first_time({one}))
    elif fault == "errored line 400":
        openai_server.on_batch_request(bad_request("prompt too long"), where=first_time({one}))
    elif fault == "expired line":
        openai_server.on_batch_request(expire(), where=first_time({one}))
    elif fault == "batch failed validation":
        openai_server.fail_batch_validation("Enqueued token limit reached.", code="token_limit_exceeded")
    elif fault == "batch expired as a whole":
        openai_server.on_batch_request(expire(), where=first_time(ids))
    else:
        openai_server.set_batch_timing(processing=2.0)
    record = stage_round(rt, "draft", members)
    if cancelled:  # scripts/batches.py cancel, part of the way through, then collect
        import time

        assert record["documents"] == dict.fromkeys(ids, "in_flight")
        assert batch_ledger.live_requests(rt.paths)[1], "in flight: committed"
        time.sleep(0.7)  # about one of the three requests is done by then (any number will do)
        batch_commands.cancel(rt, [])
        deadline = time.monotonic() + 20
        while batch_ledger.live_states(rt.paths):
            batch_commands.collect(rt)
            assert time.monotonic() < deadline
            time.sleep(0.05)
    paid = {m.gen_id for m in members
            if ledger.saved_reply(rt.paths, m, documents.document_prompt(rt, m).sha256) is not None}
    expected_paid = {"errored line 503": ids - {one}, "errored line 400": ids - {one}, "expired line": ids - {one},
                     "batch failed validation": set(), "batch expired as a whole": set()}.get(fault, paid)
    assert paid == expected_paid
    lines = ok_lines(rt, "draft")
    assert sorted(r["gen_id"] for r in lines) == sorted(paid), "each reply recorded once, nothing else"
    assert all(r["cost_usd"] == pytest.approx(batch_cost(r["usage"])) for r in lines)
    assert spent(rt) == pytest.approx(sum(r["cost_usd"] for r in lines))
    assert rt.run.counters.snapshot().get("batch_cost_usd", 0.0) == pytest.approx(spent(rt))
    assert batch_ledger.live_requests(rt.paths)[1] == [], "the ended batch commits nothing"
    if not cancelled:
        assert {g for g, state in record["documents"].items() if state == "failed"} == ids - paid
        errors = [json.loads(line) for line in rt.paths.llm_errors_jsonl.read_text().splitlines()] if ids - paid \
            else []
        assert sorted(e["gen_id"] for e in errors) == sorted(ids - paid)

    openai_server.set_batch_timing(processing=0)
    again = Runtime({**rt.config, "batch": {**rt.config["batch"], "max_submissions": 3, "wait": True}})
    assert stage_round(again, "draft", members)["documents"] == dict.fromkeys(ids, "collected")
    assert openai_server.custom_id_counts("openai") == {g: 1 if g in paid else 2 for g in ids}
    total = check_paid_once_per_document(again, members)
    assert rt.run.counters.snapshot().get("batch_cost_usd", 0.0) + \
        again.run.counters.snapshot().get("batch_cost_usd", 0.0) == pytest.approx(total)


def check_paid_once_per_document(rt: Runtime, members) -> float:
    from daydream.batch import ledger as batch_ledger

    lines = ok_lines(rt, members[0].stage)
    assert sorted(r["gen_id"] for r in lines) == sorted(m.gen_id for m in members)
    assert batch_ledger.live_requests(rt.paths)[1] == []
    assert spent(rt) == pytest.approx(sum(r["cost_usd"] for r in lines))
    return spent(rt)


# -- batch mode: a failed parent holds back only its own children's requests ------------------------------
BATCHED_STAGES = {**COHORT, "essay": {"templates": ["essay-from-draft"], "models": ["loop"], "replicates": 1},
                  "evaluation": {"templates": ["novelty-judge"], "models": ["offline_b"], "replicates": 1}}


def drive(rt: Runtime, stages=("draft", "essay")) -> dict[str, BaseException]:
    """A run of the default target without Snakemake, as far as the batch gate goes: the gate
    targets rounds; each round runs once its documents' parents are made (a round waits on every
    parent of its documents, as in the DAG); the documents not held back are made; again until
    nothing changes. The documents that failed, by gen_id."""
    from daydream.batch import gate as batch_gate
    from daydream.batch import rounds

    failed: dict[str, BaseException] = {}
    while True:
        gate = batch_gate.gate(rt)
        progressed = False
        for (stage, round_id), gen_ids in list(rt.run.batches.rounds.items()):
            out = rt.paths.batch_round_path(rt.run.batches.run_id, stage, round_id)
            parents = [rt.membership.member(g).parent_gen_id for g in gen_ids]
            if out.exists() or str(out) not in gate.rounds or any(p in failed for p in parents if p):
                continue
            if all(not p or rt.paths.parsed_path(stages[stages.index(stage) - 1], p).exists() for p in parents):
                rounds.write_round(rt, stage, rt.run.batches.run_id, round_id, str(out))
                progressed = True
        for stage in stages:
            for member in rt.membership.members("tiny", stage):
                if member.gen_id in gate.blocked or member.gen_id in failed:
                    continue
                if rt.paths.parsed_path(stage, member.gen_id).exists():
                    continue
                if member.parent_gen_id and not rt.paths.parsed_path(
                        stages[stages.index(stage) - 1], member.parent_gen_id).exists():
                    continue
                error = make(rt, member)
                if error is not None:
                    failed[member.gen_id] = error
                progressed = True
        if not progressed:
            return failed


PARENT_FAULTS = {"its batch request failed": bad_request("prompt too long"),
                 "its reply is a refusal": reply("I cannot help with that.", finish_reason="content_filter"),
                 "its reply is truncated": reply("A draft cut sh", finish_reason="length")}


@pytest.mark.parametrize("fault", list(PARENT_FAULTS))
def test_a_failed_draft_holds_back_only_its_own_essay_and_the_others_are_submitted_in_the_same_run(
        data_root, cohorts_dir, openai_server, monkeypatch, fault):
    """The probe: one failed draft held the next stage's whole batch back until the next run."""
    rt = batch_runtime(data_root, cohorts_dir, openai_server, monkeypatch, cohort=BATCHED_STAGES,
                       batch={"max_submissions": 1})
    draft_ids = [m.gen_id for m in drafts(rt)]
    bad = draft_ids[0]
    essays = {m.parent_gen_id: m.gen_id for m in rt.membership.members("tiny", "essay")}
    openai_server.on_batch_request(PARENT_FAULTS[fault], where=first_time({bad}))
    failed = drive(rt)
    assert set(failed) == {bad}, failed
    made = {g for g in essays.values() if rt.paths.parsed_path("essay", g).exists()}
    assert made == {essays[d] for d in draft_ids[1:]}, "the other essays are made in the same run"
    counts = openai_server.custom_id_counts("openai")
    assert essays[bad] not in counts and all(counts[essays[d]] == 1 for d in draft_ids[1:])
    assert openai_server.batches_created["openai"] == 2  # the drafts', then the essays'
    assert sorted(r["gen_id"] for r in ok_lines(rt, "essay")) == sorted(made)

    # The next run: a draft without a paid reply is asked again (and its essay follows); a paid
    # draft that cannot be parsed is never paid again, and its essay is never sent.
    again = rerun(rt)
    failed = drive(again)
    counts = openai_server.custom_id_counts("openai")
    if fault == "its batch request failed":
        assert failed == {} and counts[bad] == 2 and counts[essays[bad]] == 1
    else:
        assert set(failed) == {bad} and counts[bad] == 1 and essays[bad] not in counts
    assert all(n <= 2 for n in counts.values()) and set(counts.values()) <= {1, 2}
    assert len(ok_lines(again, "draft")) == len(set(r["gen_id"] for r in ok_lines(again, "draft")))


# -- batch mode: the summary shows the spend ----------------------------------------------------------------
def test_the_summary_of_a_batch_run_shows_its_spend_and_an_interrupted_one_what_is_committed(
        data_root, cohorts_dir, openai_server, monkeypatch, capsys):
    rt = batch_runtime(data_root, cohorts_dir, openai_server, monkeypatch)
    members = drafts(rt)
    stage_round(rt, "draft", members)
    for member in members:
        assert make(rt, member) is None
    cost = sum(r["cost_usd"] for r in ok_lines(rt, "draft"))
    assert cost > 0
    progress.finish(rt, True)
    text = capsys.readouterr().err
    assert f"cost {plan.money(cost)}" in text
    assert f"provider batches: 1 submitted (3 requests), 3 replies collected for {plan.money(cost)}" in text

    # Interrupted while its batch is in flight: nothing collected, the money committed shown.
    openai_server.set_batch_timing(processing=600)
    later = Runtime({**rt.config, "batch": {**rt.config["batch"], "wait": False}})
    evaluations = [m for m in later.membership.members("tiny", "evaluation")]
    for member in later.membership.members("tiny", "essay"):
        assert make(later, member) is None  # copies of the drafts: no call
    later.run.counters.reset()  # as `onstart` does
    stage_round(later, "evaluation", evaluations)
    progress.finish(later, False)
    text = capsys.readouterr().err
    assert f"provider batches: 1 submitted ({len(evaluations)} requests), 0 replies collected for $0.0000" in text
    assert f"{len(evaluations)} requests still in flight, up to $" in text and "committed" in text
    reattached = Runtime(dict(later.config))  # the next run, stopped while it waits: nothing submitted
    stage_round(reattached, "evaluation", evaluations)
    progress.finish(reattached, False)
    assert f"{len(evaluations)} requests still in flight, up to $" in capsys.readouterr().err
