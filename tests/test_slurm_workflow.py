"""The workflow on a real single-node Slurm cluster through `--profile profiles/slurm`.

One cluster (tests/slurm_cluster.py) serves the module. A cohort of 21 documents runs on Slurm;
the offline model is deterministic, so every prompt, reply, parsed text and report score must equal
those of the same documents in the session's local run of the tiny cohort (conftest
`finished_tiny_run`, default profile, threads), which holds every document of both cohorts here
(ids depend on the content, not on the folder or the cohort). The Slurm jobs are counted through the cluster (squeue keeps
finished jobs for MinJobAge=600 s) and written to the test log with the sbatch submissions: one
job per batch of model calls (`gen_replies`), everything else runs in the main process.
A second cohort judges four essays again: its batch job is cancelled mid-run, which must leave
no gens file behind (only whole saved replies), and the rerun must pay only the missing calls.
"""

from __future__ import annotations

import collections
import csv
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from daydream.paths import GEN_FILES, Paths
from tests.conftest import PER_JOB_OUTPUT, REPO, SNAKEMAKE, checkpoint, copy_tree, planned_by_stage, write_cohort
from tests.slurm_cluster import SlurmCluster, slurm_available

# one cluster at a time: under pytest-xdist every Slurm test runs on the same worker (--dist loadgroup)
pytestmark = [pytest.mark.slurm, pytest.mark.xdist_group("slurm")]

PROFILE = REPO / "profiles" / "slurm"
STAGES = ("draft", "essay", "evaluation")
# What a cluster run needs from the workflow: the batch rules, and every other rule local (a rule
# that is not would send one Slurm job per document or per cohort).
BATCH_RULES = ("gen_replies",)
# 3 drafts, 6 essays (3 of them copies: no call), 12 evaluations: 18 calls.
SMALL = {
    "concepts": {"level": "paragraph", "k": 2, "ids": ["default-mode-network", "exaptation", "weak-ties"]},
    "draft": {"templates": ["idea-sketch"], "models": ["offline_a"], "replicates": 1},
    "essay": {"templates": ["essay-from-draft", "copy-draft"], "models": ["draft"], "replicates": 1},
    "evaluation": {"templates": ["novelty-judge"], "models": ["offline_a", "offline_b"], "replicates": 1},
}
# A new rubric for four of those essays: 4 new evaluations, everything else is shared.
REJUDGE = {
    "concepts": {"level": "paragraph", "k": 2,
                 "combos": [["default-mode-network", "exaptation"], ["default-mode-network", "weak-ties"]]},
    "draft": SMALL["draft"],
    "essay": SMALL["essay"],
    "evaluation": {"templates": ["rigor-judge"], "models": ["offline_a"], "replicates": 1},
}
# Test-speed overrides of the profile: the quickest status checks (the plugin checks a new job
# within 1 s, then 11, 21, 31 ... s later while no job finishes: it sees a batch done 12, 33 or
# 64 s after its submission) and a short wait for files on this local disk.
FAST = ("--slurm-init-seconds-before-status-checks", "1", "--latency-wait", "5")
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+)")
RUN_TIMEOUT = 900  # a safety net: on a machine loaded 10-fold one run took 206 s, under more load one passed 240 s


# -- helpers ----------------------------------------------------------------------------------
def say(request, line: str) -> None:
    """A line in the test log even when pytest captures output (CI shows what Slurm did)."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"[slurm] {line}", flush=True)


def workflow_rules() -> tuple[set[str], set[str]]:
    """(rules, localrules) declared in the Snakefile and rules/*.smk."""
    rules, local = set(), set()
    for path in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        text = path.read_text(encoding="utf-8")
        rules.update(re.findall(r"^(?:rule|checkpoint) (\w+):", text, re.M))
        for block in re.findall(r"^localrules:((?:\s+\w+,?)+)", text, re.M):
            local.update(re.findall(r"\w+", block))
    return rules, local


def new_root(base: Path) -> Path:
    """A data folder under `base` with the sample experiment, offline_a capped at one call at a
    time (so a batch makes its offline_a calls one after another and can be cancelled midway)."""
    root = base / "data"
    shutil.copytree(REPO / "data" / "1_raw", root / "1_raw")
    models = root / "1_raw" / "llm_models.csv"
    with models.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        if row["id"] == "offline_a":
            row["max_concurrency"] = "1"
    with models.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return root


def workflow_command(data_root: Path, cohorts_dir: Path, cohorts: list[str], *args: str) -> list[str]:
    return [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--profile", str(PROFILE), *FAST, *PER_JOB_OUTPUT, *args,
            "--config",
            f"data_root={data_root}", f"cohorts_dir={cohorts_dir}", "cohorts=" + json.dumps(cohorts),
            "offline=true"]


def run_on_slurm(cluster: SlurmCluster, data_root: Path, cohorts_dir: Path,
                 cohorts: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(workflow_command(data_root, cohorts_dir, cohorts), cwd=data_root.parent,
                          env=cluster.env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    if done.returncode != 0:
        raise AssertionError(f"snakemake on slurm failed ({done.returncode}):\n{done.stderr[-6000:]}")
    return done


def slurm_jobs(cluster: SlurmCluster) -> dict[int, dict[str, str]]:
    """Every job the cluster knows (finished ones included), with its state and request."""
    fields = ("state", "comment", "elapsed", "cpus", "memory", "time_limit")
    out = cluster.run("squeue", "-h", "-t", "all", "-o", "%i|%T|%k|%M|%C|%m|%l").stdout
    rows = (line.split("|") for line in out.splitlines() if line.strip())
    return {int(row[0]): dict(zip(fields, row[1:], strict=True)) for row in rows}


def new_jobs(cluster: SlurmCluster, before: set[int]) -> dict[int, dict[str, str]]:
    return {job_id: job for job_id, job in slurm_jobs(cluster).items() if job_id not in before}


def log_jobs(request, jobs: dict[int, dict[str, str]], documents: int, seconds: float) -> None:
    for job_id, job in sorted(jobs.items()):
        say(request, f"sbatch -> job {job_id} {job['comment']} {job['state']} elapsed={job['elapsed']} "
                     f"cpus={job['cpus']} mem={job['memory']} limit={job['time_limit']}")
    say(request, f"{len(jobs)} Slurm jobs for {documents} documents in {seconds:.0f} s")


def membership(data_root: Path, cohort_id: str, stage: str | None = None) -> pd.DataFrame:
    rows = pd.read_csv(Paths(data_root).membership_csv(cohort_id), dtype=str, keep_default_na=False)
    return rows if stage is None else rows[rows.stage == stage]


def gens_texts(data_root: Path, cohort_id: str, store: Path | None = None) -> dict[tuple[str, str, str], str]:
    """Prompt, raw and parsed text of every document of the cohort that has them, read from the
    gens store of `store` (default: the data root itself)."""
    paths, texts = Paths(store or data_root), {}
    for row in membership(data_root, cohort_id).itertuples():
        for name in ("prompt.txt", "raw.txt", "parsed.txt"):
            path = paths.gen_dir(row.stage, row.gen_id) / name
            if path.exists():
                texts[(row.stage, row.gen_id, name)] = path.read_text(encoding="utf-8")
    return texts


def report_scores(data_root: Path, cohort_id: str) -> dict[str, float]:
    table = pd.read_csv(Paths(data_root).cohort_report(cohort_id, "parsing/aggregated_scores.csv"))
    return dict(zip(table.gen_id, table.score, strict=True))


def reference_scores(reference: Path, gen_ids: set[str]) -> dict[str, float]:
    """The local run's report scores of these evaluations (each must be in it)."""
    scores = report_scores(reference, "tiny")
    assert gen_ids <= set(scores), f"evaluations missing from the local run: {sorted(gen_ids - set(scores))}"
    return {gen_id: scores[gen_id] for gen_id in gen_ids}


def plan_membership(data_root: Path, cohorts_dir: Path, cohort_id: str) -> pd.DataFrame:
    """The cohort's membership from its checkpoint run in-process (no document made)."""
    checkpoint(data_root, cohorts_dir, cohort_id)
    return membership(data_root, cohort_id)


def llm_docs(data_root: Path, cohort_id: str) -> set[str]:
    """Documents that need a model call (copy essays do not)."""
    rows = membership(data_root, cohort_id)
    return set(rows[rows.template_id != "copy-draft"].gen_id)


def calls_per_doc(data_root: Path) -> collections.Counter:
    path = Paths(data_root).llm_calls_jsonl
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return collections.Counter(json.loads(line)["gen_id"] for line in lines)


def batch_records(data_root: Path, stage: str) -> dict[str, str]:
    """{gen_id: called|reused} over the stage's finished batches."""
    outcome = {}
    for record in sorted((Paths(data_root).reporting_dir / "reply_batches" / stage).glob("*.json")):
        outcome.update(json.loads(record.read_text(encoding="utf-8"))["documents"])
    return outcome


def saved_replies(paths: Paths, stage: str, gen_ids: set[str]) -> dict[str, str]:
    """{gen_id: reply text} of the replies saved under the documents' .replies/."""
    replies = {}
    for gen_id in gen_ids:
        for saved in (paths.gen_dir(stage, gen_id) / ".replies").glob("*.json"):
            replies[gen_id] = json.loads(saved.read_text(encoding="utf-8"))["text"]
    return replies


def cancel_when_replies_saved(cluster: SlurmCluster, paths: Paths, gen_ids: set[str],
                              timeout: float = 120) -> int:
    """scancel the running evaluation batch once one of `gen_ids` has a saved reply; its job id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [job_id for job_id, job in slurm_jobs(cluster).items()
                   if job["state"] == "RUNNING" and job["comment"].startswith("rule_gen_replies_wildcards_evaluation")]
        if running and saved_replies(paths, "evaluation", gen_ids):
            cluster.run("scancel", str(running[0]))
            cluster.wait_for_job(running[0], timeout=60)
            return running[0]
        time.sleep(0.3)
    raise AssertionError(f"no running evaluation batch with a saved reply after {timeout:.0f} s")


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cohorts")
    write_cohort(folder, "small", SMALL)
    write_cohort(folder, "rejudge", REJUDGE)
    return folder


@pytest.fixture(scope="module")
def reference(finished_tiny_run) -> Path:
    """The data root of the local run (default profile, threads) every Slurm result must equal:
    the session's tiny cohort, a superset of `small` and `rejudge` (read only)."""
    return finished_tiny_run / "data"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    available, reason = slurm_available()
    if not available:
        pytest.skip(reason)
    rules, local = workflow_rules()
    no_batches, not_local = set(BATCH_RULES) - rules, rules - local - set(BATCH_RULES) - {"all"}
    if no_batches or not_local:
        pytest.fail(f"a cluster run needs the batch rules {sorted(no_batches)} and `localrules:` for "
                    f"{sorted(not_local)} (README.md, 'Running on a cluster')")
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as running:
        yield running


@pytest.fixture(scope="module")
def slurm_run(request, tmp_path_factory, cluster, cohorts, reference):
    """The `small` cohort on Slurm: (data root, snakemake output, the Slurm jobs it used)."""
    root = new_root(tmp_path_factory.mktemp("on_slurm"))
    before, started = set(slurm_jobs(cluster)), time.monotonic()
    done = run_on_slurm(cluster, root, cohorts, ["small"])
    jobs = new_jobs(cluster, before)
    log_jobs(request, jobs, len(membership(root, "small")), time.monotonic() - started)
    return root, done.stderr + done.stdout, jobs


# -- tests ------------------------------------------------------------------------------------
def test_dry_run_prints_the_plan_without_a_cluster(tmp_path, cohorts):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    root = new_root(tmp_path)
    plan_membership(root, cohorts, "small")  # the checkpoint only
    env = {name: value for name, value in os.environ.items() if not name.startswith("SLURM_")}
    done = subprocess.run(workflow_command(root, cohorts, ["small"], "-n"), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    planned = planned_by_stage(output)
    expected = {("gen_replies", stage): 1 for stage in STAGES}
    expected.update({("gen_document", "draft"): 3, ("gen_document", "essay"): 6, ("gen_document", "evaluation"): 12})
    assert {key: planned[key] for key in expected} == expected, output[-3000:]
    assert not (tmp_path / ".snakemake" / "slurm_logs").exists()


def test_slurm_run_equals_the_local_run_in_far_fewer_jobs_than_documents(slurm_run, reference):
    root, output, jobs = slurm_run
    documents = len(membership(root, "small"))
    assert sorted(int(job_id) for job_id in SUBMITTED.findall(output)) == sorted(jobs), "one sbatch per job"
    assert all(job["state"] == "COMPLETED" for job in jobs.values()), jobs
    assert {job["comment"].split("_wildcards_")[0] for job in jobs.values()} == {f"rule_{r}" for r in BATCH_RULES}
    assert len(jobs) <= documents // 4, f"{len(jobs)} Slurm jobs for {documents} documents"
    for rule in ("localcheckpoint cohort_membership", "localrule gen_document"):
        assert rule in output

    expected = gens_texts(root, "small", store=reference)
    assert len(expected) == 3 * documents
    assert gens_texts(root, "small") == expected
    for row in membership(root, "small").itertuples():
        assert json.loads(Paths(root).metadata_path(row.stage, row.gen_id).read_text())["gen_id"] == row.gen_id
    scores = report_scores(root, "small")
    assert set(scores) == set(membership(root, "small", "evaluation").gen_id)
    assert scores == reference_scores(reference, set(scores))
    calls = calls_per_doc(root)
    assert set(calls) == llm_docs(root, "small") and max(calls.values()) == 1
    made_in_batches = {g: r for stage in STAGES for g, r in batch_records(root, stage).items()}
    assert made_in_batches == dict.fromkeys(llm_docs(root, "small"), "called")


def test_a_cancelled_batch_leaves_no_gens_file_and_the_rerun_pays_only_the_missing_calls(
        request, tmp_path, slurm_run, cluster, cohorts, reference):
    # its own copy of the Slurm run (times kept): the module's run stays as the other test reads it
    root = copy_tree(slurm_run[0], tmp_path / "on_slurm" / "data")
    paths = Paths(root)
    # ids do not depend on the root: the new evaluations, planned in a scratch copy of the experiment
    new_docs = set(plan_membership(new_root(tmp_path), cohorts, "rejudge").query("stage == 'evaluation'").gen_id)
    assert len(new_docs) == 4 and not new_docs & set(membership(root, "small").gen_id)
    calls_before = calls_per_doc(root)

    env = {**cluster.env, "DAYDREAM_OFFLINE_LATENCY_S": "4"}
    before, started = set(slurm_jobs(cluster)), time.monotonic()
    run = subprocess.Popen(workflow_command(root, cohorts, ["small", "rejudge"]), cwd=root.parent, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        job_id = cancel_when_replies_saved(cluster, paths, new_docs)
        cancelled = time.monotonic() - started
        run.communicate(timeout=RUN_TIMEOUT)
    finally:
        if run.poll() is None:
            run.kill()
    exited = time.monotonic() - started
    saved = saved_replies(paths, "evaluation", new_docs)
    say(request, f"scancel {job_id} {cancelled:.0f} s after the start, once a reply was saved; snakemake "
                 f"exited {run.returncode} after {exited:.0f} s; {len(saved)} of {len(new_docs)} replies saved")
    assert run.returncode != 0 and set(new_jobs(cluster, before)) == {job_id}
    assert slurm_jobs(cluster)[job_id]["state"] == "CANCELLED"

    # The batch writes only whole saved replies (atomic); no gens file of a new document exists.
    assert not [p for g in new_docs for p in (paths.gen_dir("evaluation", g).glob("*")) if p.name in GEN_FILES]
    expected_raw = {g: Paths(reference).raw_path("evaluation", g).read_text(encoding="utf-8") for g in new_docs}
    assert saved and all(text == expected_raw[g] for g, text in saved.items())
    paid = calls_per_doc(root) - calls_before
    assert set(paid) == set(saved) and len(saved) < len(new_docs), "cancelled midway, each paid reply kept"

    before, started = set(slurm_jobs(cluster)), time.monotonic()
    done = run_on_slurm(cluster, root, cohorts, ["small", "rejudge"])
    jobs = new_jobs(cluster, before)
    log_jobs(request, jobs, len(new_docs), time.monotonic() - started)
    assert len(jobs) == 1 and "localrule gen_document" in done.stderr + done.stdout
    records = batch_records(root, "evaluation")
    assert {g: records[g] for g in new_docs} == {g: "reused" if g in saved else "called" for g in new_docs}

    assert gens_texts(root, "rejudge") == gens_texts(root, "rejudge", store=reference)
    assert gens_texts(root, "small") == gens_texts(root, "small", store=reference)
    assert len(gens_texts(root, "rejudge")) == 3 * len(membership(root, "rejudge"))
    rejudged = report_scores(root, "rejudge")
    assert set(rejudged) == new_docs and rejudged == reference_scores(reference, new_docs)
    calls = calls_per_doc(root)
    assert set(calls) == llm_docs(root, "small") | new_docs, "the rerun called exactly the missing documents"
    assert max(calls.values()) == 1, "no document was paid twice"
