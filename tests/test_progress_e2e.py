"""A readable live run: the whole output of a 132-document offline run fits on a few screens and
shows progress lines and a summary, not a block per job nor the `rule all` list of gens files.

132 documents are enough: Snakemake's per-job output is several lines per job (a block, a
`Finished jobid` line, a progress line), so a run that printed it would fill far more than the
150 lines allowed; a bigger run would only take longer (bench/ measures the big ones)."""

import itertools
import re

import pytest
import yaml

from daydream.paths import Paths
from tests.conftest import run_workflow, write_cohort

pytestmark = pytest.mark.e2e

CONCEPTS = ["default-mode-network", "generator-verifier-gap", "adjacent-possible", "incubation-effect",
            "analogical-transfer", "exaptation", "bisociation", "simulated-annealing", "weak-ties",
            "desirable-difficulty", "fitness-landscape", "red-teaming"]
SCREENS = 3 * 50  # lines of a few terminal screens
PROGRESS_LINE = re.compile(r"^daydream \d+:\d\d:\d\d \| draft [\d,]+/12\b.* \| calls [\d,]+ \(.*/s, \d+ in flight\) "
                           r"\| tokens [\d,]+ in \+ [\d,]+ out \| spent \$0\.0000( \| ETA \d+:\d\d:\d\d)?$")


def test_a_132_document_offline_run_fits_on_a_few_screens_with_progress_lines_and_a_summary(
        tmp_path, data_root, cohorts_dir):
    write_cohort(cohorts_dir, "wide", {
        "concepts": {"level": "paragraph", "k": 2,
                     "combos": [list(pair) for pair in itertools.combinations(CONCEPTS, 2)][:12]},
        "draft": {"templates": ["idea-sketch"], "models": ["offline_a"]},
        "essay": {"templates": ["essay-from-draft", "copy-draft"], "models": ["draft"]},
        "evaluation": {"templates": ["novelty-judge", "rigor-judge"], "models": ["offline_a", "offline_b"]},
    })  # 12 drafts, 24 essays (12 copies), 96 evaluations: 132 documents, 120 calls
    settings = tmp_path / "progress.yaml"
    settings.write_text(yaml.safe_dump({"progress_interval_s": 0.5}))  # a run of a few seconds: several lines

    done = run_workflow(data_root, cohorts_dir, ["wide"], "--cores", "4", "--configfile", str(settings))

    output = done.stdout + done.stderr
    lines = output.splitlines()
    print(output)  # the captured output, for the record (pytest -s shows it)
    assert len(lines) <= SCREENS and len(lines) < 132, f"{len(lines)} lines: fewer than one per document"
    progress = [line for line in lines if PROGRESS_LINE.match(line)]
    assert len(progress) >= 2, output
    assert "daydream: run finished after " in output
    assert "  documents: 132 made (draft 12, essay 24, evaluation 96), 0 failed" in output
    assert "  calls: 120 made, " in output and "no call for 12 copies, 0 saved and 0 restored replies" in output
    assert re.search(r"  tokens [\d,]+ in \+ [\d,]+ out; cost \$0\.0000", output)
    # no per-job output: no job blocks, no `rule all` list of gens files, no per-job progress
    for noise in ("rule gen_document", "rule all", "Finished jobid", "steps (", "Select jobs", "Execute "):
        assert noise not in output, noise
    assert output.count(str(Paths(data_root).gens_root)) == 0
    assert len(list(Paths(data_root).gens_root.glob("*/*/parsed.txt"))) == 132
