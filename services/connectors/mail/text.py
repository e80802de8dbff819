"""Text helpers for mail: charsets, encoded-word headers, HTML to text, reply trimming.

Everything here is total: bad input yields the best text we can make, never an exception.
"""

from __future__ import annotations

import codecs
import re
from email.header import decode_header
from html.parser import HTMLParser

# Charset labels mail clients write that Python does not know, or that lie.
_CHARSET_ALIASES = {
    "cp-1251": "cp1251",
    "win-1251": "cp1251",
    "windows1251": "cp1251",
    "x-cp1251": "cp1251",
    "koi8r": "koi8_r",
    "koi8": "koi8_r",
    "x-koi8-r": "koi8_r",
    "koi8-u": "koi8_u",
    "x-mac-cyrillic": "mac_cyrillic",
    "iso-8859-8-i": "iso8859_8",
    "ks_c_5601-1987": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "utf8": "utf-8",
    "unicode-1-1-utf-7": "utf-7",
    "iso-8859-1": "cp1252",  # mislabelled Windows text is far more common than real C1 controls
    "us-ascii": "ascii",
}
_UTF_CODECS = {
    "utf-8",
    "utf-16",
    "utf-16-le",
    "utf-16-be",
    "utf-32",
    "utf-32-le",
    "utf-32-be",
    "utf-7",
}
_UNKNOWN_CHARSETS = {"unknown-8bit", "x-unknown", "unknown", "default", "x-user-defined", "8bit"}


def _codec_for(charset: str | None) -> str | None:
    """A Python codec name for a MIME charset label, or None if unknown/unusable."""
    if not charset:
        return None
    label = charset.strip().strip("\"'").lower()
    if not label or label in _UNKNOWN_CHARSETS:
        return None
    label = _CHARSET_ALIASES.get(label, label)
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        return None
    # Refuse codecs that are not text encodings (base64_codec, rot13, zlib...).
    if not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def guess_decode(data: bytes) -> str:
    """Decode bytes of unknown charset: UTF-8, else the likelier of Windows-1251 and KOI8-R.

    Russian text is mostly lower case. In KOI8-R lower-case letters are 0xC0-0xDF and upper-case
    0xE0-0xFF; in Windows-1251 it is the other way round. Counting the two ranges tells them apart.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    low = sum(1 for b in data if 0xC0 <= b <= 0xDF)
    high = sum(1 for b in data if 0xE0 <= b <= 0xFF)
    if low + high == 0:
        return data.decode("cp1252", errors="replace")
    codec = "koi8_r" if low > high else "cp1251"
    return data.decode(codec, errors="replace")


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode ``data`` declared as ``charset``; guess when unknown, replace what cannot decode."""
    codec = _codec_for(charset)
    if codec is None:
        return guess_decode(data)
    if codec == "ascii":
        if data.isascii():
            return data.decode("ascii")
        return guess_decode(data)  # 8-bit text labelled us-ascii
    if codec not in _UTF_CODECS and not data.isascii():
        try:
            return data.decode("utf-8")  # UTF-8 labelled as a legacy charset: valid UTF-8 wins
        except UnicodeDecodeError:
            pass
    try:
        return data.decode(codec)
    except UnicodeDecodeError:
        if codec != "utf-8":
            try:
                return data.decode("utf-8")  # mislabelled UTF-8 is common
            except UnicodeDecodeError:
                pass
        return data.decode(codec, errors="replace")
    except (LookupError, ValueError, TypeError):
        return guess_decode(data)


def _unescape_raw(value: str) -> bytes:
    """Undo the surrogateescape the bytes parser applies to 8-bit header bytes."""
    return value.encode("utf-8", errors="surrogateescape")


def decode_header_text(value: str | None) -> str:
    """A raw header value (as the bytes parser stored it) as readable text.

    Handles RFC 2047 encoded words (Q and B, any charset, unknown ones guessed), raw 8-bit headers
    (UTF-8, Windows-1251, KOI8-R), folding. Whitespace is collapsed.
    """
    if not value:
        return ""
    raw = _unescape_raw(value)
    text = raw.decode("ascii") if raw.isascii() else guess_decode(raw)
    if "=?" in text:
        try:
            pieces = decode_header(text)
        except Exception:  # malformed encoded word: keep the literal text
            pieces = [(text, None)]
        out: list[str] = []
        prev_encoded = False
        for chunk, charset in pieces:
            if isinstance(chunk, bytes):
                if charset:
                    part = decode_bytes(chunk, charset)
                else:  # decode_header hands plain runs back as raw-unicode-escape bytes
                    part = chunk.decode("raw-unicode-escape", errors="replace")
                encoded = charset is not None
            else:
                part, encoded = chunk, False
            if out and not (prev_encoded and encoded) and not part.startswith(" "):
                # decode_header drops the space between an encoded word and plain text
                if not out[-1].endswith(" "):
                    out.append(" ")
            out.append(part)
            prev_encoded = encoded
        text = "".join(out)
    return " ".join(text.split())


# ---- HTML to text --------------------------------------------------------------------------

_BLOCK_TAGS = {
    "p", "div", "br", "tr", "li", "ul", "ol", "table", "h1", "h2", "h3", "h4", "h5", "h6",
    "blockquote", "pre", "hr", "section", "article", "header", "footer", "address", "dd", "dt",
}  # fmt: skip
_SKIP_TAGS = {"script", "style", "head", "title", "noscript", "template"}


class _HtmlText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.skip_depth = 0
        self.quote_depth = 0
        self.line_quote = 0

    def _flush(self) -> None:
        text = " ".join("".join(self.current).split())
        if text:
            self.lines.append("> " * self.line_quote + text)
        elif self.lines and self.lines[-1] != "":
            self.lines.append("")
        self.current = []
        self.line_quote = self.quote_depth

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self.skip_depth += 1
            return
        if tag in _BLOCK_TAGS:
            self._flush()
        attr = dict(attrs)
        klass = attr.get("class") or ""
        if tag == "blockquote" or "gmail_quote" in klass or "yandex_quote" in klass:
            self.quote_depth += 1
            self.line_quote = self.quote_depth

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip_depth = max(0, self.skip_depth - 1)
            return
        if tag in _BLOCK_TAGS:
            self._flush()
        if tag == "blockquote" and self.quote_depth:
            self.quote_depth -= 1
            self.line_quote = self.quote_depth

    def handle_data(self, data: str) -> None:
        if not self.skip_depth:
            if not self.current:
                self.line_quote = self.quote_depth
            self.current.append(data)


def html_to_text(html: str) -> str:
    """Visible text of an HTML body; quoted blocks (``<blockquote>``) come out as ``> `` lines."""
    parser = _HtmlText()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # html.parser is lenient; this is belt and braces
        return " ".join(re.sub(r"<[^>]*>", " ", html).split())
    parser._flush()
    return "\n".join(parser.lines).strip()


# ---- reply trimming ------------------------------------------------------------------------

_ON_WROTE = re.compile(r"^\s*(On|Am|Le|El)\s.+", re.IGNORECASE)
_WROTE_END = re.compile(
    r"(wrote|schrieb|a écrit|escribió|пишет|написал|написала|написал\(а\))\s*:\s*$", re.IGNORECASE
)
_SEPARATORS = re.compile(
    r"^\s*-{2,}\s*(Original Message|Исходное сообщение|Forwarded message|Пересылаемое сообщение|"
    r"Пересланное сообщение|Переадресованное сообщение)\s*-{2,}\s*$",
    re.IGNORECASE,
)
_BEGIN_FWD = re.compile(
    r"^\s*(Begin forwarded message|Начало переадресованного сообщения)\s*:", re.IGNORECASE
)
_HEADER_FROM = re.compile(r"^\s*\**\s*(From|От|Von|De)\s*\**\s*:\s*\S", re.IGNORECASE)
_HEADER_NEXT = re.compile(
    r"^\s*\**\s*(Sent|Date|To|Subject|Отправлено|Дата|Кому|Тема|Gesendet|Envoyé)\s*\**\s*:",
    re.IGNORECASE,
)
_ADDR_COLON = re.compile(r"<[^<>\s@]+@[^<>\s]+>\s*:\s*$")
_UNDERSCORES = re.compile(r"^\s*_{10,}\s*$")
_MOBILE_SIG = re.compile(
    r"^\s*(Sent from my|Отправлено с (моего )?(iPhone|iPad|Android|мобильного)|"
    r"Отправлено из (мобильной )?(Яндекс|Почты Mail)|Get Outlook for)",
    re.IGNORECASE,
)


def _is_quote_header(lines: list[str], i: int) -> bool:
    line = lines[i]
    stripped = line.strip()
    nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
    if stripped.startswith(">"):
        return True
    if _SEPARATORS.match(line) or _BEGIN_FWD.match(line) or _UNDERSCORES.match(line):
        return True
    if _WROTE_END.search(stripped):
        return True
    if _ON_WROTE.match(line) and _WROTE_END.search(nxt):
        return True  # "On Mon, 1 Jan 2024 at 10:00, Ivan <ivan@x>\nwrote:"
    if _ADDR_COLON.search(stripped) and re.search(r"\d", stripped):
        return True  # Gmail RU / Yandex / Mail.ru: "пн, 12 мая 2025 г. в 10:15, Иван <i@x.ru>:"
    if _HEADER_FROM.match(line):
        following = [ln for ln in lines[i + 1 : i + 4] if ln.strip()]
        if any(_HEADER_NEXT.match(ln) for ln in following):
            return True  # Outlook "From:/Sent:/To:/Subject:" block
    return False


def trim_reply(text: str) -> str:
    """The new part of a reply: quoted history and signature cut off."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for i, line in enumerate(lines):
        if line.rstrip() in ("--", "-- ") or line == "-- ":
            break
        if _MOBILE_SIG.match(line):
            break
        if _is_quote_header(lines, i):
            break
        kept.append(line)
    return "\n".join(kept).strip()


def shorten(text: str, limit: int = 200) -> str:
    """Whitespace collapsed; at most ``limit`` characters, cut at a word with an ellipsis."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:-") + "…"
