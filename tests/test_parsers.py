"""Tests for daydream.parsers: every parser, its edge cases and its errors."""

from __future__ import annotations

import pytest

from daydream.parsers import (
    ParseError,
    allowed_parsers,
    check_parser,
    parse,
    resolve_parser,
)

TEXT_STAGES = ("draft", "essay")


def parse_error_reason(*args, **kwargs) -> str:
    with pytest.raises(ParseError) as caught:
        parse(*args, **kwargs)
    return caught.value.reason


# --------------------------------------------------------------------------- parser names


def test_parsers_by_stage_names_the_valid_parsers():
    text_parsers = {"identity", "essay_block", "essay_block_lenient", "essay_idea_last"}
    assert allowed_parsers("draft") == frozenset(text_parsers)
    assert allowed_parsers("essay") == frozenset(text_parsers)
    assert allowed_parsers("evaluation") == frozenset({"in_last_line", "complex"})


@pytest.mark.parametrize("stage", TEXT_STAGES)
@pytest.mark.parametrize("name", [None, "", "   "])
def test_blank_parser_means_identity_for_text_stages(stage, name):
    check_parser(stage, name)
    assert resolve_parser(stage, name) == "identity"
    assert parse(stage, name, "  <essay>kept as is</essay>\n") == "<essay>kept as is</essay>"


@pytest.mark.parametrize("name", [None, ""])
def test_blank_parser_is_an_error_for_evaluation(name):
    with pytest.raises(ValueError, match="complex, in_last_line"):
        check_parser("evaluation", name)
    with pytest.raises(ValueError, match="score parser"):
        parse("evaluation", name, "SCORE: 7")


def test_invalid_parser_for_stage_lists_valid_names():
    with pytest.raises(ValueError) as caught:
        check_parser("evaluation", "essay_block")
    message = str(caught.value)
    assert "'essay_block'" in message and "'evaluation'" in message
    assert "complex, in_last_line" in message
    assert not isinstance(caught.value, ParseError)


def test_score_parser_is_invalid_for_draft():
    listing = "essay_block, essay_block_lenient, essay_idea_last, identity"
    with pytest.raises(ValueError, match=listing):
        check_parser("draft", "in_last_line")


def test_parse_rejects_invalid_parser_name_before_parsing():
    with pytest.raises(ValueError, match="not valid for stage 'essay'"):
        parse("essay", "no_such_parser", "some text")


def test_unknown_stage_is_an_error():
    with pytest.raises(ValueError, match="unknown stage 'summary'"):
        check_parser("summary", "identity")


@pytest.mark.parametrize("stage", ["draft", "essay", "evaluation"])
def test_every_listed_parser_passes_check(stage):
    for name in allowed_parsers(stage):
        check_parser(stage, name)
        assert resolve_parser(stage, f" {name} ") == name


def test_parse_error_is_a_value_error_with_reason():
    error = ParseError("no score found")
    assert isinstance(error, ValueError)
    assert error.reason == "no score found"
    assert str(error) == "no score found"


# --------------------------------------------------------------------------- identity


def test_identity_strips_surrounding_whitespace_only():
    text = "\n\n  Line one.\n  Line two.  \n"
    assert parse("draft", "identity", text) == "Line one.\n  Line two."


@pytest.mark.parametrize("stage", TEXT_STAGES)
@pytest.mark.parametrize("text", ["", "   \n\t ", None])
def test_identity_of_blank_text_is_empty_error(stage, text):
    assert "is empty" in parse_error_reason(stage, "identity", text)


# --------------------------------------------------------------------------- essay_block


def test_essay_block_returns_first_block_content():
    text = "Preamble\n<essay>\n First essay. \n</essay>\nmiddle <essay>Second</essay>"
    assert parse("essay", "essay_block", text) == "First essay."


def test_essay_block_unclosed_runs_to_end_of_text():
    text = "Notes first.\n<essay>\nBody paragraph one.\n\nBody paragraph two.\n"
    assert parse("essay", "essay_block", text) == "Body paragraph one.\n\nBody paragraph two."


def test_essay_block_without_tag_is_an_error():
    reason = parse_error_reason("essay", "essay_block", "Just an essay, no tags.")
    assert "<essay>" in reason


def test_essay_block_ignores_essay_idea_tags():
    text = "<essay-idea>\nidea\n</essay-idea>\n"
    assert "<essay>" in parse_error_reason("draft", "essay_block", text)


def test_essay_block_empty_content_is_an_error():
    assert "is empty" in parse_error_reason("essay", "essay_block", "<essay>  \n </essay>")


# --------------------------------------------------------------------------- essay_block_lenient


def test_lenient_drops_thinking_before_taking_essay_block():
    text = "<thinking>Maybe <essay>wrong</essay> here</thinking>\n<essay>Right one.</essay>"
    assert parse("essay", "essay_block_lenient", text) == "Right one."


def test_lenient_without_essay_tag_keeps_text_minus_thinking():
    text = "<thinking>plan A</thinking>\nThe essay itself.\n<thinking>aside</thinking> End."
    assert parse("essay", "essay_block_lenient", text) == "The essay itself.\n End."


def test_lenient_unclosed_thinking_drops_to_end():
    text = "Kept part.\n<thinking>never closed\n<essay>inside thinking</essay>"
    assert parse("draft", "essay_block_lenient", text) == "Kept part."


def test_lenient_unclosed_essay_runs_to_end():
    assert parse("essay", "essay_block_lenient", "<essay>Open ended text") == "Open ended text"


def test_lenient_only_thinking_is_empty_error():
    text = "<thinking>all</thinking>"
    assert "is empty" in parse_error_reason("essay", "essay_block_lenient", text)


# --------------------------------------------------------------------------- essay_idea_last


def idea(body: str, stage: int | None = None) -> str:
    attr = "" if stage is None else f' stage="{stage}"'
    return f"<essay-idea{attr}>\n{body}\n</essay-idea>\n"


def test_essay_idea_highest_stage_wins_regardless_of_order():
    text = idea("stage two", 2) + "chatter\n" + idea("stage three", 3) + idea("stage one", 1)
    assert parse("draft", "essay_idea_last", text) == "stage three"


def test_essay_idea_tie_goes_to_later_block():
    text = idea("early", 2) + idea("late", 2) + idea("lower", 1)
    assert parse("draft", "essay_idea_last", text) == "late"


def test_essay_idea_without_stage_falls_back_to_last_block():
    text = idea("first") + idea("second") + idea("third")
    assert parse("draft", "essay_idea_last", text) == "third"


def test_essay_idea_staged_block_beats_later_unstaged_block():
    text = idea("staged", 1) + idea("unstaged")
    assert parse("draft", "essay_idea_last", text) == "staged"


def test_essay_idea_multiline_body_is_kept_whole():
    text = 'Intro\n  <essay-idea stage="1">\nLine A\n\nLine B\n  </essay-idea>\nOutro'
    assert parse("draft", "essay_idea_last", text) == "Line A\n\nLine B"


def test_essay_idea_tags_not_on_own_lines_do_not_count():
    text = 'inline <essay-idea stage="1">x</essay-idea> only'
    assert "<essay-idea>" in parse_error_reason("draft", "essay_idea_last", text)


def test_essay_idea_none_found_is_an_error():
    assert "no <essay-idea>" in parse_error_reason("essay", "essay_idea_last", "plain text")


def test_essay_idea_empty_winner_is_empty_error():
    text = idea("content", 1) + '<essay-idea stage="2">\n\n</essay-idea>\n'
    assert "is empty" in parse_error_reason("draft", "essay_idea_last", text)


# --------------------------------------------------------------------------- in_last_line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Great essay.\nSCORE: 7", "7.0"),
        ("Good.\nScore: 7.5\n\n", "7.5"),
        ("Fine.\n**SCORE: 8**", "8.0"),
        ("Fine.\nSCORE: 8.", "8.0"),
        ("Fine.\n7/10", "6.3"),
        ("Fine.\n`score` = 3", "3.0"),
        ("Fine.\n4", "4.0"),
    ],
)
def test_in_last_line_reads_score_formats(text, expected):
    assert parse("evaluation", "in_last_line", text) == expected


def test_in_last_line_fraction_with_matching_denominator_is_unscaled():
    assert parse("evaluation", "in_last_line", "7/10", score_max=10) == "7.0"


def test_in_last_line_ignores_scores_before_the_last_line():
    reason = parse_error_reason("evaluation", "in_last_line", "SCORE: 7\nThanks for reading!")
    assert reason == "no score found in the last line"


def test_in_last_line_last_labelled_score_on_the_line_wins():
    assert parse("evaluation", "in_last_line", "Score: 3 ... revised Score: 5") == "5.0"


def test_in_last_line_several_unlabelled_numbers_is_an_error():
    reason = parse_error_reason("evaluation", "in_last_line", "Of 3 essays this rates 6")
    assert "several numbers" in reason


def test_in_last_line_empty_text_is_no_score():
    assert parse_error_reason("evaluation", "in_last_line", "") == "no score found in the last line"


def test_in_last_line_out_of_range_is_an_error():
    reason = parse_error_reason("evaluation", "in_last_line", "SCORE: 12")
    assert reason == "score 12.0 is outside the template's scale 0-9"


# --------------------------------------------------------------------------- complex


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Analysis...\nSCORE: 7\nThanks.", "7.0"),
        ("**Score:** 7.5", "7.5"),
        ("Total score - 6", "6.0"),
        ("### Final score: 5.", "5.0"),
        ("final_score: `4`", "4.0"),
        ("Score (0-9): 2", "2.0"),
        ("Overall score of 3 for clarity.", "3.0"),
    ],
)
def test_complex_reads_labelled_scores(text, expected):
    assert parse("evaluation", "complex", text) == expected


def test_complex_final_score_fraction_with_matching_scale_is_unscaled():
    assert parse("evaluation", "complex", "Final Score: 8/10", score_max=10) == "8.0"


def test_complex_final_score_fraction_is_scaled_to_template_scale():
    assert parse("evaluation", "complex", "Final Score: 8/10", score_max=9) == "7.2"


def test_complex_out_of_phrase_is_a_fraction():
    assert parse("evaluation", "complex", "Score: 4 out of 5", score_max=10) == "8.0"


@pytest.mark.parametrize(
    "text",
    [
        "Review body.\n\n## Final Score\n\n**8**\n",
        "Review body.\nFinal Score:\n8\nThat is all.",
        "Here is my final score:\n\n`8.`",
    ],
)
def test_complex_score_on_line_after_final_score_header(text):
    assert parse("evaluation", "complex", text) == "8.0"


def test_complex_header_followed_by_fraction_is_scaled():
    assert parse("evaluation", "complex", "Final Score:\n8/10", score_max=9) == "7.2"


def test_complex_header_followed_by_prose_is_not_a_score():
    text = "## Final Score\nIt deserves 8."
    assert parse_error_reason("evaluation", "complex", text) == "no score found"


def test_complex_last_labelled_score_wins():
    text = "Score: 3 for structure.\nLater I reconsidered.\nScore: 6\nThe end."
    assert parse("evaluation", "complex", text) == "6.0"


def test_complex_final_score_label_beats_later_plain_score():
    text = "Final Score: 5\nFor reference, the rubric score: 2 means weak."
    assert parse("evaluation", "complex", text) == "5.0"


def test_complex_last_of_several_final_scores_wins():
    text = "Final score: 4\nOn reflection...\n**Final Score:** 7"
    assert parse("evaluation", "complex", text) == "7.0"


def test_complex_realistic_judge_answer():
    text = (
        "## Evaluation\n\n"
        "1. **Originality** - score: 6/10. Fresh angle.\n"
        "2. **Clarity** - score: 9/10. Very clear.\n\n"
        "Overall the essay is strong, though 2 paragraphs repeat.\n\n"
        "## Final Score\n\n"
        "**7**\n"
    )
    assert parse("evaluation", "complex", text) == "7.0"


def test_complex_unlabelled_numbers_are_not_scores():
    text = "I liked 3 of the 5 points, 7 overall."
    assert parse_error_reason("evaluation", "complex", text) == "no score found"


def test_complex_out_of_range_is_an_error():
    reason = parse_error_reason("evaluation", "complex", "Final Score: 12")
    assert reason == "score 12.0 is outside the template's scale 0-9"


def test_complex_negative_score_is_out_of_range_not_dropped_sign():
    reason = parse_error_reason("evaluation", "complex", "Score: -2")
    assert reason == "score -2.0 is outside the template's scale 0-9"


def test_complex_respects_custom_score_min():
    reason = parse_error_reason("evaluation", "complex", "SCORE: 0", score_min=1, score_max=5)
    assert reason == "score 0.0 is outside the template's scale 1-5"


def test_complex_zero_denominator_is_an_error():
    assert "zero denominator" in parse_error_reason("evaluation", "complex", "Score: 3/0")


def test_complex_no_score_is_an_error():
    assert parse_error_reason("evaluation", "complex", "A thoughtful essay.") == "no score found"


# --------------------------------------------------------------------------- line count


def test_a_draft_with_fewer_lines_than_required_fails_with_the_count_and_the_config_key():
    from daydream import parsers

    with pytest.raises(ParseError) as raised:
        parsers.check_min_lines("draft", "One idea.\n\n  \nTwo lines only.", 3)
    assert raised.value.reason.startswith("the parsed draft has 2 non-empty line(s), fewer than the 3 required "
                                          "(parsing.min_lines.draft in the config)")
    parsers.check_min_lines("draft", "a\nb\nc", 3)
    parsers.check_min_lines("essay", "one line", 0)  # 0: no check
    parsers.check_min_lines("evaluation", "7.0", 3)  # a score is one line and never checked


def test_min_lines_come_from_the_validated_config_with_the_schema_defaults():
    from daydream import parsers, settings

    config = settings.validated({"data_root": "d", "cohorts": ["x"]})
    assert [parsers.min_lines(config, stage) for stage in ("draft", "essay", "evaluation")] == [3, 0, 0]
    config = settings.validated({"data_root": "d", "cohorts": ["x"], "parsing": {"min_lines": {"draft": 0}}})
    assert parsers.min_lines(config, "draft") == 0
