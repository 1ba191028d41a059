"""A design spec (SPEC-DSL.md) as a cohort: found where today's cohorts or the original kept it,
compiled to membership with our ids, and checked like any cohort, every problem at once."""

import csv
import json
import textwrap

import pytest

from daydream import cohort_design, cohorts, ids
from daydream.paths import Paths
from tests.conftest import TINY_COHORT

TINY_COMBOS = [ids.combo_id(pair, "paragraph", 2) for pair in
               (("default-mode-network", "exaptation"), ("default-mode-network", "weak-ties"),
                ("exaptation", "weak-ties"))]

# The tiny cohort of conftest, written in the design language.
TINY_DESIGN = f"""
axes:
  combo_id: [{", ".join(TINY_COMBOS)}]
  draft_template: [idea-sketch]
  draft_llm: [offline_a]
  evaluation_template: [novelty-judge, rigor-judge]
  evaluation_llm: [offline_a, offline_b]
rules:
  tuples:
    essay: {{axes: [essay_template, essay_llm], items: [[essay-from-draft, None], [copy-draft, None]]}}
output:
  field_order: [combo_id, draft_template, draft_llm, essay_template, essay_llm, evaluation_template,
                evaluation_llm]
"""


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def membership(paths, cohort_id):
    with paths.membership_csv(cohort_id).open(newline="") as handle:
        return list(csv.DictReader(handle))


def without_cohort(rows):
    return sorted(tuple(v for k, v in row.items() if k != "cohort_id") for row in rows)


@pytest.fixture
def registered(data_root, cohorts_dir):
    """The tiny plain cohort built once, so its combos are in data/combo_mappings.csv."""
    paths = Paths(data_root, cohorts_dir)
    cohorts.build_cohort(paths, "tiny", cohorts_dir / "tiny.yaml")
    return paths


def test_a_design_spec_gives_the_same_documents_as_the_equivalent_plain_cohort(registered, cohorts_dir):
    spec = write(cohorts_dir / "dsl.yaml", TINY_DESIGN)
    rows = cohorts.build_cohort(registered, "dsl", spec)
    assert [r["stage"] for r in rows] == ["draft"] * 3 + ["essay"] * 6 + ["evaluation"] * 24
    assert without_cohort(membership(registered, "dsl")) == without_cohort(membership(registered, "tiny"))
    assert {r["cohort_id"] for r in membership(registered, "dsl")} == {"dsl"}
    manifest = json.loads(registered.manifest_json("dsl").read_text())
    plain = json.loads(registered.manifest_json("tiny").read_text())
    assert manifest["combos"] == plain["combos"]
    assert manifest["evaluation"] == plain["evaluation"]
    assert manifest["essay"] == {"templates": ["copy-draft", "essay-from-draft"], "models": ["offline_a"],
                                 "replicates": 1}
    assert manifest["design"] == {"spec": str(spec), "rows": 24, "seed": None}


def test_the_original_place_of_a_spec_is_found_and_its_files_are_checkpoint_inputs(registered, cohorts_dir):
    spec = write(registered.design_spec_file("old"), TINY_DESIGN.replace(
        "evaluation_llm: [offline_a, offline_b]", "evaluation_llm: '@file:items/judges.txt'"))
    write(spec.parent / "items" / "judges.txt", "offline_a\noffline_b\n")
    assert cohort_design.cohort_definition(registered, "old") == spec
    assert cohort_design.definition_files(registered, "old") == [str(spec), str(spec.parent / "items" / "judges.txt")]
    cohorts.build_cohort(registered, "old", spec)
    assert without_cohort(membership(registered, "old")) == without_cohort(membership(registered, "tiny"))
    # a plain cohort file lists itself only; today's place wins when only it exists
    assert cohort_design.definition_files(registered, "tiny") == [str(cohorts_dir / "tiny.yaml")]


def test_a_cohort_defined_in_both_places_is_an_error_naming_both(registered, cohorts_dir):
    write(registered.design_spec_file("tiny"), TINY_DESIGN)
    with pytest.raises(cohort_design.DesignError) as raised:
        cohort_design.cohort_definition(registered, "tiny")
    assert str(cohorts_dir / "tiny.yaml") in str(raised.value) and str(registered.design_spec_file("tiny")) in str(
        raised.value) and "keep one" in str(raised.value)
    assert cohort_design.definition_files(registered, "tiny") == [str(cohorts_dir / "tiny.yaml"),
                                                                 str(registered.design_spec_file("tiny"))]


def test_a_missing_file_of_a_spec_is_left_to_the_checkpoint_to_report(registered, cohorts_dir):
    spec = write(cohorts_dir / "gap.yaml", TINY_DESIGN.replace("draft_llm: [offline_a]", "draft_llm: '@file:m.txt'"))
    assert cohort_design.definition_files(registered, "gap") == [str(spec)]
    with pytest.raises(cohorts.CohortError) as raised:
        cohorts.build_cohort(registered, "gap", spec)
    assert raised.value.problems == [f"{spec}: axes.draft_llm: @file:m.txt: file {cohorts_dir / 'm.txt'} not found; "
                                     "create it or fix the path (relative to the spec file)"]


def test_every_problem_of_a_design_is_named_before_any_call(registered, cohorts_dir):
    (registered.raw_root / "templates" / "evaluation" / "rigor-judge.txt").unlink()
    spec = write(cohorts_dir / "bad.yaml", """
        axes:
          combo_id: [combo_v1_000000000000, combo_v1_3c8dba1a974a]
          draft_template: [idea-sketch, no-such-draft]
          draft_llm: [offline_a]
          evaluation_template: [rigor-judge]
          evaluation_llm: [gpt-17]
        rules:
          tuples:
            essay: {axes: [essay_template, essay_llm], items: [[copy-draft, offline_b], [essay-from-draft, draft]]}
        output:
          field_order: [combo_id, draft_template, draft_llm, essay_template, essay_llm, evaluation_template,
                        evaluation_llm]
    """)
    with pytest.raises(cohorts.CohortError) as raised:
        cohorts.build_cohort(registered, "bad", spec)
    problems = raised.value.problems
    for fragment in ("combo_id 'combo_v1_000000000000' is not registered in", "unknown template 'no-such-draft'",
                     "unknown model 'gpt-17'", "rigor-judge.txt", "essay_llm 'draft' is not a model id",
                     "'copy-draft' is a copy", "give it essay_llm None and essay_replicate 1"):
        assert sum(fragment in p for p in problems) >= 1, (fragment, problems)
    assert all(p.startswith(str(spec)) for p in problems)
    assert not registered.membership_csv("bad").exists()


def test_a_combo_of_an_inactive_concept_is_an_error(registered, cohorts_dir):
    concepts = registered.concepts_metadata_csv
    concepts.write_text(concepts.read_text().replace("weak-ties,Strength of Weak Ties,True",
                                                     "weak-ties,Strength of Weak Ties,False"))
    spec = write(cohorts_dir / "inactive.yaml", TINY_DESIGN)
    with pytest.raises(cohorts.CohortError) as raised:
        cohorts.build_cohort(registered, "inactive", spec)
    assert len(raised.value.problems) == 2 and all("inactive concept 'weak-ties'" in p for p in raised.value.problems)


def test_a_compile_error_is_a_cohort_error_naming_the_spec(registered, cohorts_dir):
    spec = write(cohorts_dir / "typo.yaml", "axes:\n  combo_id: [c]\noutput:\n  field_order: [combo]\n")
    with pytest.raises(cohorts.CohortError) as raised:
        cohorts.build_cohort(registered, "typo", spec)
    assert raised.value.problems[0].startswith(f"{spec}: output.field_order: 'combo' is not an axis")


def test_a_plain_cohort_file_is_still_checked_against_the_cohort_schema(registered, cohorts_dir):
    spec = write(cohorts_dir / "plain.yaml", json.dumps({**TINY_COHORT, "rules": {}}))
    with pytest.raises(cohorts.CohortError, match="'rules' was unexpected"):
        cohorts.build_cohort(registered, "plain", spec)
