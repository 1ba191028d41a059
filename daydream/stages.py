"""The stage registry: the one place that says what each stage of a document is.

A document is made in one stage. Each stage has an id prefix, a parent stage whose parsed
text it reads (none for the root stage, which reads concepts), the template variables it
renders with, the parsers it allows, the reply the offline model gives, the parts its gen_id
is hashed from, the name of its section in a cohort file and under `llm.stages` in the
config, and the report columns its template and model become in a scored document's lineage.
Every other module asks this registry; none spells a stage's name or prefix. The per-stage
sections of the config and cohort schemas are generated from it (`daydream.schemas`), and so
are the lineage columns of the reports (`daydream.columns`) and the fields of the design
language (`daydream.cohort_design`).

Adding a stage is one `Stage(...)` entry in `BUILT_IN`, plus its offline reply (a function of
`daydream.offline_model`, or any `module:function`) and its templates in the experiment
(`1_raw/<stage>_templates.csv`, `1_raw/templates/<stage>/`). An experiment that brings stages
of its own without editing this file names a module holding its whole registry in the
environment variable `DAYDREAM_STAGES` (`module:ATTRIBUTE`, a tuple of `Stage`); every process
of a run reads it at import, so set it before Snakemake starts.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

STAGES_ENV = "DAYDREAM_STAGES"  # `module:ATTRIBUTE` naming a tuple of Stage that replaces BUILT_IN
ID_CHARS = "[0-9a-z]+"  # what follows a stage's prefix in a gen_id (daydream.ids)
TEXT, SCORE = "text", "score"  # what a stage's parsed.txt holds; `daydream.parsers` has parsers of each


@dataclass(frozen=True)
class Stage:
    """One stage of a document's lineage.

    `variables(concepts, parent_text)` builds the template variables (the root stage gets the
    combo's concepts, a child stage its parent's parsed text). `id_parts(anchor, template_id,
    model_id, replicate, parent_model_id)` gives the gen_id signature of SPEC §4, where
    `anchor` is the combo_id (root) or the parent's gen_id. `keeps` is what its parsed text
    holds (TEXT or SCORE): it allows the parsers of that kind (`daydream.parsers`); a blank
    parser cell means `default_parser` (None: the cell must name one). The reports are built
    from the stage that keeps a score. `lineage_columns` are (membership column, report
    column) pairs: the columns this stage's `template_id` / `llm_model_id` become in the
    reports' lineage of a scored document. `parent_model_by_default`: in a design spec, an
    empty or None model of this stage means its parent's model.
    """

    name: str
    prefix: str
    parent: str | None
    variables: Callable[[Sequence[dict], str | None], dict]
    keeps: str
    default_parser: str | None
    offline_reply: str  # the function of daydream.offline_model that answers this stage
    id_parts: Callable[[str, str, str, int, str | None], tuple]
    lineage_columns: tuple[tuple[str, str], ...] = ()
    allows_copy: bool = False
    parent_model_by_default: bool = False

    @property
    def scored(self) -> bool:
        return self.keeps == SCORE

    @property
    def config_section(self) -> str:
        """Its section in a cohort file and under `llm.stages` in config.yaml."""
        return self.name

    @property
    def is_root(self) -> bool:
        return self.parent is None

    @property
    def curated_key(self) -> str:
        """The cohort-file key that lists existing documents of this stage (`essays`)."""
        return self.name + "s"

    @property
    def id_pattern(self) -> str:
        """The regular expression a whole gen_id of this stage matches (cohort schema)."""
        return f"^{self.prefix}{ID_CHARS}$"


def _essay_parts(draft_id: str, template_id: str, model_id: str, replicate: int,
                 draft_model_id: str | None) -> tuple:
    """The essay model is a 4th part only when it differs from the draft's (SPEC §4)."""
    parts: tuple = (draft_id, template_id, replicate)
    return parts + (model_id,) if model_id != draft_model_id else parts


def same_parts(anchor: str, template_id: str, model_id: str, replicate: int, _parent_model: str | None) -> tuple:
    """The usual gen_id signature: (anchor, template, model, replicate)."""
    return (anchor, template_id, model_id, replicate)


BUILT_IN: tuple[Stage, ...] = (
    Stage(name="draft", prefix="d_", parent=None,
          variables=lambda concepts, parent: {"concepts": list(concepts)},
          keeps=TEXT, default_parser="identity", offline_reply="draft_reply", id_parts=same_parts,
          lineage_columns=(("template_id", "draft_template"),)),
    Stage(name="essay", prefix="e_", parent="draft",
          variables=lambda concepts, parent: {"draft_block": parent, "links_block": parent},
          keeps=TEXT, default_parser="identity", offline_reply="essay_reply",
          id_parts=_essay_parts, allows_copy=True, parent_model_by_default=True,
          lineage_columns=(("template_id", "generation_template"), ("llm_model_id", "generation_model"))),
    Stage(name="evaluation", prefix="v_", parent="essay",
          variables=lambda concepts, parent: {"response": parent},
          keeps=SCORE, default_parser=None, offline_reply="evaluation_reply", id_parts=same_parts,
          lineage_columns=(("template_id", "evaluation_template"), ("llm_model_id", "evaluation_llm_model"))),
)


class RegistryError(ValueError):
    """A stage registry that the rest of the package could not work with; says what to fix."""


def check_registry(registry: Sequence[Stage], source: str) -> tuple[Stage, ...]:
    """`registry` as a tuple once it holds: unique names and two-character prefixes ending in
    `_` (a gen_id's stage is its first two characters), every parent listed before its
    children, one root stage, one scored stage whose lineage reaches the root, and lineage
    columns of `template_id` / `llm_model_id` only, none used twice."""
    problems, seen, columns = [], {}, []
    for stage in registry:
        if stage.name in seen:
            problems.append(f"stage {stage.name!r} is listed twice")
        if len(stage.prefix) != 2 or not stage.prefix.endswith("_") or not stage.prefix[0].isalpha():
            problems.append(f"stage {stage.name!r}: prefix {stage.prefix!r} must be a letter and '_'")
        if any(other.prefix == stage.prefix for other in seen.values()):
            problems.append(f"stage {stage.name!r}: prefix {stage.prefix!r} is already taken")
        if stage.parent is not None and stage.parent not in seen:
            problems.append(f"stage {stage.name!r}: its parent {stage.parent!r} must be listed before it")
        if stage.keeps not in (TEXT, SCORE):
            problems.append(f"stage {stage.name!r}: keeps must be {TEXT!r} or {SCORE!r}")
        for column, report in stage.lineage_columns:
            if column not in ("template_id", "llm_model_id"):
                problems.append(f"stage {stage.name!r}: lineage column of {column!r}: use template_id or llm_model_id")
            columns.append(report)
        seen[stage.name] = stage
    roots = [s.name for s in registry if s.parent is None]
    scored = [s.name for s in registry if s.keeps == SCORE]
    if len(roots) != 1:
        problems.append(f"one stage must have no parent (the root); found {roots or 'none'}")
    if len(scored) != 1:
        problems.append(f"one stage must keep a score (the reports read it); found {scored or 'none'}")
    elif seen[scored[0]].parent is None:
        problems.append(f"the scored stage {scored[0]!r} needs a parent: the documents it judges")
    problems += [f"report column {c!r} is given by two stages" for c in sorted({c for c in columns if columns.count(c) > 1})]
    if problems:
        raise RegistryError(f"the stage registry of {source} cannot be used:\n" + "\n".join(f"- {p}" for p in problems))
    return tuple(registry)


def _registry() -> tuple[Stage, ...]:
    """BUILT_IN, or the registry the environment's `DAYDREAM_STAGES` names (checked either way)."""
    named = os.environ.get(STAGES_ENV, "").strip()
    if not named:
        return check_registry(BUILT_IN, __name__)
    module, _, attribute = named.partition(":")
    try:
        registry = getattr(importlib.import_module(module), attribute or "STAGES")
    except (ImportError, AttributeError) as error:
        raise RegistryError(f"{STAGES_ENV}={named!r}: {error}; name a module on the Python path and its tuple "
                            "of Stage as module:ATTRIBUTE, or unset it") from error
    return check_registry(registry, f"{STAGES_ENV}={named}")


STAGES: tuple[Stage, ...] = _registry()

_BY_NAME = {stage.name: stage for stage in STAGES}
_BY_PREFIX = {stage.prefix: stage for stage in STAGES}
NAMES: tuple[str, ...] = tuple(_BY_NAME)

# Snakemake wildcard constraints (rules/common.smk), generated from the registry.
STAGE_PATTERN = "|".join(NAMES)
GEN_ID_PATTERN = "(?:" + "|".join(stage.prefix for stage in STAGES) + ")" + ID_CHARS


class UnknownStageError(ValueError):
    pass


def get(name: str) -> Stage:
    """The stage called `name`; UnknownStageError lists the known ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownStageError(f"unknown stage {name!r}: expected one of {', '.join(NAMES)}") from None


def of_gen_id(gen_id: str) -> Stage:
    """The stage a gen_id belongs to, from its prefix."""
    stage = _BY_PREFIX.get(gen_id[:2])
    if stage is None:
        prefixes = ", ".join(f"{s.prefix}... ({s.name})" for s in STAGES)
        raise UnknownStageError(f"{gen_id!r} is not a gen_id: it must start with one of {prefixes}")
    return stage


def parent_of(name: str) -> Stage | None:
    parent = get(name).parent
    return get(parent) if parent else None


def children_of(name: str) -> list[Stage]:
    return [stage for stage in STAGES if stage.parent == name]


ROOT: Stage = next(stage for stage in STAGES if stage.is_root)
SCORED: Stage = next(stage for stage in STAGES if stage.scored)


def lineage(name: str) -> list[Stage]:
    """The stage and its ancestors, nearest first: for the scored stage, [evaluation, essay, draft]."""
    chain, stage = [], get(name)
    while stage is not None:
        chain.append(stage)
        stage = parent_of(stage.name)
    return chain


# The stage whose documents the scored stage judges (the reports' "essay"); a curated cohort
# lists documents of it.
EVALUATED: Stage = get(SCORED.parent)


def lineage_columns(name: str) -> tuple[str, ...]:
    """The report columns of a document's lineage, root stage first: for the essay,
    (draft_template, generation_template, generation_model)."""
    return tuple(report for stage in reversed(lineage(name)) for _, report in stage.lineage_columns)
