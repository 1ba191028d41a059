"""The membership index: rows by gen_id and by cohort, reloaded when the checkpoint rewrites
them, and light enough for 100,000 members (every repeated value kept once)."""

from __future__ import annotations

import csv
import dataclasses
import os

import pytest

from daydream.membership import Member, MembershipIndex, UnknownGenerationError
from daydream.paths import Paths

FIELDS = [f.name for f in dataclasses.fields(Member)]


def write_membership(paths: Paths, cohort_id: str, rows: list[dict]) -> None:
    path = paths.membership_csv(cohort_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def evaluations(count: int, cohort_id: str = "bench") -> list[dict]:
    return [{"stage": "evaluation", "gen_id": f"v_{i:04x}", "cohort_id": cohort_id, "parent_gen_id": f"e_{i // 4:04x}",
             "combo_id": "c_0001", "template_id": "novelty-judge", "llm_model_id": "offline_a", "replicate": i % 2 + 1}
            for i in range(count)]


def test_members_are_the_rows_and_share_every_repeated_value(tmp_path):
    paths = Paths.from_str(tmp_path / "data", tmp_path / "cohorts")
    write_membership(paths, "bench", evaluations(8))
    index = MembershipIndex(paths, ["bench"])

    members = index.members("bench")
    assert [m.gen_id for m in members] == [f"v_{i:04x}" for i in range(8)]
    assert index.member("v_0005") == Member("evaluation", "v_0005", "bench", "e_0001", "c_0001", "novelty-judge",
                                            "offline_a", 2)
    # one string object per distinct value across rows, not one per row
    for field in ("stage", "cohort_id", "combo_id", "template_id", "llm_model_id"):
        assert len({id(getattr(m, field)) for m in members}) == 1, field
    assert len({id(m.parent_gen_id) for m in members}) == 2
    assert not hasattr(members[0], "__dict__")  # slots: no dict per member


def test_the_index_reloads_a_rewritten_membership_and_names_an_unknown_gen_id(tmp_path):
    paths = Paths.from_str(tmp_path / "data", tmp_path / "cohorts")
    write_membership(paths, "bench", evaluations(2))
    index = MembershipIndex(paths, ["bench"])
    assert len(index.members("bench", "evaluation")) == 2

    write_membership(paths, "bench", evaluations(3))
    stamp = paths.membership_csv("bench").stat().st_mtime_ns + 1_000_000
    os.utime(paths.membership_csv("bench"), ns=(stamp, stamp))  # a rewrite within the same clock tick
    assert index.member("v_0002").parent_gen_id == "e_0000"
    with pytest.raises(UnknownGenerationError, match="v_0009 is in no active cohort's membership"):
        index.member("v_0009")


def test_lineage_reads_the_loaded_index_and_loads_or_refuses_a_gen_id_it_does_not_hold(tmp_path):
    paths = Paths.from_str(tmp_path / "data", tmp_path / "cohorts")
    write_membership(paths, "bench", evaluations(2))
    index = MembershipIndex(paths, ["bench"])
    assert index.lineage("v_0001") == index.member("v_0001")  # loads on first use, as `member` does

    write_membership(paths, "bench", evaluations(6))
    stamp = paths.membership_csv("bench").stat().st_mtime_ns + 1_000_000
    os.utime(paths.membership_csv("bench"), ns=(stamp, stamp))
    assert index.lineage("v_0005").parent_gen_id == "e_0001"  # not held: the rewritten file is read
    with pytest.raises(UnknownGenerationError, match="v_0009 is in no active cohort's membership"):
        index.lineage("v_0009")
