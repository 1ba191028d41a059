"""Prompts (SPEC §2): Jinja2 templates rendered with StrictUndefined, and the assembly of a
document's prompt from its sources.

`build_prompt` reads each source of a document exactly once (its template, its concept texts
or its parent's parsed text) and returns the prompt text together with the SHA-256 of the
prompt and of each source, taken from that same read: the stale report compares them later.
The variables each stage renders with come from the stage registry. Compiled templates are
cached per file and stat key (size, times, inode), so a process parses each template file once.
"""

from __future__ import annotations

import functools
import hashlib
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from daydream import definitions, stages, store
from daydream.errors import UserError

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                          autoescape=False)
# The concept texts of a combo are hashed as one source, joined by this separator.
CONCEPT_SEPARATOR = "\x1f"


class PromptError(ValueError, UserError):
    """A template that does not parse or does not render; the message names the file."""


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class LoadedTemplate:
    path: str
    compiled: jinja2.Template
    sha256: str


def _stat_key(path) -> tuple[int, int, int, int]:
    """What tells a file's edits apart (size, mtime_ns, ctime_ns, inode): ctime moves with every
    write, also one whose mtime was set back (`daydream.checks`)."""
    found = Path(path).stat()
    return found.st_size, found.st_mtime_ns, found.st_ctime_ns, found.st_ino


@functools.lru_cache(maxsize=256)
def _compiled(path: str, stat_key: tuple[int, int, int, int]) -> LoadedTemplate:
    try:
        text = definitions.read_text(Path(path), "template")
    except definitions.DefinitionError as error:
        raise PromptError(str(error)) from error
    try:
        return LoadedTemplate(path, _ENV.from_string(text), sha256_text(text))
    except jinja2.TemplateSyntaxError as error:
        raise PromptError(f"{path} line {error.lineno}: Jinja2 syntax error: {error.message}; "
                          "fix the template (use {% raw %} around literal braces)") from error


def load_template(path: Path) -> LoadedTemplate:
    """The compiled template at `path` and the hash of its text; PromptError names the file on
    a missing, empty or non-UTF-8 file (a byte-order mark is dropped) or bad syntax."""
    try:
        stat_key = _stat_key(path)
    except FileNotFoundError as error:
        raise PromptError(f"{path}: template file not found; create it or fix the template id") from error
    return _compiled(str(path), stat_key)


# What a template can raise while it renders: an undefined variable or index (StrictUndefined),
# a failing filter or test, or a Python error in an expression (`{{ 1 / 0 }}`, `{{ x | int }}`).
_RENDER_ERRORS = (jinja2.TemplateError, TypeError, ValueError, ArithmeticError, LookupError, AttributeError)


def _template_line(error: BaseException) -> int | None:
    """The template line an error was raised on (Jinja2 puts template frames in the traceback)."""
    line = None
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename == "<template>":
            line = frame.lineno
    return line


def render(template: LoadedTemplate, variables: dict) -> str:
    """Render a loaded template; any error while rendering raises PromptError naming the file,
    the line and, for an undefined variable, the variables this stage has."""
    try:
        return template.compiled.render(**variables)
    except _RENDER_ERRORS as error:
        line = _template_line(error)
        where = f"{template.path} line {line}" if line else template.path
        if isinstance(error, jinja2.UndefinedError):
            names = ", ".join(sorted(variables))
            raise PromptError(f"{where}: {error.message}; the variables for this stage are: {names}") from error
        raise PromptError(f"{where}: rendering failed: {type(error).__name__}: {error}") from error


@dataclass(frozen=True)
class Concept:
    concept_id: str
    name: str
    path: Path


@dataclass(frozen=True)
class PromptFiles:
    """What a document's prompt is made from: its template (None for a copy), and the
    concepts (root stage) or the parent's parsed text (child stages)."""

    stage: str
    template: Path | None
    concepts: tuple[Concept, ...] = ()
    parent: Path | None = None

    def as_inputs(self) -> dict[str, object]:
        """The files as named Snakemake inputs."""
        inputs: dict[str, object] = {}
        if self.template is not None:
            inputs["template"] = str(self.template)
        if self.concepts:
            inputs["concepts"] = [str(c.path) for c in self.concepts]
        if self.parent is not None:
            inputs["parent"] = str(self.parent)
        return inputs


@dataclass(frozen=True)
class Prompt:
    text: str
    sha256: str
    sources: dict[str, str] = field(default_factory=dict)  # source name -> SHA-256 of its text
    # the text every prompt of its template begins with (`shared_prefix`); derived, so not compared
    shared_prefix: str = field(default="", compare=False)


# Stands for each per-document value when a template is rendered to find its shared prefix.
_MARK = "\x00daydream-document\x00"


_PREFIXES: dict[tuple[str, str, str], str] = {}


def _shared_prefix(template: LoadedTemplate, stage_name: str) -> str:
    concept = {"concept_id": _MARK, "name": _MARK, "content": _MARK}
    try:
        text = template.compiled.render(**stages.get(stage_name).variables([concept] * 8, _MARK))
    except _RENDER_ERRORS:
        return ""  # a template that reads its documents in other ways shares nothing known
    return text.split(_MARK, 1)[0]


def shared_prefix(template: LoadedTemplate, stage_name: str) -> str:
    """The text before the template's first per-document variable (concepts, the parent's
    text): the longest prefix every prompt of the template shares, which a provider can cache.
    A template with its shared rubric first and the document last shares the most. Found once
    per template text and stage."""
    key = (template.path, template.sha256, stage_name)
    prefix = _PREFIXES.get(key)
    if prefix is None:
        if len(_PREFIXES) >= 256:
            _PREFIXES.clear()
        prefix = _PREFIXES[key] = _shared_prefix(template, stage_name)
    return prefix


def read_source(path: Path, what: str) -> str:
    """A prompt source's text. A definition file (a concept description) is read strictly
    (`daydream.definitions.read_text`): PromptError names the file when it is missing, empty or
    not UTF-8. A parent's parsed text is the workflow's own output, read as it is (it may be
    empty, and its bytes are never altered); FileNotFoundError when it is missing."""
    if what == "parent":
        data = store.read_bytes(path)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise PromptError(f"{path}: not UTF-8 at byte {error.start}; it was written by the workflow, "
                              "so it was changed by hand or damaged: restore it (delete it and rerun "
                              "snakemake to parse the reply again)") from error
    try:
        return definitions.read_text(path, what)
    except definitions.DefinitionError as error:
        raise PromptError(str(error)) from error


def _concept_variables(concepts: Sequence[Concept], sources: dict[str, str]) -> list[dict]:
    texts = [read_source(c.path, "concept description") for c in concepts]
    sources["concepts"] = sha256_text(CONCEPT_SEPARATOR.join(texts))
    return [{"concept_id": c.concept_id, "name": c.name, "content": text.strip()}
            for c, text in zip(concepts, texts, strict=True)]


def build_prompt(files: PromptFiles, parent_text: str | None = None) -> Prompt:
    """Read each source once and render the prompt; a copy (no template) is its parent's text.
    `parent_text`: the parent's parsed text as its job is about to write it (the call engine,
    ahead of that job: the same text its file will hold, byte for byte), instead of reading it."""
    stage, sources = stages.get(files.stage), {}
    concepts = _concept_variables(files.concepts, sources) if files.concepts else []
    parent = parent_text if parent_text is not None and files.parent is not None else (
        read_source(files.parent, "parent") if files.parent is not None else None)
    if parent is not None:
        sources["parent"] = sha256_text(parent)
    if files.template is None:
        return Prompt(parent or "", sha256_text(parent or ""), sources)
    template = load_template(files.template)
    sources["template"] = template.sha256
    text = render(template, stage.variables(concepts, parent))
    prefix = shared_prefix(template, files.stage)
    return Prompt(text, sha256_text(text), sources, prefix if text.startswith(prefix) else "")
