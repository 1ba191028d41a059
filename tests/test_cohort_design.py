"""The cohort design language (SPEC-DSL.md): rows compiled from spec files, errors, membership,
and a design spec as a cohort (found, compiled to membership with our ids, checked like any cohort).

Every expected row below is worked out by hand from the spec in the test, following SPEC-DSL.md
"Row order"; `table` only turns the written-out rows into dicts.
"""

import csv
import json
import os
import random
import subprocess
import sys
import textwrap

import pytest

from daydream import cohort_design, cohorts, ids
from daydream.cohort_design import (
    Design,
    DesignError,
    compile_design,
    compile_design_file,
    design_membership,
    is_design_spec,
    load_design_spec,
    membership_summary,
)
from daydream.columns import MEMBERSHIP_COLUMNS
from daydream.paths import Paths
from tests.conftest import REPO, TINY_COHORT, TINY_DESIGN, write_dedented


def write_spec(tmp_path, text, files=None):
    """The spec file `config.yaml` in tmp_path, with the `@file:` files it names beside it."""
    for name, content in (files or {}).items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content).lstrip("\n"), encoding="utf-8")
    spec = tmp_path / "config.yaml"
    spec.write_text(textwrap.dedent(text), encoding="utf-8")
    return spec


def compiled(tmp_path, text, files=None, **kwargs):
    return compile_design_file(write_spec(tmp_path, text, files), **kwargs)


def problems_of(tmp_path, text, files=None):
    spec = write_spec(tmp_path, text, files)
    with pytest.raises(DesignError) as raised:
        compile_design_file(spec)
    for problem in raised.value.problems:
        assert problem.startswith(f"{spec}: ") and "\n" not in problem
    return raised.value.problems


def table(columns, *rows):
    """Rows written as space-separated levels, under space-separated column names."""
    names = columns.split()
    return [dict(zip(names, row.split(), strict=True)) for row in rows]


# --- axes and row order ------------------------------------------------------------------------


def test_axes_multiply_in_order_with_the_last_axis_fastest_and_repeated_levels_dropped(tmp_path):
    design = compiled(tmp_path, """
        axes:
          combo_id: [c1, c2, c1]
          draft_template: [t1, t2, t1]
          draft_llm: [m1]
        output:
          field_order: [draft_template, combo_id]
    """)
    assert design.columns == ["draft_template", "combo_id", "draft_llm"]
    assert design.rows == table("draft_template combo_id draft_llm",
                                "t1 c1 m1", "t2 c1 m1", "t1 c2 m1", "t2 c2 m1")
    assert design.seed is None


def test_file_axes_read_txt_yaml_json_and_one_column_csv(tmp_path):
    design = compiled(tmp_path, """
        axes:
          combo_id: '@file:items/combos.txt'
          draft_template: '@file:items/drafts.yaml'
          draft_llm: '@file:items/models.json'
          evaluation_llm: '@file:items/judges.csv'
        output:
          field_order: [combo_id, draft_template, draft_llm, evaluation_llm]
    """, files={
        "items/combos.txt": "c1\n\n  c2  \nc1\n",
        "items/drafts.yaml": "- t1\n- 't2'\n",
        "items/models.json": '["m1"]',
        "items/judges.csv": "model\n s \ng\n\n",
    })
    assert design.rows == table("combo_id draft_template draft_llm evaluation_llm",
                                "c1 t1 m1 s", "c1 t1 m1 g", "c1 t2 m1 s", "c1 t2 m1 g",
                                "c2 t1 m1 s", "c2 t1 m1 g", "c2 t2 m1 s", "c2 t2 m1 g")


def test_replicate_axes_are_axes_of_quoted_numbers(tmp_path):
    design = compiled(tmp_path, """
        axes:
          draft_template: [t1]
          draft_replicate: ['1', '2']
          evaluation_replicate: ['1', '2', '1']
        output:
          field_order: [draft_template, evaluation_replicate, draft_replicate]
    """)
    assert design.rows == table("draft_template evaluation_replicate draft_replicate",
                                "t1 1 1", "t1 2 1", "t1 1 2", "t1 2 2")


def test_seed_shuffles_the_rows_with_random_shuffle(tmp_path):
    text = """
        axes:
          a: [a1, a2, a3]
          b: [b1, b2]
        output:
          field_order: [a, b]
          seed: 17
    """
    unshuffled = table("a b", "a1 b1", "a1 b2", "a2 b1", "a2 b2", "a3 b1", "a3 b2")
    expected = list(unshuffled)
    random.Random(17).shuffle(expected)
    design = compiled(tmp_path, text)
    assert design.rows == expected and design.rows != unshuffled and design.seed == 17
    overridden = list(unshuffled)
    random.Random(5).shuffle(overridden)
    assert compiled(tmp_path, text, seed=5).rows == overridden


def test_compile_design_takes_a_dict_and_a_base_dir(tmp_path):
    (tmp_path / "levels.txt").write_text("x1\nx2\n")
    spec = {"axes": {"x": "@file:levels.txt"}, "output": {"field_order": ["x"]}}
    design = compile_design(spec, tmp_path)
    assert design == Design(["x"], table("x", "x1", "x2"), f"{tmp_path} (design spec)", None)
    assert is_design_spec(spec) and not is_design_spec({"concepts": {}})


# --- subsets -----------------------------------------------------------------------------------


def test_subset_keeps_listed_levels_in_the_axis_order(tmp_path):
    design = compiled(tmp_path, """
        axes:
          a: [a1, a2, a3, a4]
          b: [b1, b2]
        rules:
          subsets:
            a: [a3, a1, not-a-level]
            b: '@file:keep_b.txt'
        output:
          field_order: [a, b]
    """, files={"keep_b.txt": "b2\n"})
    assert design.rows == table("a b", "a1 b2", "a3 b2")


# --- ties --------------------------------------------------------------------------------------

TIE_AXES = """
    axes:
      combo_id: [c1]
      draft_template: [t1, t2, t3]
      draft_llm: [m1, m2]
      essay_template: [t3, x, t1]
"""
TIE_FIELDS = """
    output:
      field_order: [combo_id, draft_template, essay_template, draft_llm]
"""


def test_tie_gives_the_common_levels_to_every_tied_axis_where_the_first_stood(tmp_path):
    design = compiled(tmp_path, TIE_AXES + """
    rules:
      ties:
        template: [draft_template, essay_template]
    """ + TIE_FIELDS)
    # common levels in draft_template's order: t1, t3; the tie stands where draft_template stood
    assert design.columns == ["combo_id", "draft_template", "essay_template", "draft_llm"]
    assert design.rows == table("combo_id draft_template essay_template draft_llm",
                                "c1 t1 t1 m1", "c1 t1 t1 m2", "c1 t3 t3 m1", "c1 t3 t3 m2")


def test_a_later_subset_naming_a_tied_axis_means_the_tie(tmp_path):
    design = compiled(tmp_path, TIE_AXES + """
    rules:
      ties:
        template: [draft_template, essay_template]
      subsets:
        essay_template: [t3]
    """ + TIE_FIELDS)
    assert design.rows == table("combo_id draft_template essay_template draft_llm",
                                "c1 t3 t3 m1", "c1 t3 t3 m2")


def test_a_later_pair_naming_a_tied_axis_pairs_the_tie(tmp_path):
    design = compiled(tmp_path, TIE_AXES + """
    rules:
      ties:
        template: [draft_template, essay_template]
      pairs:
        draft_pairing: {left: essay_template, right: draft_llm, allowed: [[t3, m1], [t1, m2]]}
    """ + TIE_FIELDS)
    assert design.rows == table("combo_id draft_template essay_template draft_llm",
                                "c1 t3 t3 m1", "c1 t1 t1 m2")


@pytest.mark.parametrize("name, expected", [
    # the name is a tied axis: the tie keeps essay_template's place, after draft_llm
    ("essay_template", ["t1 m1 t1", "t2 m1 t2", "t1 m2 t1", "t2 m2 t2"]),
    # a new name: the tie stands where the earliest tied axis (draft_template) stood
    ("template", ["t1 m1 t1", "t1 m2 t1", "t2 m1 t2", "t2 m2 t2"]),
])
def test_tie_named_after_a_tied_axis_keeps_that_axis_place(tmp_path, name, expected):
    design = compiled(tmp_path, f"""
        axes:
          draft_template: [t1, t2]
          draft_llm: [m1, m2]
          essay_template: [t2, t1]
        rules:
          ties:
            {name}: [draft_template, essay_template]
        output:
          field_order: [draft_template, draft_llm, essay_template]
    """)
    assert design.rows == table("draft_template draft_llm essay_template", *expected)


def test_tie_may_be_written_as_a_mapping_of_axes(tmp_path):
    design = compiled(tmp_path, """
        axes:
          a: [x, y]
          b: [y, z]
        rules:
          ties:
            ab: {axes: [a, b]}
        output:
          field_order: [b, a]
    """)
    assert design.rows == table("b a", "y y")


# --- pairs -------------------------------------------------------------------------------------


def test_pair_keeps_allowed_combinations_where_the_earlier_side_stood(tmp_path):
    design = compiled(tmp_path, """
        axes:
          combo_id: [c1]
          evaluation_llm: [s, g]
          draft_llm: [m1, m2]
          evaluation_template: [n, r]
        rules:
          pairs:
            judge:
              left: evaluation_template
              right: evaluation_llm
              allowed: [[n, s], [r, g], [r, s], [n, s]]
        output:
          field_order: [combo_id]
    """)
    # the pair stands where evaluation_llm stood; it expands left side first
    assert design.columns == ["combo_id", "evaluation_template", "evaluation_llm", "draft_llm"]
    assert design.rows == table("combo_id evaluation_template evaluation_llm draft_llm",
                                "c1 n s m1", "c1 n s m2", "c1 r g m1", "c1 r g m2", "c1 r s m1", "c1 r s m2")


PAIR_SPEC = """
    axes:
      evaluation_template: [n, r]
      evaluation_llm: [s, g]
    rules:
      pairs:
        judge: {{left: evaluation_template, right: evaluation_llm, allowed: {allowed}, balance: {balance}}}
    output:
      field_order: [evaluation_template, evaluation_llm]
"""


@pytest.mark.parametrize("balance, allowed, expected", [
    ("left", "[[n, s], [r, s]]", ["n s", "r s"]),
    ("right", "[[n, s], [n, g]]", ["n s", "n g"]),
    ("both", "[[n, s], [n, g], [r, s], [r, g]]", ["n s", "n g", "r s", "r g"]),
])
def test_balanced_pairs_compile(tmp_path, balance, allowed, expected):
    design = compiled(tmp_path, PAIR_SPEC.format(allowed=allowed, balance=balance))
    assert design.rows == table("evaluation_template evaluation_llm", *expected)


@pytest.mark.parametrize("balance, allowed, expected", [
    ("left", "[[n, s], [n, g], [r, s]]", [("left", "'n': 2, 'r': 1")]),
    ("right", "[[n, s], [r, s], [r, g]]", [("right", "'s': 2, 'g': 1")]),
    ("both", "[[n, s], [n, g], [r, s]]", [("left", "'n': 2, 'r': 1"), ("right", "'s': 2, 'g': 1")]),
])
def test_unbalanced_pairs_name_the_counts(tmp_path, balance, allowed, expected):
    problems = problems_of(tmp_path, PAIR_SPEC.format(allowed=allowed, balance=balance))
    assert len(problems) == len(expected)
    for problem, (side, counts) in zip(problems, expected, strict=True):
        assert "rules.pairs.judge" in problem and f"the {side} values occur unequally" in problem
        assert f"({counts})" in problem


def test_pair_allowed_from_a_two_column_csv(tmp_path):
    design = compiled(tmp_path, PAIR_SPEC.format(allowed="'@file:items/judges.csv'", balance="both"),
                      files={"items/judges.csv": "evaluation_template,evaluation_llm\nr,g\nn,s\nr,g\n"})
    assert design.rows == table("evaluation_template evaluation_llm", "r g", "n s")


def test_pair_whose_side_is_a_tuple_writes_its_values_as_lists(tmp_path):
    design = compiled(tmp_path, """
        axes:
          combo_id: [c1]
          draft_template: [d1, d2]
        rules:
          tuples:
            essay_bundle: {axes: [essay_template, essay_llm], items: [[e1, m1], [e2, None]]}
          pairs:
            draft_essay:
              left: draft_template
              right: essay_bundle
              allowed: [[d1, [e1, m1]], [d2, [e2, None]], [d1, [e2, None]]]
        output:
          field_order: [combo_id, draft_template, essay_template, essay_llm]
    """)
    assert design.rows == table("combo_id draft_template essay_template essay_llm",
                                "c1 d1 e1 m1", "c1 d2 e2 None", "c1 d1 e2 None")


def test_a_later_subset_may_name_a_pair_with_its_values_as_lists(tmp_path):
    design = compiled(tmp_path, """
        axes:
          evaluation_template: [n, r]
          evaluation_llm: [s, g]
        rules:
          pairs:
            judge: {left: evaluation_template, right: evaluation_llm, allowed: [[n, s], [r, g], [r, s]]}
          subsets:
            judge: [[r, s], [n, s]]
        output:
          field_order: [evaluation_template, evaluation_llm]
    """)
    assert design.rows == table("evaluation_template evaluation_llm", "n s", "r s")


# --- tuples ------------------------------------------------------------------------------------


def test_tuple_from_inline_items_stands_at_the_end_when_only_tuples_define_its_axes(tmp_path):
    design = compiled(tmp_path, """
        axes:
          combo_id: [c1, c2]
          evaluation_llm: [j1]
        rules:
          tuples:
            essay_bundle:
              axes: [essay_template, essay_llm]
              items: [[e1, m1], [e2, None], [e1, m1]]
        output:
          field_order: [combo_id, essay_template, essay_llm, evaluation_llm]
    """)
    assert design.rows == table("combo_id essay_template essay_llm evaluation_llm",
                                "c1 e1 m1 j1", "c1 e2 None j1", "c2 e1 m1 j1", "c2 e2 None j1")


def test_tuple_from_a_multi_column_csv_in_header_order(tmp_path):
    design = compiled(tmp_path, """
        axes:
          combo_id: [c1]
          evaluation_llm: [s, g]
        rules:
          tuples:
            bundle:
              axes: [essay_template, essay_llm, evaluation_template]
              items: '@file:items/bundles.csv'
        output:
          field_order: [combo_id, essay_template, essay_llm, evaluation_template, evaluation_llm]
    """, files={"items/bundles.csv": """
        essay_template,essay_llm,evaluation_template
        e1,m1,n
        e2,None,r
         e1 , m1 , n
    """})
    assert design.rows == table("combo_id essay_template essay_llm evaluation_template evaluation_llm",
                                "c1 e1 m1 n s", "c1 e2 None r s", "c1 e1 m1 n g", "c1 e2 None r g")


def test_tuple_over_a_tie_checks_values_against_the_tie(tmp_path):
    design = compiled(tmp_path, """
        axes:
          draft_template: [d1, d2]
          essay_template: [d2, d1]
        rules:
          ties:
            template: [draft_template, essay_template]
          tuples:
            bundle: {axes: [template, essay_llm], items: [[d2, m1], [d1, None]]}
        output:
          field_order: [draft_template, essay_template, essay_llm]
    """)
    assert design.rows == table("draft_template essay_template essay_llm", "d2 d2 m1", "d1 d1 None")


# --- errors ------------------------------------------------------------------------------------

AB = "axes:\n  a: [a1, a2]\n  b: [b1, b2]\n"
AB_OUT = "output:\n  field_order: [a]\n"


@pytest.mark.parametrize("text, files, fragments", [
    ("axes:\n  a: [1, a2]\n" + AB_OUT, {}, ["axes.a[0]", "1 was read as int", "quote it"]),
    ("axes:\n  a: [a1, 2.5]\n" + AB_OUT, {}, ["axes.a[1]", "2.5 was read as float", "quote it"]),
    ("axes:\n  a: [yes]\n" + AB_OUT, {}, ["axes.a[0]", "read as bool", "quote it"]),
    ("axes:\n  a: [null]\n" + AB_OUT, {}, ["axes.a[0]", "null is not a level", "None"]),
    ("axes:\n  a: '@file:a.json'\n" + AB_OUT, {"a.json": "[7]"}, ["axes.a[0]", "quote it"]),
    (AB + "rules:\n  subsets: {a: [zz]}\n" + AB_OUT, {},
     ["rules.subsets.a", "nothing left", "'zz'", "'a1', 'a2'", "keep at least one"]),
    (AB + "rules:\n  ties: {t: [a, b]}\n" + AB_OUT, {},
     ["rules.ties.t", "no level common to a, b", "a: 'a1', 'a2'; b: 'b1', 'b2'", "shared level"]),
    (AB + "rules:\n  pairs: {p: {left: a, right: b, allowed: [[a1, b1], [a2, zz]]}}\n" + AB_OUT, {},
     ["rules.pairs.p.allowed[1]", "'zz' is not a level of 'b'", "'b1', 'b2'"]),
    (AB + "rules:\n  pairs: {p: {left: a, right: b, allowed: [[a1, b1, b2]]}}\n" + AB_OUT, {},
     ["rules.pairs.p.allowed[0]", "3 value(s) for 2 axes (a, b)"]),
    (AB + "rules:\n  pairs: {p: {left: a, right: b, allowed: [[a1, b1]], balance: middle}}\n" + AB_OUT, {},
     ["rules.pairs.p", "balance 'middle'", "left, right, both"]),
    (AB + "rules:\n  tuples: {t: {axes: [x, y], items: [[x1, y1], [x2]]}}\n" + AB_OUT, {},
     ["rules.tuples.t.items[1]", "['x2'] has 1 value(s) for 2 axes (x, y)", "one value per axis"]),
    (AB + "rules:\n  subsets: {y: [y1]}\n  tuples: {t: {axes: [x, y], items: [[x1, y1], [x2, y2]]}}\n" + AB_OUT,
     {}, ["rules.tuples.t.items[1]", "'y2' is not a level of 'y' ('y1')"]),
    (AB + "rules:\n  tuples: {t: {axes: [b, y], items: [[b1, y1]]}}\n" + AB_OUT, {},
     ["rules.tuples.t", "axis 'b' is declared under axes", "remove axes.b"]),
    (AB + "rules:\n  tuples: {t: {axes: [x], items: [x1], expand: true}}\n" + AB_OUT, {},
     ["rules.tuples.t", "unknown key 'expand'"]),
    (AB + "rules:\n  ties: {t: [a, b]}\n  subsets: {a: [a1]}\n" + AB_OUT, {},
     ["rules.ties.t", "no level common"]),
    (AB + "rules:\n  pairs: {p: {left: a, right: b, allowed: [[a1, b1]]}}\n  subsets: {a: [a1]}\n" + AB_OUT, {},
     ["rules.subsets.a", "'a' is already inside 'p'", "name 'p' instead"]),
    (AB + "rules:\n  subsets: {zz: [a1]}\n" + AB_OUT, {}, ["rules.subsets.zz", "unknown axis 'zz'", "'a', 'b'"]),
    (AB + "rules:\n  pairs: {a: {left: a, right: b, allowed: [[a1, b1]]}}\n" + AB_OUT, {},
     ["rules.pairs.a", "'a' is already an axis", "new name"]),
    (AB + "rules:\n  joins: {}\n" + AB_OUT, {}, ["rules.joins", "unknown rule section", "subsets, ties"]),
    (AB + "rules:\n  - subset: {axis: a, keep: [a1]}\n" + AB_OUT, {}, ["rules: must be a mapping of sections"]),
    (AB + "replicates: {a: {count: 2}}\n" + AB_OUT, {}, ["replicates: unknown section", "replicate axis"]),
    (AB + "rules:\n  ties: {t: [a, b]}\noutput:\n  field_order: [t, a]\n", {},
     ["output.field_order", "'t' is not an axis", "'a', 'b'"]),
    (AB + "output:\n  field_order: [a, a]\n", {}, ["output.field_order", "names a column twice"]),
    (AB + "output:\n  seed: 3\n", {}, ["output.field_order", "is required"]),
    (AB, {}, ["output: is required", "field_order"]),
    (AB + "output:\n  field_order: [a]\n  seed: '17'\n", {}, ["output.seed", "'17' is not a whole number"]),
    ("axes:\n  a: '@file:a.csv'\n" + AB_OUT, {"a.csv": "x,y\nx1,y1\nx2,\n"},
     ["axes.a: @file:a.csv", "line 3, column 'y' is empty", "fill it in"]),
    ("axes:\n  a: '@file:a.csv'\n" + AB_OUT, {"a.csv": "x\n"}, ["axes.a: @file:a.csv", "no data row"]),
    ("axes:\n  a: '@file:a.csv'\n" + AB_OUT, {"a.csv": "\n"}, ["axes.a: @file:a.csv", "a header row"]),
    ("axes:\n  a: '@file:a.csv'\n" + AB_OUT, {"a.csv": "x,y\nx1,y1\n"}, ["axes.a", "levels must be strings"]),
    ("axes:\n  a: '@file:a.csv'\n" + AB_OUT, {"a.csv": "x,y\nx1\n"}, ["line 2 has 1 cells, the header 2"]),
    ("axes:\n  a: '@file:missing.txt'\n" + AB_OUT, {}, ["axes.a: @file:missing.txt", "not found", "fix the path"]),
    ("axes:\n  a: '@file:a.toml'\n" + AB_OUT, {"a.toml": "x"}, ["axes.a: @file:a.toml", "unsupported file type"]),
    ("axes:\n  a: '@file:a.yaml'\n" + AB_OUT, {"a.yaml": "[unclosed\n"}, ["axes.a: @file:a.yaml", "a.yaml"]),
    ("axes:\n  a: '@file:a.yaml'\n" + AB_OUT, {"a.yaml": "{x: 1, x: 2}\n"}, ["'x' is written twice", "fix the file"]),
    ("axes:\n  a: {levels: [a1]}\n" + AB_OUT, {}, ["axes.a", "must be a non-empty list of levels"]),
    ("axes: {}\n" + AB_OUT, {}, ["axes: no axes", "define them with tuple rules"]),
    ("axes:\n" + AB_OUT, {}, ["axes: no axes"]),
    ("axes: [a, b]\n" + AB_OUT, {}, ["axes: must be a mapping"]),
])
def test_bad_specs_name_the_file_the_item_and_the_fix(tmp_path, text, files, fragments):
    problems = problems_of(tmp_path, text, files)
    assert any(all(fragment in p for fragment in fragments) for p in problems), problems


def test_every_independent_problem_is_reported_once(tmp_path):
    problems = problems_of(tmp_path, """
        axes:
          a: [a1, 5]
          b: [b1, b2]
          c: [c1]
        rules:
          subsets:
            a: [a1]
            b: [zz]
          pairs:
            p: {left: b, right: c, allowed: [[b1, c9]]}
          tuples:
            t: {axes: [p, y], items: [[[b1, c1], y1]]}
        output:
          field_order: [a, b, nope]
    """)
    # the bad level 5 silences the subset on a; the bad pair p silences the tuple naming it
    assert len(problems) == 4, problems
    assert "axes.a[1]: 5 was read as int" in problems[0]
    assert "rules.subsets.b: nothing left" in problems[1]
    assert "rules.pairs.p.allowed[0]: 'c9' is not a level of 'c'" in problems[2]
    assert "output.field_order: 'nope' is not an axis" in problems[3]


def test_load_design_spec_names_the_file(tmp_path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(DesignError, match=f"{missing}: design spec not found"):
        load_design_spec(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("axes: [unclosed\n")
    with pytest.raises(DesignError, match=f"{broken}: not valid YAML"):
        load_design_spec(broken)
    plain = tmp_path / "plain.yaml"
    plain.write_text("concepts: {level: paragraph}\n")
    with pytest.raises(DesignError, match=f"{plain}: not a design spec"):
        load_design_spec(plain)
    twice = tmp_path / "twice.yaml"
    twice.write_text("axes:\n  a: [a1]\nrules:\n  subsets: {a: [a1]}\n  subsets: {a: [a2]}\n")
    with pytest.raises(DesignError, match=f"{twice}: not valid YAML: 'subsets' is written twice .* line 5"):
        load_design_spec(twice)
    assert isinstance(DesignError(["x"]), ValueError)


# --- from design rows to membership ------------------------------------------------------------


def member(stage, gen_id, parent, combo_id, template_id, model_id, replicate, cohort_id="dsl"):
    values = (stage, gen_id, cohort_id, parent, combo_id, template_id, model_id, replicate)
    return dict(zip(MEMBERSHIP_COLUMNS, values, strict=True))


def test_membership_of_a_compiled_design_uses_the_spec_ids_and_drops_repeats(tmp_path):
    design = compiled(tmp_path, """
        axes:
          combo_id: [combo_v1_85128e4e5ef3]
          draft_template: [creative-synthesis-v10]
          draft_llm: [gemini_25_pro]
          evaluation_template: [novelty]
          evaluation_llm: [sonnet-4, gemini_25_pro]
          evaluation_replicate: ['1', '2']
        rules:
          tuples:
            essay_bundle:
              axes: [essay_template, essay_llm]
              items: [[creative-synthesis-v10, None], [creative-synthesis-v10, gemini_25_pro],
                      [parsed-from-links-v1, sonnet-4]]
        output:
          field_order: [combo_id, draft_template, draft_llm, essay_template, essay_llm,
                        evaluation_template, evaluation_llm, evaluation_replicate]
    """)
    assert len(design.rows) == 12
    combo, draft = "combo_v1_85128e4e5ef3", "d_5ezrffv9uf3lr37d"  # SPEC §4's worked example
    # None and the draft's own model name the same essay: no 4th signature part
    copy_like = "e_sq5klak2lljyyom"
    other = ids.gen_id("essay", draft, "parsed-from-links-v1", 1, "sonnet-4")
    evaluations = [member("evaluation", ids.gen_id("evaluation", essay, "novelty", judge, rep), essay, combo,
                          "novelty", judge, rep)
                   for judge in ("sonnet-4", "gemini_25_pro") for rep in (1, 2) for essay in (copy_like, other)]
    assert design_membership(design, "dsl") == [
        member("draft", draft, "", combo, "creative-synthesis-v10", "gemini_25_pro", 1),
        member("essay", copy_like, draft, combo, "creative-synthesis-v10", "gemini_25_pro", 1),
        member("essay", other, draft, combo, "parsed-from-links-v1", "sonnet-4", 1),
        *evaluations,
    ]
    assert len({e["gen_id"] for e in evaluations}) == 8


def test_membership_reads_column_aliases_and_replicates(tmp_path):
    columns = ["combo", "draft_template", "generation_llm", "draft_rep", "essay_template", "essay_llm",
               "essay_template_replicate", "evaluation_template", "evaluation_llm", "evaluation_llm_replicate"]
    design = Design(columns, table(" ".join(columns),
                                   "c1 t1 m1 2 e1 m2 1 v1 j1 3",
                                   "c1 t1 m1 2 e1 m2 1 v1 j1 3",
                                   "c1 t1 m1 1 e1 none 2 v1 j1 1"), "spec.yaml")
    draft2 = ids.gen_id("draft", "c1", "t1", "m1", 2)
    draft1 = ids.gen_id("draft", "c1", "t1", "m1", 1)
    essay_a = ids.gen_id("essay", draft2, "e1", 1, "m2")
    essay_b = ids.gen_id("essay", draft1, "e1", 2)
    assert design_membership(design, "dsl") == [
        member("draft", draft2, "", "c1", "t1", "m1", 2),
        member("draft", draft1, "", "c1", "t1", "m1", 1),
        member("essay", essay_a, draft2, "c1", "e1", "m2", 1),
        member("essay", essay_b, draft1, "c1", "e1", "m1", 2),
        member("evaluation", ids.gen_id("evaluation", essay_a, "v1", "j1", 3), essay_a, "c1", "v1", "j1", 3),
        member("evaluation", ids.gen_id("evaluation", essay_b, "v1", "j1", 1), essay_b, "c1", "v1", "j1", 1),
    ]


def test_membership_without_essay_llm_or_replicate_columns_uses_the_draft_model_and_1():
    columns = ["combo_id", "draft_template", "draft_model", "essay_template", "evaluation_template", "evaluation_llm"]
    design = Design(columns, table(" ".join(columns), "c1 t1 m1 e1 v1 j1"), "spec.yaml")
    draft = ids.gen_id("draft", "c1", "t1", "m1", 1)
    essay = ids.gen_id("essay", draft, "e1", 1)
    assert design_membership(design, "dsl") == [
        member("draft", draft, "", "c1", "t1", "m1", 1),
        member("essay", essay, draft, "c1", "e1", "m1", 1),
        member("evaluation", ids.gen_id("evaluation", essay, "v1", "j1", 1), essay, "c1", "v1", "j1", 1),
    ]


@pytest.mark.parametrize("columns, row, fragments", [
    ("combo_id draft_template draft_llm essay_template evaluation_template evaluation_llm draft_replicate",
     "c1 t1 m1 e1 v1 j1 0", ["spec.yaml: design row 1: draft_replicate is 0", "count from 1"]),
    ("combo_id draft_template draft_llm essay_template evaluation_template evaluation_llm evaluation_rep",
     "c1 t1 m1 e1 v1 j1 two", ["design row 1: evaluation_rep 'two' is not a whole number"]),
    ("combo_id draft_template draft_llm essay_template evaluation_template", "c1 t1 m1 e1 v1",
     ["spec.yaml: the design has no evaluation_llm column", "add an axis named evaluation_llm"]),
    ("combo combo_id draft_template draft_llm essay_template evaluation_template evaluation_llm",
     "c1 c1 t1 m1 e1 v1 j1", ["columns combo_id, combo all mean combo_id", "keep one"]),
    ("combo_id draft_template draft_model generation_llm essay_template evaluation_template evaluation_llm",
     "c1 t1 m1 m1 e1 v1 j1", ["columns draft_model, generation_llm all mean draft_llm"]),
])
def test_membership_errors_name_the_spec_and_the_row(columns, row, fragments):
    design = Design(columns.split(), table(columns, row), "spec.yaml")
    with pytest.raises(DesignError) as raised:
        design_membership(design, "dsl")
    assert any(all(f in p for f in fragments) for p in raised.value.problems), raised.value.problems


def test_membership_summary_lists_what_the_checkpoint_must_check():
    columns = "combo_id draft_template draft_llm essay_template essay_llm evaluation_template evaluation_llm"
    design = Design(columns.split(), table(columns, "c2 t1 m1 e1 None v1 j2", "c1 t1 m1 e2 m3 v1 j1"), "s")
    assert membership_summary(design_membership(design, "dsl")) == {
        "combo_ids": ["c1", "c2"],
        "draft": {"templates": ["t1"], "models": ["m1"], "replicates": [1]},
        "essay": {"templates": ["e1", "e2"], "models": ["m1", "m3"], "replicates": [1]},
        "evaluation": {"templates": ["v1"], "models": ["j1", "j2"], "replicates": [1]},
    }


# --- the command line --------------------------------------------------------------------------


def test_cli_prints_jsonl_or_csv_and_fails_with_the_problems(tmp_path):
    spec = write_spec(tmp_path, """
        axes:
          b: [b1, b2]
          a: [a1]
        output:
          field_order: [a, b]
    """)
    script = [sys.executable, str(REPO / "scripts" / "compile_cohort_spec.py")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run(*args):
        return subprocess.run([*script, *args], capture_output=True, text=True, env=env, timeout=60)

    done = run(str(spec))
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == [{"a": "a1", "b": "b1"}, {"a": "a1", "b": "b2"}]
    done = run(str(spec), "--format", "csv", "--seed", "1")
    order = ["a1,b1", "a1,b2"]
    random.Random(1).shuffle(order)
    assert done.returncode == 0 and done.stdout.splitlines() == ["a,b", *order]
    (tmp_path / "bad.yaml").write_text("axes:\n  a: [1]\noutput:\n  field_order: [a]\n")
    done = run(str(tmp_path / "bad.yaml"))
    assert done.returncode == 1 and done.stdout == ""
    assert f"- {tmp_path / 'bad.yaml'}: axes.a[0]: 1 was read as int" in done.stderr


@pytest.mark.parametrize("empty", ["axes: {}", "axes:"])
def test_axes_may_be_empty_when_tuple_rules_define_every_axis(tmp_path, empty):
    """A curated bundle (the original accepts it): essay template x essay model x evaluation
    template x evaluation model, all from one tuple, crossed with a combo tuple."""
    design = compiled(tmp_path, "\n        " + empty + """
        rules:
          tuples:
            lineage: {axes: [combo_id, draft_template, draft_llm], items: [[c1, d1, m1], [c2, d1, m2]]}
            bundle:
              axes: [essay_template, essay_llm, evaluation_template, evaluation_llm]
              items: [[e1, m1, v1, j1], [e2, None, v1, j2]]
        output:
          field_order: [combo_id, draft_template, draft_llm, essay_template, essay_llm, evaluation_template, evaluation_llm]
    """)
    assert design.rows == table("combo_id draft_template draft_llm essay_template essay_llm evaluation_template "
                                "evaluation_llm", "c1 d1 m1 e1 m1 v1 j1", "c1 d1 m1 e2 None v1 j2",
                                "c2 d1 m2 e1 m1 v1 j1", "c2 d1 m2 e2 None v1 j2")
# --- a design spec as a cohort: found where today's cohorts or the original kept it, compiled to
# membership with our ids, and checked like any cohort, every problem at once ------------------

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
    spec = write_dedented(cohorts_dir / "dsl.yaml", TINY_DESIGN)
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
    spec = write_dedented(registered.design_spec_file("old"), TINY_DESIGN.replace(
        "evaluation_llm: [offline_a, offline_b]", "evaluation_llm: '@file:items/judges.txt'"))
    write_dedented(spec.parent / "items" / "judges.txt", "offline_a\noffline_b\n")
    assert cohort_design.cohort_definition(registered, "old") == spec
    assert cohort_design.definition_files(registered, "old") == [str(spec), str(spec.parent / "items" / "judges.txt")]
    cohorts.build_cohort(registered, "old", spec)
    assert without_cohort(membership(registered, "old")) == without_cohort(membership(registered, "tiny"))
    # a plain cohort file lists itself only; today's place wins when only it exists
    assert cohort_design.definition_files(registered, "tiny") == [str(cohorts_dir / "tiny.yaml")]


def test_a_cohort_defined_in_both_places_is_an_error_naming_both(registered, cohorts_dir):
    write_dedented(registered.design_spec_file("tiny"), TINY_DESIGN)
    with pytest.raises(cohort_design.DesignError) as raised:
        cohort_design.cohort_definition(registered, "tiny")
    assert str(cohorts_dir / "tiny.yaml") in str(raised.value) and str(registered.design_spec_file("tiny")) in str(
        raised.value) and "keep one" in str(raised.value)
    assert cohort_design.definition_files(registered, "tiny") == [str(cohorts_dir / "tiny.yaml"),
                                                                 str(registered.design_spec_file("tiny"))]


def test_a_missing_file_of_a_spec_is_left_to_the_checkpoint_to_report(registered, cohorts_dir):
    spec = write_dedented(cohorts_dir / "gap.yaml", TINY_DESIGN.replace("draft_llm: [offline_a]", "draft_llm: '@file:m.txt'"))
    assert cohort_design.definition_files(registered, "gap") == [str(spec)]
    with pytest.raises(cohorts.CohortError) as raised:
        cohorts.build_cohort(registered, "gap", spec)
    assert raised.value.problems == [f"{spec}: axes.draft_llm: @file:m.txt: file {cohorts_dir / 'm.txt'} not found; "
                                     "create it or fix the path (relative to the spec file)"]


def test_every_problem_of_a_design_is_named_before_any_call(registered, cohorts_dir):
    (registered.raw_root / "templates" / "evaluation" / "rigor-judge.txt").unlink()
    spec = write_dedented(cohorts_dir / "bad.yaml", """
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
    spec = write_dedented(cohorts_dir / "inactive.yaml", TINY_DESIGN)
    with pytest.raises(cohorts.CohortError) as raised:
        cohorts.build_cohort(registered, "inactive", spec)
    assert len(raised.value.problems) == 2 and all("inactive concept 'weak-ties'" in p for p in raised.value.problems)


def test_a_compile_error_is_a_cohort_error_naming_the_spec(registered, cohorts_dir):
    spec = write_dedented(cohorts_dir / "typo.yaml", "axes:\n  combo_id: [c]\noutput:\n  field_order: [combo]\n")
    with pytest.raises(cohorts.CohortError) as raised:
        cohorts.build_cohort(registered, "typo", spec)
    assert raised.value.problems[0].startswith(f"{spec}: output.field_order: 'combo' is not an axis")


def test_a_plain_cohort_file_is_still_checked_against_the_cohort_schema(registered, cohorts_dir):
    spec = write_dedented(cohorts_dir / "plain.yaml", json.dumps({**TINY_COHORT, "rules": {}}))
    with pytest.raises(cohorts.CohortError, match="'rules' was unexpected"):
        cohorts.build_cohort(registered, "plain", spec)
