"""The per-document job: one prompt build, one payment, metadata checked, raw.txt never lost."""

import json

import pytest

from daydream import documents, ledger, store
from daydream.calls import Completion
from daydream.columns import METADATA_KEYS
from daydream.prompts import sha256_text
from tests.conftest import calls_made, first_draft


def test_a_document_job_writes_all_four_files_from_one_prompt(rt):
    member = first_draft(rt)
    documents.write_document(rt, member.stage, member.gen_id)
    assert rt.paths.parsed_path(member.stage, member.gen_id).read_text().strip()
    prompt = rt.paths.prompt_path(member.stage, member.gen_id).read_text()
    meta = json.loads(rt.paths.metadata_path(member.stage, member.gen_id).read_text())
    assert tuple(sorted(meta)) == tuple(sorted(METADATA_KEYS))
    assert meta["prompt_sha256"] == sha256_text(prompt) and set(meta["prompt_sources"]) == {"template", "concepts"}
    assert meta["model"] == "offline/daydream-offline-a" and meta["cost_usd"] == 0.0
    assert rt.paths.raw_path(member.stage, member.gen_id).read_text().startswith("<thinking>")


def test_a_copy_makes_no_call_and_its_prompt_is_the_parents_text(rt):
    draft = first_draft(rt)
    documents.write_document(rt, draft.stage, draft.gen_id)
    copy = next(m for m in rt.membership.members("tiny", "essay")
                if m.parent_gen_id == draft.gen_id and m.template_id == "copy-draft")
    documents.write_document(rt, copy.stage, copy.gen_id)
    parsed = rt.paths.parsed_path(draft.stage, draft.gen_id).read_text()
    assert rt.paths.raw_path(copy.stage, copy.gen_id).read_text() == parsed
    assert json.loads(rt.paths.metadata_path(copy.stage, copy.gen_id).read_text())["mode"] == "copy"
    assert [c["gen_id"] for c in calls_made(rt)] == [draft.gen_id]


def test_a_failed_parse_keeps_raw_and_records_the_reason(rt):
    member = first_draft(rt)
    prompt = documents.document_prompt(rt, member)
    usage = {"prompt_tokens": 1, "completion_tokens": 5, "total_tokens": 6}
    ledger.save_reply(rt.paths, member, prompt, Completion("no idea blocks at all", "offline/m", "stop", usage,
                                                           0.0, 0.1, 1, 0.9, 4096))
    with pytest.raises(documents.DocumentError, match="no <essay-idea> block"):
        documents.write_document(rt, member.stage, member.gen_id)
    assert rt.paths.raw_path(member.stage, member.gen_id).read_text() == "no idea blocks at all"
    assert not calls_made(rt), "the saved reply was parsed, no call was made"
    assert rt.paths.raw_path(member.stage, member.gen_id).exists()
    assert not rt.paths.parsed_path(member.stage, member.gen_id).exists()
    record = json.loads(rt.paths.parse_errors_jsonl.read_text().splitlines()[-1])
    assert record["gen_id"] == member.gen_id and record["raw_tail"] == "no idea blocks at all"


def test_metadata_that_does_not_fit_its_schema_is_never_written(rt):
    with pytest.raises(store.MetadataError, match="'replicate' is a required property"):
        store.write_metadata(rt.paths, "draft", "d_x", {k: "" for k in METADATA_KEYS if k != "replicate"})
    assert not rt.paths.metadata_path("draft", "d_x").exists()


def test_a_draft_shorter_than_min_lines_fails_its_parse_and_keeps_raw(rt):
    member = first_draft(rt)
    short = '<essay-idea stage="1">\nOne idea.\nStated twice.\n</essay-idea>\n'
    usage = {"prompt_tokens": 1, "completion_tokens": 8, "total_tokens": 9}
    ledger.save_reply(rt.paths, member, documents.document_prompt(rt, member),
                      Completion(short, "offline/m", "stop", usage, 0.0, 0.1, 1, 0.9, 4096))
    with pytest.raises(documents.DocumentError, match=r"the parsed draft has 2 non-empty line\(s\), fewer than the 3"):
        documents.write_document(rt, member.stage, member.gen_id)
    assert rt.paths.raw_path(member.stage, member.gen_id).read_text() == short
    assert not rt.paths.parsed_path(member.stage, member.gen_id).exists()
    assert "parsing.min_lines.draft" in json.loads(rt.paths.parse_errors_jsonl.read_text().splitlines()[-1])["reason"]


def test_each_document_log_holds_its_own_call_and_what_was_saved_even_in_threads(rt, tmp_path):  # noqa: F811
    from concurrent.futures import ThreadPoolExecutor

    drafts = rt.membership.members("tiny", "draft")[:4]
    logs = {m.gen_id: tmp_path / "logs" / f"{m.gen_id}.log" for m in drafts}
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda m: documents.write_document(rt, m.stage, m.gen_id, str(logs[m.gen_id])), drafts))
    for gen_id, path in logs.items():
        text = path.read_text()
        assert f"call gen_id={gen_id} " in text and f"saved {rt.paths.gen_dir('draft', gen_id)}" in text, text
        assert all(other not in text for other in logs if other != gen_id), text


def test_a_failed_document_log_says_why(rt, tmp_path):  # noqa: F811
    member = first_draft(rt)
    prompt = documents.document_prompt(rt, member)
    usage = {"prompt_tokens": 1, "completion_tokens": 5, "total_tokens": 6}
    ledger.save_reply(rt.paths, member, prompt, Completion("no idea blocks at all", "offline/m", "stop", usage,
                                                           0.0, 0.1, 1, 0.9, 4096))
    log_path = tmp_path / "doc.log"
    with pytest.raises(documents.DocumentError):
        documents.write_document(rt, member.stage, member.gen_id, str(log_path))
    text = log_path.read_text()
    assert "reusing saved reply" in text and "failed: DocumentError" in text and "no <essay-idea> block" in text


def test_offline_replicates_of_one_evaluation_differ_by_replicate(data_root, cohorts_dir):
    from daydream import cohorts
    from daydream.runtime import Runtime
    from tests.conftest import TINY_COHORT, write_cohort

    write_cohort(cohorts_dir, "reps", {**TINY_COHORT, "evaluation": {**TINY_COHORT["evaluation"], "replicates": 3}})
    runtime = Runtime({"data_root": str(data_root), "cohorts_dir": str(cohorts_dir), "cohorts": ["reps"],
                       "offline": True})
    cohorts.build_cohort(runtime.paths, "reps", runtime.paths.cohort_file("reps"))
    for stage in ("draft", "essay", "evaluation"):
        for member in runtime.membership.members("reps", stage):
            documents.write_document(runtime, member.stage, member.gen_id)
    evaluations = runtime.membership.members("reps", "evaluation")
    by_task: dict = {}
    for m in evaluations:
        key = (m.parent_gen_id, m.template_id, m.llm_model_id)
        by_task.setdefault(key, {})[m.replicate] = runtime.paths.raw_path(m.stage, m.gen_id).read_text()
    assert len(by_task) == 24 and all(sorted(texts) == [1, 2, 3] for texts in by_task.values())
    assert all(len(set(texts.values())) == 3 for texts in by_task.values())  # same prompt, three replies
    scores = [{t.splitlines()[-1] for t in texts.values()} for texts in by_task.values()]
    assert sum(len(s) > 1 for s in scores) >= 18  # the scores vary by replicate too


def test_a_documents_input_is_the_parent_file_its_prompt_is_made_from(rt):
    members = rt.membership.members("tiny")
    assert {m.stage for m in members} == {"draft", "essay", "evaluation"}
    for member in members:
        parent = documents.prompt_files(rt, member).parent
        assert documents.parent_file(rt, member) == (None if parent is None else str(parent))
    assert all(documents.parent_file(rt, m) is None for m in members if m.stage == "draft")


class Killed(BaseException):
    """A kill (not an Exception: nothing may catch it)."""


# A draft job's atomic writes, in order: prompt.txt, its saved reply, raw.txt, metadata.json, parsed.txt.
WRITES = ("prompt.txt", "reply", "raw.txt", "metadata.json", "parsed.txt")


@pytest.mark.parametrize("killed_at", WRITES)
def test_a_kill_at_each_write_leaves_whole_files_and_the_rerun_records_what_is_on_disk(rt, monkeypatch, killed_at):
    """A kill as the job renames a file into place: its temp file stays (a killed process cleans
    nothing up), every file in place is whole, the next run clears the temp file, pays for no
    reply it saved, and its check record holds the SHA-256 of each file as it is on disk."""
    import hashlib
    import os

    from daydream import checks

    member = first_draft(rt)
    folder = rt.paths.gen_dir(member.stage, member.gen_id)
    renamed = []
    real_replace = os.replace

    def replace(source, target):
        renamed.append(target)
        if len(renamed) == WRITES.index(killed_at) + 1:
            monkeypatch.setattr(os, "unlink", lambda path: (_ for _ in ()).throw(OSError("killed")))
            raise Killed
        return real_replace(source, target)

    with monkeypatch.context() as patched:
        patched.setattr(os, "replace", replace)
        with pytest.raises(Killed):
            documents.write_document(rt, member.stage, member.gen_id)
        monkeypatch.undo()
    assert [p.name for p in folder.rglob("*.tmp")], "the temp file of the write killed is left"
    assert all(os.fspath(p).endswith(tuple(WRITES[:WRITES.index(killed_at)]) + (".json",)) or p.is_dir()
               for p in folder.rglob("*") if not p.name.endswith(".tmp"))
    store._new_token()  # the rerun is another process: the killed one's temp files are not live writes
    documents.write_document(rt, member.stage, member.gen_id)
    assert not list(folder.rglob("*.tmp"))
    paid = [c for c in calls_made(rt) if c["outcome"] == "ok"]
    assert len(paid) == 1  # a reply is paid once (a kill while it is saved spills it first: ledger.save_reply)
    record = checks.load(rt.paths)[member.gen_id]
    for name in checks.FILES:
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == record["sha256"][name]
    assert record["files"] == checks.file_keys(rt.paths, member.stage, member.gen_id, record["meta"]["prompt_sha256"])
