"""What each rule reads and what a run targets: the logic behind the input functions of
`rules/common.smk` (which only wrap these in `ancient` or call the checkpoint).

- `final_targets`: the reports of every active cohort, and their documents through
  `document_targets`: the stale report and its shards, each of which takes its documents' gens
  files as inputs, and for a group of documents with a missing file whose shard is made, a
  `documents_due` file taking a missing file of each such document. Snakemake never remakes a missing
  intermediate file whose consumers are up to date, so a missing file must be asked for by a job
  that runs; listing every gens file in `all` did that, at a cost of O(N^2) (`Job.prepare` walks
  the job's N dependencies for each of its 4N inputs).
- A cohort whose membership was built from other content than its definition files hold today
  is targeted as the membership itself first (Snakemake 9 treats a checkpoint whose outputs
  exist as done when it plans); content, not modification time, decides
  (`daydream.checkpoint_inputs`).
- No job after the documents lists every document's files: Snakemake's cost of preparing and
  finishing a job grows with its inputs times its dependencies. The stale report's shards list
  about sqrt(N) documents each (`stale_shard_inputs`), the report lists the shards
  (`stale_report_inputs`), and the reports and the site take the stale report.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from daydream import batches, checkpoint_inputs, documents, rehearsal, reports, stages, stale, store
from daydream.batch import gate as batch_gate
from daydream.membership import Member
from daydream.paths import GEN_FILES, Paths
from daydream.runtime import Runtime

# The key in a `documents_due` file's name: the start of the SHA-256 of the files it waits for.
DUE_KEY_PATTERN = r"[0-9a-f]{12}"


def cohort_inputs(rt: Runtime, cohort_id: str) -> dict[str, object]:
    """The checkpoint's inputs: the file naming today's content of its inputs (`fingerprint`,
    made by rule `cohort_inputs_fingerprint`), then the files it reads by kind (the cohort file,
    the tables, templates and concept descriptions), which the rule marks `ancient`: content,
    not time, decides (`daydream.checkpoint_inputs`). While the membership is not current, the
    files whose content changed since it was built are apart (`changed`, not ancient).

    Why `changed`: the fingerprint file is made only when something targets it (the default
    target and `plan` do, `outdated_membership`). A run that targets the membership itself
    (`snakemake data/cohorts/<id>/membership.csv`) leaves it out, and Snakemake reruns a
    checkpoint whose outputs exist only for an input newer than them: with every input ancient
    it said "Nothing to be done" after an edit. An edited file is newer, so that run rebuilds the
    membership too. (An edit with an older time, as `cp -p` can leave, is seen by the
    fingerprint only: the default target or `snakemake plan` rebuilds it.)"""
    paths = rt.paths
    files = checkpoint_inputs.input_files(paths, cohort_id)
    changed = set() if cohort_is_current(rt, cohort_id) else set(checkpoint_inputs.changed_files(paths, cohort_id))
    return {"fingerprint": str(paths.cohort_fingerprint(cohort_id, checkpoint_inputs.fingerprint(paths, cohort_id))),
            "changed": sorted(str(p) for kind in files.values() for p in kind if str(p) in changed),
            **{kind: [str(p) for p in files[kind] if str(p) not in changed]
               for kind in ("cohort_file", "tables", "templates", "descriptions")}}


def cohort_is_current(rt: Runtime, cohort_id: str) -> bool:
    """True when the membership was built from exactly today's content of the checkpoint's
    inputs, whatever their modification times say."""
    return checkpoint_inputs.is_current(rt.paths, cohort_id)


def plan_inputs(rt: Runtime) -> list[str]:
    """What `snakemake plan` needs first: each active cohort's membership, made again first
    when it is not current (as the default target does it: `outdated_membership`)."""
    files = []
    for cohort_id in rt.cohort_ids:
        current = cohort_is_current(rt, cohort_id)
        files += [str(rt.paths.membership_csv(cohort_id)), str(rt.paths.manifest_json(cohort_id))] if current \
            else outdated_membership(rt, cohort_id)
    return files


def cohort_outputs(rt: Runtime, cohort_id: str) -> list[str]:
    """A cohort's reports and site (once its membership is current); its documents are targeted
    by `document_targets`. While a member waits on a provider batch, the reports are held back
    and the batch rounds that collect the replies are targeted instead (`batch.gate.gate`)."""
    rehearsal.refuse_mixing(rt, cohort_id)  # offline rehearsal replies never stand in for paid ones
    gate = batch_gate.gate(rt)
    if gate.blocked and any(m.gen_id in gate.blocked for m in rt.membership.members(cohort_id)):
        return list(gate.rounds)
    report_files = [str(rt.paths.cohort_report(cohort_id, r.name)) for r in reports.cohort_reports()]
    return report_files + site_outputs(rt, cohort_id) + list(gate.rounds)


def nothing_waits_on_batches(rt: Runtime) -> bool:
    """No document of the active cohorts is held back for a provider batch (the stale report
    reads every document, so it waits too)."""
    return not batch_gate.gate(rt).blocked


_DUE: dict[tuple[str, str], list[str]] = {}
_DUE_LOCK = threading.Lock()


def document_targets(rt: Runtime, cohort_ids: list[str]) -> list[str]:
    """How the default target asks for every gens file of the members of `cohort_ids` (the
    active cohorts whose membership is current), less those held back for a provider batch,
    without listing them: no job then has the 4N files of N documents as inputs.

    When every active cohort is current and nothing waits: the stale report and each of its
    shards (`stale.shards`), whose inputs are their documents' files; a shard that is missing or
    older than one of them runs, and asks for its documents' missing files. A shard that is made
    and up to date asks for nothing, so for each such shard with a missing file (deleted,
    archived by scripts/regenerate.py, never made) a `documents_due` file
    (`Paths.documents_due`, rule `documents_due`, removed when the run ends) takes a missing
    file of each such document as inputs (`first_missing`). Otherwise
    (a membership to rebuild first, documents held for a batch) the stale report is not asked
    for, and the documents of each group (`stale.group`) with missing files get a
    `documents_due` file. Each is about sqrt(N) documents: the default target has about sqrt(N)
    inputs, each due file at most sqrt(N). Costs a stat of each file of the targeted documents
    of a made shard."""
    gate = batch_gate.gate(rt)
    everything = list(cohort_ids) == list(rt.cohort_ids) and not gate.blocked
    files: list[str] = []
    if everything:
        groups = stale.shards(rt)
        files += [str(rt.paths.stale_generations_csv), *(str(rt.paths.stale_shard(s)) for s in groups)]
    else:
        seen: set[str] = set(gate.blocked)
        members = []
        for cohort_id in cohort_ids:
            for member in rt.membership.members(cohort_id):
                if member.gen_id not in seen:
                    seen.add(member.gen_id)
                    members.append(member)
        groups = stale.group(members)
    exists = os.path.exists
    for name, members in groups.items():
        if everything and not exists(rt.paths.stale_shard(name)):
            continue  # the shard is made in this run, after its documents
        missing = [file for m in members if (file := first_missing(rt, m)) is not None]
        if missing:  # named by this run too: a file of an earlier run never stands in for this one's
            key = hashlib.sha256("\n".join([rt.run.batches.run_id, *missing]).encode("utf-8")).hexdigest()[:12]
            with _DUE_LOCK:
                _DUE[(name, key)] = missing
            files.append(str(rt.paths.documents_due(name, key)))
    return files


def first_missing(rt: Runtime, member: Member) -> str | None:
    """A member's first missing gens file, None when all four are there. One is enough to ask
    for: the document's one job makes all four, so a `documents_due` file lists one file per
    document (where every file is missing, a fourth of the inputs Snakemake would handle)."""
    for file in gen_files(rt, member):
        if not os.path.exists(file):
            return file
    return None


def gen_files(rt: Runtime, member: Member) -> list[str]:
    """A member's four gens files, as the paths Snakemake knows them by."""
    return [rt.paths.gen_file_text(member.stage, member.gen_id, name) for name in GEN_FILES]


def write_documents_due(path: str, files: list[str], log_path: str | None = None) -> None:
    """The body of rule `documents_due`: the files it waited for, now made, one per line."""
    store.write_text_atomic(Path(path), "".join(f"{file}\n" for file in files))
    store.write_job_log(log_path, f"{len(files)} missing file(s) made: {path}")


def clear_documents_due(paths: Paths) -> None:
    """At the end of a real run (`onsuccess`, `onerror`): remove the `documents_due` files (each
    named by its run, so one left by a killed run only takes space; their logs stay)."""
    folder = paths.documents_due_dir
    if folder.is_dir():
        for path in folder.iterdir():
            path.unlink(missing_ok=True)


def documents_due_inputs(rt: Runtime, group: str, key: str) -> list[str]:
    """The missing gens files a `documents_due` file waits for: those `document_targets` named
    it for in this run."""
    with _DUE_LOCK:
        found = _DUE.get((group, key))
    if found is None:
        raise ValueError(f"{rt.paths.documents_due(group, key)}: no group of documents with missing files has this "
                         "name in this run; it is made only when the default target asks for it: run `snakemake` "
                         "without a target (or `snakemake all`)")
    return found


def outdated_membership(rt: Runtime, cohort_id: str) -> list[str]:
    """Targeted while the membership is not current: the file naming today's content of the
    checkpoint's inputs, and the checkpoint's outputs. That file is missing (a new content),
    and being a target it is made; Snakemake then reruns the checkpoint that reads it, whatever
    the other files' times say (a missing file that only feeds an up-to-date job is not made)."""
    paths = rt.paths
    today = checkpoint_inputs.fingerprint(paths, cohort_id)
    return [str(paths.cohort_fingerprint(cohort_id, today)), str(paths.membership_csv(cohort_id)),
            str(paths.manifest_json(cohort_id)), str(paths.checkpoint_record_json(cohort_id))]


def document_inputs(rt: Runtime, stage: str, gen_id: str) -> dict[str, object]:
    """A document job's inputs: its parent's parsed text (none for the root stage) and, while
    its raw.txt is missing, the record of the batch that makes its call (a cluster batch, or a
    provider batch round). Its template and concept texts are no inputs: no rule makes them,
    the checkpoint has checked them, and an edit must never remake a paid document (the stale
    report lists it); as inputs they would only cost each job their file checks."""
    parent = documents.parent_file(rt, rt.membership.lineage(gen_id))
    inputs: dict[str, object] = {"parent": parent} if parent is not None else {}
    batch_id = batches.batch_of(rt, stage, gen_id)
    if batch_id:
        inputs["replies"] = str(rt.paths.reply_batch_path(stage, batch_id))
    batch_round = batch_gate.round_input(rt, stage, gen_id)
    if batch_round:
        inputs["provider_batch"] = batch_round
    return inputs


def reply_batch_inputs(rt: Runtime, stage: str, batch_id: str) -> dict[str, list[str]]:
    """What a cluster batch waits for: the parents of its pending documents (as for one)."""
    parents = {str(files.parent) for gen_id in batches.pending_in_batch(rt, stage, batch_id)
               if (files := documents.prompt_files(rt, rt.membership.member(gen_id))).parent is not None}
    return {"parents": sorted(parents)} if parents else {}


def batch_round_inputs(rt: Runtime, stage: str, run_id: str, round_id: str) -> dict[str, list[str]]:
    """What a batch round's prompts are rendered from: the prompt inputs of its documents."""
    merged: dict[str, set[str]] = {}
    for member in batch_gate.round_members(rt, stage, run_id, round_id):
        for name, value in documents.prompt_files(rt, member).as_inputs().items():
            merged.setdefault(name, set()).update(value if isinstance(value, list) else [value])
    return {name: sorted(values) for name, values in merged.items()}


def stale_shard_inputs(rt: Runtime, shard: str) -> list[str]:
    """Every file the verdicts of a stale-report shard's documents (`stale.shards`) depend on:
    each document's metadata.json, raw.txt and parsed.txt (a file that is no longer what was
    paid for is reported), its parsed parent and concept texts, every template and the
    memberships; and its prompt.txt (never compared), so that a shard that runs asks for every
    gens file of its documents (`document_targets`). Any of them changing rebuilds the shard,
    then the stale report, the reports and the site. None is `ancient`: an edit must rebuild
    the verdicts (a shard makes no call).
    A shard lists about sqrt(N) of the N documents, so no job's inputs times its dependencies
    (Snakemake's cost of preparing and finishing a job) grows as N^2."""
    files: set[str] = {str(p) for p in rt.paths.template_files()}
    files.update(str(rt.paths.membership_csv(c)) for c in rt.cohort_ids)
    # Besides the parent, what `prompt_files` finds (the concept files) and checks (the template
    # and concept paths) depends on the stage and template, and for the root stage the combo:
    # asked once per such key, not once per document.
    concepts: dict[tuple[str, str, str], list[str]] = {}
    for member in stale.shard_members(rt, shard):
        files.update(gen_files(rt, member))
        key = (member.stage, member.template_id, member.combo_id if stages.get(member.stage).is_root else "")
        if key not in concepts:
            concepts[key] = documents.prompt_files(rt, member).as_inputs().get("concepts", [])
        files.update(concepts[key])
        parent = documents.parent_file(rt, member)
        if parent is not None:
            files.add(parent)
    return sorted(files)


def stale_report_inputs(rt: Runtime) -> dict[str, list[str]]:
    """The stale report's inputs: the memberships (its row order) and the file of each of its
    shards (`stale_shard_inputs`), not the documents: each shard is rebuilt when a file of its
    documents changes, and the report after it."""
    return {"membership": [str(rt.paths.membership_csv(c)) for c in rt.cohort_ids],
            "shards": [str(rt.paths.stale_shard(shard)) for shard in stale.shards(rt)]}


def cohort_report_inputs(rt: Runtime, cohort_id: str) -> dict[str, object]:
    """What a cohort's reports are built from: its membership, the scored stage's template
    table (the scales), the stale report (which runs after every document of the active cohorts
    and is rebuilt when any of their files changes: the scores and texts the reports read, and
    the flags of a changed or stale document, `daydream.integrity`), the concept names, the
    model table and the human ratings."""
    scored = stages.SCORED.name
    return {"membership": str(rt.paths.membership_csv(cohort_id)),
            "templates": str(rt.paths.templates_csv(scored)),
            "stale": str(rt.paths.stale_generations_csv),
            # the `concepts` column: the combo register and the concept names
            "concepts": [str(rt.paths.combo_mappings_csv), str(rt.paths.concepts_metadata_csv)],
            **judge_report_inputs(rt)}


def judge_report_inputs(rt: Runtime) -> dict[str, object]:
    """What the judge reports read besides the scores and the essays' texts (those come after
    the stale report): the model table (providers) and, when it exists, the human ratings."""
    inputs = {"models": str(rt.paths.models_csv)}
    if rt.paths.human_scores_csv.exists():
        inputs["human_scores"] = str(rt.paths.human_scores_csv)
    return inputs


def site_outputs(rt: Runtime, cohort_id: str) -> list[str]:
    """The cohort's results site: its folder and its one-file bundle (`daydream.site`)."""
    return [str(rt.paths.cohort_site(cohort_id)), str(rt.paths.cohort_site_bundle(cohort_id))]


def site_inputs(rt: Runtime, cohort_id: str) -> dict[str, object]:
    """What the results site is built from: the membership, every cohort report it shows, the
    stale report (rebuilt when any document is made or changed, so a page shows it) and the
    concept names."""
    return {"membership": str(rt.paths.membership_csv(cohort_id)),
            "stale": str(rt.paths.stale_generations_csv),
            "reports": [str(rt.paths.cohort_report(cohort_id, r.name)) for r in reports.cohort_reports()],
            "concepts": [str(rt.paths.combo_mappings_csv), str(rt.paths.concepts_metadata_csv)]}


def cross_experiment_inputs(rt: Runtime) -> list[str]:
    """The cross-experiment tables run after the aggregated scores of the active cohorts that
    have a membership in this data root. They read the whole gens store, so they need no
    cohort: an active cohort never built here (e.g. the default `pilot` with another data
    root) is not made for them, nor checked against this root's 1_raw."""
    return [str(rt.paths.cohort_report(c, reports.AGGREGATED)) for c in rt.cohort_ids
            if rt.paths.membership_csv(c).exists()]
