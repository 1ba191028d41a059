"""The stale report in two levels (`daydream.stale`): the documents split into about sqrt(N)
shards by their gen_id, each shard's verdicts written by its own job, and the report joined from
the shard files gives exactly the report worked out document by document."""

import csv
import dataclasses
import json
import re

import pytest

from daydream import cohorts, documents, stale
from tests.conftest import TINY_COHORT, write_cohort


@pytest.fixture
def made(rt):
    """Every document of the tiny cohort, made in-process with the offline model."""
    for member in rt.membership.members("tiny"):
        documents.write_document(rt, member.stage, member.gen_id)
    return rt


def report_rows(rt) -> list[dict]:
    with rt.paths.stale_generations_csv.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def make_stale(rt) -> None:
    """One edited raw.txt (a changed file) and one edited essay template (its essays' prompts)."""
    evaluation = rt.membership.members("tiny", "evaluation")[0]
    raw = rt.paths.raw_path("evaluation", evaluation.gen_id)
    raw.write_text(raw.read_text(encoding="utf-8") + "\nedited by hand\n", encoding="utf-8")
    essay = next(m for m in rt.membership.members("tiny", "essay") if m.template_id != "copy-draft")
    template = rt.paths.template_path("essay", essay.template_id)
    template.write_text(template.read_text(encoding="utf-8") + "\nOne more line.\n", encoding="utf-8")


@pytest.mark.parametrize(("documents", "count"), [(0, 1), (1, 1), (3, 2), (100, 8), (2_000, 32), (10_000, 128),
                                                  (100_000, 256)])
def test_shards_number_about_the_square_root_of_the_documents(documents, count):
    assert stale.shard_count(documents) == count


def test_every_document_is_in_exactly_one_shard_with_its_whole_draft_lineage(rt):
    found = stale.shards(rt)
    members = stale.report_members(rt)
    assert len(found) == stale.shard_count(len(members)) > 1
    assert sorted(m.gen_id for shard in found.values() for m in shard) == sorted(m.gen_id for m in members)
    by_id = {m.gen_id: m for m in members}
    shard_of = {m.gen_id: name for name, shard in found.items() for m in shard}
    names = list(found)
    for member in members:
        draft = member
        while draft.parent_gen_id:
            draft = by_id[draft.parent_gen_id]
        assert draft.stage == "draft"
        assert shard_of[member.gen_id] == shard_of[draft.gen_id] == names[stale.shard_index(draft.gen_id, len(found))]
    assert len({shard_of[m.gen_id] for m in members if m.stage == "draft"}) > 1, "lineages spread over shards"
    assert stale.shard_index("d_2eq0vwmwqv0l9kw4", 8) == stale.shard_index("d_2eq0vwmwqv0l9kw4", 8) < 8
    assert all(re.fullmatch(stale.SHARD_PATTERN, name) for name in found)


def test_a_lineage_is_followed_through_the_parents_that_are_members_only(rt):
    member = stale.report_members(rt)[0]
    draft = dataclasses.replace(member, stage="draft", gen_id="d_a", parent_gen_id="")
    essay = dataclasses.replace(member, stage="essay", gen_id="e_a", parent_gen_id="d_a")
    evaluations = [dataclasses.replace(member, stage="evaluation", gen_id=f"v_{i}", parent_gen_id="e_a")
                   for i in range(3)]
    orphan = dataclasses.replace(member, stage="evaluation", gen_id="v_orphan", parent_gen_id="e_elsewhere")
    assert stale.lineages([*evaluations, orphan, essay, draft]) == {
        "v_0": "d_a", "v_1": "d_a", "v_2": "d_a", "v_orphan": "v_orphan", "e_a": "d_a", "d_a": "d_a"}


def test_a_shard_the_active_cohorts_do_not_have_is_refused_by_name(rt):
    with pytest.raises(ValueError, match=r"stale_shards/9-of-9\.json.*no shard '9-of-9'"):
        stale.write_stale_shard(rt, "9-of-9")


def test_the_report_joined_from_its_shards_is_the_report_worked_out_document_by_document(made):
    make_stale(made)
    stale.write_stale_report(made)
    direct = report_rows(made)
    edited = made.membership.members("tiny", "evaluation")[0].gen_id
    assert {r["reason"] for r in direct} == {r["reason"] for r in direct if r["gen_id"] == edited} | {"template changed"}
    made.paths.stale_generations_csv.unlink()
    shard_files = []
    for shard in stale.shards(made):
        stale.write_stale_shard(made, shard)
        shard_files.append(str(made.paths.stale_shard(shard)))
    assert stale.write_stale_report(made, shard_files=shard_files) == len(direct)
    assert report_rows(made) == direct
    written = [json.loads(open(f, encoding="utf-8").read()) for f in shard_files]
    assert sorted(g for shard in written for g in shard["gen_ids"]) == sorted(m.gen_id for m in
                                                                              stale.report_members(made))


def test_documents_no_given_shard_checked_are_checked_by_the_report_itself(made, data_root, cohorts_dir):
    make_stale(made)
    shard_files = []
    for shard in stale.shards(made):
        stale.write_stale_shard(made, shard)
        shard_files.append(str(made.paths.stale_shard(shard)))
    stale.write_stale_report(made)
    direct = report_rows(made)
    assert direct
    # one shard's file missing or torn: its documents are checked by the report
    made.paths.stale_shard(list(stale.shards(made))[0]).write_text("{", encoding="utf-8")
    stale.write_stale_report(made, shard_files=shard_files[1:] + shard_files[:1])
    assert report_rows(made) == direct
    # a shard file written before a document joined it (its cohort became active later)
    first = json.loads(open(shard_files[1], encoding="utf-8").read())
    dropped = first["gen_ids"].pop()
    first["rows"] = [r for r in first["rows"] if r["gen_id"] != dropped]
    with open(shard_files[1], "w", encoding="utf-8") as handle:
        json.dump(first, handle)
    stale.write_stale_report(made, shard_files=shard_files[1:])
    assert report_rows(made) == direct
    # a document a shard still names that no active cohort has any more is left out
    other = json.loads(open(shard_files[2], encoding="utf-8").read())
    other["rows"].append({**direct[0], "gen_id": "v_not_a_member"})
    other["gen_ids"].append("v_not_a_member")
    with open(shard_files[2], "w", encoding="utf-8") as handle:
        json.dump(other, handle)
    stale.write_stale_report(made, shard_files=shard_files[1:])
    assert report_rows(made) == direct


def test_a_shard_file_of_another_grouping_gives_no_verdict(made):
    """A store's shard files grouped otherwise (before the shards were by draft lineage, or by
    another membership) vouch for no document: each verdict comes from the file of the shard
    that holds the document today, else the report checks the document itself."""
    make_stale(made)
    stale.write_stale_report(made)
    direct = report_rows(made)
    assert direct
    shard_files = []
    for shard in stale.shards(made):
        stale.write_stale_shard(made, shard)
        shard_files.append(str(made.paths.stale_shard(shard)))
    # an old file that says every document is current, named as a shard of today
    members = stale.report_members(made)
    old = {"shard": list(stale.shards(made))[0], "gen_ids": [m.gen_id for m in members], "rows": []}
    old_path = made.paths.stale_shard("0-of-1")
    old_path.write_text(json.dumps(old), encoding="utf-8")
    for order in (shard_files + [str(old_path)], [str(old_path)] + shard_files, [str(old_path)]):
        made.paths.stale_generations_csv.unlink()
        assert stale.write_stale_report(made, shard_files=order) == len(direct)
        assert report_rows(made) == direct
    old["shard"] = "0-of-1"  # a name today's shards do not have
    old_path.write_text(json.dumps(old), encoding="utf-8")
    stale.write_stale_report(made, shard_files=shard_files + [str(old_path)])
    assert report_rows(made) == direct


def test_shards_follow_the_membership_when_it_is_rebuilt(made, cohorts_dir):
    before = stale.shards(made)
    write_cohort(cohorts_dir, "tiny", {**TINY_COHORT, "evaluation": {**TINY_COHORT["evaluation"], "replicates": 3}})
    cohorts.build_cohort(made.paths, "tiny", made.paths.cohort_file("tiny"))
    after = stale.shards(made)
    assert sum(map(len, after.values())) > sum(map(len, before.values()))
    assert sum(map(len, after.values())) == len(stale.report_members(made))


def test_the_default_target_asks_for_documents_through_the_shards_and_for_a_made_shards_missing_files_apart(made):
    from daydream import targets
    from daydream.paths import GEN_FILES

    shard_files = [str(made.paths.stale_shard(s)) for s in stale.shards(made)]
    fresh = targets.document_targets(made, ["tiny"])
    assert fresh == [str(made.paths.stale_generations_csv), *shard_files], "a missing shard asks for its documents"
    for shard in stale.shards(made):
        stale.write_stale_shard(made, shard)
    assert targets.document_targets(made, ["tiny"]) == fresh, "every file there: nothing more"
    # a deleted file of each name, in two shards: one stand-in per shard, asking for exactly those files
    names, shards = list(stale.shards(made)), list(stale.shards(made).values())
    first, second = next(s for s in shards if len(s) >= 3), next(s for s in reversed(shards) if s)
    deleted = [made.paths.gen_dir(m.stage, m.gen_id) / name
               for m, name in zip([*first[:3], second[0]], GEN_FILES, strict=True)]
    for path in deleted:
        path.unlink()
    due = targets.document_targets(made, ["tiny"])[len(fresh):]
    assert [path.rsplit("/", 1)[1].rsplit("-", 1)[0] for path in due] == \
        [names[shards.index(first)], names[shards.index(second)]]
    asked = [targets.documents_due_inputs(made, *path.rsplit("/", 1)[1].removesuffix(".txt").rsplit("-", 1))
             for path in due]
    assert asked == [[str(p) for p in deleted[:3]], [str(deleted[3])]]
    # a second file of a document with one missing: the same stand-in, asking for one file of it (its one
    # job makes all four)
    (made.paths.gen_dir(first[0].stage, first[0].gen_id) / GEN_FILES[3]).unlink()
    assert targets.document_targets(made, ["tiny"])[len(fresh):] == due
    assert targets.first_missing(made, first[0]) == str(deleted[0])
    untouched = next(m for shard in shards for m in shard if m not in [*first[:3], second[0]])
    assert targets.first_missing(made, untouched) is None
    # a shard not made yet asks for its own documents' files when it runs (prompt.txt too)
    made.paths.stale_shard(names[shards.index(second)]).unlink()
    assert len(targets.document_targets(made, ["tiny"])) == len(fresh) + 1
    assert str(deleted[0]) in targets.stale_shard_inputs(made, names[shards.index(first)])
    with pytest.raises(ValueError, match=r"documents_due/0-of-8-0123456789ab\.txt: no group .* run `snakemake`"):
        targets.documents_due_inputs(made, "0-of-8", "0123456789ab")

