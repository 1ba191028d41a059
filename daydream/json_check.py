"""A quick yes to a JSON Schema, for records checked one by one in every document job.

`compile_check(schema)` turns a schema written in a small subset of JSON Schema (`type`, `enum`,
`pattern`, `minimum`, `required`, `properties`, `additionalProperties`, `items`, local `$ref`,
and `oneOf` over branches of different types) into a plain Python function. It never says
yes to a record that `jsonschema` would refuse: where it is unsure (an integer written as 1.0,
a keyword outside the subset), it says no, and the caller asks `jsonschema`, which decides and
names the problems. A schema using any other keyword compiles to None: always ask
`jsonschema`. So a record is checked in microseconds instead of a millisecond, and the verdict
is the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Check = Callable[[object], bool]

# Keywords that constrain nothing (annotations), and the JSON types by Python type: bool is no
# integer or number, and an integral float is left to jsonschema.
_ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "description", "title", "default", "examples", "$comment"})
_TYPES: dict[str, Callable[[object], bool]] = {
    "object": lambda v: type(v) is dict,
    "array": lambda v: type(v) is list,
    "string": lambda v: type(v) is str,
    "integer": lambda v: type(v) is int,
    "number": lambda v: type(v) in (int, float) and v == v,  # NaN is left to jsonschema
    "boolean": lambda v: type(v) is bool,
    "null": lambda v: v is None,
}
_SUPPORTED = _ANNOTATIONS | {"type", "enum", "pattern", "minimum", "required", "properties", "additionalProperties",
                             "items", "oneOf", "$ref"}


class _Unsupported(Exception):
    """The schema uses something the quick check does not cover."""


def compile_check(schema: dict) -> Check | None:
    """A function saying True only of records `schema` accepts (see the module docstring), or
    None when the schema is outside the subset."""
    try:
        return _compile(schema, schema)
    except _Unsupported:
        return None


def _resolve(node: dict, root: dict) -> dict:
    """The node a local `$ref` points to (a `$ref` beside other constraints is not covered)."""
    while "$ref" in node:
        if set(node) - _ANNOTATIONS - {"$ref"} or not str(node["$ref"]).startswith("#/"):
            raise _Unsupported(node["$ref"])
        target: object = root
        for part in str(node["$ref"])[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        if not isinstance(target, dict):
            raise _Unsupported(node["$ref"])
        node = target
    return node


def _types(node: dict, root: dict) -> set[str] | None:
    declared = _resolve(node, root).get("type")
    return {declared} if isinstance(declared, str) else set(declared) if isinstance(declared, list) else None


def _compile(node: object, root: dict) -> Check:
    if not isinstance(node, dict):
        raise _Unsupported(node)
    node = _resolve(node, root)
    if set(node) - _SUPPORTED:
        raise _Unsupported(sorted(set(node) - _SUPPORTED))
    checks: list[Check] = []
    if "type" in node:
        declared = [node["type"]] if isinstance(node["type"], str) else list(node["type"])
        if any(t not in _TYPES for t in declared):
            raise _Unsupported(declared)
        tests = [_TYPES[t] for t in declared]
        checks.append(tests[0] if len(tests) == 1 else lambda v: any(test(v) for test in tests))
    if "enum" in node:
        allowed = list(node["enum"])
        checks.append(lambda v: any(type(v) is type(a) and v == a for a in allowed))
    if "pattern" in node:
        search = re.compile(node["pattern"]).search
        checks.append(lambda v: type(v) is not str or search(v) is not None)
    if "minimum" in node:
        low = node["minimum"]
        checks.append(lambda v: type(v) not in (int, float) or v >= low)
    checks += _object_checks(node, root)
    if "items" in node:
        item = _compile(node["items"], root)
        checks.append(lambda v: type(v) is not list or all(item(x) for x in v))
    if "oneOf" in node:
        checks.append(_one_of(node["oneOf"], root))
    return _all(checks)


def _all(checks: list[Check]) -> Check:
    if len(checks) == 1:
        return checks[0]

    def every(value: object) -> bool:
        for check in checks:
            if not check(value):
                return False
        return True

    return every


def _object_checks(node: dict, root: dict) -> list[Check]:
    checks: list[Check] = []
    required = tuple(node.get("required", ()))
    properties = {key: _compile(sub, root) for key, sub in node.get("properties", {}).items()}
    extra = node.get("additionalProperties", True)
    if required:
        checks.append(lambda v: type(v) is not dict or all(key in v for key in required))
    if properties:
        items = tuple(properties.items())

        def each_property(value: object) -> bool:
            if type(value) is dict:
                for key, check in items:
                    if key in value and not check(value[key]):
                        return False
            return True

        checks.append(each_property)
    if extra is False:
        checks.append(lambda v: type(v) is not dict or v.keys() <= properties.keys())
    elif extra is not True:
        other = _compile(extra, root)
        checks.append(lambda v: type(v) is not dict or all(other(x) for k, x in v.items() if k not in properties))
    return checks


def _one_of(branches: list, root: dict) -> Check:
    """Branches that each declare their types, no two alike: then at most one can hold, and
    `oneOf` is `anyOf`."""
    declared = [_types(b, root) for b in branches]
    if any(t is None for t in declared) or sum(len(t) for t in declared) != len(set().union(*declared)) \
            or {"integer", "number"} <= set().union(*declared):
        raise _Unsupported(branches)
    compiled = [_compile(b, root) for b in branches]
    return lambda v: any(check(v) for check in compiled)
