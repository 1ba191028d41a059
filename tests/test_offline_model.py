"""The built-in offline model: deterministic and parseable by every parser of its stage."""

import pytest

from daydream import offline_model, parsers

PROMPT = "Combine Exaptation and Weak Ties into one idea about scientific discovery."


def test_the_same_prompt_and_model_give_the_same_reply():
    assert offline_model.generate(PROMPT, stage="draft", model="a") == \
        offline_model.generate(PROMPT, stage="draft", model="a")


def test_models_and_prompts_change_the_reply():
    reply = offline_model.generate(PROMPT, stage="essay", model="a")[0]
    assert reply != offline_model.generate(PROMPT, stage="essay", model="b")[0]
    assert reply != offline_model.generate(PROMPT + "!", stage="essay", model="a")[0]


@pytest.mark.parametrize("parser", sorted(parsers.allowed_parsers("draft")))
def test_draft_replies_satisfy_every_draft_parser_and_the_default_line_count(parser):
    text, _ = offline_model.generate(PROMPT, stage="draft", model="a")
    parsed = parsers.parse("draft", parser, text)
    assert parsed.strip()
    parsers.check_min_lines("draft", parsed, 3)


def test_essay_idea_last_takes_the_highest_stage_of_an_offline_draft():
    text, _ = offline_model.generate(PROMPT, stage="draft", model="a")
    stage_two = text.split('<essay-idea stage="2">')[1].split("</essay-idea>")[0].strip()
    assert parsers.parse("draft", "essay_idea_last", text) == stage_two


@pytest.mark.parametrize("model", [f"m{i}" for i in range(20)])
def test_evaluation_scores_fit_both_shipped_scales(model):
    text, _ = offline_model.generate(PROMPT, stage="evaluation", model=model)
    for parser, low, high in (("in_last_line", 0, 9), ("complex", 1, 10)):
        score = float(parsers.parse("evaluation", parser, text, score_min=low, score_max=high))
        assert 1 <= score <= 9


def test_usage_counts_add_up():
    _, usage = offline_model.generate(PROMPT, stage="evaluation", model="a")
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
