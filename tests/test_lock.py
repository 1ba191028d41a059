"""The lock (uv.lock + requirements.lock) agrees with pyproject.toml, and the venv with the lock.

All offline: the checks read the committed files; uv runs with --offline / --frozen.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daydream.lockfile import (
    REQUIREMENTS_LOCK,
    UV_LOCK,
    LockError,
    Pin,
    canonical,
    check,
    installed_problems,
    main,
    read_pins,
)

REPO = Path(__file__).resolve().parent.parent
UV = Path(sys.executable).parent / "uv"
UV_ENV = {**os.environ, "UV_OFFLINE": "1", "UV_PYTHON": sys.executable, "UV_PYTHON_DOWNLOADS": "never",
          "UV_NO_PROGRESS": "1"}
# What `make lock` passes to `uv export` (the Makefile's EXPORT).
EXPORT = re.search(r"^EXPORT := (.*)$", (REPO / "Makefile").read_text(), re.M)[1].split()


@pytest.fixture
def project(tmp_path):
    """A copy of the three files the check reads."""
    for name in ("pyproject.toml", UV_LOCK, REQUIREMENTS_LOCK):
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_the_committed_lock_agrees_with_pyproject():
    problems = check(REPO)
    assert not problems, "\n".join([*problems, "fix: run `make lock`, review the diff, commit the lock files"])


def test_a_tightened_specifier_is_reported(project):
    edit(project / "pyproject.toml", '"pytest>=8"', '"pytest>=8.1"')
    assert check(project) == [
        "pyproject.toml extra dev: `pytest>=8.1` is not what uv.lock was made from",
        "uv.lock extra dev: `pytest>=8` is no longer in pyproject.toml",
    ]


def test_a_new_dependency_is_reported(project):
    edit(project / "pyproject.toml", '"tenacity>=8.2",', '"tenacity>=8.2",\n    "humanize>=4",')
    assert check(project) == ["pyproject.toml dependencies: `humanize>=4` is not what uv.lock was made from"]


def test_a_dependency_moved_to_another_extra_is_reported(project):
    edit(project / "pyproject.toml", '    "psutil>=5.9",  # bench/bench_concurrency.py\n', "")
    edit(project / "pyproject.toml", '"snakemake-executor-plugin-slurm>=2.8,<3"',
         '"snakemake-executor-plugin-slurm>=2.8,<3", "psutil>=5.9"')
    assert check(project) == [
        "uv.lock extra dev: `psutil>=5.9` is no longer in pyproject.toml",
        "pyproject.toml extra slurm: `psutil>=5.9` is not what uv.lock was made from",
    ]


def test_extras_markers_and_groups_are_compared(project):
    edit(project / "pyproject.toml", '"uv>=0.11.1"', '"uv>=0.11.1", "tomli>=2; python_version < \'3.12\'"')
    edit(project / "pyproject.toml", '"jinja2>=3.1",', '"jinja2[i18n]>=3.1",')
    assert check(project) == [
        "pyproject.toml dependencies: `jinja2[i18n]>=3.1` is not what uv.lock was made from",
        "uv.lock dependencies: `jinja2>=3.1` is no longer in pyproject.toml",
        "pyproject.toml group tools: `tomli>=2 ; (marker)` is not what uv.lock was made from",
    ]


def test_a_tampered_hash_in_requirements_lock_is_reported(project):
    pins = read_pins(project / REQUIREMENTS_LOCK)
    jinja = next(p for p in pins if p.name == "jinja2")
    old = sorted(jinja.hashes)[0]
    edit(project / REQUIREMENTS_LOCK, old, old[:-4] + ("0000" if not old.endswith("0000") else "1111"))
    problems = check(project)
    assert len(problems) == 1 and problems[0].startswith(
        f"{REQUIREMENTS_LOCK}: the hashes of jinja2=={jinja.version} differ from uv.lock's"), problems


def test_a_pin_missing_from_requirements_lock_is_reported(project):
    text = (project / REQUIREMENTS_LOCK).read_text()
    six = re.search(r"^six==(\S+) \\\n(    .*\n)+", text, re.M)
    (project / REQUIREMENTS_LOCK).write_text(text.replace(six[0], ""))
    assert check(project) == [f"{REQUIREMENTS_LOCK}: lacks six=={six[1]}, which uv.lock has"]


def test_unreadable_lock_files_name_the_file_and_the_fix(project):
    (project / UV_LOCK).write_text("<<<<<<< HEAD\n")
    with pytest.raises(LockError, match=r"uv\.lock: not valid TOML .*git checkout --theirs uv\.lock.*make lock"):
        check(project)
    (project / REQUIREMENTS_LOCK).write_text("jinja2>=3.1\n")
    with pytest.raises(LockError, match=r"requirements\.lock: entry 'jinja2>=3.1' is not `name==version"):
        read_pins(project / REQUIREMENTS_LOCK)


def test_the_cli_exits_non_zero_with_the_fix(project, capsys):
    edit(project / "pyproject.toml", '"tenacity>=8.2",', '"tenacity>=8.2",\n    "humanize>=4",')
    assert main(["--root", str(project), "check"]) == 1
    err = capsys.readouterr().err
    assert "humanize>=4" in err and "fix: run `make lock`" in err


def test_select_prints_hash_pinned_entries(capsys):
    assert main(["--root", str(REPO), "select", "pip", "setuptools"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("==")[0] for line in out] == ["pip", "setuptools"]
    assert all("--hash=sha256:" in line for line in out)


def pin(name, version, marker=""):
    return Pin(name, version, marker, frozenset({"sha256:0"}), f"{name}=={version}")


def test_installed_check_follows_markers_and_reports_every_difference():
    pins = [pin("numpy", "2.4.6", "python_full_version < '3.12'"), pin("numpy", "2.5.5", "python_full_version >= '3.12'"),
            pin("colorama", "0.4.6", "sys_platform == 'nonesuch'"), pin("six", "1.17.0"), pin("jinja2", "3.1.6")]
    numpy = "2.4.6" if sys.version_info < (3, 12) else "2.5.5"
    assert installed_problems(pins, {"numpy": numpy, "six": "1.17.0", "jinja2": "3.1.6"}) == []
    assert installed_problems(pins, {"numpy": numpy, "six": "1.16.0", "requests": "2.0"}) == [
        f"jinja2==3.1.6 is in {REQUIREMENTS_LOCK} but not installed",
        f"requests==2.0 is installed but not in {REQUIREMENTS_LOCK}",
        f"six is 1.16.0, {REQUIREMENTS_LOCK} pins 1.17.0",
    ]


needs_uv = pytest.mark.skipif(not UV.exists(), reason=f"no uv beside {sys.executable} (make installs it from the lock)")


@needs_uv
def test_uv_agrees_that_the_lock_is_up_to_date():
    done = subprocess.run([str(UV), "lock", "--check", "--offline"], cwd=REPO, env=UV_ENV, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"uv.lock is out of date with pyproject.toml: run `make lock`\n{done.stderr}"


@needs_uv
def test_requirements_lock_is_the_export_of_uv_lock():
    done = subprocess.run([str(UV), "export", "--frozen", "--quiet", *EXPORT], cwd=REPO, env=UV_ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (REPO / REQUIREMENTS_LOCK).read_text(), \
        f"{REQUIREMENTS_LOCK} is not `uv export` of uv.lock: run `make lock`"


@pytest.mark.skipif(Path(sys.prefix).resolve() != (REPO / ".venv").resolve(),
                    reason="checks the project's .venv, which `make` builds from the lock")
def test_pip_freeze_of_the_venv_equals_the_lock():
    done = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable"],
                          capture_output=True, text=True, timeout=120, check=True)
    frozen = dict(line.split("==") for line in done.stdout.split())
    frozen = {canonical(name): version for name, version in frozen.items()}
    assert installed_problems(read_pins(REPO / REQUIREMENTS_LOCK), frozen) == []
