"""The lock: exact versions and hashes of everything `make` installs, and checks that it holds.

Two committed files make the lock (see the README, "Pinned installs"):

- ``uv.lock``: uv's universal lock, made by ``make lock`` from ``pyproject.toml``. It records the
  requirements it was made from and, for every package version, the hash of every file.
- ``requirements.lock``: the same pins exported for pip (``pip install --require-hashes``).

Checks (``python -m daydream.lockfile check`` / ``installed``), all offline:

- ``check``: the requirements recorded in ``uv.lock`` are those of ``pyproject.toml`` (the
  dependencies, each extra and each dependency group), and ``requirements.lock`` pins exactly the
  versions and hashes of ``uv.lock``.
- ``installed``: the running environment holds exactly the lock's packages for this platform and
  Python, at the locked versions (``pip freeze --all`` equals the lock, less the project itself).

``select NAME...`` prints the ``requirements.lock`` entries of the named packages; ``make`` uses it
to install the locked pip and setuptools first, so the project and the one sdist in the lock are
built with the locked setuptools instead of an unpinned one fetched for a build environment.

``check`` and ``select`` need only the standard library, plus ``packaging`` to compare
requirements; ``installed`` needs ``packaging`` to evaluate markers (it is in the lock).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

PROJECT = "daydream"
UV_LOCK = "uv.lock"
REQUIREMENTS_LOCK = "requirements.lock"
FIX = "run `make lock`, review `git diff uv.lock requirements.lock`, and commit both files"


class LockError(Exception):
    """A lock file that cannot be read; the message names the file and the fix."""


def canonical(name: str) -> str:
    """PEP 503 name: `PyYAML`, `pyyaml` and `py_yaml` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Pin:
    """One entry of requirements.lock: `name==version ; marker` with its hashes."""

    name: str
    version: str
    marker: str
    hashes: frozenset[str]
    text: str = field(compare=False)


def _load_toml(path: Path) -> dict:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise LockError(f"{path}: missing; {FIX}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise LockError(f"{path}: not valid TOML ({exc}). After a merge conflict, take either side "
                        f"(`git checkout --theirs {path.name}`), then {FIX}") from exc


def read_pins(path: Path) -> list[Pin]:
    """The entries of a hash-pinned requirements file as uv export writes it."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise LockError(f"{path}: missing; {FIX}") from exc
    logical, current = [], ""
    for raw in lines:
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        current += " " + stripped.removesuffix("\\")
        if not stripped.endswith("\\"):
            logical.append(current.strip())
            current = ""
    if current:
        logical.append(current.strip())
    pins = []
    for entry in logical:
        requirement, _, options = entry.partition(" --hash=")
        options = "--hash=" + options if options else ""
        spec, _, marker = requirement.partition(";")
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s=]+)", spec.strip())
        hashes = frozenset(re.findall(r"--hash=(\S+)", options))
        if not match or not hashes or re.sub(r"--hash=\S+", "", options).strip():
            raise LockError(f"{path}: entry {entry[:80]!r} is not `name==version [; marker] --hash=...`; {FIX}")
        pins.append(Pin(canonical(match[1]), match[2], marker.strip(), hashes, entry))
    return pins


def _locked_files(package: dict) -> frozenset[str]:
    files = [package["sdist"]] if "sdist" in package else []
    files += package.get("wheels", [])
    return frozenset(f["hash"] for f in files if "hash" in f)


def uv_lock_pins(lock: dict) -> dict[tuple[str, str], frozenset[str]]:
    """(name, version) -> hashes of every registry package in uv.lock (the project excluded)."""
    return {(canonical(p["name"]), p["version"]): _locked_files(p)
            for p in lock.get("package", []) if canonical(p["name"]) != PROJECT}


def _project_entry(lock: dict, lock_path: Path) -> dict:
    for package in lock.get("package", []):
        if canonical(package["name"]) == PROJECT:
            return package
    raise LockError(f"{lock_path}: has no entry for the project `{PROJECT}`; {FIX}")


def _normal(requirement: str, where: str) -> str:
    """A requirement as `name[extras]specifiers`, in one spelling (markers other than extras dropped)."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        parsed = Requirement(requirement)
    except InvalidRequirement as exc:
        raise LockError(f"{where}: invalid requirement {requirement!r} ({exc})") from exc
    extras = f"[{','.join(sorted(canonical(e) for e in parsed.extras))}]" if parsed.extras else ""
    marker = str(parsed.marker) if parsed.marker else ""
    # What remains of a marker besides `extra == ...` (uv may respell it, e.g. python_version as
    # python_full_version) is compared by `uv lock --check`, not here.
    return f"{canonical(parsed.name)}{extras}{parsed.specifier}" + (" ; (marker)" if marker else "")


def pyproject_requirements(pyproject: dict, where: str) -> dict[str, set[str]]:
    """Section ('dependencies', 'extra dev', 'group tools', ...) -> normalized requirements."""
    project = pyproject.get("project", {})
    sections = {"dependencies": {_normal(r, where) for r in project.get("dependencies", [])}}
    for extra, reqs in project.get("optional-dependencies", {}).items():
        sections[f"extra {canonical(extra)}"] = {_normal(r, where) for r in reqs}
    for group, reqs in pyproject.get("dependency-groups", {}).items():
        if any(not isinstance(r, str) for r in reqs):
            raise LockError(f"{where}: dependency group `{group}` uses include-group, which this check "
                            "does not read; list the requirements themselves")
        sections[f"group {canonical(group)}"] = {_normal(r, where) for r in reqs}
    return {name: reqs for name, reqs in sections.items() if reqs}


def _from_uv(item: dict, marker: str) -> str:
    extras = f"[{','.join(item['extras'])}]" if item.get("extras") else ""
    return f"{item['name']}{extras}{item.get('specifier', '')}" + (f" ; {marker}" if marker else "")


def locked_requirements(lock: dict, lock_path: Path) -> dict[str, set[str]]:
    """The same sections, as recorded in uv.lock when it was made."""
    metadata = _project_entry(lock, lock_path).get("metadata", {})
    where = str(lock_path)
    sections: dict[str, set[str]] = {}
    for item in metadata.get("requires-dist", []):
        marker = item.get("marker", "")
        extra = re.search(r"""extra == ['"]([^'"]+)['"]""", marker)
        rest = re.sub(r"""(\s+and\s+)?extra == ['"][^'"]+['"](\s+and\s+)?""", "", marker).strip()
        section = f"extra {canonical(extra[1])}" if extra else "dependencies"
        sections.setdefault(section, set()).add(_normal(_from_uv(item, rest), where))
    for group, items in metadata.get("requires-dev", {}).items():
        sections[f"group {canonical(group)}"] = {_normal(_from_uv(i, i.get("marker", "")), where) for i in items}
    return {name: reqs for name, reqs in sections.items() if reqs}


def check(root: Path) -> list[str]:
    """Every way pyproject.toml, uv.lock and requirements.lock disagree; empty when they agree."""
    pyproject_path, lock_path, pins_path = root / "pyproject.toml", root / UV_LOCK, root / REQUIREMENTS_LOCK
    pyproject, lock = _load_toml(pyproject_path), _load_toml(lock_path)
    problems = []

    wanted = pyproject_requirements(pyproject, str(pyproject_path))
    recorded = locked_requirements(lock, lock_path)
    for section in sorted(set(wanted) | set(recorded)):
        for req in sorted(wanted.get(section, set()) - recorded.get(section, set())):
            problems.append(f"pyproject.toml {section}: `{req}` is not what uv.lock was made from")
        for req in sorted(recorded.get(section, set()) - wanted.get(section, set())):
            problems.append(f"uv.lock {section}: `{req}` is no longer in pyproject.toml")
    python = pyproject.get("project", {}).get("requires-python", "")
    if python.replace(" ", "") != lock.get("requires-python", "").replace(" ", ""):
        problems.append(f"requires-python: pyproject.toml says {python!r}, uv.lock {lock.get('requires-python')!r}")

    locked = uv_lock_pins(lock)
    exported: dict[tuple[str, str], frozenset[str]] = {}
    for pin in read_pins(pins_path):
        exported[(pin.name, pin.version)] = exported.get((pin.name, pin.version), frozenset()) | pin.hashes
    for key in sorted(set(locked) - set(exported)):
        problems.append(f"{REQUIREMENTS_LOCK}: lacks {key[0]}=={key[1]}, which uv.lock has")
    for key in sorted(set(exported) - set(locked)):
        problems.append(f"{REQUIREMENTS_LOCK}: pins {key[0]}=={key[1]}, which uv.lock does not have")
    for key in sorted(set(locked) & set(exported)):
        if locked[key] != exported[key]:
            odd = sorted(exported[key] ^ locked[key])
            problems.append(f"{REQUIREMENTS_LOCK}: the hashes of {key[0]}=={key[1]} differ from uv.lock's "
                            f"({len(odd)} differ, e.g. {odd[0]})")
    return problems


def installed_problems(pins: list[Pin], distributions: dict[str, str]) -> list[str]:
    """Differences between the lock's pins for this environment and the installed distributions
    (canonical name -> version, the project itself left out)."""
    from packaging.markers import Marker
    from packaging.version import Version

    expected = {}
    for pin in pins:
        if not pin.marker or Marker(pin.marker).evaluate():
            expected[pin.name] = pin.version
    problems = []
    for name in sorted(set(expected) | set(distributions)):
        want, have = expected.get(name), distributions.get(name)
        if want is None:
            problems.append(f"{name}=={have} is installed but not in {REQUIREMENTS_LOCK}")
        elif have is None:
            problems.append(f"{name}=={want} is in {REQUIREMENTS_LOCK} but not installed")
        elif Version(want) != Version(have):
            problems.append(f"{name} is {have}, {REQUIREMENTS_LOCK} pins {want}")
    return problems


def installed_distributions() -> dict[str, str]:
    """What `pip freeze --all` lists for the running interpreter, less the project."""
    from importlib.metadata import distributions

    found = {canonical(d.metadata["Name"]): d.version for d in distributions() if d.metadata["Name"]}
    found.pop(PROJECT, None)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m daydream.lockfile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("."), help="the project folder (default: .)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="pyproject.toml, uv.lock and requirements.lock agree")
    commands.add_parser("installed", help="this environment holds exactly the locked packages")
    select = commands.add_parser("select", help="print the requirements.lock entries of these packages")
    select.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    try:
        if args.command == "select":
            wanted = {canonical(n) for n in args.names}
            chosen = [p for p in read_pins(args.root / REQUIREMENTS_LOCK) if p.name in wanted]
            missing = wanted - {p.name for p in chosen}
            if missing:
                raise LockError(f"{args.root / REQUIREMENTS_LOCK}: pins no {', '.join(sorted(missing))}; {FIX}")
            print("\n".join(p.text for p in chosen))
            return 0
        if args.command == "check":
            problems = check(args.root)
            fix = FIX
        else:
            problems = installed_problems(read_pins(args.root / REQUIREMENTS_LOCK), installed_distributions())
            fix = f"rebuild the environment from the lock: `rm -rf {Path(sys.prefix).name} && make`"
    except LockError as exc:
        print(f"lock: {exc}", file=sys.stderr)
        return 1
    if problems:
        where = "the lock files disagree with pyproject.toml or each other" if args.command == "check" \
            else f"{sys.prefix} is not what {REQUIREMENTS_LOCK} pins"
        print(f"lock: {where}:", *(f"  {p}" for p in problems), f"fix: {fix}", sep="\n", file=sys.stderr)
        return 1
    if args.command == "installed":
        print(f"lock: {sys.prefix} holds exactly the {len(installed_distributions())} packages "
              f"{REQUIREMENTS_LOCK} pins for this platform (plus the project itself)")
    else:
        print(f"lock: pyproject.toml, {UV_LOCK} and {REQUIREMENTS_LOCK} agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
