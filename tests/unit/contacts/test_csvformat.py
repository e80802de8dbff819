"""The CSV format of contact import and export."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import AsyncIterator

import pytest

from services.contacts.domain import csvformat as csvio

pytestmark = pytest.mark.unit


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def records(data: bytes, size: int = 7) -> list[tuple[int, str]]:
    return [r async for r in csvio.split_records(chunks_of(data, size))]


async def test_records_split_on_line_breaks_outside_quotes_with_their_line_numbers() -> None:
    data = 'name,comment\r\nА,"x\r\ny"\r\n\r\nБ,"он сказал ""да"""\nВ,"a\u2028b"\rГ,z'.encode()
    got = await records(data)
    assert [line for line, _ in got] == [1, 2, 5, 6, 7]
    assert next(csv.reader(io.StringIO(got[1][1]))) == ["А", "x\r\ny"]
    assert next(csv.reader(io.StringIO(got[2][1]))) == ["Б", 'он сказал "да"']
    assert next(csv.reader(io.StringIO(got[3][1]))) == ["В", "a\u2028b"]
    assert got[4][1] == "Г,z"


@pytest.mark.parametrize("size", [1, 3, 4096, 100_000])
async def test_multibyte_text_cut_anywhere_decodes_the_same(size: int) -> None:
    data = ("\ufeffname\n" + "Ёлкина Жанна\n" * 50).encode()
    got = await records(data, size)
    assert got[0][1].strip() == "name"
    assert {r.strip() for _, r in got[1:]} == {"Ёлкина Жанна"}


async def test_windows_1251_is_recognised() -> None:
    got = await records("name\nЩукин\n".encode("cp1251"))
    assert got[1][1].strip() == "Щукин"


async def test_the_stream_is_consumed_lazily() -> None:
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        yield b"name\n"
        while True:
            pulled += 1
            yield b"x\n" * 10

    seen = 0
    async for _ in csvio.split_records(endless()):
        seen += 1
        if seen == 25:
            break
    assert pulled * 20 <= 4096 + 40  # the encoding sniff, then record by record


def test_header_aliases_and_custom_columns() -> None:
    cols = csvio.parse_header("\ufeffFIO,Tel,E-mail,Mail,custom.segment,Other")
    assert cols == ["name", "phones", "", "emails", "custom.segment", ""]
    assert csvio.header_problem(cols) is None
    assert csvio.header_problem(csvio.parse_header("foo,bar"))


def test_row_normalises_phones_emails_and_tags() -> None:
    cols = csvio.parse_header("name,phone,email,tags,owner_id,custom.segment")
    row = csvio.parse_row(cols, 3, "Иван,8 916 555-12-34; +1 415 555 0142,IVAN@EX.RU,a;b, u1 ,B2B", "RU")
    assert row is not None
    assert row.phones == ["+79165551234", "+14155550142"]
    assert row.emails == ["ivan@ex.ru"] and row.tags == ["a", "b"]
    assert row.owner_id == "u1" and row.custom == {"segment": "B2B"} and row.line == 3


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (",12,", "phone"),
        ("X,,nope@", "email"),
        (",,,vip", "a name, a phone or an email is required"),
        ("a,b,c,d,e", "cells but the header has"),
    ],
)
def test_bad_rows_say_why(text: str, reason: str) -> None:
    cols = csvio.parse_header("name,phone,email" + (",tags" if "vip" in text else ""))
    with pytest.raises(csvio.RowError) as exc:
        csvio.parse_row(cols, 2, text, "RU")
    assert reason in exc.value.reason


def test_a_row_of_empty_cells_is_skipped() -> None:
    assert csvio.parse_row(csvio.parse_header("name,phone"), 2, ",", "RU") is None


def test_export_row_guards_against_formulas_but_keeps_phones() -> None:
    contact = {
        "id": "c1",
        "name": '=HYPERLINK("x")',
        "phones": ["+79165551234"],
        "emails": [],
        "tags": ["@vip"],
        "custom": {"channels": ["tg", "mail"]},
        "source": {"kind": "form", "utm_source": "yandex"},
    }
    row = dict(zip(csvio.export_header(["channels"]), csvio.export_row(contact, ["channels"]), strict=True))
    assert row["name"].startswith("'=") and row["tags"] == "'@vip"
    assert row["phones"] == "+79165551234"
    assert row["custom.channels"] == "tg;mail" and row["utm_source"] == "yandex"
    assert csvio.safe_cell("-1+2") == "-1+2" and csvio.safe_cell("-cmd") == "'-cmd"


def unclosed_quote(size: int) -> bytes:
    """The hostile import: an unclosed quote, then short lines (each one re-scanned by the old
    splitter, which grew one string by concatenation)."""
    return b'name,phone\n"open,1\n' + b"a,1\n" * (size // 4)


async def split_time(data: bytes) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        await records(data, 64 * 1024)
        best = min(best, time.perf_counter() - started)
    return best


async def test_splitting_is_linear_in_the_input_even_with_an_unclosed_quote() -> None:
    small, large = unclosed_quote(100_000), unclosed_quote(800_000)
    ratio = await split_time(large) / await split_time(small)
    # 8x the input: linear work takes about 8x the time, quadratic about 64x. The margin is wide.
    assert ratio < 24, ratio


async def test_a_record_over_the_cap_fails_alone_and_reading_resumes_at_the_next_line() -> None:
    data = b'name,phone\n"open,1\n' + b"x" * 10 + b"\n" + b"a,1\n" * 30 + b"Bob,+79991234567\n"
    got = [r async for r in csvio.split_records(chunks_of(data, 7), max_record=64)]
    assert got[0] == (1, "name,phone\n")
    assert (2, csvio.OVERSIZED) in got
    assert got[-1] == (34, "Bob,+79991234567\n")
    with pytest.raises(csvio.RowError, match="longer than"):
        csvio.parse_row(["name", "phones"], 2, csvio.OVERSIZED, "RU")


async def test_one_endless_line_is_cut_at_the_cap() -> None:
    data = b"name\n" + b"y" * 200_000 + b"\nAnna\n"
    got = await records(data, 4096)
    assert got == [(1, "name\n"), (2, csvio.OVERSIZED), (3, "Anna\n")]
