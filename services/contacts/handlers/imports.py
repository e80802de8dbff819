"""CSV import: one batch of records, each row deduplicated against the cards by phone and email."""

from __future__ import annotations

from typing import Any

from services.common.access import write_filter
from services.contacts import api
from services.contacts.domain import csvformat
from services.contacts.domain.access import region
from services.contacts.domain.cards import merge_import_row, new_contact, owner_for
from services.contacts.domain.custom_fields import validate_custom
from services.contacts.handlers.access import check_company
from services.contacts.handlers.capture import create_contact
from services.contacts.store import ContactsStore, ContactsTx
from shared.errors import ValidationFailed
from shared.events import ContactUpdated

Ctx = dict[str, Any]


async def import_contacts(store: ContactsStore, ctx: Ctx, req: api.ImportContacts) -> api.ImportResult:
    """Rows that fail are reported by line with the reason; the others are created (``imported``)
    or fill the card they match (``updated``), the rows before them included."""
    wf = write_filter(ctx)
    tenant = wf["tenant_id"]
    reg = region(ctx)
    columns = csvformat.parse_header(req.header)
    problem = csvformat.header_problem(columns)
    if problem:
        raise ValidationFailed({"header": problem})
    fields = await store.custom_fields(tenant, "contact")
    rows: list[csvformat.Row] = []
    failed: list[api.FailedRow] = []
    for line, text in req.records:
        try:
            row = csvformat.parse_row(columns, line, text, reg)
        except csvformat.RowError as exc:
            failed.append(api.FailedRow(line=line, reason=exc.reason))
            continue
        if row is None:
            continue
        errors: dict[str, str] = {}
        row.owner_id = owner_for(ctx, row.owner_id, errors)
        custom, custom_errors = validate_custom(fields, row.custom, region=reg, partial=True)
        errors.update(custom_errors)
        if row.company_id:
            await check_company(store, tenant, row.company_id, errors)
        if errors:
            failed.append(
                api.FailedRow(line=row.line, reason="; ".join(f"{k}: {v}" for k, v in errors.items()))
            )
            continue
        row.custom = custom
        rows.append(row)
    counts = {"imported": 0, "updated": 0}

    async def unit(tx: ContactsTx) -> list[api.FailedRow]:
        counts.update(imported=0, updated=0)
        row_failures: list[api.FailedRow] = []
        for row in rows:
            candidates = await tx.find_candidates(tenant, row.phones, row.emails)
            if candidates:
                target = candidates[0]
                if "owner_id" in wf and target.get("owner_id") not in wf["owner_id"]["$in"]:
                    row_failures.append(
                        api.FailedRow(line=row.line, reason="matches a contact owned by another user")
                    )
                    continue
                await _fill(tx, target, row)
                counts["updated"] += 1
                continue
            doc = new_contact(
                tenant,
                tx.now,
                name=row.name,
                phones=row.phones,
                emails=row.emails,
                owner_id=row.owner_id,
                source={"channel_id": None, "kind": "import"},
                extra={
                    "tags": sorted(set(row.tags) - {""}),
                    "custom": row.custom,
                    "company_id": row.company_id,
                },
            )
            await create_contact(tx, tenant, doc, claim=False)
            counts["imported"] += 1
        return row_failures

    failed += await store.atomic(unit)
    failed.sort(key=lambda f: f.line)
    return api.ImportResult(imported=counts["imported"], updated=counts["updated"], failed=failed)


async def _fill(tx: ContactsTx, target: dict[str, Any], row: csvformat.Row) -> None:
    update = merge_import_row(
        target,
        name=row.name,
        phones=row.phones,
        emails=row.emails,
        tags=row.tags,
        custom=row.custom,
        owner_id=row.owner_id,
        company_id=row.company_id,
    )
    update["updated_at"] = tx.now
    await tx.set_contact(target["tenant_id"], target["_id"], update)
    target.update(update)
    tx.emit(
        "contact.updated",
        target["tenant_id"],
        ContactUpdated(contact_id=target["_id"], owner_id=target.get("owner_id"), fields=["import"]),
    )
