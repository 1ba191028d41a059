"""The checkpoint renders the cohort's prompts before any call: "passes the checkpoint" means
"renders at run time".

- The root stage's prompts are known at the checkpoint (its templates and the combos' concept
  texts), so every one of them is rendered for real, with `prompts.build_prompt`, the function
  each response job uses: a template that indexes its concepts (`concepts[1]`) renders for
  every combo of size k, and a branch only a larger k takes is taken here too. Nothing is
  written.
- A child stage reads its parent's parsed text, which does not exist yet. Its templates are
  rendered with realistic parents: for each parent template, the offline model's reply to a
  real parent prompt, parsed with that parent template's parser (a copy template passes the
  parent's text on, as at run time). A curated cohort's listed documents exist, so the first
  new stage is rendered with their real parsed texts.

Failures are grouped by template and message, each with its count and one example, so one
broken template gives one line, not one per combo.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from daydream import definitions, offline_model, parsers, stages
from daydream.combos import Combo
from daydream.experiment import Experiment, Template
from daydream.paths import Paths
from daydream.prompts import Concept, PromptError, PromptFiles, build_prompt, load_template, render

log = logging.getLogger(__name__)

SAMPLE_MODEL = "checkpoint-sample"  # seeds the offline model's sample replies


@dataclass(frozen=True)
class Parent:
    """A parent text a child stage's template is rendered with, and what it stands for."""

    text: str
    label: str


class _Failures:
    """Render failures grouped by (stage, template, message): count and first example."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, str, str], list] = {}
        self.tried: dict[tuple[str, str], int] = {}

    def tried_one(self, stage: str, template_id: str) -> None:
        self.tried[(stage, template_id)] = self.tried.get((stage, template_id), 0) + 1

    def add(self, stage: str, template_id: str, message: str, example: str) -> None:
        group = self.groups.setdefault((stage, template_id, message), [0, example])
        group[0] += 1

    def problems(self, where: str, unit: str) -> list[str]:
        out = []
        for (stage, template_id, message), (count, example) in self.groups.items():
            total = self.tried[(stage, template_id)]
            out.append(f"{where}: {stage} template {template_id!r} does not render for {count} of {total} "
                       f"{unit(stage)} (e.g. {example}): {message}")
        return out


def _usable(experiment: Experiment, paths: Paths, stage: str, template_ids: Iterable[str]) -> list[Template]:
    """The known, active templates whose file loads; the others are reported by the cohort checks."""
    usable = []
    for template_id in template_ids:
        template = experiment.templates[stage].get(template_id)
        if template is None or not template.active:
            continue
        if template.generator == "llm":
            try:
                load_template(paths.template_path(stage, template_id))
            except PromptError:
                continue
        usable.append(template)
    return usable


def _readable_concepts(combos: list[Combo], experiment: Experiment, paths: Paths) -> list[Combo]:
    """The combos whose concepts are all known with a readable description."""
    readable: dict[str, bool] = {}
    for concept in sorted({c for combo in combos for c in combo.concepts}):
        level = combos[0].level
        readable[concept] = concept in experiment.concepts and not definitions.text_problems(
            paths.description_path(level, concept), "concept description")
    return [combo for combo in combos if all(readable[c] for c in combo.concepts)]


def _check_text(text: str, stage: str, template: Template, example: str, failures: _Failures) -> bool:
    if text.strip():
        return True
    failures.add(stage, template.template_id, "the prompt is empty (only whitespace); a model would be sent "
                 "nothing: fix the template", example)
    return False


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def _sample_parent(stage: str, template: Template, prompt: str, label: str) -> Parent | None:
    """The offline model's reply to `prompt`, parsed as this template's documents will be."""
    reply = offline_model.reply_text(prompt, stage=stage, model=SAMPLE_MODEL)
    return _parsed(stage, template, reply, label)


def _parsed(stage: str, template: Template, raw: str, label: str) -> Parent | None:
    try:
        text = parsers.parse(stage, template.parser, raw, score_min=template.score_min, score_max=template.score_max)
    except parsers.ParseError as error:
        log.warning("checkpoint: the offline sample of %s template %r does not parse with %r (%s); its child "
                    "templates are not trial-rendered with it", stage, template.template_id, template.parser,
                    error.reason)
        return None
    return Parent(text, label)


def root_prompts(paths: Paths, experiment: Experiment, section: dict, combos: list[Combo],
                 failures: _Failures) -> list[Parent]:
    """Render every root-stage prompt of the cohort for real; return one realistic parsed
    parent per root template for the next stage."""
    stage = stages.ROOT.name
    usable_combos = _readable_concepts(combos, experiment, paths) if combos else []
    parents: list[Parent] = []
    for template in _usable(experiment, paths, stage, section["templates"]):
        path = paths.template_path(stage, template.template_id)
        first: str | None = None
        for combo in usable_combos:
            concepts = tuple(Concept(c, experiment.concepts[c], paths.description_path(combo.level, c))
                             for c in combo.concepts)
            example = f"{combo.combo_id}: {', '.join(combo.concepts)}"
            failures.tried_one(stage, template.template_id)
            try:
                text = build_prompt(PromptFiles(stage, path, concepts=concepts)).text
            except PromptError as error:
                failures.add(stage, template.template_id, str(error), example)
                continue
            if _check_text(text, stage, template, example, failures) and first is None:
                first = text
        if first is not None:
            sample = _sample_parent(stage, template, first, f"{_a(stage)} of template {template.template_id!r}")
            parents.extend([sample] if sample else [])
    return parents


def existing_parents(paths: Paths, stage: str, rows: list[dict]) -> list[tuple[Parent, str]]:
    """The parsed texts of existing documents (a curated cohort's), with their parsed.txt path."""
    out = []
    for row in rows:
        path = paths.parsed_path(stage, row["gen_id"])
        if path.exists():
            out.append((Parent("", f"{stage} {row['gen_id']}"), str(path)))
    return out


def child_prompts(paths: Paths, experiment: Experiment, stage: stages.Stage, section: dict,
                  parents: list[Parent], failures: _Failures,
                  parent_files: Iterable[tuple[Parent, str]] = ()) -> list[Parent]:
    """Render a child stage's templates with each parent (in memory, or the real parsed files
    of `parent_files`); return this stage's realistic parsed texts for its own children."""
    made: list[Parent] = []
    for template in _usable(experiment, paths, stage.name, section["templates"]):
        path = paths.template_path(stage.name, template.template_id) if template.generator == "llm" else None
        for parent, parent_path in [(p, None) for p in parents] + list(parent_files):
            example = f"with {parent.label}"
            failures.tried_one(stage.name, template.template_id)
            try:
                if parent_path is not None:
                    text = build_prompt(PromptFiles(stage.name, path, parent=Path(parent_path))).text
                elif path is None:
                    text = parent.text  # a copy: its raw text is the parent's text
                else:
                    text = render(load_template(path), stage.variables([], parent.text))
            except PromptError as error:
                failures.add(stage.name, template.template_id, str(error), example)
                continue
            if path is not None and not _check_text(text, stage.name, template, example, failures):
                continue
            label = f"{_a(stage.name)} of template {template.template_id!r} ({parent.label})"
            sample = (_parsed(stage.name, template, text, label) if path is None
                      else _sample_parent(stage.name, template, text, label))
            made.extend([sample] if sample else [])
    return made


def _unit(stage: str) -> str:
    return "combos" if stages.get(stage).is_root else "parent texts tried"


def prompt_problems(paths: Paths, experiment: Experiment, spec: dict, combos: list[Combo],
                    per_stage: list[list[dict]], where: str) -> list[str]:
    """Every render problem of the cohort's prompts, one line per template and message.

    `per_stage` holds the rows already known per stage, root first: the root stage's rows
    (generated from `combos`), or a curated cohort's existing documents and their ancestors."""
    failures = _Failures()
    made = len(per_stage)
    parents: list[Parent] = []
    parent_files: list[tuple[Parent, str]] = []
    if made == 1 and stages.ROOT.config_section in spec:
        parents = root_prompts(paths, experiment, spec[stages.ROOT.config_section], combos, failures)
    else:
        parent_files = existing_parents(paths, stages.STAGES[made - 1].name, per_stage[-1])
    for stage in stages.STAGES[made:]:
        if stage.config_section not in spec:
            break
        parents = child_prompts(paths, experiment, stage, spec[stage.config_section], parents, failures,
                                parent_files)
        parent_files = []
    return failures.problems(where, _unit)
