"""The workflow's files as text: what Snakemake would accept silently but get wrong."""

import re

from tests.conftest import REPO

HOOKS = ("onstart", "onsuccess", "onerror")


def workflow_text() -> str:
    return "\n".join(p.read_text() for p in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))])


def test_each_hook_is_defined_once_since_snakemake_keeps_only_the_last():
    text = workflow_text()
    assert {hook: len(re.findall(rf"^{hook}:", text, re.M)) for hook in HOOKS} == dict.fromkeys(HOOKS, 1)


def test_no_rule_file_spells_a_data_path_or_a_stage_prefix():
    for path in sorted((REPO / "rules").glob("*.smk")):
        text = path.read_text()
        assert "data/" not in text, path
        assert not re.search(r"['\"][dev]_['\"]|\[dev\]_", text), path
