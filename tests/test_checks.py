"""The tail reuses what the document jobs checked (`daydream.checks`): the stale report and the
reports' flags read no file and render no prompt of an untouched document, and every edit is
still caught with the records in place: raw.txt, parsed.txt, metadata.json and the saved reply
edited in place to the same size with their mtime set back, a template, a concept text or a
concept's name changed."""

import csv
import hashlib
import json
import os
import shutil

import pytest

from daydream import checks, cohorts, documents, integrity, prompts, stale, targets
from daydream.runtime import Runtime


def runtime(data_root, cohorts_dir) -> Runtime:
    return Runtime({"data_root": str(data_root), "cohorts_dir": str(cohorts_dir), "cohorts": ["tiny"], "offline": True})


@pytest.fixture
def made(data_root, cohorts_dir):
    """Every document of the tiny cohort, made in-process with the offline model (each job leaves
    its record)."""
    rt = runtime(data_root, cohorts_dir)
    cohorts.build_cohort(rt.paths, "tiny", rt.paths.cohort_file("tiny"))
    for member in rt.membership.members("tiny"):
        documents.write_document(rt, member.stage, member.gen_id)
    return rt


@pytest.fixture
def counted(monkeypatch):
    """Counts of prompts rendered and documents checked by content, wherever the tail does it."""
    counts = {"renders": 0, "content": 0}
    render, change = stale.build_prompt, integrity.document_change

    def counting_render(files):
        counts["renders"] += 1
        return render(files)

    def counting_change(*args, **kwargs):
        counts["content"] += 1
        return change(*args, **kwargs)

    monkeypatch.setattr(stale, "build_prompt", counting_render)
    monkeypatch.setattr(integrity, "document_change", counting_change)
    return counts


def rows_by_gen_id(rt, check=None) -> dict[str, str]:
    return {row["gen_id"]: row["reason"] for row in stale.stale_rows(rt, check)}


def without_records(rt) -> dict[str, str]:
    """The stale report as it was before records: every file read, every prompt rendered."""
    return {m.gen_id: (stale.check_member(rt, m, stale.StaleCheck(rt, records={})) or {}).get("reason", "")
            for m in rt.membership.members("tiny")}


def edit_in_place(path, old: bytes, new: bytes) -> None:
    """Replace `old` by `new` (the same length) inside the file, in place (same inode), then set
    its atime and mtime back: only its ctime tells."""
    assert len(old) == len(new)
    before = path.stat()
    data = path.read_bytes()
    assert old in data, (path, old)
    with path.open("r+b") as handle:
        handle.write(data.replace(old, new, 1))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)


def test_every_document_job_leaves_a_record_that_holds(made):
    records = checks.load(made.paths)
    members = made.membership.members("tiny")
    assert set(records) == {m.gen_id for m in members}
    reuse = checks.Reuse(made.paths)
    assert all(reuse.valid(m.stage, m.gen_id) is not None for m in members)
    copy = next(m for m in members if m.template_id == "copy-draft")
    assert checks.REPLY not in records[copy.gen_id]["files"], "a copy has no saved reply"


def test_an_untouched_store_is_reported_without_a_file_read_or_a_prompt_rendered(made, counted):
    check = stale.StaleCheck(made)
    assert rows_by_gen_id(made, check) == {}
    members = made.membership.members("tiny")
    assert (check.documents.used, check.documents.checked, check.rendered) == (len(members), 0, 0)
    evaluations = [m.gen_id for m in made.membership.members("tiny", "evaluation")]
    assert integrity.evaluation_flags(made.paths, evaluations) == [""] * len(evaluations)
    assert counted == {"renders": 0, "content": 0}


def test_the_records_give_the_same_report_as_reading_everything(made, counted):
    """Edits of every kind at once: the report with records equals the report without."""
    evaluation, essay = made.membership.members("tiny", "evaluation")[0], made.membership.members("tiny", "essay")[0]
    made.paths.raw_path("evaluation", evaluation.gen_id).write_text("SCORE: 1")
    made.paths.parsed_path("essay", essay.gen_id).write_text("another essay")
    concept = made.paths.raw_root / "concepts" / "descriptions-paragraph" / "weak-ties.txt"
    concept.write_text(concept.read_text() + "\nA sentence added later.\n")
    with_records = rows_by_gen_id(made)
    assert with_records == {g: r for g, r in without_records(made).items() if r}
    assert any("raw.txt differs" in r for r in with_records.values())
    assert any("parent changed" in r for r in with_records.values())
    assert any(r == "concepts changed" for r in with_records.values())


@pytest.mark.parametrize("name", ["raw.txt", "parsed.txt", "metadata.json", "reply"])
def test_a_same_size_edit_with_its_mtime_set_back_is_caught(made, counted, name):
    evaluation = made.membership.members("tiny", "evaluation")[0]
    paths, gen_id = made.paths, evaluation.gen_id
    meta = json.loads(paths.metadata_path("evaluation", gen_id).read_text())
    reply_text = json.loads(paths.reply_path("evaluation", gen_id, meta["prompt_sha256"]).read_text())["text"]
    reply_start = json.dumps(reply_text)[1:5].encode()
    assert reply_start != reply_start[::-1]
    target, old, new = {
        "raw.txt": (paths.raw_path("evaluation", gen_id), b"SCORE", b"SCORF"),
        "parsed.txt": (paths.parsed_path("evaluation", gen_id), paths.parsed_path("evaluation", gen_id).read_bytes()[:1],
                       b"1" if paths.parsed_path("evaluation", gen_id).read_bytes()[:1] != b"1" else b"2"),
        "metadata.json": (paths.metadata_path("evaluation", gen_id), b'"finish_reason": "stop"',
                          b'"finish_reason": "stoq"'),
        "reply": (paths.reply_path("evaluation", gen_id, meta["prompt_sha256"]), b'"text": "' + reply_start,
                  b'"text": "' + reply_start[::-1]),
    }[name]
    edit_in_place(target, old, new)
    reason = rows_by_gen_id(made)[gen_id]
    expected = {"raw.txt": integrity.RAW_DIFFERS, "parsed.txt": integrity.PARSED_DIFFERS,
                "metadata.json": integrity.METADATA_DIFFERS, "reply": integrity.RAW_DIFFERS}[name]
    assert reason.startswith(expected), reason
    flags = integrity.evaluation_flags(paths, [gen_id])
    assert flags[0].startswith(f"{'raw.txt' if name == 'reply' else name} changed: evaluation {gen_id}")
    assert counted["content"] >= 1 and counted["renders"] == 0, "only the edited document is read, none rendered"


def test_a_template_edit_of_the_same_size_and_mtime_marks_its_documents_stale(made, counted):
    template = made.paths.template_path("draft", "idea-sketch")
    text = template.read_bytes()
    old = next(word for word in text.split() if word.isalpha() and len(word) > 3)
    edit_in_place(template, old, old[::-1] if old[::-1] != old else old.upper())
    drafts = {m.gen_id for m in made.membership.members("tiny", "draft")}
    check = stale.StaleCheck(made)
    reasons = rows_by_gen_id(made, check)
    assert {g for g, r in reasons.items() if r == "template changed"} == drafts
    assert check.rendered == len(drafts), "only the documents of the edited template are rendered again"


def test_a_concept_renamed_in_the_concept_table_marks_its_drafts_stale(made, data_root, cohorts_dir):
    table = made.paths.concepts_metadata_csv
    with table.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        if row["concept_id"] == "weak-ties":
            row["name"] = row["name"] + " (renamed)"
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    rt = runtime(data_root, cohorts_dir)
    if not any(c.name.endswith("(renamed)") for m in rt.membership.members("tiny", "draft")
               for c in documents.prompt_files(rt, m).concepts):
        pytest.skip("the draft templates do not name concepts")
    reasons = rows_by_gen_id(rt)
    renamed = {m.gen_id for m in rt.membership.members("tiny", "draft")
               if any(c.concept_id == "weak-ties" for c in documents.prompt_files(rt, m).concepts)}
    rendered_with_name = {g for g in renamed
                          if "(renamed)" in prompts.build_prompt(documents.prompt_files(rt, rt.membership.member(g))).text}
    assert rendered_with_name, "the prompt shows the concept's name"
    assert {g for g, r in reasons.items() if r == "prompt changed"} == rendered_with_name


def test_a_lost_or_torn_record_file_costs_a_content_check_not_a_missed_edit(made, counted):
    evaluation = made.membership.members("tiny", "evaluation")[0]
    edit_in_place(made.paths.raw_path("evaluation", evaluation.gen_id), b"SCORE", b"SCORF")
    made.paths.document_checks_jsonl.write_text('{"gen_id": "torn')
    check = stale.StaleCheck(made)
    assert rows_by_gen_id(made, check)[evaluation.gen_id].startswith(integrity.RAW_DIFFERS)
    assert check.documents.checked == len(made.membership.members("tiny"))


def test_the_stale_report_keeps_what_it_checked_by_content_for_the_next(made, counted, data_root):
    """A store copied elsewhere (new inodes) is read once; the report leaves records, and the
    next report reads nothing again. An edit made by hand after that is caught again."""
    stale.write_stale_report(made)
    shutil.rmtree(made.paths.reporting_dir)
    made.paths.reporting_dir.mkdir()
    stale.write_stale_report(made)
    assert counted["content"] == len(made.membership.members("tiny"))
    assert counted["renders"] == len(made.membership.members("tiny"))
    again = stale.StaleCheck(made)
    assert rows_by_gen_id(made, again) == {}
    assert (again.documents.checked, again.rendered) == (0, 0)
    essay = made.membership.members("tiny", "essay")[0]
    edit_in_place(made.paths.raw_path("essay", essay.gen_id), b"e", b"E")
    assert rows_by_gen_id(made)[essay.gen_id].startswith(integrity.RAW_DIFFERS)


def test_the_stale_shards_list_every_documents_files_and_the_report_and_reports_follow_them(rt):
    shards = stale.shards(rt)
    listed = [set(targets.stale_shard_inputs(rt, shard)) for shard in shards]
    members = rt.membership.members("tiny")
    for member in members:
        folder = rt.paths.gen_dir(member.stage, member.gen_id)
        own = {str(folder / name) for name in ("raw.txt", "parsed.txt", "metadata.json")}
        assert [shard for shard, files in zip(shards, listed, strict=True) if own <= files] \
            == [name for name, held in shards.items() if member in held]
    report = targets.stale_report_inputs(rt)
    assert report["shards"] == [str(rt.paths.stale_shard(shard)) for shard in shards]
    gens = str(rt.paths.gens_root)
    for inputs in (report, targets.cohort_report_inputs(rt, "tiny"), targets.site_inputs(rt, "tiny")):
        assert inputs is report or inputs["stale"] == str(rt.paths.stale_generations_csv)
        listed = [f for value in inputs.values() for f in ([value] if isinstance(value, str) else value)]
        assert not [f for f in listed if f.startswith(gens)], "no per-document input: the shards order them"


def test_outputs_touched_after_their_job_are_hashed_once_not_checked_again(made, counted):
    """Snakemake touches every output after its job: the records still hold (each file hashed
    against its recorded SHA-256) and the report keeps the new stat keys for the next one."""
    members = made.membership.members("tiny")
    for member in members:
        for name in ("raw.txt", "parsed.txt", "metadata.json", "prompt.txt"):
            os.utime(made.paths.gen_dir(member.stage, member.gen_id) / name, None)
    first = stale.StaleCheck(made)
    assert rows_by_gen_id(made, first) == {}
    assert (first.documents.used, first.documents.checked, first.documents.reuse.rehashed) == (len(members), 0,
                                                                                               len(members))
    first.documents.reuse.save()
    again = stale.StaleCheck(made)
    assert rows_by_gen_id(made, again) == {}
    assert (again.documents.used, again.documents.reuse.rehashed) == (len(members), 0)
    assert counted == {"renders": 0, "content": 0}


@pytest.mark.parametrize("name", ["raw.txt", "parsed.txt", "metadata.json"])
@pytest.mark.parametrize("when", ["before Snakemake's touch", "after it, then touched again"])
def test_a_same_size_edit_around_snakemakes_touch_is_caught(made, counted, name, when):
    """Snakemake's touch (`os.utime(path, None)`) leaves the size and inode and sets atime, mtime
    and ctime to one instant, as it would after no edit: a file whose times moved since its
    record is hashed, never taken from its size, inode or the shape of its times."""
    evaluation = made.membership.members("tiny", "evaluation")[0]
    path = made.paths.gen_dir("evaluation", evaluation.gen_id) / name
    first = path.read_bytes()[:1]
    old, new = {"raw.txt": (b"SCORE", b"SCORF"), "parsed.txt": (first, b"1" if first != b"1" else b"2"),
                "metadata.json": (b'"finish_reason": "stop"', b'"finish_reason": "stoq"')}[name]
    if when == "before Snakemake's touch":
        edit_in_place(path, old, new)
        os.utime(path, None)
    else:
        os.utime(path, None)
        edit_in_place(path, old, new)
        os.utime(path, None)
    touched = path.stat()
    assert touched.st_atime_ns == touched.st_mtime_ns and touched.st_mtime_ns <= touched.st_ctime_ns
    assert checks.load(made.paths)[evaluation.gen_id]["files"][name][0::3] == [touched.st_size, touched.st_ino]
    reason = rows_by_gen_id(made)[evaluation.gen_id]
    assert reason.startswith({"raw.txt": integrity.RAW_DIFFERS, "parsed.txt": integrity.PARSED_DIFFERS,
                              "metadata.json": integrity.METADATA_DIFFERS}[name]), reason


def test_a_file_is_hashed_against_its_stat_key_only_while_it_is_that_file(tmp_path):
    """`keyed_sha256`: the content's SHA-256 while the file read has the given stat key, None when
    it was written, replaced, grown or removed since the key was taken."""
    path = tmp_path / "raw.txt"
    path.write_bytes(b"SCORE: 7\n")
    key = checks.stat_key(str(path))
    assert checks.keyed_sha256(str(path), key) == hashlib.sha256(b"SCORE: 7\n").hexdigest()
    assert checks.file_sha256(str(path)) == hashlib.sha256(b"SCORE: 7\n").hexdigest()
    probe = tmp_path / "probe"
    while not probe.exists() or probe.stat().st_ctime_ns <= key[2]:  # the clock's next tick: the ctime moves
        probe.write_bytes(b"")
    edit_in_place(path, b"7", b"8")  # same size, mtime set back: only the ctime moved
    assert checks.keyed_sha256(str(path), key) is None
    key = checks.stat_key(str(path))
    replaced = tmp_path / "new.txt"
    replaced.write_bytes(b"SCORE: 8\n")
    os.replace(replaced, path)
    assert checks.keyed_sha256(str(path), key) is None
    key = checks.stat_key(str(path))
    with path.open("ab") as handle:
        handle.write(b"more")
    assert checks.keyed_sha256(str(path), key) is None
    assert checks.keyed_sha256(str(path), checks.stat_key(str(path))) == hashlib.sha256(b"SCORE: 8\nmore").hexdigest()
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert checks.keyed_sha256(str(empty), checks.stat_key(str(empty))) == hashlib.sha256(b"").hexdigest()
    path.unlink()
    assert checks.keyed_sha256(str(path), key) is None and checks.file_sha256(str(path)) is None


def test_the_record_file_is_parsed_once_per_process_then_only_its_new_lines(made, monkeypatch):
    """Every stale-report shard of a run reads the records: each line is parsed once, and a
    file replaced, emptied, or rewritten in place up to where it was read, is read again from
    its start."""
    parsed = []
    record_of = checks._record_of
    monkeypatch.setattr(checks, "_record_of", lambda line: parsed.append(line) or record_of(line))
    documents_made = len(made.membership.members("tiny"))
    records = checks.load(made.paths)
    assert len(records) == len(parsed) == documents_made
    assert checks.load(made.paths) == records and len(parsed) == documents_made
    gen_id, first = next(iter(records.items()))
    checks.append(made.paths, [{**first, "change": "edited"}])
    assert checks.load(made.paths)[gen_id]["change"] == "edited" and len(parsed) == documents_made + 1
    checks.compact(made.paths, records)  # a new file: read whole
    assert checks.load(made.paths)[gen_id]["change"] is None and len(parsed) == 2 * documents_made + 1
    path = made.paths.document_checks_jsonl
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    with path.open("r+", encoding="utf-8") as handle:  # rewritten in place, longer: same inode
        handle.write("".join([lines[-1], *lines[1:-1], lines[0], lines[1]]))
    assert checks.load(made.paths) == records and len(parsed) == 3 * documents_made + 2
    path.write_text("", encoding="utf-8")
    assert checks.load(made.paths) == {}
