"""Normalisation of what identifies a person: phones to E.164, emails to one lower-case form."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import phonenumbers
from email_validator import EmailNotValidError, validate_email

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
_MAX_PHONE_INPUT = 64


@dataclass(frozen=True)
class Phone:
    """A phone as we keep it: ``e164`` when it parsed, else only the raw text."""

    raw: str
    e164: str | None
    extension: str | None = None


def _valid(num: phonenumbers.PhoneNumber) -> bool:
    return phonenumbers.is_valid_number(num)


def normalize_phone(raw: str, region: str = "RU") -> Phone:
    """E.164 for ``raw`` read in ``region``; numbers not valid there are tried as international.

    ``8 (916) 555-12-34`` in RU → ``+79165551234``; ``14155550142`` → ``+14155550142``;
    ``… доб. 12`` keeps ``12`` as the extension, apart from the number.
    """
    text = (raw or "").strip()[:_MAX_PHONE_INPUT]
    if not re.search(r"\d", text):
        return Phone(raw=text, e164=None)
    candidates: list[tuple[str, str | None]] = [(text, region.upper() or None)]
    digits = re.sub(r"\D", "", text.split("доб")[0].split("ext")[0])
    if not text.startswith("+") and digits:
        candidates.append(("+" + digits, None))
    for candidate, reg in candidates:
        try:
            num = phonenumbers.parse(candidate, reg)
        except phonenumbers.NumberParseException:
            continue
        if _valid(num):
            e164 = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
            return Phone(raw=text, e164=e164, extension=num.extension or None)
    return Phone(raw=text, e164=None)


def phone_key(raw: str, region: str = "RU") -> str | None:
    """The E.164 form, or ``None`` when ``raw`` is not a phone number."""
    return normalize_phone(raw, region).e164


def phone_search_key(raw: str, region: str = "RU") -> str | None:
    """For searching: E.164 when it parses, else the digits (may be a fragment)."""
    e164 = phone_key(raw, region)
    if e164:
        return e164
    digits = re.sub(r"\D", "", raw or "")
    return digits or None


def normalize_email(raw: str) -> str | None:
    """The address in lower case with an IDN domain in Unicode; ``None`` when it is not one."""
    text = (raw or "").strip().strip("<>").strip()
    if not text or len(text) > 320:
        return None
    try:
        result = validate_email(text, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError:
        return None
    return result.normalized.lower()


def utm_from_url(url: str | None) -> dict[str, str]:
    """The ``utm_*`` tags in a page URL's query string."""
    if not url:
        return {}
    try:
        query = parse_qs(urlsplit(url).query)
    except ValueError:
        return {}
    return {k: query[k][-1] for k in UTM_KEYS if query.get(k) and query[k][-1]}


_WORD = re.compile(r"[\w]+", re.UNICODE)


def name_words(name: str | None) -> list[str]:
    """Lower-case words of a name for prefix search (``Иванов Пётр`` → ``иванов``, ``пётр``, ``петр``)."""
    words: list[str] = []
    for w in _WORD.findall((name or "").lower()):
        words.append(w)
        if "ё" in w:
            words.append(w.replace("ё", "е"))
    return words


def clean_text(value: str | None, limit: int = 2000) -> str | None:
    """Text safe to store and show: control characters dropped, length bounded."""
    if value is None:
        return None
    text = "".join(ch for ch in str(value) if ch in "\t\n" or (ord(ch) >= 32 and ord(ch) != 127))
    return text.strip()[:limit]


IDENTITY_KEY_PURPOSE = "identity-digest"


def identity_digest(tenant_id: str, identity: str, key: bytes) -> str:
    """A one-way key for one normalised identity (E.164 phone, email, ``telegram:<id>``) of a
    tenant. Services that keep a sender's identity outside the contacts service store this key
    beside it, so that ``contact.erased`` can name what to forget without carrying it in clear.
    It is an HMAC under the installation's ``key`` (``SecretBox.derive(IDENTITY_KEY_PURPOSE)``):
    without the key, nobody can test a guessed phone against it, the tenant id at hand or not."""
    return hmac.new(key, f"{tenant_id}\n{identity}".encode(), hashlib.sha256).hexdigest()
