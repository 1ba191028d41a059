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


def test_replicates_of_one_prompt_get_different_replies_and_scores_deterministically():
    prompts = [f"Judge this essay about tidal pools and weak ties, number {i}." for i in range(30)]
    scores = {r: [parsers.parse("evaluation", "in_last_line", offline_model.reply_text(p, stage="evaluation",
                                                                                       model="m", replicate=r))
                  for p in prompts] for r in (1, 2, 3)}
    assert offline_model.reply_text(prompts[0], stage="evaluation", model="m") == \
        offline_model.reply_text(prompts[0], stage="evaluation", model="m", replicate=1)
    for r in (2, 3):
        assert all(offline_model.reply_text(p, stage="draft", model="m", replicate=r)
                   != offline_model.reply_text(p, stage="draft", model="m", replicate=1) for p in prompts)
        assert sum(a != b for a, b in zip(scores[1], scores[r], strict=True)) >= 20, scores
        assert scores[r] == [parsers.parse("evaluation", "in_last_line", offline_model.reply_text(
            p, stage="evaluation", model="m", replicate=r)) for p in prompts]


def test_the_offline_provider_passes_the_documents_replicate():
    from daydream.experiment import ModelRow
    from daydream.providers import CallRequest
    from daydream.providers.offline import OfflineProvider

    row = ModelRow(id="o", model="daydream-offline-a", provider="offline", display_name="Offline", route="offline")
    replies = {r: OfflineProvider().complete(CallRequest(row, "offline", "offline/x", "essay", "About weak ties.",
                                                         0.7, 100, 10, None, r)).text for r in (1, 2)}
    assert replies[1] != replies[2]
