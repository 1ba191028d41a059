"""Parsers that turn a raw LLM answer into the text a stage keeps.

Draft and essay stages keep text (`identity`, `essay_block`, `essay_block_lenient`,
`essay_idea_last`); the evaluation stage keeps a score written as `str(float(score))`
(`in_last_line`, `complex`). `check_min_lines` then refuses a parsed text with fewer non-empty
lines than the config's `parsing.min_lines` for its stage (`min_lines`). Every failure to parse raises `ParseError`, whose `.reason` is a
short human sentence; a parser name that does not fit its stage raises a plain `ValueError`.

Score rules shared by both evaluation parsers:

* Markdown noise (`*`, `#`, backticks, `_`) is ignored and a trailing period is allowed.
* A fraction `a/b` (or `a out of b`) is scaled to the template's scale: when `b == score_max`
  the score is `a`, otherwise the score is `a / b * score_max` (rounded to 6 decimals), so
  `8/10` is `8.0` on a 0-10 scale and `7.2` on a 0-9 scale.
* A score outside `[score_min, score_max]` is an error, never clipped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from daydream import stages

logger = logging.getLogger(__name__)

__all__ = ["ParseError", "allowed_parsers", "check_min_lines", "check_parser", "min_lines", "parse", "resolve_parser"]

_ESSAY_OPEN = re.compile(r"<essay(?:\s[^>]*)?>", re.IGNORECASE)
_ESSAY_CLOSE = re.compile(r"</essay\s*>", re.IGNORECASE)
_THINKING_BLOCK = re.compile(
    r"<thinking(?:\s[^>]*)?>.*?(?:</thinking\s*>|\Z)", re.IGNORECASE | re.DOTALL
)
_ESSAY_IDEA_BLOCK = re.compile(
    r"^[ \t]*<essay-idea(?P<attrs>\s[^>\n]*)?>[ \t]*\n"
    r"(?P<body>.*?)"
    r"^[ \t]*</essay-idea\s*>[ \t]*$",
    re.IGNORECASE | re.DOTALL | re.MULTILINE,
)
_STAGE_ATTR = re.compile(r"""\bstage\s*=\s*["']?(\d+)""", re.IGNORECASE)

# A score value: a number (a minus sign only when glued to the digits), optionally a fraction.
_VALUE = (
    r"(?<![\d.])(?P<num>-?\d+(?:\.\d+)?)"
    r"(?:\s*(?:/|\bout\s+of\b)\s*(?P<den>\d+(?:\.\d+)?))?"
)
_LABEL = r"(?P<final>\bfinal\s+)?(?:(?:total|overall)\s+)?\bscore\b(?:\s*\([^)\n]*\))?"
_SEPARATOR = r"(?:[:=]|[-\u2013\u2014](?!\d)|\bis\b|\bof\b)?"
_VALUE_RE = re.compile(_VALUE)
_LABELLED_SCORE = re.compile(rf"{_LABEL}\s*{_SEPARATOR}\s*{_VALUE}", re.IGNORECASE)
_SCORE_HEADER = re.compile(rf"^[^\d\n]*?{_LABEL}\s*[:=\-\u2013\u2014]?\s*$", re.IGNORECASE)
_BARE_VALUE = re.compile(rf"^\s*{_VALUE}\s*\.?\s*$")
_MARKDOWN_NOISE = re.compile(r"[*#`_]+")


class ParseError(ValueError):
    """A raw answer that its parser cannot turn into a result; `.reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- parser names


def _normalise(parser_name: object) -> str:
    return "" if parser_name is None else str(parser_name).strip()


def allowed_parsers(stage: str) -> frozenset[str]:
    """The parsers of the kind the stage keeps (text or score, per the stage registry)."""
    return frozenset(_PARSERS_BY_KIND[stages.get(stage).keeps])


def check_parser(stage: str, parser_name: str | None) -> None:
    """Raise ValueError unless `parser_name` is valid for `stage`.

    The message lists the valid names. A blank/None name means the stage's default parser
    (`identity` for text stages); a stage that keeps a score has none and must name one.
    """
    valid = allowed_parsers(stage)
    name = _normalise(parser_name)
    listing = ", ".join(sorted(valid))
    if not name and stages.get(stage).default_parser is None:
        raise ValueError(f"a {stage} needs a score parser; valid parsers: {listing}")
    if name and name not in valid:
        raise ValueError(
            f"parser {name!r} is not valid for stage {stage!r}; valid parsers: {listing}"
        )


def resolve_parser(stage: str, parser_name: str | None) -> str:
    """The parser name actually used for `stage`: checked, blank meaning the stage's default."""
    check_parser(stage, parser_name)
    return _normalise(parser_name) or stages.get(stage).default_parser


# --------------------------------------------------------------------------- text parsers


def _identity(text: str) -> str:
    return text


def _first_essay_block(text: str) -> str | None:
    """Content of the first `<essay>` block (to the end of the text if unclosed), or None."""
    opening = _ESSAY_OPEN.search(text)
    if opening is None:
        return None
    rest = text[opening.end():]
    closing = _ESSAY_CLOSE.search(rest)
    return rest[: closing.start()] if closing else rest


def _essay_block(text: str) -> str:
    block = _first_essay_block(text)
    if block is None:
        raise ParseError("no <essay> tag found")
    return block


def _essay_block_lenient(text: str) -> str:
    without_thinking = _THINKING_BLOCK.sub("", text)
    block = _first_essay_block(without_thinking)
    if block is None:
        logger.debug("essay_block_lenient: no <essay> tag, keeping the whole text")
        return without_thinking
    return block


def _idea_stage(attrs: str | None) -> int:
    found = _STAGE_ATTR.search(attrs or "")
    return int(found.group(1)) if found else 0


def _essay_idea_last(text: str) -> str:
    blocks = list(_ESSAY_IDEA_BLOCK.finditer(text))
    if not blocks:
        raise ParseError("no <essay-idea> block with its tags on their own lines found")
    # Highest stage wins; on a tie the later block wins (index breaks the tie).
    _, _, best = max((_idea_stage(b["attrs"]), i, b) for i, b in enumerate(blocks))
    return best["body"]


_TEXT_PARSERS: dict[str, Callable[[str], str]] = {
    "identity": _identity,
    "essay_block": _essay_block,
    "essay_block_lenient": _essay_block_lenient,
    "essay_idea_last": _essay_idea_last,
}


# --------------------------------------------------------------------------- score parsers


def _clean_line(line: str) -> str:
    return _MARKDOWN_NOISE.sub(" ", line).strip()


def _scale(numerator: float, denominator: float, score_max: float) -> float:
    if denominator == 0:
        raise ParseError(f"score {numerator:g}/0 has a zero denominator")
    if denominator == float(score_max):
        return numerator
    return round(numerator * score_max / denominator, 6)


def _score_text(match: re.Match[str], score_min: float, score_max: float) -> str:
    """Turn a matched value (maybe a fraction) into `str(float)`, checking the scale."""
    score = float(match["num"])
    if match["den"] is not None:
        score = _scale(score, float(match["den"]), score_max)
    if not score_min <= score <= score_max:
        raise ParseError(
            f"score {score} is outside the template's scale {score_min:g}-{score_max:g}"
        )
    return str(score + 0.0)  # + 0.0 turns -0.0 into 0.0


def _in_last_line(text: str, score_min: float, score_max: float) -> str:
    lines = [_clean_line(line) for line in text.splitlines()]
    last = next((line for line in reversed(lines) if line), "")
    labelled = list(_LABELLED_SCORE.finditer(last))
    if labelled:
        return _score_text(labelled[-1], score_min, score_max)
    values = list(_VALUE_RE.finditer(last))
    if len(values) == 1:
        return _score_text(values[0], score_min, score_max)
    if values:
        raise ParseError("the last line holds several numbers and no 'score' label")
    raise ParseError("no score found in the last line")


def _value_after_header(lines: list[str], index: int) -> re.Match[str] | None:
    following = next((line for line in lines[index + 1:] if line), "")
    return _BARE_VALUE.match(following)


def _score_candidates(text: str) -> list[tuple[bool, re.Match[str]]]:
    """Every labelled score in text order, as (is_final_score, value match)."""
    lines = [_clean_line(line) for line in text.splitlines()]
    found: list[tuple[bool, re.Match[str]]] = []
    for index, line in enumerate(lines):
        found.extend((bool(m["final"]), m) for m in _LABELLED_SCORE.finditer(line))
        header = _SCORE_HEADER.match(line)
        value = _value_after_header(lines, index) if header else None
        if header and value:
            found.append((bool(header["final"]), value))
    return found


def _complex(text: str, score_min: float, score_max: float) -> str:
    candidates = _score_candidates(text)
    finals = [match for is_final, match in candidates if is_final]
    chosen = finals or [match for _, match in candidates]
    if not chosen:
        raise ParseError("no score found")
    if not finals:
        logger.debug("complex: no 'final score' label, using the last plain 'score'")
    return _score_text(chosen[-1], score_min, score_max)


_SCORE_PARSERS: dict[str, Callable[[str, float, float], str]] = {
    "in_last_line": _in_last_line,
    "complex": _complex,
}


_PARSERS_BY_KIND: dict[str, dict] = {stages.TEXT: _TEXT_PARSERS, stages.SCORE: _SCORE_PARSERS}


# --------------------------------------------------------------------------- entry point


def parse(
    stage: str,
    parser_name: str | None,
    text: str | None,
    *,
    score_min: float = 0,
    score_max: float = 9,
) -> str:
    """Parse a raw LLM answer for `stage` with `parser_name` and return the kept text.

    Draft/essay: the parser's text, stripped; blank/None `parser_name` means `identity`.
    Evaluation: the score as `str(float(score))`; a fraction `a/b` is `a` when
    `b == score_max`, else `a / b * score_max`. Raises `ParseError` when the text cannot be
    parsed, is empty after parsing, or holds a score outside `[score_min, score_max]`;
    raises `ValueError` (from `check_parser`) for a parser name that does not fit the stage.
    """
    name = resolve_parser(stage, parser_name)
    raw = text or ""
    if stages.get(stage).scored:
        return _SCORE_PARSERS[name](raw, score_min, score_max)
    result = _TEXT_PARSERS[name](raw).strip()
    if not result:
        raise ParseError(f"the {stage} text parsed with {name!r} is empty")
    return result


# --------------------------------------------------------------------------- line count


def min_lines(config: dict, stage: str) -> int:
    """The fewest non-empty lines `stage`'s parsed text may have: `parsing.min_lines.<stage>` of
    a validated config (the schema's defaults: 3 for drafts, as the original pipeline required,
    0 = no check for essays); 0 for a stage the section does not name (one that keeps a score)."""
    return int(config["parsing"]["min_lines"].get(stages.get(stage).config_section, 0))


def check_min_lines(stage: str, parsed: str, required: int) -> None:
    """Raise ParseError when a text stage's parsed text has fewer than `required` non-empty
    lines (0: no check; a stage that keeps a score is never checked)."""
    if required <= 0 or stages.get(stage).scored:
        return
    count = sum(1 for line in parsed.splitlines() if line.strip())
    if count < required:
        raise ParseError(f"the parsed {stage} has {count} non-empty line(s), fewer than the {required} required "
                         f"(parsing.min_lines.{stages.get(stage).config_section} in the config); a reply this short "
                         "is usually cut off or off-task")
