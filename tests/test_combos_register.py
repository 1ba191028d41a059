"""Rebuilding combo_mappings.csv from concept lists: scripts/register_combos.py and
`combos.register_named` (the original repository git-ignores the register)."""

from __future__ import annotations

import subprocess
import sys

from daydream import combos, ids
from daydream.paths import Paths
from tests.conftest import REPO

CONCEPTS_A, CONCEPTS_B = ["weak-ties", "exaptation"], ["bisociation", "default-mode-network"]
ID_A, ID_B = ids.combo_id(CONCEPTS_A, "paragraph", 2), ids.combo_id(CONCEPTS_B, "paragraph", 2)


def spec(tmp_path, *combo_ids, name="spec"):
    path = tmp_path / name / "config.yaml"
    path.parent.mkdir()
    path.write_text(f"axes:\n  combo_id: [{', '.join(combo_ids)}]\n  draft_template: [t]\n  draft_llm: [m]\n"
                    "  essay_template: [e]\n  essay_llm: [m]\n  evaluation_template: [v]\n  evaluation_llm: [j]\n"
                    "output:\n  field_order: [combo_id]\n", encoding="utf-8")
    return path


def register(tmp_path, spec_path, *args):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "register_combos.py"), str(spec_path),
                           "--data-root", str(tmp_path / "data"), "--level", "paragraph", *args],
                          capture_output=True, text=True, timeout=120)


def test_the_spec_combos_named_by_their_concepts_are_registered_with_the_same_ids(tmp_path):
    done = register(tmp_path, spec(tmp_path, ID_A, ID_B), "--concepts", ",".join(CONCEPTS_A),
                    "--concepts", " ".join(reversed(CONCEPTS_B)))
    assert done.returncode == 0, done.stdout + done.stderr
    registered = combos.registered_combos(Paths.from_str(tmp_path / "data"))
    assert registered[ID_A] == (tuple(CONCEPTS_A), "paragraph", 2) and set(registered[ID_B][0]) == set(CONCEPTS_B)
    again = register(tmp_path, spec(tmp_path, ID_A, name="again"), "--concepts", ",".join(CONCEPTS_A))
    assert again.returncode == 0 and "0 new, 1 already registered" in again.stdout


def test_a_list_the_spec_does_not_name_is_refused_and_unknown_ids_are_listed(tmp_path):
    done = register(tmp_path, spec(tmp_path, ID_A, ID_B), "--concepts", "weak-ties,exaptaton")
    assert done.returncode == 1
    assert "refused" in done.stdout and "check the concept ids, --level and --k" in done.stdout
    assert f"2 of the spec's 2 combo ids still unknown: {ID_A} {ID_B}" in done.stdout
    assert not Paths.from_str(tmp_path / "data").combo_mappings_csv.exists()


def test_register_named_dry_run_writes_nothing(tmp_path):
    paths = Paths.from_str(tmp_path)
    outcome = combos.register_named(paths, [ID_A], [CONCEPTS_A], "paragraph", write=False)
    assert [c.combo_id for c in outcome.added] == [ID_A] and not outcome.still_unknown
    assert not paths.combo_mappings_csv.exists()
