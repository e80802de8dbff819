"""Helpers shared by the form and ad-lead adapters (``form``, ``tilda``, ``typeform``...).

Everything here is pure: it turns raw bytes into a flat ``{field name: text}`` mapping, picks the
contact out of it, finds UTM tags, and builds a :class:`Captured`. Hostile input never raises
anything but :class:`HookError`.

Decisions (documented once, used by every form adapter):

* ``data.fields`` maps each submitted field name (as the sender spelt it, trimmed) to **one
  string**. Nested JSON objects are flattened with dots (``contact.phone``); lists of scalars and
  repeated urlencoded keys (checkboxes) are joined with ``", "``; lists of objects are flattened
  with their index (``items.0.sku``); ``null`` becomes ``""``; booleans ``"true"``/``"false"``.
* Control characters (except tab and newline) are removed from names and values; markup such as
  ``<script>`` is kept as plain text (rendering code escapes it, we never interpret it).
* ``Captured.utm`` and ``data.utm`` hold only the UTM keys that were found (missing keys are
  absent).
* A phone candidate must contain 3 to 20 digits and be at most 64 characters; an email candidate
  must look like ``local@domain`` and be at most 254 characters. Values that do not qualify stay in
  ``data.fields`` but are not used as the contact.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .base import (
    UTM_KEYS,
    ChannelView,
    HookError,
    HookResponse,
    RawRequest,
    Sender,
    constant_time_equal,
)

MAX_BODY_BYTES = 1_000_000
MAX_FIELDS = 500
MAX_DEPTH = 16
MAX_NAME_CHARS = 200
MAX_VALUE_CHARS = 20_000
MAX_KEY_CHARS = 200

URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
JSON_TYPES = ("application/json", "text/json")

# The names API.md lists, plus their common spellings and Russian labels.
NAME_KEYS = ("name", "fio", "full_name", "fullname", "your-name", "фио", "имя")
FIRST_NAME_KEYS = ("first_name", "firstname")
LAST_NAME_KEYS = ("last_name", "lastname", "фамилия")
PHONE_KEYS = ("phone", "tel", "telephone", "mobile", "your-phone", "phone_number", "телефон")
EMAIL_KEYS = ("email", "mail", "your-email", "e-mail", "почта")
SUBMISSION_ID_KEYS = ("submission_id", "form_submission_id", "id", "tranid")
FORM_NAME_KEYS = ("form_name", "formname", "form", "form_title", "formid", "form_id")
PAGE_URL_KEYS = ("page_url", "page.url", "pageurl")

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
_EMAIL = re.compile(r"^[^@\s<>()\[\],;:\"]{1,64}@[^@\s<>()\[\],;:\"]+\.[^@\s<>()\[\],;:\"]+$")

JSON_ACCEPTED = b'{"status":"accepted"}'


# ---- errors --------------------------------------------------------------------------------------


def unsupported_type(got: str, expected: str) -> HookError:
    return HookError(
        415,
        "Unsupported media type",
        f"Content type {got or '(none)'!r} is not accepted here; send {expected}.",
    )


def unparseable(detail: str) -> HookError:
    return HookError(400, "Malformed request", detail)


def invalid(errors: dict[str, str], detail: str = "The submission is not valid.") -> HookError:
    return HookError(422, "Invalid submission", detail, errors)


def no_contact() -> HookError:
    return invalid({"contact": "A phone, an email or a name is required."})


# ---- text cleaning -------------------------------------------------------------------------------


def clean_text(value: str, limit: int = MAX_VALUE_CHARS) -> str:
    """Drop control characters, trim, cap the length."""
    return _CONTROL.sub("", value).strip()[:limit]


def scalar_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return clean_text(str(value))


# ---- body parsing --------------------------------------------------------------------------------


def _charset(request: RawRequest) -> str:
    raw = request.header("content-type") or ""
    m = re.search(r"charset\s*=\s*\"?([A-Za-z0-9_\-]+)", raw)
    return (m.group(1) if m else "utf-8").lower()


def decode_bytes(raw: bytes, charset: str = "utf-8") -> str:
    """Decode with the declared charset; fall back to Windows-1251 (common on Russian sites)."""
    for enc in (charset, "utf-8", "cp1251"):
        try:
            return raw.decode(enc)
        except (UnicodeDecodeError, LookupError):
            continue
    return raw.decode("utf-8", errors="replace")


def check_size(request: RawRequest) -> None:
    if len(request.body) > MAX_BODY_BYTES:
        raise HookError(413, "Payload too large", f"The body exceeds {MAX_BODY_BYTES} bytes.")


def parse_urlencoded(body: bytes, charset: str = "utf-8") -> list[tuple[str, str]]:
    text = body.decode("ascii", errors="replace")
    for enc in (charset, "utf-8", "cp1251"):
        try:
            return parse_qsl(
                text,
                keep_blank_values=True,
                encoding=enc,
                errors="strict",
                max_num_fields=MAX_FIELDS * 4,
            )
        except LookupError:
            continue
        except UnicodeDecodeError:
            continue
        except ValueError as exc:  # too many fields
            raise invalid({"fields": f"Too many fields (at most {MAX_FIELDS})."}) from exc
    return parse_qsl(text, keep_blank_values=True, errors="replace", max_num_fields=MAX_FIELDS * 4)


def parse_multipart(request: RawRequest) -> list[tuple[str, str]]:
    """Text fields of a ``multipart/form-data`` body; uploaded files are kept as their file name."""
    header = (request.header("content-type") or "").encode("latin-1", errors="replace")
    try:
        msg = BytesParser(policy=policy.HTTP).parsebytes(
            b"Content-Type: " + header + b"\r\n\r\n" + request.body
        )
        if not msg.is_multipart():
            raise unparseable("The multipart body has no boundary or no parts.")
        out: list[tuple[str, str]] = []
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not isinstance(name, str):
                continue
            filename = part.get_filename()
            if filename:
                out.append((name, filename))
                continue
            payload = part.get_payload(decode=True)
            raw = payload if isinstance(payload, bytes) else b""
            out.append((name, decode_bytes(raw, part.get_content_charset() or "utf-8")))
            if len(out) > MAX_FIELDS * 4:
                raise invalid({"fields": f"Too many fields (at most {MAX_FIELDS})."})
        return out
    except HookError:
        raise
    except Exception as exc:  # the stdlib parser is lenient, but be safe on hostile bytes
        raise unparseable("The multipart body could not be parsed.") from exc


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A JSON object or :class:`HookError` 400."""
    try:
        value = json.loads(decode_bytes(body))
    except (ValueError, RecursionError) as exc:
        raise unparseable("The body is not valid JSON.") from exc
    if not isinstance(value, dict):
        raise unparseable("The JSON body must be an object.")
    return value


def is_json_type(content_type: str) -> bool:
    return content_type in JSON_TYPES or content_type.endswith("+json")


def require_json(request: RawRequest) -> dict[str, Any]:
    check_size(request)
    if not is_json_type(request.content_type):
        raise unsupported_type(request.content_type, "application/json")
    return parse_json_object(request.body)


def pairs_to_fields(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Repeated keys (checkboxes, ``interest[]``) are joined with ``", "``."""
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        k = clean_text(key, MAX_KEY_CHARS)
        if k.endswith("[]"):
            k = k[:-2]
        if not k:
            continue
        grouped.setdefault(k, []).append(clean_text(value))
    if len(grouped) > MAX_FIELDS:
        raise invalid({"fields": f"Too many fields (at most {MAX_FIELDS})."})
    return {k: ", ".join(v for v in vs if v) if len(vs) > 1 else vs[0] for k, vs in grouped.items()}


def flatten(obj: Mapping[str, Any]) -> dict[str, str]:
    """Flatten nested JSON into dotted names; see the module docstring for the value rules."""
    out: dict[str, str] = {}

    def add(key: str, value: str) -> None:
        if len(out) >= MAX_FIELDS and key not in out:
            raise invalid({"fields": f"Too many fields (at most {MAX_FIELDS})."})
        out[key] = value

    def walk(prefix: str, value: Any, depth: int) -> None:
        if depth > MAX_DEPTH:
            try:
                text = json.dumps(value, ensure_ascii=False, default=str)
            except (ValueError, RecursionError):
                text = "[nested too deeply]"
            add(prefix, clean_text(text))
            return
        if isinstance(value, Mapping):
            if not value and prefix:
                add(prefix, "")
            for k, v in value.items():
                key = clean_text(str(k), MAX_KEY_CHARS)
                walk(f"{prefix}.{key}" if prefix else key, v, depth + 1)
        elif isinstance(value, list):
            if all(not isinstance(v, Mapping | list) for v in value):
                add(prefix, ", ".join(t for t in (scalar_text(v) for v in value) if t))
            else:
                for i, v in enumerate(value):
                    walk(f"{prefix}.{i}", v, depth + 1)
        else:
            if prefix:
                add(prefix, scalar_text(value))

    walk("", obj, 0)
    return out


def parse_form_fields(request: RawRequest, *, allow_json: bool = True) -> dict[str, str]:
    """Fields of an urlencoded, multipart or (when allowed) JSON body, flattened."""
    check_size(request)
    ctype = request.content_type
    if ctype == URLENCODED:
        return pairs_to_fields(parse_urlencoded(request.body, _charset(request)))
    if ctype == MULTIPART:
        return pairs_to_fields(parse_multipart(request))
    if allow_json and is_json_type(ctype):
        return flatten(parse_json_object(request.body))
    expected = f"{URLENCODED} or {MULTIPART}" + (" or application/json" if allow_json else "")
    raise unsupported_type(ctype, expected)


# ---- field lookup and contact --------------------------------------------------------------------


# Nested objects under these top-level names describe the form or the page, not the person:
# their leaves (``form.name``, ``page.url``) are not looked up by their short name.
_NOT_CONTACT_PREFIXES = frozenset(
    {"form", "page", "site", "website", "meta", "tracking", "utm", "request", "referrer", "_meta"}
)


def _snake(key: str) -> str:
    return re.sub(r"[\s\-]+", "_", key.strip().lower())


class FieldIndex:
    """Case-insensitive view of flat fields, with ``config.field_map`` aliases applied.

    A nested field (``contact.phone``) is also reachable by its last segment (``phone``) unless a
    top-level field of that name exists or its first segment is a form/page container.
    """

    def __init__(self, fields: Mapping[str, str], field_map: Any = None):
        self.fields = fields
        self._exact: dict[str, str] = {}
        for k, v in fields.items():
            self._exact.setdefault(k.lower(), v)
        for k, v in fields.items():  # "First Name" is also reachable as first_name
            self._exact.setdefault(_snake(k), v)
        self._lower = dict(self._exact)
        for k, v in fields.items():
            if "." not in k or k.split(".", 1)[0].lower() in _NOT_CONTACT_PREFIXES:
                continue
            leaf = _snake(k.rsplit(".", 1)[-1])
            if leaf in self._exact:
                continue
            if not self._lower.get(leaf):
                self._lower[leaf] = v
        self._aliases: dict[str, list[str]] = {}
        for src, target in field_map.items() if isinstance(field_map, Mapping) else ():
            if isinstance(src, str) and isinstance(target, str):
                self._aliases.setdefault(target.strip().lower(), []).append(src.strip().lower())

    def get(self, *names: str) -> str | None:
        """The first non-empty value among ``names`` (mapped names first)."""
        for name in names:
            for src in self._aliases.get(name, ()):
                v = self._lower.get(src)
                if v:
                    return v
        for name in names:
            v = self._lower.get(name.lower()) or self._lower.get(_snake(name))
            if v:
                return v
        return None

    def get_exact(self, *names: str) -> str | None:
        """Like :meth:`get` but only top-level / full dotted names, no leaf matching or aliases."""
        for name in names:
            v = self._exact.get(name.lower()) or self._exact.get(_snake(name))
            if v:
                return v
        return None


def looks_like_phone(value: str) -> bool:
    digits = sum(c.isdigit() for c in value)
    return 3 <= digits <= 20 and len(value) <= 64


def looks_like_email(value: str) -> bool:
    return len(value) <= 254 and bool(_EMAIL.match(value))


def build_sender(
    name: str | None,
    phones: Iterable[str | None],
    emails: Iterable[str | None],
    handles: Iterable[str] = (),
) -> Sender:
    ph: list[str] = []
    for p in phones:
        if p and looks_like_phone(p.strip()) and p.strip() not in ph:
            ph.append(p.strip())
    em: list[str] = []
    for e in emails:
        if e and looks_like_email(e.strip()) and e.strip() not in em:
            em.append(e.strip())
    nm = clean_text(name, MAX_NAME_CHARS) if name else None
    return Sender(name=nm or None, phones=tuple(ph), emails=tuple(em), handles=tuple(handles))


def sender_from_fields(idx: FieldIndex) -> Sender:
    name = idx.get(*NAME_KEYS)
    if not name:
        first = idx.get(*FIRST_NAME_KEYS)
        last = idx.get(*LAST_NAME_KEYS)
        name = " ".join(p for p in (first, last) if p) or None
    return build_sender(name, [idx.get(*PHONE_KEYS)], [idx.get(*EMAIL_KEYS)])


def has_contact(sender: Sender) -> bool:
    return bool(sender.name or sender.phones or sender.emails)


# ---- UTM -----------------------------------------------------------------------------------------


def utm_from_url(url: str | None) -> dict[str, str]:
    if not url:
        return {}
    try:
        query = urlsplit(url.strip()).query
    except ValueError:
        return {}
    found: dict[str, str] = {}
    for k, v in parse_qsl(query, keep_blank_values=False, errors="replace"):
        key = k.lower()
        if key in UTM_KEYS and key not in found:
            value = clean_text(v, 500)
            if value:
                found[key] = value
    return found


def utm_from_fields(idx: FieldIndex) -> dict[str, str]:
    """UTM tags the form sent explicitly: top-level ``utm_*`` fields, or a ``utm`` object
    (``utm.utm_source`` or ``utm.source``); a top-level field wins over the object."""
    found: dict[str, str] = {}
    for key in UTM_KEYS:
        short = key.removeprefix("utm_")
        v = idx.get(key) or idx.get_exact(f"utm.{key}", f"utm.{short}")
        if v:
            found[key] = clean_text(v, 500)
    return found


def collect_utm(idx: FieldIndex, page_url: str | None, referer: str | None) -> dict[str, str]:
    """UTM from the page URL's query (else the Referer's), merged with the explicit fields, which
    win tag by tag: a URL with ``utm_content`` and an explicit ``utm`` object give both."""
    from_url = utm_from_url(page_url) or utm_from_url(referer)
    return {**from_url, **utm_from_fields(idx)}


# ---- secrets and identity ------------------------------------------------------------------------


def require_token(channel: ChannelView, request: RawRequest) -> None:
    """``secrets.token``, when set, must match ``X-CRM-Token`` or ``?token=``."""
    expected = channel.secrets.get("token")
    if not expected:
        return
    got = request.header("x-crm-token") or request.query_params().get("token") or ""
    if not constant_time_equal(got.strip(), expected):
        raise HookError(401, "Invalid token", "X-CRM-Token or ?token= is missing or wrong.")


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def safe_id(value: Any, limit: int = 200) -> str:
    """An id fit for an idempotency key: no control characters; an over-long id is hashed so two
    different long ids never collide by truncation."""
    text = _CONTROL.sub("", str(value)).strip()
    if len(text) > limit:
        return "sha256:" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()
    return text


def parse_time(value: Any, fallback: datetime) -> datetime:
    """ISO 8601 or Unix seconds/milliseconds → aware datetime (UTC when no zone), else fallback."""
    if value is None or value == "":
        return fallback
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            ts = float(value)
        elif isinstance(value, str) and re.fullmatch(r"\d{9,13}(\.\d+)?", value.strip()):
            ts = float(value.strip())
        elif isinstance(value, str):
            text = value.strip()
            if text.endswith(("Z", "z")):
                text = text[:-1] + "+00:00"
            text = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", text)
            dt = datetime.fromisoformat(text)
            return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
        else:
            return fallback
        if ts > 1e11:  # milliseconds
            ts /= 1000
        return datetime.fromtimestamp(ts, tz=UTC)
    except (ValueError, OverflowError, OSError):
        return fallback


def json_response(body: bytes = JSON_ACCEPTED, status: int = 200) -> HookResponse:
    return HookResponse(status=status, body=body, content_type="application/json")


def text_response(text: str = "ok", status: int = 200) -> HookResponse:
    return HookResponse(status=status, body=text.encode(), content_type="text/plain; charset=utf-8")


def obj(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a JSON object, else an empty mapping (hostile payloads vary types)."""
    return value if isinstance(value, Mapping) else {}


def lst(value: Any) -> list[Any]:
    """``value`` when it is a JSON array, else an empty list."""
    return value if isinstance(value, list) else []
