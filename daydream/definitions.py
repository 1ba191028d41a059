"""Strict reading of the definition files: every table and text a researcher writes by hand.

The concept, template and model tables of `data/1_raw/`, the combo register, concept
descriptions and template files are all read here, and nothing is guessed. A problem is
reported with the file, the line and the fix, and all problems of a file are collected:

- the bytes must be UTF-8 (a leading byte-order mark is accepted and dropped; UTF-16, NUL
  bytes and other encodings are named as such, with the line and column of the first bad byte);
- a file must not be empty (a blank description would be sent to a model as a blank concept);
- a table's header must name every column once: no empty, duplicate, missing or unknown names;
- every row must have exactly as many fields as the header (an unquoted comma in a name shifts
  every later cell: `active` would land in the name, prices in the caps);
- an `active` cell must say true or false (empty means active).

`read_table` returns the rows that passed, each with the line it starts on, and whether the
table could be read at all; a caller checks the cells it understands and adds to the same list.
"""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from daydream import ids
from daydream.errors import UserError

TRUE_WORDS = ("true", "1", "yes", "y", "t")
FALSE_WORDS = ("false", "0", "no", "n", "f")


class DefinitionError(ValueError, UserError):
    """A definition file that cannot be used; the message names the file, the line and the fix."""


class Row(dict):
    """One data row of a table: column -> stripped cell, and `line`, the line it starts on."""

    def __init__(self, cells: dict[str, str], line: int):
        super().__init__(cells)
        self.line = line


@dataclass
class Table:
    """The rows of a table that passed; `readable` is False when the file as a whole could not
    be read (missing, not UTF-8, bad header), so none of its rows are known. `rejected` holds
    the key of every row dropped for a problem (already reported)."""

    path: Path
    rows: list[Row] = field(default_factory=list)
    readable: bool = True
    rejected: set[str] = field(default_factory=set)


def decode(path: Path, data: bytes) -> str:
    """The UTF-8 text of a file's bytes, without a leading byte-order mark.

    DefinitionError names the line and column of the first byte that is not UTF-8, or says
    the file is UTF-16 (a spreadsheet's "Unicode text" export) or binary."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DefinitionError(f"{path}: is UTF-16 text; save it as UTF-8 (in a spreadsheet: "
                              "CSV UTF-8; in an editor: encoding UTF-8)")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise DefinitionError(
            f"{path} line {line}: not UTF-8 (byte 0x{data[error.start]:02x} at column {column}); "
            "save the file as UTF-8 (it is probably Latin-1 or Windows-1252)") from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise DefinitionError(f"{path} line {line}: contains a NUL byte, so it is not a text file; "
                              "save it as UTF-8 text")
    return text


def read_text(path: Path, what: str) -> str:
    """A definition text file (a concept description, a template), decoded as `decode` says.

    DefinitionError when it is missing, not a file, not UTF-8 or empty (only whitespace):
    an empty file would be sent to a model as a blank `what`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DefinitionError(f"{path}: {what} file not found; create it") from None
    except IsADirectoryError:
        raise DefinitionError(f"{path}: is a folder, not a {what} file") from None
    text = decode(path, data)
    if not text.strip():
        raise DefinitionError(f"{path}: the {what} file is empty; write its text (an empty file "
                              f"would be sent to the model as a blank {what})")
    return text


def text_problems(path: Path, what: str) -> list[str]:
    """`read_text`'s problem with a file as a list (empty when the file is fine)."""
    try:
        read_text(path, what)
    except DefinitionError as error:
        return [str(error)]
    return []


def parse_bool(cell: str, where: str, column: str, problems: list[str], *, empty: bool = True) -> bool:
    """A true/false cell (`true`, `false`, `1`, `0`, `yes`, `no`, any case); empty is `empty`.
    Anything else goes to `problems` (and counts as `empty`)."""
    word = cell.strip().lower()
    if word == "":
        return empty
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    problems.append(f"{where}: {column} is {cell!r}; write true or false (empty means {str(empty).lower()})")
    return empty


def _header_problems(path: Path, line: int, header: list[str], required: tuple[str, ...],
                     optional: tuple[str, ...]) -> list[str]:
    known = (*required, *optional)
    problems = []
    for index, name in enumerate(header, start=1):
        if name == "":
            problems.append(f"{path} line {line}: column {index} of the header has no name (a trailing or "
                            f"doubled comma?); the header names these columns: {', '.join(known)}")
    seen: dict[str, int] = {}
    for index, name in enumerate(header, start=1):
        if name and name in seen:
            problems.append(f"{path} line {line}: column {name!r} appears twice in the header (columns "
                            f"{seen[name]} and {index}); keep one and merge their cells")
        seen.setdefault(name, index)
    missing = [c for c in required if c not in header]
    unknown = [c for c in dict.fromkeys(header) if c and c not in known]
    if missing:
        problems.append(f"{path} line {line}: missing column(s) {', '.join(missing)}; "
                        f"the header must include {', '.join(required)}")
    if unknown:
        problems.append(f"{path} line {line}: unknown column(s) {', '.join(map(repr, unknown))}; "
                        f"known columns: {', '.join(known)}")
    return problems


def _field_count_problem(path: Path, line: int, cells: list[str], header: list[str]) -> str:
    have, want = len(cells), len(header)
    if have > want:
        extra = ", ".join(repr(c) for c in cells[want:])
        return (f"{path} line {line}: {have} fields but the header has {want} ({', '.join(header)}); "
                f"extra: {extra}. A value that contains a comma must be in double quotes "
                f"(e.g. \"Strength of Weak Ties, revisited\"); otherwise remove the extra field(s)")
    return (f"{path} line {line}: {have} fields but the header has {want} ({', '.join(header)}); "
            f"missing: {', '.join(header[have:])}. Add the missing cells (an empty cell still needs "
            "its comma)")


def read_table(path: Path, required: tuple[str, ...], optional: tuple[str, ...], problems: list[str],
               *, key: str | None = None) -> Table:
    """The rows of a CSV definition table, checked as this module says. Every problem goes to
    `problems`; a row with a problem is left out (its `key` cell goes to `Table.rejected`).
    With `key`, an empty or repeated key is a problem too."""
    path = Path(path)
    table = Table(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        problems.append(f"{path}: file not found; create it with the columns {', '.join(required)}")
        table.readable = False
        return table
    try:
        text = decode(path, data)
    except DefinitionError as error:
        problems.append(str(error))
        table.readable = False
        return table
    return read_table_text(path, text, required, optional, problems, key=key)


def read_table_text(path: Path, text: str, required: tuple[str, ...], optional: tuple[str, ...],
                    problems: list[str], *, key: str | None = None) -> Table:
    """`read_table` on a file's decoded text (`path` names it in the messages)."""
    table = Table(Path(path))
    if not text.strip():
        problems.append(f"{path}: the file is empty; it needs a header line naming the columns "
                        f"{', '.join(required)} (optional: {', '.join(optional) or 'none'})")
        table.readable = False
        return table
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    seen_keys: dict[str, int] = {}
    end = 0  # the last line read so far; a record starts on the line after it
    try:
        for cells in reader:
            line, end = end + 1, reader.line_num
            stripped = [c.strip() for c in cells]
            if not any(stripped):
                continue  # a blank line
            if header is None:
                header = stripped
                header_problems = _header_problems(path, line, header, required, optional)
                if header_problems:
                    problems.extend(header_problems)
                    table.readable = False
                    return table
                continue
            column = header.index(key) if key else len(stripped)
            key_cell = stripped[column] if column < len(stripped) else ""
            if len(stripped) != len(header):
                problems.append(_field_count_problem(path, line, stripped, header))
                table.rejected.add(key_cell)
                continue
            row = Row(dict(zip(header, stripped, strict=True)), line)
            if key:
                if not key_cell:
                    problems.append(f"{path} line {line}: empty {key}; give every row an id")
                    continue
                bad_id = ids.id_problem(key, key_cell)
                if bad_id:
                    problems.append(f"{path} line {line}: {bad_id}")
                    table.rejected.add(key_cell)
                    continue
                if key_cell in seen_keys:
                    problems.append(f"{path} line {line}: {key} {key_cell!r} is already used on line "
                                    f"{seen_keys[key_cell]}; ids must be unique")
                    table.rejected.add(key_cell)
                    continue
                seen_keys[key_cell] = line
            table.rows.append(row)
    except csv.Error as error:
        problems.append(f"{path} line {end + 1}: {error}; check the double quotes of the row that starts on "
                        "this line (a quote opened in a cell must be closed, and a quote inside a quoted cell "
                        "is written twice: \"\")")
        table.readable = False
        table.rows = []
        return table
    if header is None:  # only blank lines
        problems.append(f"{path}: the file has no header line; name the columns {', '.join(required)}")
        table.readable = False
    return table
