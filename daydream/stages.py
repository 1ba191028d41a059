"""The stage registry: the one place that says what each stage of a document is.

A document is made in one stage. Each stage has an id prefix, a parent stage whose parsed
text it reads (none for the root stage, which reads concepts), the template variables it
renders with, the parsers it allows, the reply the offline model gives, the parts its gen_id
is hashed from, and the name of its section in a cohort file and under `llm.stages` in the
config. Every other module asks this registry; none spells a stage's name or prefix.

Adding a stage is one `Stage(...)` entry in `STAGES` (plus its offline reply and, in the
config schemas, its sections).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

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
    from the stage that keeps a score.
    """

    name: str
    prefix: str
    parent: str | None
    variables: Callable[[Sequence[dict], str | None], dict]
    keeps: str
    default_parser: str | None
    offline_reply: str  # the function of daydream.offline_model that answers this stage
    id_parts: Callable[[str, str, str, int, str | None], tuple]
    allows_copy: bool = False

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


def _essay_parts(draft_id: str, template_id: str, model_id: str, replicate: int,
                 draft_model_id: str | None) -> tuple:
    """The essay model is a 4th part only when it differs from the draft's (SPEC §4)."""
    parts: tuple = (draft_id, template_id, replicate)
    return parts + (model_id,) if model_id != draft_model_id else parts


STAGES: tuple[Stage, ...] = (
    Stage(name="draft", prefix="d_", parent=None,
          variables=lambda concepts, parent: {"concepts": list(concepts)},
          keeps=TEXT, default_parser="identity", offline_reply="draft_reply",
          id_parts=lambda combo, template, model, rep, _: (combo, template, model, rep)),
    Stage(name="essay", prefix="e_", parent="draft",
          variables=lambda concepts, parent: {"draft_block": parent, "links_block": parent},
          keeps=TEXT, default_parser="identity", offline_reply="essay_reply",
          id_parts=_essay_parts, allows_copy=True),
    Stage(name="evaluation", prefix="v_", parent="essay",
          variables=lambda concepts, parent: {"response": parent},
          keeps=SCORE, default_parser=None, offline_reply="evaluation_reply",
          id_parts=lambda essay, template, model, rep, _: (essay, template, model, rep)),
)

_BY_NAME = {stage.name: stage for stage in STAGES}
_BY_PREFIX = {stage.prefix: stage for stage in STAGES}
NAMES: tuple[str, ...] = tuple(_BY_NAME)

# Snakemake wildcard constraints (rules/common.smk), generated from the registry.
STAGE_PATTERN = "|".join(NAMES)
GEN_ID_PATTERN = "(?:" + "|".join(stage.prefix for stage in STAGES) + ")[0-9a-z]+"


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
