"""How a contact and a timeline item are kept, and how they are shown."""

from __future__ import annotations

import re
from typing import Any

import phonenumbers

from shared.clock import iso
from shared.normalize import UTM_KEYS, name_words, normalize_email, normalize_phone


def phone_words(e164: str) -> list[str]:
    """Digit strings a phone is searched by: international and national forms."""
    digits = e164.lstrip("+")
    words = {digits}
    try:
        num = phonenumbers.parse(e164, None)
        national = phonenumbers.national_significant_number(num)
        words.add(national)
        if num.country_code == 7:
            words.add("8" + national)
    except phonenumbers.NumberParseException:
        pass
    return sorted(words)


def email_words(email: str) -> list[str]:
    local, _, domain = email.partition("@")
    return [email, *[w for w in re.split(r"[._+\-@]", local) if w], domain]


def search_words(name: str | None, phones: list[str], emails: list[str]) -> list[str]:
    words: set[str] = set(name_words(name))
    for p in phones:
        words.update(phone_words(p))
    for e in emails:
        words.update(email_words(e))
    return sorted(words)


def name_key(name: str | None) -> str | None:
    """A name in one comparable form: lower case, ё → е, words sorted (``Петров Иван`` == ``иван петров``)."""
    words = sorted({w.replace("ё", "е") for w in name_words(name)})
    return " ".join(words) or None


def normalize_identities(
    phones: list[str], emails: list[str], region: str
) -> tuple[list[str], list[str], dict[str, str]]:
    """Phones to E.164 and emails to lower case; unparseable values are errors by field index."""
    out_p: list[str] = []
    out_e: list[str] = []
    errors: dict[str, str] = {}
    for i, raw in enumerate(phones):
        e164 = normalize_phone(raw, region).e164
        if not e164:
            errors[f"phones.{i}"] = "is not a phone number"
        elif e164 not in out_p:
            out_p.append(e164)
    for i, raw in enumerate(emails):
        norm = normalize_email(raw)
        if not norm:
            errors[f"emails.{i}"] = "is not an email address"
        elif norm not in out_e:
            out_e.append(norm)
    return out_p, out_e, errors


def source_of(channel_id: str | None, kind: str | None, utm: dict[str, str] | None) -> dict[str, Any]:
    src: dict[str, Any] = {"channel_id": channel_id, "kind": kind}
    for k in UTM_KEYS:
        src[k] = (utm or {}).get(k)
    return src


def contact_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["_id"],
        "name": doc.get("name"),
        "phones": doc.get("phones", []),
        "emails": doc.get("emails", []),
        "handles": doc.get("handles", []),
        "company_id": doc.get("company_id"),
        "owner_id": doc.get("owner_id"),
        "tags": doc.get("tags", []),
        "custom": doc.get("custom", {}),
        "source": doc.get("source"),
        "created_at": iso(doc.get("created_at")),
        "updated_at": iso(doc.get("updated_at")),
        "merged_into": doc.get("merged_into"),
    }


def timeline_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["_id"],
        "kind": doc["kind"],
        "direction": doc["direction"],
        "occurred_at": iso(doc["occurred_at"]),
        "channel_id": doc.get("channel_id"),
        "summary": doc.get("summary") or "",
        "data": doc.get("data") or {},
    }


def inbox_view(doc: dict[str, Any]) -> dict[str, Any]:
    sender = doc.get("sender") or {}
    inter = doc.get("interaction") or {}
    return {
        "id": doc["_id"],
        "status": doc["status"],
        "channel_id": doc.get("channel_id"),
        "channel_kind": doc.get("channel_kind"),
        "received_at": iso(doc.get("received_at")),
        "sender": {
            "name": sender.get("name"),
            "phones": sender.get("phones", []),
            "emails": sender.get("emails", []),
        },
        "interaction": timeline_view({**inter, "_id": doc.get("interaction_id") or doc["_id"]}),
        "contact_id": doc.get("contact_id"),
        "resolved_at": iso(doc.get("resolved_at")),
    }


def company_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["_id"],
        "name": doc.get("name"),
        "domain": doc.get("domain"),
        "phones": doc.get("phones", []),
        "emails": doc.get("emails", []),
        "owner_id": doc.get("owner_id"),
        "tags": doc.get("tags", []),
        "custom": doc.get("custom") or {},
        "created_at": iso(doc.get("created_at")),
        "updated_at": iso(doc.get("updated_at")),
    }
