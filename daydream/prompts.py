"""Render stage prompts from Jinja2 templates (SPEC §2), with StrictUndefined.

Template variables: draft `concepts` (list of {concept_id, name, content} in combo order);
essay `draft_block` and `links_block` (both the parent draft's parsed text); evaluation
`response` (the parent essay's parsed text). Compiled templates are cached per file and
modification time, so a process renders thousands of prompts from one parse of each file.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jinja2

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                          autoescape=False)


class PromptError(ValueError):
    """A template that does not parse or does not render; the message names the file."""


@functools.lru_cache(maxsize=256)
def _compiled(path: str, mtime_ns: int) -> jinja2.Template:
    text = Path(path).read_text(encoding="utf-8")
    try:
        return _ENV.from_string(text)
    except jinja2.TemplateSyntaxError as error:
        raise PromptError(f"{path} line {error.lineno}: Jinja2 syntax error: {error.message}; "
                          "fix the template (use {% raw %} around literal braces)") from error


def load_template(path: Path) -> jinja2.Template:
    """The compiled template at `path`; PromptError names the file on a missing file or bad syntax."""
    try:
        mtime_ns = path.stat().st_mtime_ns
    except FileNotFoundError as error:
        raise PromptError(f"{path}: template file not found; create it or fix the template id") from error
    return _compiled(str(path), mtime_ns)


def render(path: Path, **variables: object) -> str:
    """Render the template at `path`; an undefined variable raises PromptError naming both."""
    try:
        return load_template(path).render(**variables)
    except jinja2.UndefinedError as error:
        names = ", ".join(sorted(variables))
        raise PromptError(f"{path}: {error.message}; the variables for this stage are: {names}") from error


def draft_variables(concepts: list[dict]) -> dict:
    return {"concepts": concepts}


def essay_variables(draft_text: str) -> dict:
    return {"draft_block": draft_text, "links_block": draft_text}


def evaluation_variables(essay_text: str) -> dict:
    return {"response": essay_text}


SAMPLE_VARIABLES = {
    "draft": draft_variables([{"concept_id": "sample", "name": "Sample", "content": "Sample text."}]),
    "essay": essay_variables("A sample draft."),
    "evaluation": evaluation_variables("A sample essay."),
}


def check_template(stage: str, path: Path) -> None:
    """Parse and trial-render a template with sample variables, so bad templates fail early."""
    render(path, **SAMPLE_VARIABLES[stage])
