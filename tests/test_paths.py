"""Paths: the checks every document job makes on the files its prompt reads."""

import pytest

from daydream.paths import Paths


@pytest.fixture
def tree(tmp_path):
    """A data root whose 1_raw/ holds a plain template, symlinks out of it and one within it."""
    raw = tmp_path / "data" / "1_raw" / "templates"
    (raw / "draft").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("secret")
    (raw / "draft" / "a.txt").write_text("a")
    (raw / "draft" / "out.txt").symlink_to(tmp_path / "outside" / "secret.txt")
    (raw / "outdir").symlink_to(tmp_path / "outside")
    (raw / "within.txt").symlink_to(raw / "draft" / "a.txt")
    return tmp_path


@pytest.mark.parametrize(("relative", "inside"), [
    ("1_raw/templates/draft/a.txt", True),
    ("1_raw/templates/draft/missing.txt", True),
    ("1_raw/templates/within.txt", True),
    ("1_raw/templates/draft/out.txt", False),
    ("1_raw/templates/outdir/secret.txt", False),
    ("1_raw/templates/outdir/../draft/a.txt", False),  # `..` after a symlink leaves 1_raw/
    ("1_raw/../outside/secret.txt", False),
])
def test_a_file_is_inside_1_raw_only_when_its_real_path_is(tree, relative, inside):
    path = tree / "data" / relative
    assert Paths(tree / "data").inside_raw(path) is inside
    assert path.resolve().is_relative_to((tree / "data" / "1_raw").resolve()) is inside


def test_a_1_raw_that_is_itself_a_symlink_holds_its_files(tmp_path):
    (tmp_path / "kept" / "templates").mkdir(parents=True)
    (tmp_path / "kept" / "templates" / "x.txt").write_text("x")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "1_raw").symlink_to(tmp_path / "kept")
    paths = Paths(tmp_path / "data")
    assert paths.inside_raw(tmp_path / "data" / "1_raw" / "templates" / "x.txt")
    assert not paths.inside_raw(tmp_path / "kept" / ".." / "data" / "x.txt")


@pytest.mark.parametrize("data_root", ["data", "./data", "/tmp/x/data/", "../store"])
def test_a_gen_file_as_text_is_the_path_gen_dir_makes(data_root):
    paths = Paths.from_str(data_root)
    for stage, gen_id in (("draft", "d_1"), ("essay", "e_2x3"), ("evaluation", "v_4")):
        for name in ("prompt.txt", "raw.txt", "parsed.txt", "metadata.json"):
            assert paths.gen_file_text(stage, gen_id, name) == str(paths.gen_dir(stage, gen_id) / name)
