import pytest

from daydream import prompts


def test_draft_templates_see_concepts_in_combo_order(tmp_path):
    template = tmp_path / "t.txt"
    template.write_text("{% for c in concepts %}{{ c.name }}={{ c.content }};{% endfor %}")
    concepts = [{"concept_id": "b", "name": "B", "content": "bee"}, {"concept_id": "a", "name": "A", "content": "ay"}]
    assert prompts.render(template, **prompts.draft_variables(concepts)) == "B=bee;A=ay;"


def test_raw_blocks_keep_literal_braces(tmp_path):
    template = tmp_path / "t.txt"
    template.write_text("{% raw %}{{ not a variable }}{% endraw %} {{ response }}")
    assert prompts.render(template, **prompts.evaluation_variables("ok")) == "{{ not a variable }} ok"


def test_an_undefined_variable_names_the_file_and_the_known_variables(tmp_path):
    template = tmp_path / "essay.txt"
    template.write_text("{{ draft }}")
    with pytest.raises(prompts.PromptError) as error:
        prompts.render(template, **prompts.essay_variables("text"))
    assert str(template) in str(error.value) and "'draft' is undefined" in str(error.value)
    assert "draft_block" in str(error.value)


def test_a_syntax_error_names_the_file_and_the_line(tmp_path):
    template = tmp_path / "bad.txt"
    template.write_text("line one\n{% if x %}\nno end")
    with pytest.raises(prompts.PromptError, match=r"bad.txt line \d+: Jinja2 syntax error"):
        prompts.check_template("evaluation", template)


def test_a_missing_template_file_is_named(tmp_path):
    with pytest.raises(prompts.PromptError, match="template file not found"):
        prompts.render(tmp_path / "absent.txt")


def test_an_edited_template_is_recompiled(tmp_path):
    template = tmp_path / "t.txt"
    template.write_text("one {{ response }}")
    assert prompts.render(template, response="x") == "one x"
    template.write_text("two {{ response }}")
    import os
    os.utime(template, ns=(template.stat().st_atime_ns, template.stat().st_mtime_ns + 1_000_000))
    assert prompts.render(template, response="x") == "two x"
