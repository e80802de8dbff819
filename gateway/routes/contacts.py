"""Contacts, companies, custom fields, timelines, merge, GDPR and CSV. Served by the contacts
service (the GDPR export also asks deals and tasks)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from gateway.deps import GW, Auth, Cursor, Limit
from gateway.lookup import pick
from services.contacts import api
from services.contacts.api import (
    CompanyIn,
    CompanyOut,
    CompanyPatch,
    ContactIn,
    ContactOut,
    ContactPatch,
    CustomEntity,
    CustomFieldIn,
    CustomFieldOut,
    EraseResult,
    ImportResult,
    InteractionIn,
    MergeIn,
    Page,
    TimelineItemOut,
)
from services.deals import api as deals_api
from services.tasks import api as tasks_api
from shared.contract import RpcRequest
from shared.errors import AppError, ValidationFailed

log = logging.getLogger(__name__)
IMPORT_BATCH = 200
IMPORT_RPC_TIMEOUT_S = 120.0
EXPORT_PAGE = 500

router = APIRouter(prefix="/api/v1", tags=["contacts"])


@router.get("/contacts", response_model=Page)
async def list_contacts(
    p: Auth,
    gw: GW,
    phone: str | None = None,
    email: str | None = None,
    q: str | None = None,
    owner_id: str | None = None,
    company_id: str | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Any:
    """Search: phone in any format (E.164 with the tenant's region), email case-insensitive, `q` a
    prefix of any word of the name (Cyrillic or Latin, any case), of the email, or digits of the
    phone; several words must each start a word."""
    filters = api.ContactFilters(phone=phone, email=email, q=q, owner_id=owner_id, company_id=company_id)
    return await gw.ask(api.ListContacts(filters=filters, limit=limit, cursor=cursor), p)


@router.post("/contacts", status_code=201, response_model=ContactOut)
async def create_contact(body: ContactIn, p: Auth, gw: GW) -> Any:
    await gw.check_refs(p, {"owner_id": body.owner_id})
    return await gw.ask(api.CreateContact(body=body), p)


@router.post(
    "/contacts/import",
    response_model=ImportResult,
    openapi_extra={
        "requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}
    },
)
async def import_contacts(request: Request, p: Auth, gw: GW) -> Any:
    """CSV body (UTF-8 or Windows-1251) with a header row: `name`, `phone`, `email`, `owner_id`,
    `tags`, `company_id`, `custom.<key>`. Streamed in batches; each row is deduplicated by phone and
    email against existing contacts (`updated`) or created (`imported`); rows that fail are listed
    by line with the reason."""
    p.require("admin", "manager")
    header: str | None = None
    total: dict[str, Any] = {"imported": 0, "updated": 0, "failed": []}
    batch: list[tuple[int, str]] = []

    async def flush() -> None:
        if not batch:
            return
        result = await gw.ask(
            api.ImportContacts(header=header or "", records=list(batch)), p, timeout=IMPORT_RPC_TIMEOUT_S
        )
        total["imported"] += result["imported"]
        total["updated"] += result["updated"]
        total["failed"].extend(result["failed"])
        batch.clear()

    async for line, record in api.split_records(request.stream()):
        if header is None:
            header = record
            problem = api.header_problem(api.parse_header(header))
            if problem:
                raise ValidationFailed({"header": problem})
            continue
        batch.append((line, record))
        if len(batch) >= IMPORT_BATCH:
            await flush()
    if header is None:
        raise ValidationFailed({"body": "the CSV has no header row"})
    await flush()
    return total


@router.get(
    "/contacts/export.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "Every visible contact, one per row"}},
)
async def export_contacts_csv(p: Auth, gw: GW, owner_id: str | None = None, q: str | None = None) -> Any:
    """All contacts the caller may see as CSV, streamed page by page; custom fields as
    `custom.<key>` columns."""
    fields = await gw.ask(api.ListCustomFields(entity="contact"), p)
    keys = [f["key"] for f in fields["items"]]
    filters = api.ContactFilters(owner_id=owner_id, q=q)
    first = await gw.ask(api.ListContacts(filters=filters, limit=EXPORT_PAGE, cursor=None), p)

    async def rows() -> AsyncIterator[bytes]:
        yield ("\ufeff" + api.to_csv_line(api.export_header(keys))).encode()
        page_ = first
        while True:
            yield "".join(api.to_csv_line(api.export_row(c, keys)) for c in page_["items"]).encode()
            if not page_.get("next_cursor"):
                return
            page_ = await gw.ask(
                api.ListContacts(filters=filters, limit=EXPORT_PAGE, cursor=page_["next_cursor"]), p
            )

    return StreamingResponse(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="contacts.csv"'},
    )


@router.get("/contacts/{contact_id}", response_model=ContactOut)
async def get_contact(contact_id: str, p: Auth, gw: GW) -> Any:
    return await gw.ask(api.GetContact(contact_id=contact_id), p)


@router.patch("/contacts/{contact_id}", response_model=ContactOut)
async def patch_contact(contact_id: str, body: ContactPatch, p: Auth, gw: GW) -> Any:
    await gw.check_refs(p, {"owner_id": body.owner_id} if "owner_id" in body.model_fields_set else {})
    return await gw.ask(api.UpdateContact(contact_id=contact_id, changes=body), p)


@router.delete("/contacts/{contact_id}", status_code=204)
async def delete_contact(contact_id: str, p: Auth, gw: GW) -> None:
    await gw.ask(api.DeleteContact(contact_id=contact_id), p)


@router.get("/contacts/{contact_id}/timeline", response_model=Page)
async def timeline(contact_id: str, p: Auth, gw: GW, limit: Limit = 50, cursor: Cursor = None) -> Any:
    """Every touch of this contact, newest first."""
    return await gw.ask(api.GetTimeline(contact_id=contact_id, limit=limit, cursor=cursor), p)


@router.post("/contacts/{contact_id}/interactions", status_code=201, response_model=TimelineItemOut)
async def add_interaction(contact_id: str, body: InteractionIn, p: Auth, gw: GW) -> Any:
    """A note, call, meeting or email logged by hand; shows on the timeline."""
    p.require("admin", "manager")
    return await gw.ask(api.AddInteraction(contact_id=contact_id, body=body), p)


@router.get("/contacts/{contact_id}/duplicates", response_model=Page)
async def duplicates(contact_id: str, p: Auth, gw: GW) -> Any:
    """Contacts that may be the same person; each with `reasons` (`phone`, `email`, `name`,
    `captured`)."""
    return await gw.ask(api.FindDuplicates(contact_id=contact_id), p)


@router.post("/contacts/{contact_id}/merge", response_model=ContactOut)
async def merge(contact_id: str, body: MergeIn, p: Auth, gw: GW) -> Any:
    """The contact in the path survives with both histories; `other_id` keeps resolving to it."""
    p.require("admin", "manager")
    return await gw.ask(api.MergeContacts(contact_id=contact_id, other_id=body.other_id), p)


@router.get("/contacts/{contact_id}/export")
async def export_person(contact_id: str, p: Auth, gw: GW) -> Any:
    """Everything held about the person across services. A service that cannot answer is listed
    under `errors` instead of failing the export."""
    contacts = await gw.ask(api.ExportContact(contact_id=contact_id), p)
    real_id = contacts["contact"]["id"]
    out: dict[str, Any] = {"contact_id": real_id, "contacts": contacts, "errors": {}}
    exports: list[RpcRequest] = [
        deals_api.ExportContact(contact_id=real_id),
        tasks_api.ExportContact(contact_id=real_id),
    ]
    for request in exports:
        try:
            out[request.SERVICE] = await gw.ask(request, p, timeout=5.0)
        except AppError as exc:
            out[request.SERVICE] = None
            out["errors"][request.SERVICE] = exc.detail
    return out


@router.post("/contacts/{contact_id}/erase", response_model=EraseResult)
async def erase(contact_id: str, p: Auth, gw: GW) -> Any:
    """GDPR erasure (admin): personal data removed in every service (each reacts to
    `contact.erased`); afterwards the contact answers 410 Gone."""
    p.require("admin")
    return await gw.ask(api.EraseContact(contact_id=contact_id), p)


@router.post("/companies", status_code=201, response_model=CompanyOut)
async def create_company(body: CompanyIn, p: Auth, gw: GW) -> Any:
    await gw.check_refs(p, {"owner_id": body.owner_id})
    return await gw.ask(api.CreateCompany(body=body), p)


@router.get("/companies", response_model=Page)
async def list_companies(
    p: Auth, gw: GW, q: str | None = None, limit: Limit = 50, cursor: Cursor = None
) -> Any:
    """`q`: a prefix of any word of the company's name."""
    return await gw.ask(api.ListCompanies(q=q, limit=limit, cursor=cursor), p)


@router.get("/companies/{company_id}", response_model=CompanyOut)
async def get_company(company_id: str, p: Auth, gw: GW) -> Any:
    return await gw.ask(api.GetCompany(company_id=company_id), p)


@router.patch("/companies/{company_id}", response_model=CompanyOut)
async def patch_company(company_id: str, body: CompanyPatch, p: Auth, gw: GW) -> Any:
    await gw.check_refs(p, {"owner_id": body.owner_id} if "owner_id" in body.model_fields_set else {})
    return await gw.ask(api.UpdateCompany(company_id=company_id, changes=body), p)


@router.post("/custom-fields", status_code=201, response_model=CustomFieldOut)
async def create_custom_field(body: CustomFieldIn, p: Auth, gw: GW) -> Any:
    """Define a custom field (admin). Values live in the record's `custom` object; a wrong value is
    a 422 naming `custom.<key>`."""
    p.require("admin")
    return await gw.ask(api.CreateCustomField(body=body), p)


@router.get("/custom-fields", response_model=Page)
async def list_custom_fields(p: Auth, gw: GW, entity: CustomEntity | None = None) -> Any:
    return await gw.ask(api.ListCustomFields(entity=entity), p)


@router.get("/custom-fields/{field_id}", response_model=CustomFieldOut)
async def get_custom_field(field_id: str, p: Auth, gw: GW) -> Any:
    """One definition, by its id."""
    return pick(await gw.ask(api.ListCustomFields(), p), field_id, "custom field")
