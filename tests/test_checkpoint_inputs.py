"""A membership is current when it was built from exactly today's content of the checkpoint's
inputs; modification times never decide."""

import os
import shutil

from daydream import checkpoint_inputs, targets
from daydream.paths import Paths
from daydream.runtime import Runtime
from tests.conftest import TINY_COHORT, write_cohort


def built(data_root, cohorts_dir, cohort_id="tiny"):
    """A membership, manifest and record as the checkpoint leaves them (no rows needed here)."""
    paths = Paths(data_root, cohorts_dir)
    for path in (paths.membership_csv(cohort_id), paths.manifest_json(cohort_id)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("made\n")
    hashes = checkpoint_inputs.file_hashes(paths, cohort_id)
    fingerprint = checkpoint_inputs.fingerprint_of(paths, hashes)
    checkpoint_inputs.write_fingerprint(paths, cohort_id, fingerprint, paths.cohort_fingerprint(cohort_id, fingerprint))
    checkpoint_inputs.write_record(paths, cohort_id, hashes)
    return paths


def later(path, seconds=100):
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + seconds * 10**9))


def test_the_inputs_are_the_cohort_file_tables_templates_and_concept_texts(data_root, cohorts_dir):
    files = checkpoint_inputs.input_files(Paths(data_root, cohorts_dir), "tiny")
    assert files["cohort_file"] == [cohorts_dir / "tiny.yaml"]
    assert {p.name for p in files["tables"]} == {"concepts_metadata.csv", "llm_models.csv", "draft_templates.csv",
                                                 "essay_templates.csv", "evaluation_templates.csv"}
    assert data_root / "1_raw" / "templates" / "essay" / "essay-from-draft.txt" in files["templates"]
    assert data_root / "1_raw" / "concepts" / "descriptions-paragraph" / "weak-ties.txt" in files["descriptions"]


def test_a_touched_input_with_the_same_content_leaves_the_membership_current(data_root, cohorts_dir):
    paths = built(data_root, cohorts_dir)
    for path in [cohorts_dir / "tiny.yaml", paths.models_csv, *paths.template_files(), *paths.description_files()]:
        later(path)
    assert checkpoint_inputs.is_current(paths, "tiny")
    assert checkpoint_inputs.changed_files(paths, "tiny") == []


def test_an_edit_makes_it_outdated_even_with_an_older_time_and_reverting_makes_it_current(data_root, cohorts_dir):
    paths = built(data_root, cohorts_dir)
    template = data_root / "1_raw" / "templates" / "draft" / "idea-sketch.txt"
    original, info = template.read_text(), template.stat()
    template.write_text(original + "\nOne more instruction.\n")
    os.utime(template, ns=(info.st_atime_ns, info.st_mtime_ns - 10**12))  # as rsync -a or cp -p would
    assert not checkpoint_inputs.is_current(paths, "tiny")
    assert checkpoint_inputs.changed_files(paths, "tiny") == [str(template)]
    template.write_text(original)
    assert checkpoint_inputs.is_current(paths, "tiny")


def test_a_new_template_file_or_cohort_change_is_a_new_fingerprint(data_root, cohorts_dir):
    paths = built(data_root, cohorts_dir)
    before = checkpoint_inputs.fingerprint(paths, "tiny")
    (data_root / "1_raw" / "templates" / "essay" / "new.txt").write_text("{{ draft_block }}")
    assert checkpoint_inputs.fingerprint(paths, "tiny") != before
    write_cohort(cohorts_dir, "tiny", {**TINY_COHORT, "description": "another text"})
    assert not checkpoint_inputs.is_current(paths, "tiny")


def test_the_record_keeps_only_its_own_fingerprint_file_so_going_back_is_a_change(data_root, cohorts_dir):
    paths = built(data_root, cohorts_dir)
    first = checkpoint_inputs.fingerprint(paths, "tiny")
    write_cohort(cohorts_dir, "tiny", {**TINY_COHORT, "description": "edited"})
    built(data_root, cohorts_dir)
    second = checkpoint_inputs.fingerprint(paths, "tiny")
    assert [p.stem for p in paths.cohort_fingerprint("tiny", second).parent.glob("*.json")] == [second]
    write_cohort(cohorts_dir, "tiny", TINY_COHORT)
    assert checkpoint_inputs.fingerprint(paths, "tiny") == first and not paths.cohort_fingerprint("tiny", first).exists()


def test_no_record_or_no_membership_is_not_current(data_root, cohorts_dir):
    paths = built(data_root, cohorts_dir)
    paths.checkpoint_record_json("tiny").unlink()
    assert not checkpoint_inputs.is_current(paths, "tiny")
    built(data_root, cohorts_dir)
    paths.membership_csv("tiny").unlink()
    assert not checkpoint_inputs.is_current(paths, "tiny")


def test_a_data_root_copied_with_its_cohorts_folder_stays_current(tmp_path, data_root, cohorts_dir):
    paths = built(data_root, cohorts_dir)
    moved = Paths(shutil.copytree(data_root, tmp_path / "elsewhere" / "data"),
                  shutil.copytree(cohorts_dir, tmp_path / "elsewhere" / "cohorts"))
    assert checkpoint_inputs.fingerprint(moved, "tiny") == checkpoint_inputs.fingerprint(paths, "tiny")
    assert checkpoint_inputs.is_current(moved, "tiny")
    assert checkpoint_inputs.portable(moved, moved.models_csv) == "data_root/1_raw/llm_models.csv"
    assert checkpoint_inputs.portable(moved, moved.cohort_file("tiny")) == "cohorts_dir/tiny.yaml"
    template = moved.data_root / "1_raw" / "templates" / "draft" / "idea-sketch.txt"
    template.write_text(template.read_text() + "\nOne more instruction.\n")
    assert not checkpoint_inputs.is_current(moved, "tiny") and checkpoint_inputs.is_current(paths, "tiny")


def test_the_checkpoint_reads_ancient_inputs_except_those_changed_since_its_membership(data_root, cohorts_dir):
    # Ancient inputs alone rerun nothing when the membership is the only target (the fingerprint
    # file is then no target): a changed file is a plain input, so its newer time reruns it.
    paths = built(data_root, cohorts_dir)
    rt = Runtime({"data_root": str(data_root), "cohorts_dir": str(cohorts_dir), "cohorts": ["tiny"], "offline": True})
    current = targets.cohort_inputs(rt, "tiny")
    every = {p for kind in ("cohort_file", "tables", "templates", "descriptions") for p in current[kind]}
    assert current["changed"] == [] and current["cohort_file"] == [str(cohorts_dir / "tiny.yaml")]
    assert current["fingerprint"] == str(paths.cohort_fingerprint("tiny", checkpoint_inputs.fingerprint(paths, "tiny")))

    template = data_root / "1_raw" / "templates" / "draft" / "idea-sketch.txt"
    template.write_text(template.read_text() + "\nOne more instruction.\n")
    edited = targets.cohort_inputs(rt, "tiny")
    assert edited["changed"] == [str(template)] and str(template) not in edited["templates"]
    assert {p for kind in ("cohort_file", "tables", "templates", "descriptions") for p in edited[kind]} == \
        every - {str(template)}
    assert edited["fingerprint"] != current["fingerprint"]
    built(data_root, cohorts_dir)  # the checkpoint ran on today's content: all ancient again
    assert targets.cohort_inputs(rt, "tiny")["changed"] == []
