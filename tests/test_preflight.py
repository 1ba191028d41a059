"""The checkpoint renders the cohort's prompts for real: what passes it renders at run time,
and a valid template is never refused."""

import json

import pytest

from daydream import cohorts
from daydream.paths import Paths
from tests.conftest import TINY_COHORT, count_lines, run_workflow, write_cohort

INDEXED = ("Combine {{ concepts[0].name }} with {{ concepts[1].name }}.\n"
           "{{ concepts[0].content }}\n{{ concepts[1].content }}\n")
# Only a combination of three takes the branch, which names a key concepts do not have.
BRANCHED = INDEXED + "{% if concepts | length > 2 %}And {{ concepts[2].title }}.{% endif %}\n"
# Valid for every real essay (each has many words), not for a one-word text.
SECOND_WORD = "Judge this claim:\n{{ response.split()[1] }}\nEnd with SCORE: <0-9>\n"


def build(data_root, cohorts_dir, cohort_id, spec):
    write_cohort(cohorts_dir, cohort_id, spec)
    return cohorts.build_cohort(Paths(data_root), cohort_id, cohorts_dir / f"{cohort_id}.yaml")


def template(data_root, stage, template_id, text):
    (data_root / "1_raw" / "templates" / stage / f"{template_id}.txt").write_text(text)


def with_concepts(k, ids):
    spec = json.loads(json.dumps(TINY_COHORT))
    spec["concepts"] = {"level": "paragraph", "k": k, "ids": ids}
    return spec


def test_a_template_that_indexes_its_concepts_passes_for_its_k(data_root, cohorts_dir):
    template(data_root, "draft", "idea-sketch", INDEXED)
    rows = build(data_root, cohorts_dir, "pairs", TINY_COHORT)
    assert sum(r["stage"] == "draft" for r in rows) == 3


def test_a_branch_only_a_larger_k_takes_fails_at_the_checkpoint_naming_line_and_combo(data_root, cohorts_dir):
    template(data_root, "draft", "idea-sketch", BRANCHED)
    build(data_root, cohorts_dir, "pairs", TINY_COHORT)  # k=2 never takes the branch
    spec = with_concepts(3, ["default-mode-network", "exaptation", "weak-ties", "red-teaming"])
    with pytest.raises(cohorts.CohortError) as error:
        build(data_root, cohorts_dir, "triples", spec)
    path = data_root / "1_raw" / "templates" / "draft" / "idea-sketch.txt"
    [problem] = error.value.problems
    assert problem.startswith(f"{cohorts_dir / 'triples.yaml'}: draft template 'idea-sketch' does not render "
                              "for 4 of 4 combos (e.g. combo_v1_")
    assert f"{path} line 4: 'dict object' has no attribute 'title'; the variables for this stage are: concepts" \
        in problem


def test_child_templates_are_rendered_with_realistic_parents_so_valid_ones_pass(data_root, cohorts_dir):
    template(data_root, "evaluation", "novelty-judge", SECOND_WORD)
    rows = build(data_root, cohorts_dir, "tiny", TINY_COHORT)
    assert sum(r["stage"] == "evaluation" for r in rows) == 24


def test_a_child_template_that_fails_on_realistic_parents_fails_at_the_checkpoint(data_root, cohorts_dir):
    template(data_root, "essay", "essay-from-draft", "Expand:\n{{ draft_block.split('\\n\\n')[7] }}\n")
    with pytest.raises(cohorts.CohortError) as error:
        build(data_root, cohorts_dir, "tiny", TINY_COHORT)
    [problem] = error.value.problems
    assert "essay template 'essay-from-draft' does not render for 1 of 1 parent texts tried (e.g. with a draft " \
           "of template 'idea-sketch')" in problem
    assert "essay-from-draft.txt line 2: list object has no element 7" in problem


def test_a_template_that_renders_to_nothing_is_refused(data_root, cohorts_dir):
    template(data_root, "draft", "idea-sketch", "{% for c in concepts %}{% endfor %}\n")
    with pytest.raises(cohorts.CohortError, match="the prompt is empty \\(only whitespace\\); a model would be sent"):
        build(data_root, cohorts_dir, "tiny", TINY_COHORT)


def test_a_curated_cohort_renders_its_evaluations_with_the_listed_essays_real_texts(data_root, cohorts_dir):
    paths = Paths(data_root)
    rows = build(data_root, cohorts_dir, "tiny", TINY_COHORT)
    essay = next(r for r in rows if r["stage"] == "essay")
    draft = next(r for r in rows if r["gen_id"] == essay["parent_gen_id"])
    for item in (essay, draft):
        meta = {"gen_id": item["gen_id"], "parent_gen_id": item["parent_gen_id"], "combo_id": item["combo_id"],
                "template_id": item["template_id"], "model_id": item["llm_model_id"], "replicate": 1}
        paths.gen_dir(item["stage"], item["gen_id"]).mkdir(parents=True)
        paths.metadata_path(item["stage"], item["gen_id"]).write_text(json.dumps(meta))
    paths.parsed_path("essay", essay["gen_id"]).write_text("Short.")
    template(data_root, "evaluation", "rigor-judge", SECOND_WORD)
    with pytest.raises(cohorts.CohortError) as error:
        build(data_root, cohorts_dir, "curated", {"essays": [essay["gen_id"]],
                                                  "evaluation": {"templates": ["rigor-judge"], "models": ["offline_b"]}})
    assert f"with essay {essay['gen_id']}" in str(error.value) and "list object has no element 1" in str(error.value)


@pytest.mark.e2e
def test_what_passes_the_checkpoint_renders_at_run_time_and_what_fails_costs_nothing(data_root, cohorts_dir):
    template(data_root, "draft", "idea-sketch", BRANCHED)
    template(data_root, "evaluation", "novelty-judge", SECOND_WORD)
    run_workflow(data_root, cohorts_dir, ["tiny"])  # k=2: every prompt renders, every document is made
    paths = Paths(data_root)
    table = paths.membership_csv("tiny").read_text().splitlines()[1:]
    assert all(paths.parsed_path(line.split(",")[0], line.split(",")[1]).exists() for line in table)
    calls = count_lines(paths.llm_calls_jsonl)

    write_cohort(cohorts_dir, "triples", with_concepts(3, ["default-mode-network", "exaptation", "weak-ties"]))
    done = run_workflow(data_root, cohorts_dir, ["triples"], check=False)
    assert done.returncode != 0
    assert "draft template 'idea-sketch' does not render for 1 of 1 combos" in done.stderr
    assert count_lines(paths.llm_calls_jsonl) == calls
    assert not paths.membership_csv("triples").exists()
