"""A gens store of the original pipeline (tests/fixtures/original_store) read as it is: its keys
as ours, curated cohorts and cross tables over it, the checkpoint's guard, and the import."""

import hashlib
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from daydream import cohorts, original_store, store
from daydream.columns import AGGREGATED_COLUMNS
from daydream.paths import Paths
from daydream.reports.cross import cross_aggregated, evaluation_scores_by_template_model, evaluation_template_scales
from tests.conftest import REPO, write_cohort
from tests.original_store import (
    COHORT,
    COMBO_A,
    COMBO_B,
    COPY_ESSAY,
    COPY_VERIFICATION,
    DRAFTS,
    ESSAYS,
    PRIOR_ART,
    SCORES,
    VERIFICATION,
    copy_original_store,
    snapshot,
)

LINEAGE = ["combo_id", "draft_template", "generation_template", "generation_model", "cohort_id"]


@pytest.fixture
def original(tmp_path) -> Paths:
    return copy_original_store(tmp_path / "data")


def test_every_document_reads_in_our_keys_with_its_lineage(original):
    draft = store.read_document_metadata(original, "draft", DRAFTS["A2"])
    assert (draft["model_id"], draft["cohort_id"], draft["replicate"], draft["combo_id"]) == \
        ("gemini_25_pro", COHORT, 2, COMBO_A)
    essay = store.read_document_metadata(original, "essay", COPY_ESSAY)
    assert (essay["combo_id"], essay["mode"], essay["parent_gen_id"], essay["parser"]) == \
        (COMBO_B, "copy", DRAFTS["B1"], "identity")
    side_only = store.read_document_metadata(original, "evaluation", COPY_VERIFICATION)
    assert (side_only["template_id"], side_only["model_id"], side_only["combo_id"]) == \
        ("daydreaming-verification-v2", "sonnet-4", COMBO_B)
    assert store.load_generation(original.gens_root, "evaluation", PRIOR_ART["A1"])["metadata"]["model_id"] == \
        "gemini_25_pro"


def test_cross_tables_of_an_original_store_have_every_column_filled(original):
    table = cross_aggregated(original, evaluation_template_scales(original)).set_index("gen_id")
    assert tuple(table.reset_index().columns) == AGGREGATED_COLUMNS
    assert table["score"].to_dict() == SCORES and (table["error"] == "").all()
    assert (table[LINEAGE + ["evaluation_template", "evaluation_llm_model", "parent_gen_id"]] != "").all().all()
    assert set(table["cohort_id"]) == {COHORT} and set(table["replicate"]) == {"1"}
    assert table.loc[COPY_VERIFICATION, ["combo_id", "generation_template", "generation_model"]].tolist() == \
        [COMBO_B, "parsed-from-links-v1", "gemini_25_pro"]
    pivot = evaluation_scores_by_template_model(table.reset_index()).set_index("gen_id")
    assert (pivot[["combo_id", "draft_template", "generation_template", "generation_model"]] != "").all().all()
    assert pivot.at[ESSAYS["A1"], "gemini-prior-art-eval__gemini_25_pro"] == 5.4


def test_a_curated_cohort_over_the_original_store_gets_its_lineage_from_the_metadata(original, tmp_path):
    cohort_file = write_cohort(tmp_path, "rejudge", {"essays": list(ESSAYS.values()), "evaluation": {
        "templates": ["daydreaming-verification-v2"], "models": ["gemini_25_pro"]}})
    rows = cohorts.build_cohort(original, "rejudge", cohort_file)
    by_id = {row["gen_id"]: row for row in rows}
    assert [r["stage"] for r in rows] == ["draft"] * 3 + ["essay"] * 3 + ["evaluation"] * 3
    assert by_id[ESSAYS["A2"]]["combo_id"] == COMBO_A and by_id[DRAFTS["A2"]]["replicate"] == 2
    assert by_id[ESSAYS["B1"]]["llm_model_id"] == "gemini_25_pro"


def test_the_checkpoint_refuses_documents_of_the_original_it_would_make_or_parse_again(original, tmp_path):
    cohort_file = write_cohort(tmp_path, "all", {"essays": [*ESSAYS.values(), COPY_ESSAY], "evaluation": {
        "templates": ["daydreaming-verification-v2"], "models": ["sonnet-4"]}})
    later = original.raw_path("essay", ESSAYS["A1"]).stat().st_mtime + 100
    os.utime(original.metadata_path("draft", DRAFTS["A1"]), (later, later))  # metadata.json after parsed.txt
    with pytest.raises(cohorts.CohortError) as raised:
        cohorts.build_cohort(original, "all", cohort_file)
    importable, outdated = raised.value.problems
    command = f"python scripts/import_gens_store.py --data-root {original.data_root} --write"
    assert importable.startswith(f"{cohort_file}: 2 document(s) of the original pipeline lack a metadata.json")
    assert str(original.gen_dir("essay", COPY_ESSAY)) in importable and COPY_VERIFICATION in importable
    assert command in importable
    assert "1 document(s)" in outdated and "parsed.txt older than" in outdated and DRAFTS["A1"] in outdated
    assert not original.membership_csv("all").exists()
    original_store.import_store(original, write=True)
    assert len(cohorts.build_cohort(original, "all", cohort_file)) == 3 + 4 + 4


def test_a_document_missing_its_reply_cannot_be_imported_and_is_named(original, tmp_path):
    original.raw_path("evaluation", VERIFICATION["A1"]).unlink()
    cohort_file = write_cohort(tmp_path, "gap", {"essays": [ESSAYS["A1"]], "evaluation": {
        "templates": ["daydreaming-verification-v2"], "models": ["sonnet-4"]}})
    with pytest.raises(cohorts.CohortError) as raised:
        cohorts.build_cohort(original, "gap", cohort_file)
    assert raised.value.problems == [
        f"{cohort_file}: 1 document(s) of the original pipeline have no raw.txt, so Snakemake would make them again "
        f"(a new model call replacing the original's files) ({original.gen_dir('evaluation', VERIFICATION['A1'])}); "
        "restore those files from the original store, or leave these documents out of the cohort"]


def test_the_import_is_a_dry_run_by_default_and_only_ever_adds_files(original):
    before = snapshot(original)
    planned = original_store.import_store(original)
    assert [(a.stage, a.gen_id, a.action) for a in planned] == [
        ("essay", COPY_ESSAY, "write-prompt"),
        ("evaluation", COPY_VERIFICATION, "write-metadata"), ("evaluation", COPY_VERIFICATION, "touch-parsed")]
    assert snapshot(original) == before
    assert original_store.import_store(original, write=True) == planned
    after = snapshot(original)
    added = sorted(set(after) - set(before))
    assert added == [f"essay/{COPY_ESSAY}/prompt.txt", f"evaluation/{COPY_VERIFICATION}/metadata.json"]
    touched = [name for name in before if after[name] != before[name]]
    assert touched == [f"evaluation/{COPY_VERIFICATION}/parsed.txt"]
    assert after[touched[0]][0] == before[touched[0]][0]  # the text is the original's
    assert original.prompt_path("essay", COPY_ESSAY).read_bytes() == \
        original.parsed_path("draft", DRAFTS["B1"]).read_bytes()
    assert original_store.import_store(original, write=True) == []


def test_imported_metadata_fits_our_schema_and_names_its_sources(original):
    original_store.import_store(original, write=True)
    meta = json.loads(original.metadata_path("evaluation", COPY_VERIFICATION).read_text())
    assert (meta["model_id"], meta["template_id"], meta["combo_id"], meta["cohort_id"]) == \
        ("sonnet-4", "daydreaming-verification-v2", COMBO_B, COHORT)
    assert (meta["parent_gen_id"], meta["replicate"], meta["mode"], meta["parser"]) == \
        (COPY_ESSAY, 1, "llm", "in_last_line")
    assert meta["usage"] == {"prompt_tokens": 351, "completion_tokens": 96, "total_tokens": 447}
    assert (meta["model"], meta["cost_usd"], meta["duration_s"], meta["attempts"]) == ("", None, None, None)
    assert meta["imported_from"] == ["parsed_metadata.json", "raw_metadata.json"]
    prompt = original.prompt_path("evaluation", COPY_VERIFICATION).read_bytes()
    assert meta["prompt_sha256"] == hashlib.sha256(prompt).hexdigest()
    assert not original_store.parse_is_outdated(original, "evaluation", COPY_VERIFICATION)


def test_the_import_command_lists_then_writes_and_names_incomplete_documents(original):
    orphan = original.gen_dir("draft", "d_orphan")
    orphan.mkdir()
    (orphan / "raw_metadata.json").write_text(json.dumps({"llm_model_id": "m"}))

    def run(*args):
        return subprocess.run([sys.executable, str(REPO / "scripts" / "import_gens_store.py"), "--data-root",
                               str(original.data_root), *args], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(REPO)})

    dry = run()
    assert dry.returncode == 1 and "dry run, nothing changed (add --write): 1 write-prompt, 1 write-metadata, " \
        "1 touch-parsed, 1 skip" in dry.stdout
    assert "skip" in dry.stdout and "d_orphan" in dry.stdout and "no prompt.txt" in dry.stdout
    assert not original.metadata_path("evaluation", COPY_VERIFICATION).exists()
    done = run("--write")
    assert done.returncode == 1 and "done: 1 write-prompt, 1 write-metadata, 1 touch-parsed, 1 skip" in done.stdout
    assert "1 document(s) of the original store are incomplete" in done.stderr
    assert original.metadata_path("evaluation", COPY_VERIFICATION).exists()


def test_the_original_spec_in_its_place_compiles_to_the_stores_documents(original):
    spec = original.design_spec_file(COHORT)
    original_store.import_store(original, write=True)
    rows = cohorts.build_cohort(original, COHORT, spec)
    existing = {p.name for p in original.gens_root.glob("*/*")}
    new = [r["gen_id"] for r in rows if r["gen_id"] not in existing]
    assert len(rows) == 3 + 4 + 8 and len(new) == 1  # the copy essay's prior-art evaluation
    assert pd.DataFrame(rows).query("gen_id in @new").iloc[0][["parent_gen_id", "template_id"]].tolist() == \
        [COPY_ESSAY, "gemini-prior-art-eval"]


# -- raw_metadata.json without template_id (the original's current writer) --------------------------
def _strip(original, gen_id, *keys):
    path = original.gen_dir("evaluation", gen_id) / "raw_metadata.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in record.items() if k not in keys}, indent=2))


def test_a_document_without_template_or_model_gets_them_back_from_its_gen_id(original):
    _strip(original, COPY_VERIFICATION, "template_id", "llm_model_id")
    planned = [a for a in original_store.import_store(original) if a.action == "write-metadata"]
    assert [a.gen_id for a in planned] == [COPY_VERIFICATION]
    assert "template_id=daydreaming-verification-v2, model_id=sonnet-4" in planned[0].detail
    assert "from its gen_id" in planned[0].detail
    original_store.import_store(original, write=True)
    meta = json.loads(original.metadata_path("evaluation", COPY_VERIFICATION).read_text())
    assert (meta["template_id"], meta["model_id"], meta["replicate"]) == ("daydreaming-verification-v2", "sonnet-4", 1)


def test_the_originals_membership_tells_template_and_model_when_the_id_cannot(original):
    _strip(original, COPY_VERIFICATION, "template_id", "llm_model_id", "parent_gen_id")  # no anchor to rebuild the id
    membership = original.data_root / "cohorts" / COHORT / "membership.csv"
    membership.write_text("stage,gen_id,origin_cohort_id,parent_gen_id,combo_id,template_id,llm_model_id,replicate\n"
                          f"evaluation,{COPY_VERIFICATION},{COHORT},{COPY_ESSAY},,daydreaming-verification-v2,"
                          "sonnet-4,1\n")
    (action,) = [a for a in original_store.import_store(original) if a.action == "write-metadata"]
    assert f"from membership {membership}" in action.detail and "model_id=sonnet-4" in action.detail
    original_store.import_store(original, write=True)
    meta = json.loads(original.metadata_path("evaluation", COPY_VERIFICATION).read_text())
    assert (meta["parent_gen_id"], meta["template_id"], meta["combo_id"]) == \
        (COPY_ESSAY, "daydreaming-verification-v2", COMBO_B)


def test_a_document_nothing_tells_the_template_of_is_skipped_with_the_reason_and_the_fix(original):
    _strip(original, COPY_VERIFICATION, "template_id", "llm_model_id", "parent_gen_id")
    (action,) = [a for a in original_store.import_store(original) if a.gen_id == COPY_VERIFICATION]
    assert action.action == "skip" and "its metadata has no template_id, model_id" in action.detail
    assert "add its row (stage, gen_id, template_id, llm_model_id, replicate)" in action.detail
