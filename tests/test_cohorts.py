"""Membership building and cohort validation (SPEC §3): in-process (`cohorts.write_cohort` is the
checkpoint), and through Snakemake where the refusal must stop a run before any call."""

import csv
import hashlib
import json

import pytest

from daydream import cohorts, documents, ids
from daydream.columns import MEMBERSHIP_COLUMNS
from daydream.paths import Paths
from tests.conftest import TINY_COHORT, checkpoint, count_lines, run_workflow, write_cohort


def build(data_root, cohorts_dir, cohort_id="tiny"):
    return cohorts.build_cohort(Paths(data_root), cohort_id, cohorts_dir / f"{cohort_id}.yaml")


def read_membership(data_root, cohort_id="tiny"):
    with Paths(data_root).membership_csv(cohort_id).open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_membership_has_the_spec_columns_and_one_row_per_document(data_root, cohorts_dir):
    build(data_root, cohorts_dir)
    rows = read_membership(data_root)
    assert tuple(rows[0]) == MEMBERSHIP_COLUMNS
    stages = [r["stage"] for r in rows]
    # 3 combos x 1 draft template; 2 essays per draft (llm + copy); 2 templates x 2 judges each
    assert stages == ["draft"] * 3 + ["essay"] * 6 + ["evaluation"] * 24
    assert len({r["gen_id"] for r in rows}) == len(rows)


def test_membership_links_parents_and_uses_spec_ids(data_root, cohorts_dir):
    build(data_root, cohorts_dir)
    rows = read_membership(data_root)
    by_id = {r["gen_id"]: r for r in rows}
    for row in rows:
        if row["stage"] == "draft":
            assert row["parent_gen_id"] == ""
            assert row["gen_id"] == ids.gen_id("draft", row["combo_id"], row["template_id"],
                                               row["llm_model_id"], row["replicate"])
        else:
            parent = by_id[row["parent_gen_id"]]
            assert parent["stage"] == {"essay": "draft", "evaluation": "essay"}[row["stage"]]
            assert parent["combo_id"] == row["combo_id"]


def test_essay_model_draft_means_the_drafts_model_and_copy_makes_one_essay(data_root, cohorts_dir):
    build(data_root, cohorts_dir)
    essays = [r for r in read_membership(data_root) if r["stage"] == "essay"]
    assert {r["llm_model_id"] for r in essays} == {"offline_a"}
    assert sum(r["template_id"] == "copy-draft" for r in essays) == 3


def test_manifest_lists_sorted_combos_templates_models_and_replicates(data_root, cohorts_dir):
    build(data_root, cohorts_dir)
    manifest = json.loads(Paths(data_root).manifest_json("tiny").read_text())
    combo_ids = [c["combo_id"] for c in manifest["combos"]]
    assert combo_ids == sorted(combo_ids) and len(combo_ids) == 3
    assert manifest["evaluation"] == {"templates": ["novelty-judge", "rigor-judge"],
                                      "models": ["offline_a", "offline_b"], "replicates": 1}


def test_replicates_multiply_documents(data_root, cohorts_dir):
    spec = {**TINY_COHORT, "evaluation": {**TINY_COHORT["evaluation"], "replicates": 3}}
    write_cohort(cohorts_dir, "reps", spec)
    rows = build(data_root, cohorts_dir, "reps")
    assert sum(r["stage"] == "evaluation" for r in rows) == 72
    assert {r["replicate"] for r in rows if r["stage"] == "evaluation"} == {1, 2, 3}


def test_explicit_combos_are_used_instead_of_all_pairs(data_root, cohorts_dir):
    spec = {**TINY_COHORT, "concepts": {"level": "sentence", "k": 2, "combos": [["weak-ties", "exaptation"]]}}
    write_cohort(cohorts_dir, "explicit", spec)
    rows = build(data_root, cohorts_dir, "explicit")
    assert {r["combo_id"] for r in rows} == {ids.combo_id(["exaptation", "weak-ties"], "sentence", 2)}


def test_combo_mappings_are_appended_once_and_never_rewritten(data_root, cohorts_dir):
    paths = Paths(data_root)
    build(data_root, cohorts_dir)
    first = paths.combo_mappings_csv.read_text()
    assert count_lines(paths.combo_mappings_csv) == 1 + 3 * 2  # header + 2 concepts per combo
    build(data_root, cohorts_dir)
    assert paths.combo_mappings_csv.read_text() == first


def test_a_clashing_combo_mapping_is_an_error(data_root, cohorts_dir):
    paths = Paths(data_root)
    build(data_root, cohorts_dir)
    text = paths.combo_mappings_csv.read_text().replace("exaptation", "red-teaming")
    paths.combo_mappings_csv.write_text(text)
    with pytest.raises(ValueError, match="append-only"):
        build(data_root, cohorts_dir)


def test_schema_errors_name_the_file_and_the_key(data_root, cohorts_dir):
    spec = {**TINY_COHORT, "draft": {"templates": ["idea-sketch"], "models": ["offline_a"], "replicas": 2}}
    path = write_cohort(cohorts_dir, "typo", spec)
    with pytest.raises(cohorts.CohortError) as error:
        build(data_root, cohorts_dir, "typo")
    assert str(path) in str(error.value) and "replicas" in str(error.value)


def test_several_problems_are_reported_together(data_root, cohorts_dir):
    spec = {**TINY_COHORT, "draft": {"templates": ["nope-a"], "models": ["nope-b"]}}
    write_cohort(cohorts_dir, "two", spec)
    with pytest.raises(cohorts.CohortError) as error:
        build(data_root, cohorts_dir, "two")
    assert len(error.value.problems) == 2


def test_curated_cohort_reuses_existing_essays(data_root, cohorts_dir):
    rows = build(data_root, cohorts_dir)
    paths = Paths(data_root)
    essay = next(r for r in rows if r["stage"] == "essay")
    draft = next(r for r in rows if r["gen_id"] == essay["parent_gen_id"])
    for row in (essay, draft):
        meta = {"gen_id": row["gen_id"], "parent_gen_id": row["parent_gen_id"], "combo_id": row["combo_id"],
                "template_id": row["template_id"], "model_id": row["llm_model_id"], "replicate": 1}
        paths.metadata_path(row["stage"], row["gen_id"]).parent.mkdir(parents=True)
        paths.metadata_path(row["stage"], row["gen_id"]).write_text(json.dumps(meta))
    write_cohort(cohorts_dir, "curated", {"essays": [essay["gen_id"]],
                                          "evaluation": {"templates": ["rigor-judge"], "models": ["offline_b"]}})
    curated = build(data_root, cohorts_dir, "curated")
    assert [r["stage"] for r in curated] == ["draft", "essay", "evaluation"]
    assert curated[2]["parent_gen_id"] == essay["gen_id"]


# -- bad input fails at the checkpoint, before any model call ----------------------------------
def break_unknown_template(data_root, spec):
    spec["draft"]["templates"] = ["idea-sketch", "no-such-template"]
    return "no-such-template"


def break_unknown_model(data_root, spec):
    spec["evaluation"]["models"] = ["offline_a", "gpt-17"]
    return "gpt-17"


def break_missing_template_file(data_root, spec):
    (data_root / "1_raw" / "templates" / "evaluation" / "rigor-judge.txt").unlink()
    return "rigor-judge.txt"


def break_template_syntax(data_root, spec):
    path = data_root / "1_raw" / "templates" / "draft" / "idea-sketch.txt"
    path.write_text(path.read_text() + "\n{% for c in concepts %} unclosed loop\n")
    return "idea-sketch"


def break_unknown_concept(data_root, spec):
    spec["concepts"]["ids"] = ["default-mode-network", "flux-capacitor"]
    return "flux-capacitor"


@pytest.mark.parametrize("breaker", [break_unknown_template, break_unknown_model, break_missing_template_file,
                                     break_template_syntax, break_unknown_concept])
def test_bad_input_fails_at_the_checkpoint_before_any_model_call(data_root, cohorts_dir, breaker):
    spec = json.loads(json.dumps(TINY_COHORT))
    item = breaker(data_root, spec)
    cohort_path = write_cohort(cohorts_dir, "broken", spec)
    with pytest.raises(cohorts.CohortError) as error:
        checkpoint(data_root, cohorts_dir, "broken")
    assert item in str(error.value) and str(cohort_path) in str(error.value)
    assert not Paths(data_root).membership_csv("broken").exists()
    assert not (data_root / "gens").exists()
    assert not Paths(data_root).llm_calls_jsonl.exists()


def test_a_missing_api_key_fails_at_the_checkpoint_naming_the_variable(data_root, cohorts_dir):
    spec = json.loads(json.dumps(TINY_COHORT))
    spec["evaluation"]["models"] = ["offline_a", "deepseek_r1_free"]  # an OpenRouter model
    write_cohort(cohorts_dir, "paid", spec)
    with pytest.raises(cohorts.CohortError) as error:
        checkpoint(data_root, cohorts_dir, "paid", offline=False)
    assert "export OPENROUTER_API_KEY=" in str(error.value) and "deepseek_r1_free" in str(error.value)
    assert not Paths(data_root).membership_csv("paid").exists() and not (data_root / "gens").exists()
    rehearsal = checkpoint(data_root, cohorts_dir, "paid", offline=True)  # no key needed offline
    for member in rehearsal.membership.members("paid"):
        documents.write_document(rehearsal, member.stage, member.gen_id)
    table = read_membership(data_root, "paid")
    assert {r["llm_model_id"] for r in table if r["stage"] == "evaluation"} == {"offline_a", "deepseek_r1_free"}
    assert all(Paths(data_root).parsed_path(r["stage"], r["gen_id"]).exists() for r in table)


# -- strict definition files: every problem at once, before any call, nothing paid touched -----
def gens_snapshot(root):
    """path -> SHA-256 of every file under the gens store (saved replies included)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_inactive_templates_and_models_are_refused_like_inactive_concepts(data_root, cohorts_dir):
    paths = Paths(data_root)
    templates = paths.templates_csv("evaluation")
    templates.write_text(templates.read_text().replace("complex,llm,True", "complex,llm,False"))
    models = paths.models_csv
    lines = models.read_text().splitlines()
    models.write_text("\n".join([lines[0] + ",active"] + [line + (",false" if line.startswith("offline_b") else ",")
                                                             for line in lines[1:]]) + "\n")
    with pytest.raises(cohorts.CohortError) as error:
        build(data_root, cohorts_dir)
    where = cohorts_dir / "tiny.yaml"
    assert error.value.problems == [
        f"{where}: evaluation.templates: template 'rigor-judge' is inactive ({templates} line 3 says "
        "active=false); set it to true there, or remove the template from the cohort",
        f"{where}: evaluation.models: model 'offline_b' is inactive ({models} line 3 says active=false); "
        "set it to true there, or remove the model from the cohort"]
    assert not paths.membership_csv("tiny").exists()


@pytest.mark.e2e
def test_broken_definition_files_are_all_reported_at_the_checkpoint_before_any_call(finished_run):
    data_root, cohorts_dir, paths = finished_run
    paid, calls_before = gens_snapshot(paths.gens_root), count_lines(paths.llm_calls_jsonl)
    raw = data_root / "1_raw"
    # an unquoted comma in a name would shift `active` into it: red-teaming (inactive) would be active
    concepts = paths.concepts_metadata_csv
    concepts.write_text(concepts.read_text().replace("red-teaming,Red Teaming,True",
                                                     "red-teaming,Red Teaming, adversarial,False"))
    spec = json.loads(json.dumps(TINY_COHORT))
    spec["concepts"]["ids"].append("red-teaming")
    write_cohort(cohorts_dir, "tiny", spec)
    # a model row pasted from a file with a longer header would put its price in the caps
    paths.models_csv.write_text(paths.models_csv.read_text() + "pricey,gpt-x,openai,GPT X,openai,,KEY,4,2.5,10\n")
    # a byte-order mark before a header is accepted, not a problem
    evaluations = paths.templates_csv("evaluation")
    evaluations.write_bytes(b"\xef\xbb\xbf" + evaluations.read_bytes())
    # concept texts the cohort uses: one not UTF-8 (it used to fail mid-run, after calls), one empty
    latin1 = raw / "concepts" / "descriptions-paragraph" / "exaptation.txt"
    latin1.write_bytes("Feathers evolved for warmth, then flight: a caf\u00e9 of traits.".encode("latin-1"))
    empty = raw / "concepts" / "descriptions-paragraph" / "weak-ties.txt"
    empty.write_text("\n")
    # a template the cohort uses, marked inactive; a repeated column; a damaged combo register
    drafts = paths.templates_csv("draft")
    drafts.write_text(drafts.read_text().replace("essay_idea_last,llm,True", "essay_idea_last,llm,False"))
    essays = paths.templates_csv("essay")
    essays.write_text(essays.read_text().replace("template_id,template_name,", "template_id,template_name,template_name,", 1))
    register = paths.combo_mappings_csv
    register.write_text(register.read_text() + "combo_v1_000000000000,v1,exaptation,paragraph,2\n")

    done = run_workflow(data_root, cohorts_dir, ["tiny"], check=False)

    output = done.stdout + done.stderr
    assert done.returncode != 0 and "cohort_membership" in output
    expected = [
        f"{concepts} line 13: 4 fields but the header has 3 (concept_id, name, active); extra: 'False'",
        f"{paths.models_csv} line 7: 10 fields but the header has 9",
        f"draft.templates: template 'idea-sketch' is inactive ({drafts} line 2 says active=false)",
        f"{essays} line 1: column 'template_name' appears twice in the header (columns 2 and 3)",
        f"{register} line 8: 5 fields but the header has 6",
        f"{latin1} line 1: not UTF-8 (byte 0xe9 at column 48); save the file as UTF-8",
        f"{empty}: the concept description file is empty",
    ]
    for message in expected:
        assert message in output, message
    assert f"{evaluations} line" not in output  # the BOM was read transparently
    # nothing was called, and no file of a paid document changed
    assert count_lines(paths.llm_calls_jsonl) == calls_before
    assert gens_snapshot(paths.gens_root) == paid
