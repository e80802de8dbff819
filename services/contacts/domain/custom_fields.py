"""Per-tenant custom field definitions and the validation of a record's ``custom`` object.

Pure: no I/O. A wrong value is reported as ``{"custom.<key>": reason}`` and never stored; values
are stored in one canonical form (E.164 phones, lower-case emails, ``YYYY-MM-DD`` dates).
"""

from __future__ import annotations

import math
import re
from datetime import date
from typing import Any, get_args
from urllib.parse import urlsplit

from services.contacts.api import CustomEntity, CustomFieldOut, CustomType
from shared.normalize import clean_text, normalize_email, normalize_phone

ENTITIES: tuple[str, ...] = get_args(CustomEntity)
TYPES: tuple[str, ...] = get_args(CustomType)
KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_STRING = 2000
MAX_OPTIONS = 200


def check_definition(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """A field definition from ``{"entity", "key", "label", "type", "options"?, "required"?}``."""
    errors: dict[str, str] = {}
    entity = body.get("entity")
    if entity not in ENTITIES:
        errors["entity"] = f"must be one of {', '.join(ENTITIES)}"
    key = body.get("key")
    if not isinstance(key, str) or not KEY_RE.match(key):
        errors["key"] = "must be lower-case latin letters, digits and _ (starting with a letter, ≤ 64)"
    label = clean_text(body.get("label"), 200) if isinstance(body.get("label"), str) else None
    if not label:
        errors["label"] = "is required"
    ftype = body.get("type")
    if ftype not in TYPES:
        errors["type"] = f"must be one of {', '.join(TYPES)}"
    options: list[str] = []
    raw_options = body.get("options")
    if ftype in ("enum", "multi_enum"):
        if not isinstance(raw_options, list) or not raw_options:
            errors["options"] = "a non-empty list of strings is required for enum fields"
        else:
            for opt in raw_options:
                text = clean_text(opt, 200) if isinstance(opt, str) else None
                if not text:
                    errors["options"] = "must be non-empty strings"
                    break
                if text not in options:
                    options.append(text)
            if len(options) > MAX_OPTIONS:
                errors["options"] = f"at most {MAX_OPTIONS} options"
    elif raw_options:
        errors["options"] = "only enum and multi_enum fields have options"
    required = body.get("required", False)
    if not isinstance(required, bool):
        errors["required"] = "must be true or false"
    definition = {
        "entity": entity,
        "key": key,
        "label": label,
        "type": ftype,
        "options": options,
        "required": bool(required),
    }
    return definition, errors


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip().replace(",", ".")
        try:
            num = float(text)
        except ValueError:
            return None
        if not math.isfinite(num):
            return None
        return int(num) if re.fullmatch(r"[-+]?\d+", text) else num
    return None


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    return None


def coerce(field: dict[str, Any], value: Any, region: str = "RU") -> tuple[Any, str | None]:
    """``(canonical value, None)`` or ``(None, reason)`` for one value of ``field``."""
    ftype = field["type"]
    if ftype == "string":
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            return None, "must be a string"
        text = clean_text(str(value), MAX_STRING + 1) or ""
        if len(text) > MAX_STRING:
            return None, f"must be at most {MAX_STRING} characters"
        return text, None
    if ftype == "number":
        num = _number(value)
        return (num, None) if num is not None else (None, "must be a number")
    if ftype == "bool":
        flag = _bool(value)
        return (flag, None) if flag is not None else (None, "must be true or false")
    if ftype == "date":
        if not isinstance(value, str):
            return None, "must be a date, YYYY-MM-DD"
        try:
            return date.fromisoformat(value.strip()[:10]).isoformat(), None
        except ValueError:
            return None, "must be a date, YYYY-MM-DD"
    if ftype == "enum":
        if value not in field["options"]:
            return None, f"must be one of: {', '.join(field['options'])}"
        return value, None
    if ftype == "multi_enum":
        if not isinstance(value, list):
            return None, "must be a list of options"
        bad = [v for v in value if v not in field["options"]]
        if bad:
            return None, f"unknown options {bad!r}; allowed: {', '.join(field['options'])}"
        return list(dict.fromkeys(value)), None
    if ftype == "phone":
        e164 = normalize_phone(value, region).e164 if isinstance(value, str) else None
        return (e164, None) if e164 else (None, "is not a phone number")
    if ftype == "email":
        email = normalize_email(value) if isinstance(value, str) else None
        return (email, None) if email else (None, "is not an email address")
    if ftype == "url":
        if not isinstance(value, str) or len(value) > 2000:
            return None, "must be an http(s) URL"
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return None, "must be an http(s) URL"
        return value.strip(), None
    return None, "has an unknown type"


def validate_custom(
    fields: list[dict[str, Any]],
    custom: Any,
    *,
    existing: dict[str, Any] | None = None,
    partial: bool = False,
    region: str = "RU",
) -> tuple[dict[str, Any], dict[str, str]]:
    """The record's new ``custom`` object and the errors by ``custom.<key>``.

    ``partial`` (PATCH): ``custom`` is merged into ``existing``; a ``null`` value removes a key.
    Otherwise (create) ``custom`` is the whole object and required fields must be present.
    """
    if custom is None:
        custom = {}
    if not isinstance(custom, dict):
        return {}, {"custom": "must be an object"}
    by_key = {f["key"]: f for f in fields}
    out: dict[str, Any] = dict(existing or {}) if partial else {}
    errors: dict[str, str] = {}
    for key, value in custom.items():
        name = f"custom.{key}"
        field = by_key.get(key)
        if field is None:
            errors[name] = "is not a defined custom field"
            continue
        if value is None or value == "" or value == []:
            out.pop(key, None)
            continue
        canonical, reason = coerce(field, value, region)
        if reason:
            errors[name] = reason
        else:
            out[key] = canonical
    for field in fields:
        key = field["key"]
        checked = key in custom if partial else True  # a PATCH only answers for keys it touches
        if field.get("required") and checked and key not in out and f"custom.{key}" not in errors:
            errors[f"custom.{key}"] = "is required"
    return (out if not errors else {}), errors


def definition_view(doc: dict[str, Any]) -> CustomFieldOut:
    return CustomFieldOut(
        id=doc["_id"],
        entity=doc["entity"],
        key=doc["key"],
        label=doc["label"],
        type=doc["type"],
        options=doc.get("options") or [],
        required=bool(doc.get("required")),
    )
