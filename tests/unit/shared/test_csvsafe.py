"""The one CSV writer of the hub: formulas are neutralised, numbers and phones are kept."""

from __future__ import annotations

import csv
import io

import pytest

from shared.csvsafe import csv_line, csv_table, safe_cell


@pytest.mark.parametrize(
    "value",
    ["=1+2", "+cmd|' /C calc'!A0", "-HYPERLINK(1)", "@SUM(A1)", "\t=x", "\r=x", " =x", "\uff1dSUM(1)"],
)
def test_a_formula_becomes_text(value: str) -> None:
    assert safe_cell(value) == "'" + value


@pytest.mark.parametrize(
    "value", ["42", "-3", "-0.25", "+7 917 555-12-34", "+79165551234", "plain", "", None]
)
def test_numbers_phones_and_text_stay(value: object) -> None:
    assert safe_cell(value) == ("" if value is None else str(value))


def test_lines_and_tables_escape_every_cell_header_included() -> None:
    assert next(csv.reader(io.StringIO(csv_line(["=a", "b"])))) == ["'=a", "b"]
    table = csv_table([{"=h": "=v", "n": 1}])
    assert list(csv.reader(io.StringIO(table))) == [["'=h", "n"], ["'=v", "1"]]
