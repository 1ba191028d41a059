import json
import os

import pytest

from daydream import store
from daydream.paths import Paths


def test_atomic_write_replaces_the_file_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "gens" / "draft" / "d_x" / "raw.txt"
    store.write_text_atomic(target, "first")
    store.write_text_atomic(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["raw.txt"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~store._UMASK)


def test_a_failed_write_keeps_the_old_file_and_removes_the_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "raw.txt"
    store.write_text_atomic(target, "paid for")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.write_text_atomic(target, "half")
    assert target.read_text() == "paid for"
    assert [p.name for p in tmp_path.iterdir()] == ["raw.txt"]


def test_load_generation_returns_every_file_and_none_for_absent_ones(tmp_path):
    paths = Paths.from_str(tmp_path / "data")
    store.write_text_atomic(paths.prompt_path("essay", "e_1"), "prompt")
    store.write_text_atomic(paths.raw_path("essay", "e_1"), "raw")
    store.write_json_atomic(paths.metadata_path("essay", "e_1"), {"gen_id": "e_1"})
    loaded = store.load_generation(paths.gens_root, "essay", "e_1")
    assert loaded == {"prompt_text": "prompt", "raw_text": "raw", "parsed_text": None,
                      "metadata": {"gen_id": "e_1"}}


def test_paths_follow_the_spec_layout():
    paths = Paths.from_str("data")
    assert str(paths.parsed_path("evaluation", "v_1")) == "data/gens/evaluation/v_1/parsed.txt"
    assert str(paths.membership_csv("pilot")) == "data/cohorts/pilot/membership.csv"
    assert str(paths.template_path("draft", "t1")) == "data/1_raw/templates/draft/t1.txt"
    assert str(paths.description_path("sentence", "c")) == "data/1_raw/concepts/descriptions-sentence/c.txt"
    assert str(paths.cohort_report("p", "parsing/aggregated_scores.csv")) == \
        "data/cohorts/p/reports/parsing/aggregated_scores.csv"


def test_concepts_metadata_is_also_found_where_the_original_kept_it(tmp_path):
    nested = tmp_path / "1_raw" / "concepts" / "concepts_metadata.csv"
    nested.parent.mkdir(parents=True)
    nested.write_text("concept_id,name\n")
    assert Paths(tmp_path).concepts_metadata_csv == nested


def test_jsonl_appends_one_line_per_record(tmp_path):
    log = tmp_path / "7_reporting" / "x.jsonl"
    for i in range(3):
        store.append_jsonl(log, {"i": i})
    assert [json.loads(line)["i"] for line in log.read_text().splitlines()] == [0, 1, 2]


def test_temp_files_left_by_a_killed_write_are_cleared_but_complete_files_kept(tmp_path):
    folder = tmp_path / "gens" / "draft" / "d_x"
    store.write_text_atomic(folder / "raw.txt", "paid")
    (folder / ".prompt.txt.abc123.tmp").write_text("half a prom")
    (folder / ".replies").mkdir()
    (folder / ".replies" / ".0123.json.xyz.tmp").write_text("{")
    assert store.clear_temp_files(folder) == 2
    assert sorted(p.name for p in folder.rglob("*")) == [".replies", "raw.txt"]
