"""Cohorts (SPEC §3): read a cohort definition, check it, and write its membership.

`write_cohort` is what the `cohort_membership` checkpoint runs. The cohort file is
`config/cohorts/<id>.yaml` or the original's `data/cohorts/<id>/spec/config.yaml`
(`cohort_design.cohort_definition`). A file with a top-level `axes` key is a design spec
(SPEC-DSL.md: compiled by `daydream.cohort_design`, see `plan_design`); any other is checked
against `config/schema/cohort.schema.yaml`. Either is then checked against the experiment
tables, every problem collected into one CohortError (file, item, fix), and only then are
`manifest.json`, `membership.csv` and new rows of the append-only `combo_mappings.csv` written.
Rows are built stage by stage from the stage registry: the root stage from the combos, every
other stage from its parent's rows (or, in a curated cohort, from documents already in the gens
store, ours or the original pipeline's: `original_store.checkpoint_problems` refuses those that
Snakemake would make or parse again)."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import jsonschema
import yaml

from daydream import (
    calls,
    checkpoint_inputs,
    cohort_design,
    definitions,
    ids,
    original_store,
    preflight,
    prompts,
    schemas,
    stages,
    store,
)
from daydream import combos as combo_register
from daydream.batch import policy as batch_policy
from daydream.columns import MEMBERSHIP_COLUMNS
from daydream.combos import Combo
from daydream.experiment import CONCEPTS, MODELS, Experiment, ExperimentError, load_experiment
from daydream.paths import Paths
from daydream.runtime import Runtime

# A curated cohort lists existing documents of the stage the scored stage reads (`essays`).
CURATED_STAGE = stages.EVALUATED.name
CURATED_KEY = stages.EVALUATED.curated_key


class CohortError(ExperimentError):
    """Bad cohort input; one line per problem, each naming the file and the item."""


def load_cohort_spec(path: Path) -> dict:
    """The cohort file as a dict, checked against the cohort schema (defaults filled in)."""
    if not path.exists():
        raise CohortError([f"{path}: cohort file not found; create it or fix the `cohorts` list in config"])
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise CohortError([f"{path}: not valid YAML: {error}"]) from error
    validator = jsonschema.Draft202012Validator(schemas.load("cohort"))
    problems = [f"{path}: {'/'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}"
                for e in validator.iter_errors(spec)]
    if problems:
        raise CohortError(problems)
    for stage in stages.STAGES:
        if stage.config_section in spec:
            spec[stage.config_section].setdefault("replicates", 1)
    return spec


def resolve_combos(spec: dict, experiment: Experiment, where: str, problems: list[str]) -> list[Combo]:
    """The cohort's concept combinations, sorted by combo_id; unknown concepts go to `problems`."""
    level, k = spec["level"], spec["k"]
    if "combos" in spec:
        groups = [tuple(c) for c in spec["combos"]]
    else:
        chosen = sorted(experiment.concepts) if spec.get("ids", "all") == "all" else list(spec["ids"])
        twice = sorted({c for c in chosen if chosen.count(c) > 1}, key=str)
        if twice:
            problems.append(f"{where}: concepts.ids: {', '.join(map(repr, twice))} listed more than once; a concept "
                            "appears at most once in a combination: list each id once")
        groups = list(itertools.combinations(sorted(set(chosen), key=str), k))
    bad = False
    for group in groups:
        if len(set(group)) != len(group):
            problems.append(f"{where}: concepts: combo {list(group)} names a concept more than once; a concept "
                            "appears at most once in a combination")
        for concept in group:
            problem = ids.id_problem("concept id", concept)
            if problem:
                problems.append(f"{where}: concepts: {problem}")
                bad = True
                continue
            if concept not in experiment.concepts and not experiment.was_rejected(CONCEPTS, concept):
                state = "inactive" if concept in experiment.inactive_concepts else "unknown"
                problems.append(f"{where}: concepts: {state} concept {concept!r}; "
                                "use an active concept_id from concepts_metadata.csv")
        if "combos" in spec and len(group) != k:
            problems.append(f"{where}: concepts: combo {list(group)} has {len(group)} concepts, k is {k}")
    if not groups and CONCEPTS not in experiment.unreadable:
        problems.append(f"{where}: concepts: no combination of size {k} can be made")
    if bad:
        groups = [g for g in groups if not any(ids.id_problem("concept id", c) for c in g)]
    combos = {ids.combo_id(g, level, k): Combo(ids.combo_id(g, level, k), g, level, k) for g in groups}
    return [combos[key] for key in sorted(combos)]


def check_stage(stage: stages.Stage, spec: dict, experiment: Experiment, paths: Paths, where: str,
                problems: list[str]) -> None:
    """Known, active templates with readable files that parse, and known, active models (a
    child stage may name its parent stage as a model: the parent document's own model). The
    templates are rendered for real by `daydream.preflight`. An id whose row (or table) had a
    problem is not called unknown: that problem is reported already."""
    table, csv_path = experiment.templates[stage.name], paths.templates_csv(stage.name)
    for template_id in spec["templates"]:
        problem = ids.id_problem("template id", template_id)
        if problem:
            problems.append(f"{where}: {stage.config_section}.templates: {problem}")
            continue
        template = table.get(template_id)
        if template is None:
            if not experiment.was_rejected(stage.name, template_id):
                problems.append(f"{where}: {stage.config_section}.templates: unknown template {template_id!r}; "
                                f"known: {', '.join(sorted(table)) or 'none'} ({csv_path})")
        elif not template.active:
            problems.append(f"{where}: {stage.config_section}.templates: template {template_id!r} is inactive "
                            f"({csv_path} line {template.line} says active=false); set it to true there, or "
                            "remove the template from the cohort")
        elif template.generator == "llm":
            try:
                prompts.load_template(paths.template_path(stage.name, template_id))
            except prompts.PromptError as error:
                problems.append(f"{where}: {stage.name} template {template_id!r}: {error}")
    for model_id in spec["models"]:
        if stage.parent and model_id == stage.parent:
            continue
        problem = ids.id_problem("model id", model_id)
        if problem:
            problems.append(f"{where}: {stage.config_section}.models: {problem}")
            continue
        model = experiment.models.get(model_id)
        if model is None:
            if not experiment.was_rejected(MODELS, model_id):
                problems.append(f"{where}: {stage.config_section}.models: unknown model {model_id!r}; "
                                f"known: {', '.join(sorted(experiment.models))} ({paths.models_csv})")
        elif not model.active:
            problems.append(f"{where}: {stage.config_section}.models: model {model_id!r} is inactive "
                            f"({paths.models_csv} line {model.line} says active=false); set it to true there, "
                            "or remove the model from the cohort")


def check_descriptions(combos: list[Combo], known: dict[str, str], paths: Paths, where: str,
                       problems: list[str], rejected=lambda concept_id: False) -> None:
    """Every known concept of the combos (and each whose row was `rejected` for a problem) has a
    readable, non-empty UTF-8 description file at the cohort's level
    (`daydream.definitions.read_text`)."""
    for concept in sorted({c for combo in combos for c in combo.concepts if c in known or rejected(c)}):
        level = combos[0].level
        path = paths.description_path(level, concept)
        if not path.exists():
            problems.append(f"{where}: concept {concept!r} has no {level} description; create {path}")
        else:
            problems.extend(f"{where}: concept {concept!r}: {p}" for p in definitions.text_problems(
                path, "concept description"))


def row(stage: str, gen_id: str, cohort_id: str, parent: str, combo_id: str, template_id: str,
        model_id: str, replicate: int) -> dict:
    return dict(zip(MEMBERSHIP_COLUMNS, (stage, gen_id, cohort_id, parent, combo_id, template_id,
                                         model_id, int(replicate)), strict=True))


def root_rows(cohort_id: str, combos: list[Combo], spec: dict) -> list[dict]:
    """The root stage's documents: every combo x template x model x replicate."""
    name = stages.ROOT.name
    return [
        row(name, ids.document_id(name, combo.combo_id, template, model, rep), cohort_id, "",
            combo.combo_id, template, model, rep)
        for combo in combos for template in spec["templates"] for model in spec["models"]
        for rep in range(1, spec["replicates"] + 1)
    ]


def child_rows(stage: stages.Stage, cohort_id: str, parents: list[dict], spec: dict,
               experiment: Experiment) -> list[dict]:
    """A child stage's documents: per parent, template, model and replicate. A `copy` template
    makes one document per parent with the parent's model; the model name equal to the parent
    stage's name also means the parent's model."""
    rows = []
    for parent in parents:
        for template in spec["templates"]:
            is_copy = experiment.templates[stage.name][template].generator == "copy"
            for model in ([stage.parent] if is_copy else spec["models"]):
                model_id = parent["llm_model_id"] if model == stage.parent else model
                for rep in range(1, (1 if is_copy else spec["replicates"]) + 1):
                    gid = ids.document_id(stage.name, parent["gen_id"], template, model_id, rep,
                                          parent["llm_model_id"])
                    rows.append(row(stage.name, gid, cohort_id, parent["gen_id"], parent["combo_id"],
                                    template, model_id, rep))
    return rows


def stored_row(paths: Paths, stage: str, gen_id: str, cohort_id: str) -> dict:
    """The membership row of a document already in the gens store, from its metadata (ours or
    the original pipeline's: `store.read_document_metadata`)."""
    meta = store.read_document_metadata(paths, stage, gen_id)
    return row(stage, gen_id, cohort_id, meta["parent_gen_id"], meta["combo_id"], meta["template_id"],
               meta["model_id"], meta["replicate"])


def curated_rows(cohort_id: str, gen_ids: list[str], paths: Paths, where: str,
                 problems: list[str]) -> list[list[dict]]:
    """Rows of existing documents and all their ancestors, per stage (root first), read from
    their metadata in the gens store."""
    chain = list(reversed(stages.lineage(CURATED_STAGE)))
    per_stage: list[dict[str, dict]] = [{} for _ in chain]
    for gen_id in gen_ids:
        try:
            found, current = [], gen_id
            for index in range(len(chain) - 1, -1, -1):
                found.append((index, stored_row(paths, chain[index].name, current, cohort_id)))
                current = found[-1][1]["parent_gen_id"]
        except (FileNotFoundError, KeyError, ValueError) as error:
            problems.append(f"{where}: {CURATED_KEY}: {gen_id!r} is not a complete {CURATED_STAGE} in "
                            f"{paths.gens_root} ({error}); list only documents that exist")
            continue
        for index, item in found:
            per_stage[index].setdefault(item["gen_id"], item)
    return [list(rows.values()) for rows in per_stage]


def curated_combos(roots: list[dict], paths: Paths, where: str, problems: list[str]) -> list[Combo]:
    """The combos of existing root documents, from the append-only combo register."""
    known = combo_register.registered_combos(paths)
    combos = {}
    for combo_id in sorted({d["combo_id"] for d in roots}):
        if combo_id not in known:
            problems.append(f"{where}: combo {combo_id} of a listed {CURATED_STAGE} is not in "
                            f"{paths.combo_mappings_csv}; bring that file along with the gens store")
            continue
        concepts, level, k = known[combo_id]
        combos[combo_id] = Combo(combo_id, concepts, level, k)
    return list(combos.values())


def check_duplicates(rows: list[dict], where: str, problems: list[str]) -> None:
    seen: set[str] = set()
    for item in rows:
        if item["gen_id"] in seen:
            problems.append(f"{where}: {item['stage']} {item['gen_id']} appears twice "
                            f"(template {item['template_id']}, model {item['llm_model_id']}); "
                            "remove the repeated template or model id")
        seen.add(item["gen_id"])


def _raise_if(problems: list[str]) -> None:
    if problems:
        raise CohortError(problems)


def plan_cohort(paths: Paths, cohort_id: str, spec: dict, experiment: Experiment,
                where: str, problems: list[str] | None = None) -> tuple[dict, list[dict], list[Combo]]:
    """Manifest, membership rows and combos of a cohort; CohortError lists every problem
    (with those already in `problems`). Every prompt the cohort's templates make is rendered
    first (`daydream.preflight`), so a template that passes here renders at run time."""
    problems = [] if problems is None else problems
    for stage in stages.STAGES:
        if stage.config_section in spec:
            check_stage(stage, spec[stage.config_section], experiment, paths, where, problems)
    if CURATED_KEY in spec:
        per_stage = curated_rows(cohort_id, spec[CURATED_KEY], paths, where, problems)
        combos = curated_combos(per_stage[0], paths, where, problems)
    else:
        combos = resolve_combos(spec["concepts"], experiment, where, problems)
        check_descriptions(combos, experiment.concepts, paths, where, problems,
                           rejected=lambda c: experiment.was_rejected(CONCEPTS, c))
        per_stage = [root_rows(cohort_id, combos, spec[stages.ROOT.config_section])]
    problems.extend(preflight.prompt_problems(paths, experiment, spec, combos, per_stage, where))
    _raise_if(problems)
    for stage in stages.STAGES[len(per_stage):]:
        per_stage.append(child_rows(stage, cohort_id, per_stage[-1], spec[stage.config_section], experiment))
    rows = [item for stage_rows in per_stage for item in stage_rows]
    check_duplicates(rows, where, problems)
    _raise_if(problems)
    return manifest(cohort_id, spec, combos), rows, combos


def manifest(cohort_id: str, spec: dict, combos: list[Combo]) -> dict:
    doc: dict = {"cohort_id": cohort_id, "combos": [c.as_dict() for c in combos]}
    for stage in stages.STAGES:
        section = spec.get(stage.config_section)
        if section:
            doc[stage.config_section] = {"templates": sorted(section["templates"]),
                                         "models": sorted(section["models"]), "replicates": section["replicates"]}
    if CURATED_KEY in spec:
        doc[CURATED_KEY] = sorted(spec[CURATED_KEY])
    return doc


# -- a cohort defined by a design spec (SPEC-DSL.md) ------------------------------------------
def is_design_file(path: Path) -> bool:
    """True when the cohort file is a design spec (a top-level `axes` key). A file that cannot be
    read or parsed is not one here: `load_cohort_spec` then reports it."""
    try:
        return cohort_design.is_design_spec(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False


def design_combos(combo_ids: list[str], experiment: Experiment, paths: Paths, where: str,
                  problems: list[str]) -> list[Combo]:
    """The design's combos from the append-only register, each concept active and described."""
    known = combo_register.registered_combos(paths)
    combos = []
    for combo_id in sorted(combo_ids):
        if combo_id not in known:
            problems.append(f"{where}: combo_id {combo_id!r} is not registered in {paths.combo_mappings_csv}; "
                            "bring that file along from the original data folder, or register it from its concepts: "
                            f"python scripts/register_combos.py {where} --level <level> --concepts a,b ...")
            continue
        concepts, level, k = known[combo_id]
        for concept in concepts:
            if concept not in experiment.concepts:
                state = "inactive" if concept in experiment.inactive_concepts else "unknown"
                problems.append(f"{where}: combo_id {combo_id!r}: {state} concept {concept!r}; make it active in "
                                f"{paths.concepts_metadata_csv} or leave the combo out")
        combos.append(Combo(combo_id, concepts, level, k))
    for level in sorted({combo.level for combo in combos}):
        check_descriptions([c for c in combos if c.level == level], experiment.concepts, paths, where, problems)
    return combos


def check_design_stages(rows: list[dict], experiment: Experiment, paths: Paths, where: str,
                        problems: list[str]) -> None:
    """Per stage, the templates and models the design names (as `check_stage` checks a cohort's);
    a model spelled as the parent stage's name, and a copy template that is not one document per
    parent with the parent's model, are errors too."""
    summary = cohort_design.membership_summary(rows)
    by_id = {row["gen_id"]: row for row in rows}
    for stage, (template_column, model_column, replicate_column) in zip(
            cohort_design.LINEAGE, cohort_design.STAGE_FIELDS, strict=True):
        names = summary[stage.name]
        check_stage(stage, {"templates": names["templates"], "models": names["models"]}, experiment, paths,
                    f"{where}: design columns {template_column}, {model_column}", problems)
        if stage.parent and stage.parent in names["models"]:
            problems.append(f"{where}: {model_column} {stage.parent!r} is not a model id; write None for the "
                            f"{stage.parent}'s own model, or name a model of {paths.models_csv}")
        wrong: dict[tuple, list[str]] = {}
        for row in rows:
            template = experiment.templates[stage.name].get(row["template_id"])
            if row["stage"] != stage.name or template is None or template.generator != "copy":
                continue
            if row["llm_model_id"] != by_id[row["parent_gen_id"]]["llm_model_id"] or row["replicate"] != 1:
                key = (row["template_id"], row["llm_model_id"], row["replicate"])
                wrong.setdefault(key, []).append(row["parent_gen_id"])
        for (template_id, model_id, replicate), parents in wrong.items():
            problems.append(
                f"{where}: {stage.name} template {template_id!r} is a copy (one {stage.name} per {stage.parent}, "
                f"with its model), but the design gives it {model_column} {model_id!r} and {replicate_column} "
                f"{replicate} ({len(parents)} {stage.parent}(s), e.g. {parents[0]}); give it {model_column} None "
                f"and {replicate_column} 1")


def design_manifest(cohort_id: str, rows: list[dict], combos: list[Combo], design: cohort_design.Design) -> dict:
    """The manifest of a design cohort: as a plain cohort's (the models are the ids the rows
    carry, replicates the highest replicate), plus the spec, its row count and seed."""
    doc: dict = {"cohort_id": cohort_id, "combos": [c.as_dict() for c in combos]}
    for stage in stages.STAGES:
        mine = [r for r in rows if r["stage"] == stage.name]
        if mine:
            doc[stage.config_section] = {"templates": sorted({r["template_id"] for r in mine}),
                                         "models": sorted({r["llm_model_id"] for r in mine}),
                                         "replicates": max(r["replicate"] for r in mine)}
    doc["design"] = {"spec": design.source, "rows": len(design.rows), "seed": design.seed}
    return doc


def plan_design(paths: Paths, cohort_id: str, cohort_file: Path, experiment: Experiment,
                problems: list[str] | None = None) -> tuple[dict, list[dict], list[Combo]]:
    """Manifest, membership rows and combos of a cohort defined by a design spec: the spec is
    compiled to design rows, those to membership rows with our ids, and these are checked like
    any cohort's (CohortError lists every problem, naming the spec file and the item)."""
    where = str(cohort_file)
    try:
        design = cohort_design.compile_design_file(cohort_file)
        rows = cohort_design.design_membership(design, cohort_id)
    except cohort_design.DesignError as error:
        raise CohortError(error.problems) from error
    problems = [] if problems is None else problems
    if not rows:
        problems.append(f"{where}: the design has no rows; give every axis at least one level")
    summary = cohort_design.membership_summary(rows)
    combos = design_combos(summary["combo_ids"], experiment, paths, where, problems)
    check_design_stages(rows, experiment, paths, where, problems)
    _raise_if(problems)
    # Every template of the design rendered over the design's combos (and realistic parents):
    # a superset of the pairs the design makes, so "passes" means "renders at run time".
    sections = {stage: {"templates": summary[stage]["templates"]} for stage in stages.NAMES}
    problems.extend(preflight.prompt_problems(paths, experiment, sections, combos, [[]], where))
    _raise_if(problems)
    return design_manifest(cohort_id, rows, combos, design), rows, combos


def build_cohort(paths: Paths, cohort_id: str, cohort_file: Path, check_models=None) -> list[dict]:
    """Validate a cohort and write its manifest, membership and combo mappings.

    `check_models(membership_rows, where) -> list[str]` may add problems about models that cannot
    be called (e.g. a missing API key), so they also fail here, before any model call.
    """
    where = str(cohort_file)
    problems: list[str] = []  # every definition file's problems, reported together
    experiment = load_experiment(paths, problems)
    problems.extend(combo_register.register_problems(paths))
    try:
        if is_design_file(cohort_file):
            doc, rows, combos = plan_design(paths, cohort_id, cohort_file, experiment, problems)
        else:
            spec = load_cohort_spec(cohort_file)
            doc, rows, combos = plan_cohort(paths, cohort_id, spec, experiment, where, problems)
    except CohortError as error:
        raise CohortError(problems + [p for p in error.problems if p not in problems]) from error
    _raise_if(original_store.checkpoint_problems(paths, rows, where))
    if check_models is not None:
        _raise_if(check_models(rows, where))
    combo_register.append_combo_mappings(paths, combos)
    store.write_text_atomic(paths.manifest_json(cohort_id), json.dumps(doc, indent=2) + "\n")
    store.write_csv_atomic(paths.membership_csv(cohort_id), MEMBERSHIP_COLUMNS, rows)
    return rows


def drop_derived_reports(paths: Paths, cohort_id: str) -> None:
    """A new membership outdates the cohort's reports and the stale report. Snakemake 9 does
    not rerun jobs it adds after a checkpoint when their outputs exist but are older than
    their inputs, so these derived (free to rebuild) files are removed and made again."""
    shutil.rmtree(paths.reports_dir(cohort_id), ignore_errors=True)
    paths.stale_generations_csv.unlink(missing_ok=True)


def write_cohort(rt: Runtime, cohort_id: str, log_path: str | None = None) -> None:
    """The checkpoint: validate the cohort and write its manifest and membership. The models'
    API keys are checked here too, except in a run that only plans (`rt.run.planning_only`): a plan
    needs no key, and a later run checks them before its first call (`budget.check_before_run`)."""
    def check_models(rows, where):
        by_stage = batch_policy.models_by_stage(rt, rows)
        used = list({row.id: row for models in by_stage.values() for row in models}.values())
        keys = [] if rt.run.planning_only else calls.missing_keys(used, rt.settings, where)  # a plan needs no key
        return keys + batch_policy.route_problems(rt, by_stage, where)

    inputs = checkpoint_inputs.file_hashes(rt.paths, cohort_id)  # before they are read: what is validated
    try:
        cohort_file = cohort_design.cohort_definition(rt.paths, cohort_id)
    except cohort_design.DesignError as error:
        raise CohortError(error.problems) from error
    rows = build_cohort(rt.paths, cohort_id, cohort_file, check_models=check_models)
    drop_derived_reports(rt.paths, cohort_id)
    checkpoint_inputs.write_record(rt.paths, cohort_id, inputs)
    counts = {stage: sum(r["stage"] == stage for r in rows) for stage in stages.NAMES}
    store.write_job_log(log_path, f"cohort {cohort_id}: {counts}")

