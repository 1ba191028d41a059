"""Cohort designs (SPEC-DSL.md): the original pipeline's design language, compiled to rows.

A design spec has named `axes` of levels, `rules` that filter or couple them (`subsets`, `ties`,
`pairs`, `tuples`, applied in the order written, sections and entries alike) and an `output`
section (`field_order`, optional `seed`). `compile_design` turns it into design rows in the one
order SPEC-DSL.md fixes; `design_membership` turns those rows into membership rows carrying the
ids of `daydream.ids`, exactly as `daydream.cohorts` names the same documents.

Every problem found is collected and raised together as one `DesignError`, one line per problem,
each naming the spec file, the axis or rule (`axes.<name>`, `rules.<section>.<name>`,
`output.field_order`) and the fix.

Choices where SPEC-DSL.md leaves room (the tests pin each of them):
- Levels are strings. An unquoted number, boolean or date (YAML reads `7`, `1.5`, `yes`,
  `2024-01-01` as such) is an error that says to quote it; `null` is an error too (write `None`,
  which for `essay_llm` means the draft's model). Cells and lines read from files are stripped.
- A subset keeps the axis's listed levels in the axis's order; listed values that are not levels
  are ignored, as the original pipeline did. Only "nothing left" is an error.
- `balance` counts the values that occur in `allowed` (a level absent from `allowed` simply drops
  out of the design, as in the original pipeline).
- A tie's name is not a column unless it is one of the tied axes; pair and tuple names are never
  columns. `field_order` may name only the leaf axes: those under `axes` and those tuples define.
- Later rules may name a tied axis to mean its tie (a tuple may not: an axis declared under `axes`
  is never a tuple's axis, so a tuple names the tie by the tie's name); naming an axis already
  inside a pair or a tuple is an error that points at the pair or tuple's name.
- A tuple component that names an earlier tie, pair or tuple takes that rule's levels as its
  declared domain; so does a tuple-only axis an earlier subset or tie narrowed. Values outside it
  are errors.
- A tie may also be written `{axes: [...]}`; a one-axis tuple accepts bare strings as items.
- `seed` given to `compile_design` wins over `output.seed`.
- A key written twice in one YAML mapping (two `subsets:` sections, an axis declared twice) is an
  error, not the silent "last one wins" of plain YAML.
- Membership: `essay_llm` of `None` (any case), empty, or no essay_llm column at all means the
  draft's model; two columns that are aliases of one field are an error.

Checking design rows against the experiment tables is the cohort checkpoint's job, not this
module's (`daydream.cohorts.plan_design`): `membership_summary` lists the combo ids (they must be
registered in `data/combo_mappings.csv`), and per stage the templates, models and replicates to
check. Documents are built stage by stage from the stage registry (`LINEAGE`, `ids.document_id`);
`STAGE_FIELDS` holds the original's design column names of each stage.

`cohort_definition` finds a cohort's file (today's `config/cohorts/<id>.yaml` or the original's
`data/cohorts/<id>/spec/config.yaml`); `definition_files` lists it and the files its `@file:`
entries name, the checkpoint's inputs.
"""

from __future__ import annotations

import collections
import csv
import io
import itertools
import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from daydream import ids, stages
from daydream.columns import MEMBERSHIP_COLUMNS
from daydream.errors import UserError
from daydream.paths import Paths

TOP_LEVEL_KEYS = ("axes", "rules", "output")
RULE_SECTIONS = ("subsets", "ties", "pairs", "tuples")
OUTPUT_KEYS = ("field_order", "seed")
PAIR_KEYS = ("left", "right", "allowed", "balance")
TUPLE_KEYS = ("axes", "items")
BALANCE_SIDES = {"left": ("left",), "right": ("right",), "both": ("left", "right")}
FILE_PREFIX = "@file:"
_FAILED = object()  # what `_include` returns after it recorded a problem


class DesignError(ValueError, UserError):
    """A bad design spec or design; `problems` holds one line per problem (file, item, fix)."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        super().__init__("\n".join(f"- {p}" for p in self.problems))


@dataclass(frozen=True)
class Design:
    """Compiled design: `columns` in output order; `rows` map every column to a string level.

    `source` is the spec file (for messages); `seed` the shuffle seed used, or None.
    """

    columns: list[str]
    rows: list[dict[str, str]]
    source: str = ""
    seed: int | None = None


# ---------------------------------------------------------------------------------------------
# Loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key written twice in one mapping (YAML keeps the last)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: list[object] = []
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"{key!r} is written twice in one mapping; "
                                                    "keep one (merge the two)", key_node.start_mark)
        seen.append(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _read_yaml(text: str) -> object:
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: builds plain data only


def is_design_spec(spec: object) -> bool:
    """True when a parsed cohort file is a design spec: a mapping with a top-level `axes` key."""
    return isinstance(spec, dict) and "axes" in spec


def load_design_spec(path: Path | str) -> dict:
    """The design spec at `path` as a dict; DesignError (naming the file) if unreadable or not one."""
    path = Path(path)
    try:
        spec = _read_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DesignError([f"{path}: design spec not found; check the path"]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DesignError([f"{path}: cannot read the design spec: {error}"]) from error
    except yaml.YAMLError as error:
        raise DesignError([f"{path}: not valid YAML: {_one_line(error)}; fix the syntax"]) from error
    if not is_design_spec(spec):
        raise DesignError([f"{path}: not a design spec: it needs a top-level `axes` mapping (SPEC-DSL.md)"])
    return spec


def compile_design_file(path: Path | str, *, seed: int | None = None) -> Design:
    """Load the spec at `path` and compile it, `@file:` paths relative to the spec's folder."""
    path = Path(path)
    return compile_design(load_design_spec(path), path.parent, seed=seed, source=path)


# ---------------------------------------------------------------------------------------------
# Problems and values


@dataclass
class _Context:
    where: str
    base_dir: Path
    problems: list[str] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)  # names of rules already reported as bad

    def add(self, item: str, message: str) -> None:
        self.problems.append(f"{self.where}: {item}: {message}")


def _one_line(error: object) -> str:
    return " ".join(str(error).split())


def _shown(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_shown(part) for part in value) + "]"
    return repr(value)


def _listed(values: Iterable[object], limit: int = 8) -> str:
    values = list(values)
    text = ", ".join(_shown(v) for v in values[:limit])
    return text + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _dedupe(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def _not_a_level(raw: object) -> str:
    if raw is None:
        return "null is not a level; write a string (for essay_llm, None means the draft's model)"
    if isinstance(raw, dict):
        return f"a mapping ({raw!r}) is not a level; write a string"
    hint = " (YAML reads yes/no/on/off/true/false unquoted as booleans)" if isinstance(raw, bool) else ""
    return (f"{raw!r} was read as {type(raw).__name__}, not as a string; quote it in the spec "
            f"(levels are strings){hint}")


def _value(raw: object, item: str, ctx: _Context) -> str | tuple | None:
    """A level as the compiler holds it: a string, or a tuple for a coupled value; None if bad."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, (list, tuple)):
        parts = [_value(part, item, ctx) for part in raw]
        return None if any(part is None for part in parts) else tuple(parts)
    ctx.add(item, _not_a_level(raw))
    return None


def _values(raw: list, item: str, ctx: _Context) -> list | None:
    values = [_value(entry, f"{item}[{index}]", ctx) for index, entry in enumerate(raw)]
    return None if any(v is None for v in values) else values


def _is_name_list(raw: object) -> bool:
    return isinstance(raw, list) and bool(raw) and all(isinstance(n, str) and n for n in raw)


# ---------------------------------------------------------------------------------------------
# `@file:` includes


def _read_csv(text: str) -> list:
    """Strings (one column) or tuples in header order (several); header and full rows required."""
    reader = csv.reader(io.StringIO(text))
    rows = [(reader.line_num, [cell.strip() for cell in cells]) for cells in reader if any(c.strip() for c in cells)]
    if not rows:
        raise ValueError("the CSV is empty; write a header row naming the columns, then data rows")
    header, data = rows[0][1], rows[1:]
    if "" in header:
        raise ValueError(f"the header {header} has an empty column name; name every column")
    if not data:
        raise ValueError(f"no data row under the header {header}; add at least one row")
    for line, cells in data:
        if len(cells) != len(header):
            raise ValueError(f"line {line} has {len(cells)} cells, the header {len(header)}; give every column a value")
        if "" in cells:
            raise ValueError(f"line {line}, column {header[cells.index('')]!r} is empty; fill it in")
    return [cells[0] if len(header) == 1 else tuple(cells) for _, cells in data]


def _read_txt(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


_READERS: dict[str, Callable[[str], object]] = {
    ".csv": _read_csv, ".txt": _read_txt, ".yaml": _read_yaml, ".yml": _read_yaml, ".json": json.loads,
}


def _include(raw: object, item: str, ctx: _Context) -> object:
    """`raw` itself, or the parsed contents of the file `'@file:<path>'` names (`_FAILED` if bad)."""
    if not (isinstance(raw, str) and raw.startswith(FILE_PREFIX)):
        return raw
    path = ctx.base_dir / raw[len(FILE_PREFIX):].strip()
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        ctx.add(item, f"{raw}: unsupported file type {path.suffix!r}; use .csv, .txt, .yaml, .yml or .json")
        return _FAILED
    try:
        return reader(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        ctx.add(item, f"{raw}: file {path} not found; create it or fix the path (relative to the spec file)")
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        ctx.add(item, f"{raw} ({path}): {_one_line(error)}; fix the file's syntax")
    except (OSError, ValueError) as error:
        ctx.add(item, f"{raw} ({path}): {_one_line(error)}")
    return _FAILED


# ---------------------------------------------------------------------------------------------
# Parsing the spec into axes and rules


@dataclass
class _Rule:
    kind: str  # subset, tie, pair or tuple
    name: str  # the subset's axis, or the name the rule gives its new axis
    item: str  # where it is written, e.g. rules.pairs.judge
    names: list[str]  # the axes it names: [axis], tied axes, [left, right], tuple axes
    values: list = field(default_factory=list)  # subset levels, allowed pairs, tuple items
    balance: str | None = None


@dataclass
class _Parsed:
    axes: dict[str, list[str]]
    rules: list[_Rule]
    field_order: list[str]
    seed: int | None


def _parse_spec(spec: object, ctx: _Context) -> _Parsed:
    if not isinstance(spec, dict):
        raise DesignError([f"{ctx.where}: a design spec must be a mapping with axes, rules and output"])
    for key in spec:
        if key not in TOP_LEVEL_KEYS:
            hint = " (declare a replicate axis instead, e.g. evaluation_replicate: ['1', '2'])" if key == "replicates" else ""
            ctx.add(str(key), f"unknown section; a design spec has {', '.join(TOP_LEVEL_KEYS)}{hint}")
    axes = _parse_axes(spec.get("axes"), ctx)
    rules = _parse_rules(spec.get("rules"), ctx)
    _check_rule_names(axes, rules, ctx)
    field_order, seed = _parse_output(spec.get("output"), ctx)
    return _Parsed(axes, [r for r in rules if r.name not in ctx.broken or r.kind == "subset"], field_order, seed)


def _parse_axes(raw: object, ctx: _Context) -> dict[str, list[str]]:
    """The declared axes; `axes:` may be empty (`{}` or nothing) when tuple rules define every
    axis (a curated bundle), which `compile_design` checks once the rules are read."""
    if raw is None or raw == {}:
        return {}
    if not isinstance(raw, dict):
        ctx.add("axes", "must be a mapping of axis name to a list of levels or '@file:<path>' (empty only when "
                "tuple rules define every axis)")
        return {}
    axes = {}
    for name, levels in raw.items():
        if not isinstance(name, str) or not name:
            ctx.add(f"axes.{name}", "an axis name must be a non-empty string; quote it")
            continue
        axes[name] = _axis_levels(name, levels, ctx)
    return axes


def _axis_levels(name: str, raw: object, ctx: _Context) -> list[str]:
    item = f"axes.{name}"
    loaded = _include(raw, item, ctx)
    if loaded is _FAILED:
        return []
    if not isinstance(loaded, list) or not loaded:
        ctx.add(item, "must be a non-empty list of levels or '@file:<path>'")
        return []
    levels = _values(loaded, item, ctx) or []
    if any(isinstance(level, tuple) for level in levels):
        ctx.add(item, "levels must be strings; a list of several values per entry (or a CSV of several "
                "columns) belongs in a tuple's items or a pair's allowed")
        return []
    return _dedupe(levels)


def _parse_rules(raw: object, ctx: _Context) -> list[_Rule]:
    if raw is None:
        return []
    if not isinstance(raw, dict):
        ctx.add("rules", f"must be a mapping of sections ({', '.join(RULE_SECTIONS)}), each a mapping of entries")
        return []
    rules: list[_Rule] = []
    for section, entries in raw.items():
        if section not in _PARSERS:
            ctx.add(f"rules.{section}", f"unknown rule section; use {', '.join(RULE_SECTIONS)}")
        elif entries is not None and not isinstance(entries, dict):
            ctx.add(f"rules.{section}", "must be a mapping of entries, name: definition")
        else:
            rules.extend(_parse_section(section, entries or {}, ctx))
    return rules


def _parse_section(section: str, entries: dict, ctx: _Context) -> list[_Rule]:
    rules = []
    for name, body in entries.items():
        item = f"rules.{section}.{name}"
        if not isinstance(name, str) or not name:
            ctx.add(item, "a rule name must be a non-empty string; quote it")
            continue
        rule = _PARSERS[section](name, body, item, ctx)
        if rule is None and section != "subsets":
            ctx.broken.add(name)
        elif rule is not None:
            rules.append(rule)
    return rules


def _parse_subset(axis: str, body: object, item: str, ctx: _Context) -> _Rule | None:
    loaded = _include(body, item, ctx)
    if loaded is _FAILED:
        return None
    if not isinstance(loaded, list) or not loaded:
        ctx.add(item, "must be a non-empty list of the levels to keep, or '@file:<path>'")
        return None
    values = _values(loaded, item, ctx)
    return None if values is None else _Rule("subset", axis, item, [axis], values)


def _parse_tie(name: str, body: object, item: str, ctx: _Context) -> _Rule | None:
    if isinstance(body, dict) and set(body) == {"axes"}:
        body = body["axes"]
    if not _is_name_list(body):
        ctx.add(item, "must list the axes to tie, e.g. [draft_template, essay_template]")
        return None
    if len(set(body)) != len(body):
        ctx.add(item, f"lists an axis twice ({_listed(body)}); list each axis once")
        return None
    return _Rule("tie", name, item, list(body))


def _parse_pair(name: str, body: object, item: str, ctx: _Context) -> _Rule | None:
    if not isinstance(body, dict):
        ctx.add(item, "must be a mapping with left, right, allowed and optionally balance")
        return None
    start = len(ctx.problems)
    _check_keys(body, PAIR_KEYS, item, ctx)
    left, right, balance = body.get("left"), body.get("right"), body.get("balance")
    if not (isinstance(left, str) and isinstance(right, str) and left and right):
        ctx.add(item, "left and right must each name an axis, a tie or a tuple")
    elif left == right:
        ctx.add(item, f"left and right are both {left!r}; pair two different axes")
    if balance is not None and balance not in BALANCE_SIDES:
        ctx.add(item, f"balance {balance!r} is not one of left, right, both; use one of them or leave it out")
    allowed = _entries(body.get("allowed"), [str(left), str(right)], f"{item}.allowed", ctx)
    if len(ctx.problems) > start or allowed is None:
        return None
    return _Rule("pair", name, item, [left, right], allowed, balance)


def _parse_tuple(name: str, body: object, item: str, ctx: _Context) -> _Rule | None:
    if not isinstance(body, dict):
        ctx.add(item, "must be a mapping with axes and items")
        return None
    start = len(ctx.problems)
    _check_keys(body, TUPLE_KEYS, item, ctx)
    axes = body.get("axes")
    if not _is_name_list(axes) or len(set(axes)) != len(axes):
        ctx.add(item, "axes must list the tuple's axes, each once, e.g. [essay_template, essay_llm]")
        return None
    items = _entries(body.get("items"), axes, f"{item}.items", ctx)
    if len(ctx.problems) > start or items is None:
        ctx.broken.update(axes)
        return None
    return _Rule("tuple", name, item, list(axes), items)


def _check_keys(body: dict, known: tuple[str, ...], item: str, ctx: _Context) -> None:
    for key in body:
        if key not in known:
            ctx.add(item, f"unknown key {key!r}; use {', '.join(known)}")


def _entries(raw: object, names: list[str], item: str, ctx: _Context) -> list[tuple] | None:
    """Pair `allowed` or tuple `items`: a list of entries of one value per name (None if bad)."""
    loaded = _include(raw, item, ctx)
    if loaded is _FAILED:
        return None
    if not isinstance(loaded, list) or not loaded:
        ctx.add(item, f"must be a non-empty list of [{', '.join(names)}] entries, or '@file:<path>'")
        return None
    start, entries = len(ctx.problems), []
    for index, entry in enumerate(loaded):
        value = _value([entry] if len(names) == 1 and isinstance(entry, str) else entry, f"{item}[{index}]", ctx)
        if isinstance(value, tuple) and len(value) == len(names):
            entries.append(value)
        elif value is not None:
            count = len(value) if isinstance(value, tuple) else 1
            ctx.add(f"{item}[{index}]", f"{_shown(value)} has {count} value(s) for {len(names)} axes "
                    f"({', '.join(names)}); give one value per axis")
    return entries if len(ctx.problems) == start else None


def _check_rule_names(axes: dict[str, list[str]], rules: list[_Rule], ctx: _Context) -> None:
    """Rule names are unique and new (a tie may reuse a tied axis); tuples bind only new axes."""
    seen: set[str] = set()
    for rule in rules:
        if rule.kind == "subset":
            continue
        if rule.name in seen:
            ctx.add(rule.item, f"the name {rule.name!r} is used by an earlier rule; give each rule its own name")
        elif rule.name in axes and not (rule.kind == "tie" and rule.name in rule.names):
            ctx.add(rule.item, f"the name {rule.name!r} is already an axis; choose a new name")
        seen.add(rule.name)
        for axis in rule.names if rule.kind == "tuple" else []:
            if axis in axes:
                ctx.add(rule.item, f"axis {axis!r} is declared under axes, but this tuple gives its levels; "
                        f"remove axes.{axis} (or drop {axis!r} from the tuple)")
                ctx.broken.update([rule.name, *rule.names])


def _parse_output(raw: object, ctx: _Context) -> tuple[list[str], int | None]:
    if not isinstance(raw, dict):
        ctx.add("output", "is required: a mapping with field_order (the columns, in order) and optionally seed")
        return [], None
    _check_keys(raw, OUTPUT_KEYS, "output", ctx)
    order, seed = raw.get("field_order"), raw.get("seed")
    if not _is_name_list(order):
        ctx.add("output.field_order", "is required: a non-empty list of axis names, the columns in order")
        order = []
    elif len(set(order)) != len(order):
        ctx.add("output.field_order", f"names a column twice ({_listed(order)}); name each once")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        ctx.add("output.seed", f"{seed!r} is not a whole number; write e.g. seed: 17, or leave it out")
        seed = None
    return _dedupe(order), seed


# ---------------------------------------------------------------------------------------------
# Applying rules: the axes of the product, each a slot that expands into columns


@dataclass(eq=False)
class _Slot:
    name: str
    levels: list
    kind: str = "axis"  # axis, tie, pair or tuple
    parts: list[_Slot] = field(default_factory=list)

    def columns(self) -> list[str]:
        return [self.name] if self.kind == "axis" else [c for part in self.parts for c in part.columns()]

    def expand(self, value: Any) -> list[tuple[str, str]]:
        """(column, level) pairs of one value: a tie gives it to every tied axis."""
        if self.kind == "axis":
            return [(self.name, value)]
        values = [value] * len(self.parts) if self.kind == "tie" else value
        return [cell for part, v in zip(self.parts, values, strict=True) for cell in part.expand(v)]


@dataclass
class _Layout:
    order: list[_Slot]
    names: dict[str, _Slot]  # every name a rule may use, and the slot it means now
    inside: dict[str, str] = field(default_factory=dict)  # names now inside a pair or tuple -> its name

    def position(self, slot: _Slot) -> int:
        return next(index for index, s in enumerate(self.order) if s is slot)

    def replace(self, old: list[_Slot], new: _Slot, at: _Slot, *, keep_names: bool) -> None:
        """`new` stands where `at` stood and the other `old` slots go; names move to `new`."""
        self.order = [new if s is at else s for s in self.order if s is at or all(s is not o for o in old)]
        for name, slot in list(self.names.items()):
            if any(slot is o for o in old):
                if keep_names:
                    self.names[name] = new
                else:
                    del self.names[name]
                    self.inside[name] = new.name
        self.names[new.name] = new


def _layout(parsed: _Parsed) -> _Layout:
    """Declared axes in order, then axes only tuples define, in order of first appearance."""
    rule_names = {r.name for r in parsed.rules if r.kind != "subset"}
    derived: dict[str, list] = {}
    for rule in (r for r in parsed.rules if r.kind == "tuple"):
        for index, axis in enumerate(rule.names):
            if axis not in parsed.axes and axis not in rule_names:
                derived.setdefault(axis, []).extend(entry[index] for entry in rule.values)
    order = [_Slot(name, levels) for name, levels in parsed.axes.items()]
    order += [_Slot(name, _dedupe(values)) for name, values in derived.items()]
    return _Layout(order, {slot.name: slot for slot in order})


def _lookup(layout: _Layout, rule: _Rule, ctx: _Context) -> list[_Slot] | None:
    """The slots a rule's names mean now; None (problems recorded) if any is unknown or taken."""
    slots = []
    for name in rule.names:
        if name in layout.names:
            slots.append(layout.names[name])
            continue
        outer = name
        while outer in layout.inside:
            outer = layout.inside[outer]
        if outer != name:
            ctx.add(rule.item, f"{name!r} is already inside {outer!r}; name {outer!r} instead, or move this rule earlier")
        elif name not in ctx.broken:
            ctx.add(rule.item, f"unknown axis {name!r}; name one of {_listed(layout.names)}")
    if any(not slot.levels for slot in slots):  # an axis whose levels were already reported bad
        return None
    return slots if len(slots) == len(rule.names) else None


def _apply_subset(layout: _Layout, rule: _Rule, ctx: _Context) -> None:
    slots = _lookup(layout, rule, ctx)
    if slots is None:
        return
    keep = set(rule.values)
    kept = [level for level in slots[0].levels if level in keep]
    if kept:
        slots[0].levels = kept
    else:
        ctx.add(rule.item, f"nothing left: none of {_listed(rule.values)} is a level of {rule.name!r} "
                f"({_listed(slots[0].levels)}); keep at least one of its levels")


def _apply_tie(layout: _Layout, rule: _Rule, ctx: _Context) -> None:
    slots = _lookup(layout, rule, ctx)
    if slots is None:
        ctx.broken.add(rule.name)
        return
    slots = [s for index, s in enumerate(slots) if all(s is not t for t in slots[:index])]
    common = [level for level in slots[0].levels if all(level in s.levels for s in slots[1:])]
    if not common:
        shown = "; ".join(f"{name}: {_listed(s.levels)}" for name, s in zip(rule.names, slots, strict=False))
        ctx.add(rule.item, f"no level common to {', '.join(rule.names)} ({shown}); give them a shared level")
        ctx.broken.add(rule.name)
        return
    at = layout.names[rule.name] if rule.name in rule.names else min(slots, key=layout.position)
    layout.replace(slots, _Slot(rule.name, common, "tie", slots), at, keep_names=True)


def _apply_pair(layout: _Layout, rule: _Rule, ctx: _Context) -> None:
    sides = _lookup(layout, rule, ctx)
    start = len(ctx.problems)
    if sides is not None and sides[0] is sides[1]:
        ctx.add(rule.item, f"{rule.names[0]!r} and {rule.names[1]!r} are the same tie; pair two different axes")
    elif sides is not None:
        _check_domains(rule, sides, f"{rule.item}.allowed", ctx)
        for side in BALANCE_SIDES.get(rule.balance or "", ()):
            _check_balance(_dedupe(rule.values), side, rule, ctx)
    if sides is None or len(ctx.problems) > start:
        ctx.broken.add(rule.name)
        return
    new = _Slot(rule.name, _dedupe(rule.values), "pair", sides)
    layout.replace(sides, new, min(sides, key=layout.position), keep_names=False)


def _apply_tuple(layout: _Layout, rule: _Rule, ctx: _Context) -> None:
    parts = _lookup(layout, rule, ctx)
    start = len(ctx.problems)
    if parts is not None and len({id(p) for p in parts}) != len(parts):
        ctx.add(rule.item, f"two of {', '.join(rule.names)} are the same tie; list each axis once")
    elif parts is not None:
        _check_domains(rule, parts, f"{rule.item}.items", ctx)
    if parts is None or len(ctx.problems) > start:
        ctx.broken.add(rule.name)
        return
    new = _Slot(rule.name, _dedupe(rule.values), "tuple", parts)
    layout.replace(parts, new, min(parts, key=layout.position), keep_names=False)


def _check_domains(rule: _Rule, slots: list[_Slot], item: str, ctx: _Context) -> None:
    """Every value of every entry is a level of the axis it stands for."""
    for index, entry in enumerate(rule.values):
        for name, slot, value in zip(rule.names, slots, entry, strict=True):
            if value not in slot.levels:
                ctx.add(f"{item}[{index}]", f"{_shown(value)} is not a level of {name!r} ({_listed(slot.levels)}); "
                        "use one of its levels or add it to that axis")


def _check_balance(allowed: list[tuple], side: str, rule: _Rule, ctx: _Context) -> None:
    counts = collections.Counter(pair[0 if side == "left" else 1] for pair in allowed)
    if len(set(counts.values())) > 1:
        shown = ", ".join(f"{_shown(value)}: {count}" for value, count in counts.items())
        ctx.add(rule.item, f"balance {rule.balance}: the {side} values occur unequally often in allowed ({shown}); "
                f"give every {side} value the same number of pairs")


_PARSERS = {"subsets": _parse_subset, "ties": _parse_tie, "pairs": _parse_pair, "tuples": _parse_tuple}
_APPLY = {"subset": _apply_subset, "tie": _apply_tie, "pair": _apply_pair, "tuple": _apply_tuple}


# ---------------------------------------------------------------------------------------------
# Compiling


def _columns(layout: _Layout, field_order: list[str], ctx: _Context) -> list[str]:
    """field_order, then the other columns in the order the slots expand into them."""
    leaves = [column for slot in layout.order for column in slot.columns()]
    for name in field_order if leaves else []:  # no axes at all was reported already
        if name not in leaves:
            ctx.add("output.field_order", f"{name!r} is not an axis of this design (tie, pair and tuple names "
                    f"are not columns); name only axes: {_listed(leaves, limit=20)}")
    return [n for n in field_order if n in leaves] + [c for c in leaves if c not in field_order]


def _rows(layout: _Layout, columns: list[str], seed: int | None) -> list[dict[str, str]]:
    combos = list(itertools.product(*(slot.levels for slot in layout.order)))
    if seed is not None:
        random.Random(seed).shuffle(combos)
    rows = []
    for combo in combos:
        cells = dict(cell for slot, value in zip(layout.order, combo, strict=True) for cell in slot.expand(value))
        rows.append({column: cells[column] for column in columns})
    return rows


def compile_design(spec: dict, base_dir: Path | str, *, seed: int | None = None,
                   source: Path | str | None = None) -> Design:
    """Compile a design spec into rows, in SPEC-DSL.md's "Row order".

    `base_dir` is the folder `@file:` paths are relative to (the spec file's); `source` names the
    spec in messages (default: the folder). `seed`, when given, wins over `output.seed`. Every
    problem found is raised together in one DesignError.
    """
    ctx = _Context(str(source) if source is not None else f"{base_dir} (design spec)", Path(base_dir))
    parsed = _parse_spec(spec, ctx)
    layout = _layout(parsed)
    if not layout.order and not ctx.problems:
        ctx.add("axes", "no axes: declare them under axes (a mapping of axis name to levels), or define them "
                "with tuple rules; axes may be empty only when tuples define every axis")
    for rule in parsed.rules:
        _APPLY[rule.kind](layout, rule, ctx)
    columns = _columns(layout, parsed.field_order, ctx)
    if ctx.problems:
        raise DesignError(ctx.problems)
    chosen = seed if seed is not None else parsed.seed
    return Design(columns, _rows(layout, columns, chosen), ctx.where, chosen)


# ---------------------------------------------------------------------------------------------
# From design rows to membership rows

LINEAGE = tuple(reversed(stages.lineage(stages.SCORED.name)))  # root stage first
# The fields of each stage of a lineage, root stage first: (template, model, replicate), named
# `<stage>_template`, `<stage>_llm`, `<stage>_replicate` as in the original pipeline's design
# columns; the stages come from the stage registry.
STAGE_FIELDS = tuple((f"{s.name}_template", f"{s.name}_llm", f"{s.name}_replicate") for s in LINEAGE)
# Other column names the original pipeline's designs used for a field.
LEGACY_ALIASES = {
    "combo_id": ("combo",),
    "draft_llm": ("draft_model", "generation_llm"),
    "draft_replicate": ("draft_template_replicate", "draft_rep"),
    "essay_replicate": ("essay_template_replicate", "essay_rep"),
    "evaluation_replicate": ("evaluation_template_replicate", "evaluation_llm_replicate", "evaluation_rep"),
}
REPLICATE_FIELDS = tuple(replicate for _, _, replicate in STAGE_FIELDS)
FIELD_ALIASES = {name: (name, *LEGACY_ALIASES.get(name, ()))
                 for name in ("combo_id", *(f for template, model, _ in STAGE_FIELDS for f in (template, model)),
                              *REPLICATE_FIELDS)}
# A stage's model that may be None: the parent document's own model (stages.parent_model_by_default).
PARENT_MODEL_FIELDS = tuple(model for stage, (_, model, _) in zip(LINEAGE, STAGE_FIELDS, strict=True)
                            if stage.parent_model_by_default)
OPTIONAL_FIELDS = (*PARENT_MODEL_FIELDS, *REPLICATE_FIELDS)
DRAFT_MODEL_WORDS = ("", "none")  # an essay_llm meaning "the draft's model" (any case)


def design_combo_ids(design: Design) -> list[str]:
    """The combo ids a compiled design names, in first-seen order (from `combo_id` or `combo`)."""
    column = next((alias for alias in FIELD_ALIASES["combo_id"] if alias in design.columns), None)
    return list(dict.fromkeys(row[column] for row in design.rows)) if column else []


def _field_columns(columns: list[str], where: str, problems: list[str]) -> dict[str, str | None]:
    """The design column that holds each field (None: an optional field the design leaves out)."""
    chosen: dict[str, str | None] = {}
    for name, aliases in FIELD_ALIASES.items():
        present = [alias for alias in aliases if alias in columns]
        if len(present) > 1:
            problems.append(f"{where}: columns {', '.join(present)} all mean {name}; keep one of them")
        elif not present and name not in OPTIONAL_FIELDS:
            problems.append(f"{where}: the design has no {name} column; add an axis named {' or '.join(aliases)}")
        chosen[name] = present[0] if present else None
    return chosen


def _replicate(text: str, column: str | None, label: str, problems: list[str]) -> int:
    if column is None:
        return 1
    try:
        number = int(text)
    except ValueError:
        problems.append(f"{label}: {column} {text!r} is not a whole number; write 1, 2, ...")
        return 1
    if number < 1:
        problems.append(f"{label}: {column} is {number}; replicates count from 1")
    return number


def _lineage(row: dict[str, str], columns: dict[str, str | None], label: str,
             problems: list[str]) -> dict:
    """One design row as field -> value (replicates as ints, a parent-model word resolved)."""
    values: dict = {name: str(row[column]).strip() if column else "" for name, column in columns.items()}
    for name, column in columns.items():
        if name not in OPTIONAL_FIELDS and column and not values[name]:
            problems.append(f"{label}: {column} is empty; give it a level")
    for index, (_, model, _) in enumerate(STAGE_FIELDS):
        if model in PARENT_MODEL_FIELDS and values[model].lower() in DRAFT_MODEL_WORDS:
            values[model] = values[STAGE_FIELDS[index - 1][1]]
    for name in REPLICATE_FIELDS:
        values[name] = _replicate(values[name], columns[name], label, problems)
    return values


def _member(stage: str, gen_id: str, cohort_id: str, parent: str, combo_id: str, template_id: str,
            model_id: str, replicate: int) -> dict:
    return dict(zip(MEMBERSHIP_COLUMNS, (stage, gen_id, cohort_id, parent, combo_id, template_id,
                                         model_id, replicate), strict=True))


def _documents(line: dict, cohort_id: str) -> list[dict]:
    """The rows of one lineage, root stage first, with SPEC §4's ids (`ids.document_id`)."""
    rows: list[dict] = []
    anchor, parent, parent_model = line["combo_id"], "", None
    for stage, (template, model, replicate) in zip(LINEAGE, STAGE_FIELDS, strict=True):
        gen_id = ids.document_id(stage.name, anchor, line[template], line[model], line[replicate], parent_model)
        rows.append(_member(stage.name, gen_id, cohort_id, parent, line["combo_id"], line[template], line[model],
                            line[replicate]))
        anchor, parent, parent_model = gen_id, gen_id, line[model]
    return rows


def design_membership(design: Design, cohort_id: str) -> list[dict]:
    """Membership rows (MEMBERSHIP_COLUMNS) of a compiled design: drafts, then essays, then evaluations.

    Each design row is one evaluation with its lineage (SPEC-DSL.md "From design rows to a
    cohort"): column aliases are accepted, a missing replicate column means 1, an `essay_llm` of
    None or empty (or no essay_llm column) means the draft's model. Documents are de-duplicated by
    gen_id in first-seen order. DesignError lists missing columns, empty levels and bad
    replicates. Combos, templates and models are not checked here: see `membership_summary`.
    """
    problems: list[str] = []
    columns = _field_columns(design.columns, design.source, problems)
    if problems:
        raise DesignError(problems)
    lineages = [_lineage(row, columns, f"{design.source}: design row {number}", problems)
                for number, row in enumerate(design.rows, start=1)]
    if problems:
        raise DesignError(problems)
    per_stage: list[dict[str, dict]] = [{} for _ in LINEAGE]
    for line in lineages:
        for documents, document in zip(per_stage, _documents(line, cohort_id), strict=True):
            documents.setdefault(document["gen_id"], document)
    return [document for documents in per_stage for document in documents.values()]


def membership_summary(rows: list[dict]) -> dict:
    """What the cohort checkpoint must check of membership rows against the experiment tables.

    `{"combo_ids": [...], "draft"|"essay"|"evaluation": {"templates": [...], "models": [...],
    "replicates": [...]}}`, all sorted: every combo id must be registered in
    `data/combo_mappings.csv`, every template known for its stage, every model in llm_models.csv.
    """
    summary: dict = {"combo_ids": sorted({row["combo_id"] for row in rows})}
    for stage in stages.NAMES:
        mine = [row for row in rows if row["stage"] == stage]
        summary[stage] = {key: sorted({row[column] for row in mine}) for key, column in
                          (("templates", "template_id"), ("models", "llm_model_id"), ("replicates", "replicate"))}
    return summary


# ---------------------------------------------------------------------------------------------
# A cohort's definition file, and the files the checkpoint reads for it


def cohort_definition(paths: Paths, cohort_id: str) -> Path:
    """The file that defines a cohort: `<cohorts_dir>/<cohort_id>.yaml` (a plain cohort or a
    design spec), or else the original pipeline's `<data_root>/cohorts/<cohort_id>/spec/config.yaml`.
    Neither existing gives the first (the checkpoint says it is missing); both existing is a
    DesignError, since either could be meant."""
    ours, original = paths.cohort_file(cohort_id), paths.design_spec_file(cohort_id)
    if ours.exists() and original.exists():
        raise DesignError([f"{ours}: cohort {cohort_id!r} is also defined by {original}; keep one of the two "
                           "files (move or rename the other)"])
    return original if original.exists() and not ours.exists() else ours


def cohort_budget(paths: Paths, cohort_id: str) -> tuple[float | None, Path]:
    """A cohort's own `budget_usd` and the file that defines the cohort (`cohort_definition`). A
    design spec has no budget key: only the config's budget covers it. The checkpoint checks the
    whole file against the cohort schema (`cohorts.load_cohort_spec`); this reads the budget only,
    for the budget guard of a run (`daydream.run`), and refuses one that is no number >= 0."""
    path = cohort_definition(paths, cohort_id)
    if not path.exists():
        raise DesignError([f"{path}: cohort file not found; create it or fix the `cohorts` list in config"])
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        raise DesignError([f"{path}: not valid YAML: {_one_line(error)}"]) from error
    if not isinstance(spec, dict) or is_design_spec(spec) or spec.get("budget_usd") is None:
        return None, path
    usd = spec["budget_usd"]
    if isinstance(usd, bool) or not isinstance(usd, int | float) or usd < 0:
        raise DesignError([f"{path}: budget_usd: {usd!r} is not a number >= 0; write the budget in USD, "
                           "e.g. budget_usd: 20"])
    return float(usd), path


def _file_references(value: object) -> list[str]:
    """Every `'@file:<path>'` string anywhere in a parsed spec, in document order."""
    if isinstance(value, str):
        return [value[len(FILE_PREFIX):].strip()] if value.startswith(FILE_PREFIX) else []
    if isinstance(value, dict):
        return [ref for item in value.values() for ref in _file_references(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _file_references(item)]
    return []


def definition_files(paths: Paths, cohort_id: str) -> list[str]:
    """The checkpoint's inputs for a cohort's definition: its file (`cohort_definition`; both
    candidates when both exist, so the checkpoint runs and says so) and, for a design spec, every
    existing file its `@file:` entries name. A spec that does not parse, or an `@file:` that does
    not exist, adds nothing here: the checkpoint reports it, naming the file and the fix."""
    try:
        path = cohort_definition(paths, cohort_id)
    except DesignError:
        return [str(paths.cohort_file(cohort_id)), str(paths.design_spec_file(cohort_id))]
    files = [str(path)]
    try:
        spec = _read_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return files
    if is_design_spec(spec):
        found = (path.parent / ref for ref in _file_references(spec))
        files += _dedupe(str(p) for p in found if p.is_file())
    return files
