"""Charset guessing, header decoding, HTML to text and reply trimming."""

from __future__ import annotations

import base64

import pytest

from services.connectors.mail.text import (
    decode_bytes,
    decode_header_text,
    guess_decode,
    html_to_text,
    shorten,
    trim_reply,
)

pytestmark = pytest.mark.unit

RU = "Спасибо, счёт получили и оплатим завтра"


@pytest.mark.parametrize("codec", ["utf-8", "cp1251", "koi8-r"])
def test_guess_decode_tells_russian_encodings_apart(codec: str) -> None:
    assert guess_decode(RU.encode(codec)) == RU


@pytest.mark.parametrize(
    ("label", "codec"),
    [
        ("windows-1251", "cp1251"),
        ("CP-1251", "cp1251"),
        ("koi8-r", "koi8-r"),
        ("KOI8R", "koi8-r"),
        ("iso-8859-5", "iso8859_5"),
        ('"utf-8"', "utf-8"),
    ],
)
def test_decode_bytes_honours_labels_and_their_variants(label: str, codec: str) -> None:
    assert decode_bytes(RU.encode(codec), label) == RU


def test_utf8_mislabelled_as_windows1251_is_read_as_utf8() -> None:
    assert decode_bytes(RU.encode("utf-8"), "windows-1251") == RU


@pytest.mark.parametrize("label", ["x-unknown", "unknown-8bit", "base64", "rot13", "", None])
def test_unknown_or_non_text_labels_fall_back_to_guessing(label: str | None) -> None:
    assert decode_bytes(RU.encode("koi8-r"), label) == RU


def test_8bit_text_labelled_us_ascii_is_guessed() -> None:
    assert decode_bytes(RU.encode("cp1251"), "us-ascii") == RU


def test_decode_header_text_handles_q_b_mixed_and_folded_words() -> None:
    value = (
        "=?koi8-r?B?" + base64.b64encode("Счёт".encode("koi8-r")).decode() + "?=\r\n"
        " =?windows-1251?Q?_=ED=E0_=EE=EF=EB=E0=F2=F3?= (invoice)"
    )
    # RFC 2047: the folding whitespace between two encoded words is not part of the text
    assert decode_header_text(value) == "Счёт на оплату (invoice)"


def test_decode_header_text_reads_raw_8bit_headers() -> None:
    raw = "Заявка с сайта".encode("cp1251").decode("ascii", errors="surrogateescape")
    assert decode_header_text(raw) == "Заявка с сайта"


def test_html_to_text_drops_scripts_and_marks_quotes() -> None:
    html = (
        "<html><head><style>.a{}</style><script>var x=1</script></head><body>"
        "<div>Привет&nbsp;&mdash; <b>да</b></div><br><blockquote>old</blockquote></body></html>"
    )
    assert html_to_text(html) == "Привет — да\n\n> old"


def test_trim_reply_keeps_only_the_new_text() -> None:
    text = "Да, подходит.\n\nС уважением,\nОльга\n-- \nООО Ромашка\n> старое"
    assert trim_reply(text) == "Да, подходит.\n\nС уважением,\nОльга"


def test_trim_reply_handles_wrapped_on_wrote_line() -> None:
    text = "OK\n\nOn Mon, 3 Nov 2025 at 18:00, Very Long Name <someone@example.com>\nwrote:\n> x"
    assert trim_reply(text) == "OK"


def test_trim_reply_cuts_mobile_signatures() -> None:
    assert trim_reply("Буду в 10.\n\nОтправлено с iPhone") == "Буду в 10."


def test_shorten_collapses_whitespace_and_cuts_at_a_word() -> None:
    assert shorten("a  b\n c") == "a b c"
    long = "слово " * 100
    out = shorten(long, 50)
    assert len(out) <= 50 and out.endswith("слово…")
