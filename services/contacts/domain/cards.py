"""The customer card's rules: how a card is searched, built, changed, merged and cleared (pure)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import phonenumbers

from shared.clock import as_utc, new_id
from shared.normalize import UTM_KEYS, clean_text, name_words, normalize_email, normalize_phone


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


PERSON_CLEARED: dict[str, Any] = {
    "name": None,
    "name_key": None,
    "phones": [],
    "emails": [],
    "raw_phones": [],
    "handles": [],
    "custom": {},
    "tags": [],
    "search": [],
}
"""What a card that was merged away or erased no longer holds: everything that says who it was."""

MANAGER_ASSIGNS_ITSELF = "a manager may only assign records to itself"


class IdentityRace(Exception):
    """Another capture created this person first; retrying finds it."""


def clean_tags(tags: list[str] | None) -> list[str]:
    return sorted({clean_text(t, 100) or "" for t in tags or []} - {""})


def owner_for(ctx: dict[str, Any], owner: str | None, errors: dict[str, str]) -> str | None:
    """The owner of a new record: an admin picks anyone; a manager gets itself (and may not pick
    somebody else)."""
    if ctx.get("role") == "admin":
        return owner
    owner = owner or ctx.get("user_id")
    if owner != ctx.get("user_id"):
        errors["owner_id"] = MANAGER_ASSIGNS_ITSELF
    return owner


def may_reassign(ctx: dict[str, Any], owner: str | None) -> bool:
    """Whether the caller may set an existing record's owner to ``owner`` (null: unowned)."""
    return ctx.get("role") == "admin" or owner in (ctx.get("user_id"), None)


def new_contact(
    tenant: str,
    now: datetime,
    *,
    name: str | None,
    phones: list[str],
    emails: list[str],
    owner_id: str | None,
    source: dict[str, Any] | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A new active card as it is stored."""
    return {
        "_id": new_id(),
        "tenant_id": tenant,
        "name": name,
        "phones": phones,
        "emails": emails,
        "company_id": None,
        "owner_id": owner_id,
        "tags": [],
        "custom": {},
        "source": source,
        "state": "active",
        "search": search_words(name, phones, emails),
        "name_key": name_key(name),
        "created_at": now,
        "updated_at": now,
        "last_activity_at": now,
        **(extra or {}),
    }


def _union(*lists: list[str]) -> list[str]:
    return list(dict.fromkeys(v for values in lists for v in values))


def new_identities(
    contact: dict[str, Any], phones: list[str], emails: list[str], handles: list[str]
) -> dict[str, Any] | None:
    """The card's identity lists (and search words) with the touch's phones, emails and handles it
    did not have yet added, or ``None`` when it knew them all."""
    new = {
        "phones": [p for p in phones if p not in contact.get("phones", [])],
        "emails": [e for e in emails if e not in contact.get("emails", [])],
        "handles": [h for h in handles if h not in contact.get("handles", [])],
    }
    if not any(new.values()):
        return None
    merged = {k: [*contact.get(k, []), *v] for k, v in new.items()}
    return {**merged, "search": search_words(contact.get("name"), merged["phones"], merged["emails"])}


def learn_sender(contact: dict[str, Any], sender: dict[str, Any]) -> dict[str, Any]:
    """A card linked to an inbox item learns the sender's phones, emails, handles (and name, when
    it had none), so the next touch resolves by itself: the fields to set."""
    phones = _union(contact.get("phones", []), sender.get("phones", []))
    emails = _union(contact.get("emails", []), sender.get("emails", []))
    handles = _union(contact.get("handles", []), sender.get("handles", []))
    name = contact.get("name") or sender.get("name")
    return {
        "phones": phones,
        "emails": emails,
        "handles": handles,
        "name": name,
        "name_key": name_key(name),
        "search": search_words(name, phones, emails),
    }


def merge_cards(survivor: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """The survivor's fields after ``other`` is merged into it: identities and tags united, the
    survivor's values first, the earlier first touch, the later activity."""
    phones = _union(survivor.get("phones", []), other.get("phones", []))
    emails = _union(survivor.get("emails", []), other.get("emails", []))
    name = survivor.get("name") or other.get("name")
    update = {
        "name": name,
        "name_key": name_key(name),
        "phones": phones,
        "emails": emails,
        "raw_phones": _union(survivor.get("raw_phones", []), other.get("raw_phones", [])),
        "handles": _union(survivor.get("handles", []), other.get("handles", [])),
        "tags": sorted({*survivor.get("tags", []), *other.get("tags", [])}),
        "custom": {**(other.get("custom") or {}), **(survivor.get("custom") or {})},
        "company_id": survivor.get("company_id") or other.get("company_id"),
        "owner_id": survivor.get("owner_id") or other.get("owner_id"),
        "search": search_words(name, phones, emails),
        "last_activity_at": max(
            as_utc(survivor.get("last_activity_at") or survivor["created_at"]),
            as_utc(other.get("last_activity_at") or other["created_at"]),
        ),
        "merged_ids": sorted({*survivor.get("merged_ids", []), other["_id"], *other.get("merged_ids", [])}),
    }
    if as_utc(other["created_at"]) < as_utc(survivor["created_at"]) and other.get("source"):
        update["source"] = other["source"]  # first touch is the earlier one
    return update


def merge_import_row(
    target: dict[str, Any],
    *,
    name: str | None,
    phones: list[str],
    emails: list[str],
    tags: list[str],
    custom: dict[str, Any],
    owner_id: str | None,
    company_id: str | None,
) -> dict[str, Any]:
    """An imported row that matches an existing card fills what the card lacks; what the card
    holds wins."""
    all_phones = _union(target.get("phones", []), phones)
    all_emails = _union(target.get("emails", []), emails)
    merged_name = target.get("name") or name
    return {
        "name": merged_name,
        "name_key": name_key(merged_name),
        "phones": all_phones,
        "emails": all_emails,
        "tags": sorted({*target.get("tags", []), *tags} - {""}),
        "custom": {**custom, **(target.get("custom") or {})},
        "owner_id": target.get("owner_id") or owner_id,
        "company_id": target.get("company_id") or company_id,
        "search": search_words(merged_name, all_phones, all_emails),
    }


def inbox_title(contact: dict[str, Any], phones: list[str], emails: list[str]) -> str:
    """The title of the deal an accepted inbox item may open."""
    return str(contact.get("name") or (phones[:1] or emails[:1] or ["New lead"])[0])
