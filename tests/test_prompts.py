import os

import pytest

from daydream import prompts, stages
from daydream.prompts import Concept, PromptFiles, build_prompt, sha256_text


def loaded(path, text):
    path.write_text(text)
    return prompts.load_template(path)


def variables(stage, concepts=(), parent=None):
    return stages.get(stage).variables(list(concepts), parent)


def test_draft_templates_see_concepts_in_combo_order(tmp_path):
    template = loaded(tmp_path / "t.txt", "{% for c in concepts %}{{ c.name }}={{ c.content }};{% endfor %}")
    concepts = [{"concept_id": "b", "name": "B", "content": "bee"}, {"concept_id": "a", "name": "A", "content": "ay"}]
    assert prompts.render(template, variables("draft", concepts)) == "B=bee;A=ay;"


def test_raw_blocks_keep_literal_braces(tmp_path):
    template = loaded(tmp_path / "t.txt", "{% raw %}{{ not a variable }}{% endraw %} {{ response }}")
    assert prompts.render(template, variables("evaluation", parent="ok")) == "{{ not a variable }} ok"


def test_an_undefined_variable_names_the_file_and_the_known_variables(tmp_path):
    template = loaded(tmp_path / "essay.txt", "{{ draft }}")
    with pytest.raises(prompts.PromptError) as error:
        prompts.render(template, variables("essay", parent="text"))
    assert str(tmp_path / "essay.txt") in str(error.value) and "'draft' is undefined" in str(error.value)
    assert "draft_block" in str(error.value)


def test_a_syntax_error_names_the_file_and_the_line(tmp_path):
    template = tmp_path / "bad.txt"
    template.write_text("line one\n{% if x %}\nno end")
    with pytest.raises(prompts.PromptError, match=r"bad.txt line \d+: Jinja2 syntax error"):
        prompts.load_template(template)


def test_a_missing_template_file_is_named(tmp_path):
    with pytest.raises(prompts.PromptError, match="template file not found"):
        prompts.load_template(tmp_path / "absent.txt")


def test_an_edited_template_is_recompiled_and_rehashed(tmp_path):
    path = tmp_path / "t.txt"
    first = loaded(path, "one {{ response }}")
    assert prompts.render(first, {"response": "x"}) == "one x" and first.sha256 == sha256_text("one {{ response }}")
    path.write_text("two {{ response }}")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    second = prompts.load_template(path)
    assert prompts.render(second, {"response": "x"}) == "two x" and second.sha256 == sha256_text("two {{ response }}")


def test_a_prompt_carries_the_hash_of_each_source_it_was_rendered_from(tmp_path):
    (tmp_path / "t.txt").write_text("{% for c in concepts %}[{{ c.name }}: {{ c.content }}]{% endfor %}")
    (tmp_path / "a.txt").write_text(" alpha text \n")
    (tmp_path / "b.txt").write_text("beta text")
    files = PromptFiles("draft", tmp_path / "t.txt",
                        concepts=(Concept("b", "Bee", tmp_path / "b.txt"), Concept("a", "Ay", tmp_path / "a.txt")))
    prompt = build_prompt(files)
    assert prompt.text == "[Bee: beta text][Ay: alpha text]"
    assert prompt.sha256 == sha256_text(prompt.text)
    assert prompt.sources == {"template": sha256_text((tmp_path / "t.txt").read_text()),
                              "concepts": sha256_text("beta text\x1f alpha text \n")}


def test_a_copy_prompt_is_the_parent_text_and_has_no_template(tmp_path):
    (tmp_path / "parsed.txt").write_text("The draft, parsed.")
    prompt = build_prompt(PromptFiles("essay", None, parent=tmp_path / "parsed.txt"))
    assert prompt.text == "The draft, parsed." and prompt.sources == {"parent": sha256_text("The draft, parsed.")}
    assert PromptFiles("essay", None, parent=tmp_path / "parsed.txt").as_inputs() == {
        "parent": str(tmp_path / "parsed.txt")}


def test_the_shared_prefix_is_the_text_before_the_first_per_document_variable(tmp_path):
    rubric = loaded(tmp_path / "judge.txt", "Rubric: be fair.\nEssay:\n{{ response }}\nScore it.")
    assert prompts.shared_prefix(rubric, "evaluation") == "Rubric: be fair.\nEssay:\n"
    draft = loaded(tmp_path / "draft.txt", "Combine:{% for c in concepts %} {{ c.name }}{% endfor %}")
    assert prompts.shared_prefix(draft, "draft") == "Combine: "
    essay_last = loaded(tmp_path / "first.txt", "{{ draft_block }} then the rubric")
    assert prompts.shared_prefix(essay_last, "essay") == "", "the document first: nothing shared"


def test_a_built_prompt_carries_its_templates_shared_prefix(tmp_path):
    template = tmp_path / "judge.txt"
    template.write_text("Rubric first.\n{{ response }}")
    parent = tmp_path / "parsed.txt"
    parent.write_text("the essay")
    prompt = build_prompt(PromptFiles("evaluation", template, parent=parent))
    assert prompt.text == "Rubric first.\nthe essay" and prompt.shared_prefix == "Rubric first.\n"
