import hashlib
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
    meta = {"stage": "essay", "gen_id": "e_1", "parent_gen_id": "d_1", "combo_id": "c", "model_id": "m",
            "replicate": 2, "prompt_sha256": "0" * 64}
    store.write_json_atomic(paths.metadata_path("essay", "e_1"), meta)
    loaded = store.load_generation(paths.gens_root, "essay", "e_1")
    assert loaded == {"prompt_text": "prompt", "raw_text": "raw", "parsed_text": None, "metadata": meta}
    assert store.load_generation(paths.gens_root, "essay", "e_2") == {
        "prompt_text": None, "raw_text": None, "parsed_text": None, "metadata": None}


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


def test_a_temp_file_this_process_is_writing_is_not_cleared(tmp_path):
    """The call engine saves a document's reply while its job starts and clears the folder."""
    folder = tmp_path / "gens" / "evaluation" / "v_x"
    (folder / ".replies").mkdir(parents=True)
    live = folder / ".replies" / f".0123.json.{store._TOKEN}7.tmp"
    live.write_text("{")
    (folder / ".replies" / ".0123.json.1-deadbeef-7.tmp").write_text("{")
    assert store.clear_temp_files(folder) == 1
    assert [p.name for p in (folder / ".replies").iterdir()] == [live.name]


def test_a_folder_without_a_ledger_is_cleared_with_one_listing_and_a_missing_folder_with_none(tmp_path,
                                                                                               monkeypatch):
    folder = tmp_path / "gens" / "draft" / "d_x"
    listed = []
    real = os.scandir
    monkeypatch.setattr(os, "scandir", lambda where: listed.append(os.fspath(where)) or real(where))
    assert store.clear_temp_files(folder) == 0 and listed == [str(folder)]
    folder.mkdir(parents=True)
    (folder / ".raw.txt.1-dead-2.tmp").write_text("half")
    assert store.clear_temp_files(folder) == 1 and listed == [str(folder)] * 2


def _random_value(rng, depth=0):
    """A JSON-like value: what records are made of, with the odd cases json.dumps has rules for."""
    scalars = [lambda: rng.choice(["", "a", "é", "\u2028", "\ud800", "quote\"back\\slash\n\t\x00", "日本"]),
               lambda: rng.randint(-2**70, 2**70), lambda: rng.choice([0, 1, -1, True, False, None]),
               lambda: rng.choice([0.0, -0.0, 0.1, 1e300, -2.5e-308, 1e16, float("nan"), float("inf"),
                                   float("-inf"), rng.random() * 10 ** rng.randint(-20, 20)])]
    if depth > 3 or rng.random() < 0.5:
        return rng.choice(scalars)()
    if rng.random() < 0.5:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(["a", "b", "z", "A", "é", "", "long key", "\n"]) + str(rng.randint(0, 9)): _random_value(
        rng, depth + 1) for _ in range(rng.randint(0, 5))}


def test_json_text_is_byte_for_byte_json_dumps_with_indent_2_and_sorted_keys():
    import random
    from collections import OrderedDict
    from enum import IntEnum

    rng = random.Random(24)
    values = [_random_value(rng) for _ in range(3000)]
    values += [{}, [], (), {"t": (1, [2, ()])}, {"k": {}}, {"k": []}, OrderedDict(b=1, a=2), {1: "int key"},
               {None: 1}, {2.5: 2, 1.0: 3}, {"x": IntEnum("E", "A").A}, {"n": 10 ** 100}]
    for value in values:
        assert store.json_text(value) == json.dumps(value, indent=2, sort_keys=True) + "\n"
    with pytest.raises(TypeError, match="not JSON serializable"):
        store.json_text({"x": object()})
    with pytest.raises(TypeError):
        store.json_text({1: 1, "a": 2})  # json.dumps cannot sort mixed keys either
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match="Circular reference"):
        store.json_text(cycle)


# -- the original pipeline's gens store, read as it is ------------------------------------------
def original_document(paths, stage, gen_id, main=None, raw=None, parsed=None, prompt=None):
    folder = paths.gen_dir(stage, gen_id)
    folder.mkdir(parents=True)
    for name, record in (("metadata.json", main), ("raw_metadata.json", raw), ("parsed_metadata.json", parsed)):
        if record is not None:
            (folder / name).write_text(json.dumps(record), encoding="utf-8")
    if prompt is not None:
        (folder / "prompt.txt").write_text(prompt, encoding="utf-8")
    return folder


def test_the_originals_keys_are_read_as_ours_and_nothing_is_written(tmp_path):
    paths = Paths.from_str(tmp_path / "data")
    original_document(paths, "draft", "d_1", main={"stage": "draft", "gen_id": "d_1", "origin_cohort_id": "old",
                                                   "mode": "llm", "template_id": "t", "combo_id": "c1",
                                                   "llm_model_id": "m"}, raw={"replicate": 2})
    essay = original_document(
        paths, "essay", "e_1", prompt="the prompt sent",
        main={"stage": "essay", "gen_id": "e_1", "origin_cohort_id": "old", "mode": "llm", "template_id": "t2",
              "parent_gen_id": "d_1", "llm_model_id": "m"},
        raw={"llm_model_id": "other", "replicate": 1, "finish_reason": "stop", "truncated": False,
             "usage": {"completion_tokens": 9}},
        parsed={"parser_name": "identity", "success": True, "error": None})
    before = {p.name: p.read_bytes() for p in essay.iterdir()}
    meta = store.read_document_metadata(paths, "essay", "e_1")
    assert (meta["model_id"], meta["cohort_id"], meta["parser"], meta["template_id"]) == ("m", "old", "identity", "t2")
    assert (meta["parent_gen_id"], meta["combo_id"], meta["replicate"], meta["finish_reason"]) == ("d_1", "c1", 1, "stop")
    assert meta["prompt_sha256"] == hashlib.sha256(b"the prompt sent").hexdigest()
    assert meta["usage"] == {"completion_tokens": 9} and "llm_model_id" not in meta
    assert store.read_document_metadata(paths, "draft", "d_1")["replicate"] == 2  # from raw_metadata.json
    assert {p.name: p.read_bytes() for p in essay.iterdir()} == before


def test_side_files_alone_stand_in_for_a_missing_metadata_json(tmp_path):
    paths = Paths.from_str(tmp_path / "data")
    original_document(paths, "evaluation", "v_1", raw={"stage": "evaluation", "llm_model_id": "j",
                                                       "template_id": "rubric", "parent_gen_id": "e_9"})
    meta = store.read_document_metadata(paths, "evaluation", "v_1")
    assert (meta["model_id"], meta["template_id"], meta["combo_id"], meta["replicate"]) == ("j", "rubric", "", 1)
    assert "prompt_sha256" not in meta  # no prompt.txt to take it from
    with pytest.raises(FileNotFoundError, match="metadata.json does not exist"):
        store.read_document_metadata(paths, "evaluation", "v_2")


def test_our_keys_win_over_the_originals_and_an_earlier_file_over_a_later_one():
    merged = store.normalise_metadata("essay", {"model_id": "ours", "llm_model_id": "theirs"},
                                      {"replicate": "3", "essay_template": "t", "cohort_id": "x"},
                                      {"replicate": 5, "parser_name": "p"})
    assert (merged["model_id"], merged["replicate"], merged["template_id"], merged["parser"]) == ("ours", 3, "t", "p")
    assert merged["cohort_id"] == "x" and "essay_template" not in merged


def test_a_broken_metadata_file_is_an_error_naming_it(tmp_path):
    paths = Paths.from_str(tmp_path / "data")
    folder = original_document(paths, "draft", "d_1")
    (folder / "raw_metadata.json").write_text("{nope", encoding="utf-8")
    with pytest.raises(ValueError, match="raw_metadata.json is not valid JSON"):
        store.read_document_metadata(paths, "draft", "d_1")


def test_read_bytes_returns_every_byte_and_raises_as_path_read_bytes(tmp_path):
    big = tmp_path / "big.bin"
    data = bytes(range(256)) * 1000  # more than one 64 KiB read
    big.write_bytes(data)
    assert store.read_bytes(big) == data
    assert store.read_bytes(str(big)) == data
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert store.read_bytes(empty) == b""
    with pytest.raises(FileNotFoundError):
        store.read_bytes(tmp_path / "missing.txt")
    with pytest.raises(IsADirectoryError):
        store.read_bytes(tmp_path)
