"""Cohorts (SPEC §3): read a cohort definition, check it, and write its membership.

`build_cohort` is what the `cohort_membership` checkpoint runs: it validates the cohort file
against `config/schema/cohort.schema.yaml` and against the experiment tables, collects every
problem into one CohortError (file, item, fix), and only then writes `manifest.json`,
`membership.csv` and new rows of the append-only `combo_mappings.csv`.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import yaml

from daydream import combos as combo_register
from daydream import gens, ids, prompts
from daydream.experiment import Experiment, ExperimentError, load_experiment
from daydream.paths import Paths
from daydream.schemas import MEMBERSHIP_COLUMNS

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "config" / "schema" / "cohort.schema.yaml"


class CohortError(ExperimentError):
    """Bad cohort input; one line per problem, each naming the file and the item."""


@dataclass(frozen=True)
class Combo:
    combo_id: str
    concepts: tuple[str, ...]
    level: str
    k: int

    def as_dict(self) -> dict:
        return {"combo_id": self.combo_id, "concepts": list(self.concepts), "level": self.level, "k": self.k}


def load_cohort_spec(path: Path) -> dict:
    """The cohort file as a dict, checked against the cohort schema (defaults filled in)."""
    if not path.exists():
        raise CohortError([f"{path}: cohort file not found; create it or fix the `cohorts` list in config"])
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise CohortError([f"{path}: not valid YAML: {error}"]) from error
    schema = yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    problems = [f"{path}: {'/'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}"
                for e in validator.iter_errors(spec)]
    if problems:
        raise CohortError(problems)
    for stage in ids.STAGES:
        if stage in spec:
            spec[stage].setdefault("replicates", 1)
    return spec


def resolve_combos(spec: dict, experiment: Experiment, where: str, problems: list[str]) -> list[Combo]:
    """The cohort's concept combinations, sorted by combo_id; unknown concepts go to `problems`."""
    level, k = spec["level"], spec["k"]
    if "combos" in spec:
        groups = [tuple(c) for c in spec["combos"]]
    else:
        chosen = sorted(experiment.concepts) if spec.get("ids", "all") == "all" else list(spec["ids"])
        groups = list(itertools.combinations(sorted(chosen), k))
    for group in groups:
        for concept in group:
            if concept not in experiment.concepts:
                state = "inactive" if concept in experiment.inactive_concepts else "unknown"
                problems.append(f"{where}: concepts: {state} concept {concept!r}; "
                                "use an active concept_id from concepts_metadata.csv")
        if "combos" in spec and len(group) != k:
            problems.append(f"{where}: concepts: combo {list(group)} has {len(group)} concepts, k is {k}")
    if not groups:
        problems.append(f"{where}: concepts: no combination of size {k} can be made")
    combos = {ids.combo_id(g, level, k): Combo(ids.combo_id(g, level, k), g, level, k) for g in groups}
    return [combos[key] for key in sorted(combos)]


def check_stage(stage: str, spec: dict, experiment: Experiment, paths: Paths, where: str,
                problems: list[str]) -> None:
    """Known templates with readable, renderable files, and known models."""
    table = experiment.templates[stage]
    for template_id in spec["templates"]:
        template = table.get(template_id)
        if template is None:
            problems.append(f"{where}: {stage}.templates: unknown template {template_id!r}; "
                            f"known: {', '.join(sorted(table)) or 'none'} ({paths.templates_csv(stage)})")
        elif template.generator == "llm":
            try:
                prompts.check_template(stage, paths.template_path(stage, template_id))
            except prompts.PromptError as error:
                problems.append(f"{where}: {stage} template {template_id!r}: {error}")
    for model_id in spec["models"]:
        if model_id not in experiment.models and not (stage == "essay" and model_id == "draft"):
            problems.append(f"{where}: {stage}.models: unknown model {model_id!r}; "
                            f"known: {', '.join(sorted(experiment.models))} ({paths.models_csv})")


def check_descriptions(combos: list[Combo], known: dict[str, str], paths: Paths, where: str,
                       problems: list[str]) -> None:
    """Every known concept of the combos has a description file at the cohort's level."""
    for concept in sorted({c for combo in combos for c in combo.concepts if c in known}):
        level = combos[0].level
        if not paths.description_path(level, concept).exists():
            problems.append(f"{where}: concept {concept!r} has no {level} description; "
                            f"create {paths.description_path(level, concept)}")


def row(stage: str, gen_id: str, cohort_id: str, parent: str, combo_id: str, template_id: str,
        model_id: str, replicate: int) -> dict:
    return dict(zip(MEMBERSHIP_COLUMNS, (stage, gen_id, cohort_id, parent, combo_id, template_id,
                                         model_id, int(replicate)), strict=True))


def draft_rows(cohort_id: str, combos: list[Combo], spec: dict) -> list[dict]:
    return [
        row("draft", ids.gen_id("draft", combo.combo_id, template, model, rep), cohort_id, "",
            combo.combo_id, template, model, rep)
        for combo in combos for template in spec["templates"] for model in spec["models"]
        for rep in range(1, spec["replicates"] + 1)
    ]


def essay_rows(cohort_id: str, drafts: list[dict], spec: dict, experiment: Experiment) -> list[dict]:
    """Essays per draft; a `copy` template makes one essay per draft (model = the draft's)."""
    rows = []
    for draft in drafts:
        for template in spec["templates"]:
            is_copy = experiment.templates["essay"][template].generator == "copy"
            models = ["draft"] if is_copy else spec["models"]
            for model in models:
                model_id = draft["llm_model_id"] if model == "draft" else model
                for rep in range(1, (1 if is_copy else spec["replicates"]) + 1):
                    gid = ids.essay_gen_id(draft["gen_id"], template, rep, model_id, draft["llm_model_id"])
                    rows.append(row("essay", gid, cohort_id, draft["gen_id"], draft["combo_id"],
                                    template, model_id, rep))
    return rows


def evaluation_rows(cohort_id: str, essays: list[dict], spec: dict) -> list[dict]:
    return [
        row("evaluation", ids.gen_id("evaluation", essay["gen_id"], template, model, rep), cohort_id,
            essay["gen_id"], essay["combo_id"], template, model, rep)
        for essay in essays for template in spec["templates"] for model in spec["models"]
        for rep in range(1, spec["replicates"] + 1)
    ]


def curated_rows(cohort_id: str, essay_ids: list[str], paths: Paths, where: str,
                 problems: list[str]) -> tuple[list[dict], list[dict]]:
    """Draft and essay rows of existing essays, read from their metadata in the gens store."""
    drafts, essays = {}, []
    for essay_id in essay_ids:
        try:
            essay = gens.read_metadata(paths, "essay", essay_id)
            draft = gens.read_metadata(paths, "draft", essay["parent_gen_id"])
        except (FileNotFoundError, KeyError, ValueError) as error:
            problems.append(f"{where}: essays: {essay_id!r} is not a complete essay in "
                            f"{paths.gens_root} ({error}); list only essays that exist")
            continue
        essays.append(row("essay", essay_id, cohort_id, draft["gen_id"], essay["combo_id"],
                          essay["template_id"], essay["model_id"], essay["replicate"]))
        drafts[draft["gen_id"]] = row("draft", draft["gen_id"], cohort_id, "", draft["combo_id"],
                                      draft["template_id"], draft["model_id"], draft["replicate"])
    return list(drafts.values()), essays


def curated_combos(drafts: list[dict], paths: Paths, where: str, problems: list[str]) -> list[Combo]:
    """The combos of existing drafts, from the append-only combo register."""
    known = combo_register.registered_combos(paths)
    combos = {}
    for combo_id in sorted({d["combo_id"] for d in drafts}):
        if combo_id not in known:
            problems.append(f"{where}: combo {combo_id} of a listed essay is not in {paths.combo_mappings_csv}; "
                            "bring that file along with the gens store")
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


def plan_cohort(paths: Paths, cohort_id: str, spec: dict, experiment: Experiment,
                where: str) -> tuple[dict, list[dict], list[Combo]]:
    """Manifest, membership rows and combos of a cohort; CohortError lists every problem."""
    problems: list[str] = []
    stages = [s for s in ids.STAGES if s in spec]
    for stage in stages:
        check_stage(stage, spec[stage], experiment, paths, where, problems)
    combos: list[Combo] = []
    if "essays" in spec:
        drafts, essays = curated_rows(cohort_id, spec["essays"], paths, where, problems)
        combos = curated_combos(drafts, paths, where, problems)
    else:
        combos = resolve_combos(spec["concepts"], experiment, where, problems)
        check_descriptions(combos, experiment.concepts, paths, where, problems)
        if problems:
            raise CohortError(problems)
        drafts = draft_rows(cohort_id, combos, spec["draft"])
        essays = essay_rows(cohort_id, drafts, spec["essay"], experiment)
    if problems:
        raise CohortError(problems)
    rows = drafts + essays + evaluation_rows(cohort_id, essays, spec["evaluation"])
    check_duplicates(rows, where, problems)
    if problems:
        raise CohortError(problems)
    return manifest(cohort_id, spec, combos), rows, combos


def manifest(cohort_id: str, spec: dict, combos: list[Combo]) -> dict:
    doc: dict = {"cohort_id": cohort_id, "combos": [c.as_dict() for c in combos]}
    for stage in ids.STAGES:
        if stage in spec:
            doc[stage] = {"templates": sorted(spec[stage]["templates"]),
                          "models": sorted(spec[stage]["models"]),
                          "replicates": spec[stage]["replicates"]}
    if "essays" in spec:
        doc["essays"] = sorted(spec["essays"])
    return doc


def build_cohort(paths: Paths, cohort_id: str, cohort_file: Path, check_models=None) -> list[dict]:
    """Validate a cohort and write its manifest, membership and combo mappings.

    `check_models(model_ids, where) -> list[str]` may add problems about models that cannot be
    called (e.g. a missing API key), so they also fail here, before any model call.
    """
    where = str(cohort_file)
    try:
        experiment = load_experiment(paths)
    except ExperimentError as error:
        raise CohortError(error.problems) from error
    spec = load_cohort_spec(cohort_file)
    doc, rows, combos = plan_cohort(paths, cohort_id, spec, experiment, where)
    if check_models is not None:
        used = sorted({r["llm_model_id"] for r in rows})
        problems = check_models([experiment.models[m] for m in used if m in experiment.models], where)
        if problems:
            raise CohortError(problems)
    combo_register.append_combo_mappings(paths, combos)
    gens.write_text_atomic(paths.manifest_json(cohort_id), json.dumps(doc, indent=2) + "\n")
    gens.write_csv_atomic(paths.membership_csv(cohort_id), MEMBERSHIP_COLUMNS, rows)
    return rows
