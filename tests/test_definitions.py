"""Strict reading of definition files: every problem names the file, the line and the fix."""

import codecs

import pytest

from daydream import definitions
from daydream.definitions import DefinitionError, read_table, read_text

COLUMNS, OPTIONAL = ("concept_id", "name"), ("active",)


def table(tmp_path, text: str | bytes, name="concepts_metadata.csv", key="concept_id"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    problems: list[str] = []
    return read_table(path, COLUMNS, OPTIONAL, problems, key=key), problems, path


def test_an_unquoted_comma_in_a_name_is_an_error_and_never_makes_an_inactive_concept_active(tmp_path):
    found, problems, path = table(tmp_path, "concept_id,name,active\n"
                                            "a,Alpha,true\n"
                                            "weak-ties,Strength of Weak Ties, Granovetter,false\n")
    assert [r["concept_id"] for r in found.rows] == ["a"]
    assert found.rejected == {"weak-ties"}
    assert problems == [f"{path} line 3: 4 fields but the header has 3 (concept_id, name, active); extra: 'false'. "
                        "A value that contains a comma must be in double quotes (e.g. \"Strength of Weak Ties, "
                        "revisited\"); otherwise remove the extra field(s)"]


def test_a_quoted_comma_is_one_field(tmp_path):
    found, problems, _ = table(tmp_path, 'concept_id,name,active\nweak-ties,"Weak Ties, Strength of",false\n')
    assert problems == [] and found.rows == [{"concept_id": "weak-ties", "name": "Weak Ties, Strength of",
                                               "active": "false"}]


def test_a_row_with_fewer_fields_names_the_missing_columns(tmp_path):
    _, problems, path = table(tmp_path, "concept_id,name,active\na,Alpha\n")
    assert problems == [f"{path} line 2: 2 fields but the header has 3 (concept_id, name, active); missing: active. "
                        "Add the missing cells (an empty cell still needs its comma)"]


def test_a_byte_order_mark_is_accepted_and_lines_are_counted_across_blank_and_quoted_lines(tmp_path):
    text = codecs.BOM_UTF8 + b'concept_id,name\n\na,"Alpha\nsecond line"\nb,Beta,extra\n'
    found, problems, path = table(tmp_path, text)
    assert found.rows[0] == {"concept_id": "a", "name": "Alpha\nsecond line"} and found.rows[0].line == 3
    assert problems[0].startswith(f"{path} line 5: 3 fields but the header has 2")


@pytest.mark.parametrize("header, message", [
    ("concept_id,name,name", "column 'name' appears twice in the header (columns 2 and 3); keep one"),
    ("concept_id,name,", "column 3 of the header has no name (a trailing or doubled comma?)"),
    ("concept_id,nam", "missing column(s) name; the header must include concept_id, name"),
    ("concept_id,name,activ", "unknown column(s) 'activ'; known columns: concept_id, name, active"),
])
def test_a_bad_header_makes_the_table_unreadable_and_says_what_to_fix(tmp_path, header, message):
    found, problems, path = table(tmp_path, f"{header}\na,Alpha,x\n")
    assert not found.readable and found.rows == []
    assert any(p.startswith(f"{path} line 1: ") and message in p for p in problems), problems


@pytest.mark.parametrize("data, message", [
    (b"", "the file is empty; it needs a header line naming the columns concept_id, name"),
    (b"\n \n", "the file is empty"),
    ("concept_id,name\na,Caf\u00e9\n".encode("latin-1"),
     "line 2: not UTF-8 (byte 0xe9 at column 6); save the file as UTF-8"),
    ("concept_id,name\n".encode("utf-16"), "is UTF-16 text; save it as UTF-8"),
    (b'concept_id,name\na,"unclosed\n', "line 2: unexpected end of data; check the double quotes"),
])
def test_unreadable_files_name_the_line_and_the_fix(tmp_path, data, message):
    found, problems, path = table(tmp_path, data)
    assert not found.readable
    assert len(problems) == 1 and problems[0].startswith(str(path)) and message in problems[0]


def test_empty_and_repeated_ids_are_errors(tmp_path):
    found, problems, path = table(tmp_path, "concept_id,name\na,Alpha\n,Nobody\na,Again\n")
    assert [r.line for r in found.rows] == [2]
    assert problems == [f"{path} line 3: empty concept_id; give every row an id",
                        f"{path} line 4: concept_id 'a' is already used on line 2; ids must be unique"]


def test_a_missing_table_says_which_columns_to_create(tmp_path):
    problems: list[str] = []
    assert not read_table(tmp_path / "absent.csv", COLUMNS, OPTIONAL, problems).readable
    assert problems == [f"{tmp_path / 'absent.csv'}: file not found; create it with the columns concept_id, name"]


@pytest.mark.parametrize("cell, expected, problem", [
    ("", True, False), ("TRUE", True, False), ("no", False, False), ("0", False, False),
    ("Granovetter", True, True),
])
def test_active_cells_say_true_or_false(cell, expected, problem):
    problems: list[str] = []
    assert definitions.parse_bool(cell, "f line 2", "active", problems) is expected
    assert bool(problems) is problem
    if problem:
        assert problems == ["f line 2: active is 'Granovetter'; write true or false (empty means true)"]


def test_text_files_must_be_utf8_and_not_empty_and_a_bom_is_dropped(tmp_path):
    path = tmp_path / "weak-ties.txt"
    path.write_bytes(codecs.BOM_UTF8 + b"Granovetter's weak ties.")
    assert read_text(path, "concept description") == "Granovetter's weak ties."
    path.write_bytes("line one\nCaf\u00e9 society".encode("cp1252"))
    with pytest.raises(DefinitionError, match=rf"^{path} line 2: not UTF-8 \(byte 0xe9 at column 4\)"):
        read_text(path, "concept description")
    path.write_text("  \n\n")
    with pytest.raises(DefinitionError, match="the concept description file is empty; write its text"):
        read_text(path, "concept description")
    with pytest.raises(DefinitionError, match="concept description file not found"):
        read_text(tmp_path / "absent.txt", "concept description")
