"""Bringing the original's experiments along, through the real Snakefile (offline model): its
cohort design language as an active cohort, and its gens store as it is."""

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from daydream import cohorts
from daydream.paths import Paths
from tests.conftest import REPO, TINY_DESIGN, checkpoint, run_workflow
from tests.conftest import write_dedented as write
from tests.original_store import (
    COHORT,
    COMBO_A,
    COMBO_B,
    COPY_ESSAY,
    COPY_VERIFICATION,
    ESSAYS,
    PRIOR_ART,
    SCORES,
    VERIFICATION,
    copy_original_store,
    snapshot,
)

pytestmark = pytest.mark.e2e

LINEAGE = ["combo_id", "draft_template", "generation_template", "generation_model", "cohort_id"]


def calls(paths: Paths) -> list[str]:
    if not paths.llm_calls_jsonl.exists():
        return []
    return [json.loads(line)["gen_id"] for line in paths.llm_calls_jsonl.read_text().splitlines()]


def members(paths: Paths, cohort_id: str) -> pd.DataFrame:
    return pd.read_csv(paths.membership_csv(cohort_id), dtype=str, keep_default_na=False)


def files_of(paths: Paths, gen_ids) -> dict[str, bytes]:
    return {str(p.relative_to(paths.gens_root)): p.read_bytes()
            for g in gen_ids for p in sorted(paths.gens_root.glob(f"*/{g}/*")) if p.is_file()}


# -- the design language ------------------------------------------------------------------------
def test_a_design_spec_as_the_active_cohort_makes_the_documents_of_the_equivalent_plain_cohort(
        finished_run, tmp_path):
    data_root, cohorts_dir, paths = finished_run
    made, paid = members(paths, "tiny"), calls(paths)
    before = files_of(paths, made["gen_id"])
    write(cohorts_dir / "dsl.yaml", TINY_DESIGN)
    run_workflow(data_root, cohorts_dir, ["dsl"])
    design = members(paths, "dsl")
    assert sorted(design.drop(columns="cohort_id").values.tolist()) == \
        sorted(made.drop(columns="cohort_id").values.tolist())
    assert calls(paths) == paid  # every document is shared: nothing new to pay for
    assert files_of(paths, design["gen_id"]) == before
    scores = pd.read_csv(paths.cohort_report("dsl", "parsing/aggregated_scores.csv"))
    assert len(scores) == 24 and scores["score"].notna().all()

    # and from scratch, the design alone makes the same files as the plain cohort did
    fresh = tmp_path / "fresh" / "data"
    shutil.copytree(data_root / "1_raw", fresh / "1_raw")
    shutil.copy(paths.combo_mappings_csv, fresh / "combo_mappings.csv")
    run_workflow(fresh, cohorts_dir, ["dsl"])
    assert files_of(Paths(fresh), design["gen_id"]).keys() == before.keys()
    for name, content in files_of(Paths(fresh), design["gen_id"]).items():
        if not name.endswith("metadata.json"):  # metadata holds times and the cohort
            assert content == before[name], name
    assert sorted(calls(Paths(fresh))) == sorted(paid)


def test_a_bad_design_spec_fails_the_checkpoint_with_every_problem_before_any_call(data_root, cohorts_dir):
    # the checkpoint in-process (what rule cohort_membership runs); test_cohorts.py shows a refusal
    # there failing Snakemake's run with its problems on the terminal
    spec = write(cohorts_dir / "bad.yaml", TINY_DESIGN.replace("draft_llm: [offline_a]", "draft_llm: [gpt-17]")
                 .replace("novelty-judge, rigor-judge", "novelty-judge, no-such-judge"))
    with pytest.raises(cohorts.CohortError) as refused:
        checkpoint(data_root, cohorts_dir, "bad")
    output = str(refused.value)
    for fragment in ("combo_id 'combo_v1_", "is not registered in", "unknown model 'gpt-17'",
                     "unknown template 'no-such-judge'"):
        assert fragment in output, fragment
    assert str(spec) in output
    assert not Paths(data_root).membership_csv("bad").exists()
    assert not (data_root / "gens").exists() and not Paths(data_root).llm_calls_jsonl.exists()


# -- the original's gens store ------------------------------------------------------------------
@pytest.fixture
def original(tmp_path) -> Paths:
    return copy_original_store(tmp_path / "data")


def test_a_curated_cohort_over_the_original_store_makes_only_the_new_evaluations(original, cohorts_dir):
    before = snapshot(original)
    write(cohorts_dir / "rejudge.yaml", f"""
        essays: [{", ".join(ESSAYS.values())}]
        evaluation:
          templates: [daydreaming-verification-v2, gemini-prior-art-eval]
          models: [sonnet-4, gemini_25_pro]
    """)
    run_workflow(original.data_root, cohorts_dir, ["rejudge"])
    evaluations = members(original, "rejudge").query("stage == 'evaluation'")
    existing = set(VERIFICATION.values()) | set(PRIOR_ART.values())
    assert len(evaluations) == 12 and existing <= set(evaluations["gen_id"])
    assert sorted(calls(original)) == sorted(set(evaluations["gen_id"]) - existing)  # 6 new, each once
    after = snapshot(original)
    assert {name: after[name] for name in before} == before  # no file of the original changed, not even its time
    assert {name.split("/")[1] for name in set(after) - set(before)} == set(calls(original))

    table = pd.read_csv(original.cohort_report("rejudge", "parsing/aggregated_scores.csv"), dtype=str,
                        keep_default_na=False).set_index("gen_id")
    assert (table["error"] == "").all() and (table[LINEAGE] != "").all().all()
    assert {g: float(table.at[g, "score"]) for g in existing} == {g: SCORES[g] for g in existing}
    pooled = pd.read_csv(original.cohort_report("rejudge", "summary/generation_scores.csv"))
    assert dict(zip(pooled["combo_id"], pooled["n_generations"], strict=True)) == {COMBO_A: 2, COMBO_B: 1}
    assert pd.read_csv(original.stale_generations_csv).empty

    run_workflow(original.data_root, cohorts_dir, ["rejudge"], "cross_experiment_tables")
    cross = pd.read_csv(original.cross_table("aggregated_scores.csv"), dtype=str,
                        keep_default_na=False).set_index("gen_id")
    assert len(cross) == 7 + 6 and (cross["error"] == "").all()
    assert (cross[LINEAGE + ["evaluation_template", "evaluation_llm_model", "replicate"]] != "").all().all()
    assert set(cross.loc[sorted(existing | {COPY_VERIFICATION}), "cohort_id"]) == {COHORT}
    assert set(cross.drop(index=sorted(existing | {COPY_VERIFICATION}))["cohort_id"]) == {"rejudge"}
    pivot = pd.read_csv(original.cross_table("evaluation_scores_by_template_model.csv"), keep_default_na=False)
    assert (pivot[["combo_id", "draft_template", "generation_template", "generation_model"]] != "").all().all()
    assert len(pivot) == 4  # three LLM essays and the copy essay

    template = original.template_path("evaluation", "daydreaming-verification-v2")
    template.write_text(template.read_text() + "\nBe brief.\n")
    paid = calls(original)
    run_workflow(original.data_root, cohorts_dir, ["rejudge"])
    assert calls(original) == paid
    stale = pd.read_csv(original.stale_generations_csv).set_index("gen_id")["reason"]
    assert set(stale.index) == set(evaluations.query("template_id == 'daydreaming-verification-v2'")["gen_id"])
    # the original recorded no prompt sources, only the prompt: its reason is the prompt
    assert stale[sorted(VERIFICATION.values())].tolist() == ["prompt changed"] * 3
    assert set(stale.drop(index=sorted(VERIFICATION.values()))) == {"template changed"}


def test_the_originals_spec_runs_after_the_import_and_pays_only_for_what_is_missing(original, cohorts_dir):
    spec_dir = original.design_spec_file(COHORT).parent
    shutil.copytree(spec_dir, cohorts_dir / "spec")
    shutil.copy(spec_dir / "config.yaml", cohorts_dir / f"{COHORT}.yaml")
    cohort_file = cohorts_dir / f"{COHORT}.yaml"
    cohort_file.write_text(cohort_file.read_text().replace("@file:items/", "@file:spec/items/"))
    original.design_spec_file(COHORT).unlink()  # one definition: the copy in the cohorts folder
    before = snapshot(original)

    refused = run_workflow(original.data_root, cohorts_dir, [COHORT], check=False)
    assert refused.returncode != 0 and "scripts/import_gens_store.py" in refused.stderr
    assert COPY_ESSAY in refused.stderr and COPY_VERIFICATION in refused.stderr
    assert calls(original) == [] and snapshot(original) == before

    done = subprocess.run([sys.executable, str(REPO / "scripts" / "import_gens_store.py"), "--data-root",
                           str(original.data_root), "--write"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    run_workflow(original.data_root, cohorts_dir, [COHORT])
    new = members(original, COHORT).query("gen_id not in @before_ids", local_dict={
        "before_ids": {name.split("/")[1] for name in before}})
    assert new["gen_id"].tolist() == calls(original)
    assert new[["stage", "parent_gen_id", "template_id"]].values.tolist() == \
        [["evaluation", COPY_ESSAY, "gemini-prior-art-eval"]]
    after = snapshot(original)
    changed = [name for name in before if after[name][0] != before[name][0]]
    assert changed == []  # contents of the original's files are unchanged
    scores = pd.read_csv(original.cohort_report(COHORT, "parsing/aggregated_scores.csv"), keep_default_na=False)
    assert len(scores) == 8 and (scores["error"] == "").all()
    assert pd.read_csv(original.stale_generations_csv).empty
