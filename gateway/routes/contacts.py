"""Contacts, companies, custom fields, timelines, merge, GDPR and CSV. Served by the contacts
service (the GDPR export also asks deals and tasks)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.deps import GW, Auth, Cursor, Limit
from gateway.lookup import pick
from services.contacts import csvio
from shared.docsafe import StoredDict
from shared.errors import AppError, ValidationFailed

log = logging.getLogger(__name__)
IMPORT_BATCH = 200
IMPORT_RPC_TIMEOUT_S = 120.0
EXPORT_PAGE = 500
GDPR_SERVICES = ("deals", "tasks")

router = APIRouter(prefix="/api/v1", tags=["contacts"])


class ContactIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "Иван Петров", "phones": ["8 (916) 555-12-34"], "emails": ["Ivan@Example.ru"]}
            ]
        },
    )
    name: str | None = Field(default=None, max_length=300)
    phones: list[str] = Field(default_factory=list, max_length=20)
    emails: list[str] = Field(default_factory=list, max_length=20)
    company_id: str | None = None
    owner_id: str | None = None
    tags: list[str] = Field(default_factory=list, max_length=50)
    custom: StoredDict = Field(default_factory=dict)


class ContactPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=300)
    phones: list[str] | None = Field(default=None, max_length=20)
    emails: list[str] | None = Field(default=None, max_length=20)
    company_id: str | None = None
    owner_id: str | None = None
    tags: list[str] | None = Field(default=None, max_length=50)
    custom: StoredDict | None = None


class Source(BaseModel):
    channel_id: str | None = None
    kind: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_content: str | None = None
    utm_term: str | None = None


class ContactOut(BaseModel):
    id: str
    name: str | None = None
    phones: list[str] = Field(default_factory=list)
    emails: list[str] = Field(default_factory=list)
    handles: list[str] = Field(
        default_factory=list,
        description="Messenger handles the hub knows the person by (`telegram:<user id>`).",
    )
    company_id: str | None = None
    owner_id: str | None = None
    tags: list[str] = Field(default_factory=list)
    custom: dict[str, Any] = Field(default_factory=dict)
    source: Source | None = None
    created_at: str
    updated_at: str
    merged_into: str | None = None


class TimelineItem(BaseModel):
    id: str
    kind: str
    direction: str
    occurred_at: str
    channel_id: str | None = None
    summary: str
    data: dict[str, Any] = Field(default_factory=dict)


class Page(BaseModel):
    items: list[Any]
    next_cursor: str | None = None


class InteractionIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "kind": "call",
                    "direction": "out",
                    "summary": "Обсудили доставку",
                    "data": {"duration_s": 240},
                }
            ]
        },
    )
    kind: Literal["note", "call", "meeting", "email"]
    direction: Literal["in", "out"] | None = None
    occurred_at: datetime | None = None
    summary: str = Field(min_length=1, max_length=10_000)
    data: StoredDict = Field(default_factory=dict)


class MergeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"other_id": "01hx..."}]})
    other_id: str = Field(min_length=1, max_length=64)


class CompanyIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "ООО Ромашка", "domain": "romashka.ru"}]}
    )
    name: str = Field(min_length=1, max_length=300)
    domain: str | None = Field(default=None, max_length=253)
    phones: list[str] = Field(default_factory=list, max_length=20)
    emails: list[str] = Field(default_factory=list, max_length=20)
    owner_id: str | None = None
    tags: list[str] = Field(default_factory=list, max_length=50)
    custom: dict[str, Any] = Field(default_factory=dict, description="Values of `company` custom fields.")


class CompanyPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=300)
    domain: str | None = Field(default=None, max_length=253)
    phones: list[str] | None = Field(default=None, max_length=20)
    emails: list[str] | None = Field(default=None, max_length=20)
    owner_id: str | None = None
    tags: list[str] | None = Field(default=None, max_length=50)
    custom: dict[str, Any] | None = Field(default=None, description="Merged in; a null value removes a key.")


class CompanyOut(BaseModel):
    id: str
    name: str | None = None
    domain: str | None = None
    phones: list[str] = Field(default_factory=list)
    emails: list[str] = Field(default_factory=list)
    owner_id: str | None = None
    tags: list[str] = Field(default_factory=list)
    custom: dict[str, Any] = Field(default_factory=dict)
    created_at: str | None = None
    updated_at: str | None = None


class CustomFieldIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "entity": "contact",
                    "key": "segment",
                    "label": "Сегмент",
                    "type": "enum",
                    "options": ["B2B", "B2C"],
                }
            ]
        },
    )
    entity: Literal["contact", "company", "deal"]
    key: str = Field(min_length=1, max_length=64)
    label: str = Field(min_length=1, max_length=200)
    type: Literal["string", "number", "date", "enum", "multi_enum", "bool", "phone", "email", "url"]
    options: list[str] | None = Field(default=None, max_length=200)
    required: bool = False


class CustomFieldOut(BaseModel):
    id: str
    entity: str
    key: str
    label: str
    type: str
    options: list[str] = Field(default_factory=list)
    required: bool = False


class ImportResult(BaseModel):
    imported: int
    updated: int
    failed: list[dict[str, Any]]


class EraseResult(BaseModel):
    contact_id: str
    erased: bool


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
    return await gw.call(
        "contacts",
        "list_contacts",
        p,
        filters={"phone": phone, "email": email, "q": q, "owner_id": owner_id, "company_id": company_id},
        limit=limit,
        cursor=cursor,
    )


@router.post("/contacts", status_code=201, response_model=ContactOut)
async def create_contact(body: ContactIn, p: Auth, gw: GW) -> Any:
    data = body.model_dump(exclude_unset=True)
    await gw.check_refs(p, {"owner_id": data.get("owner_id")})
    return await gw.call("contacts", "create_contact", p, body=data)


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
        result = await gw.call(
            "contacts",
            "import_contacts",
            p,
            timeout=IMPORT_RPC_TIMEOUT_S,
            header=header,
            records=list(batch),
        )
        total["imported"] += result["imported"]
        total["updated"] += result["updated"]
        total["failed"].extend(result["failed"])
        batch.clear()

    async for line, record in csvio.split_records(request.stream()):
        if header is None:
            header = record
            problem = csvio.header_problem(csvio.parse_header(header))
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
    fields = await gw.call("contacts", "list_custom_fields", p, entity="contact")
    keys = [f["key"] for f in fields["items"]]
    first = await gw.call(
        "contacts", "list_contacts", p, filters={"owner_id": owner_id, "q": q}, limit=EXPORT_PAGE, cursor=None
    )

    async def rows() -> AsyncIterator[bytes]:
        yield ("\ufeff" + csvio.to_csv_line(csvio.export_header(keys))).encode()
        page_ = first
        while True:
            yield "".join(csvio.to_csv_line(csvio.export_row(c, keys)) for c in page_["items"]).encode()
            if not page_.get("next_cursor"):
                return
            page_ = await gw.call(
                "contacts",
                "list_contacts",
                p,
                filters={"owner_id": owner_id, "q": q},
                limit=EXPORT_PAGE,
                cursor=page_["next_cursor"],
            )

    return StreamingResponse(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="contacts.csv"'},
    )


@router.get("/contacts/{contact_id}", response_model=ContactOut)
async def get_contact(contact_id: str, p: Auth, gw: GW) -> Any:
    return await gw.call("contacts", "get_contact", p, contact_id=contact_id)


@router.patch("/contacts/{contact_id}", response_model=ContactOut)
async def patch_contact(contact_id: str, body: ContactPatch, p: Auth, gw: GW) -> Any:
    changes = body.model_dump(exclude_unset=True)
    await gw.check_refs(p, {"owner_id": changes.get("owner_id")})
    return await gw.call("contacts", "update_contact", p, contact_id=contact_id, changes=changes)


@router.delete("/contacts/{contact_id}", status_code=204)
async def delete_contact(contact_id: str, p: Auth, gw: GW) -> None:
    await gw.call("contacts", "delete_contact", p, contact_id=contact_id)


@router.get("/contacts/{contact_id}/timeline", response_model=Page)
async def timeline(contact_id: str, p: Auth, gw: GW, limit: Limit = 50, cursor: Cursor = None) -> Any:
    """Every touch of this contact, newest first."""
    return await gw.call("contacts", "timeline", p, contact_id=contact_id, limit=limit, cursor=cursor)


@router.post("/contacts/{contact_id}/interactions", status_code=201, response_model=TimelineItem)
async def add_interaction(contact_id: str, body: InteractionIn, p: Auth, gw: GW) -> Any:
    """A note, call, meeting or email logged by hand; shows on the timeline."""
    p.require("admin", "manager")
    return await gw.call(
        "contacts",
        "add_interaction",
        p,
        contact_id=contact_id,
        body=body.model_dump(mode="json", exclude_unset=True),
    )


@router.get("/contacts/{contact_id}/duplicates", response_model=Page)
async def duplicates(contact_id: str, p: Auth, gw: GW) -> Any:
    """Contacts that may be the same person; each with `reasons` (`phone`, `email`, `name`,
    `captured`)."""
    return await gw.call("contacts", "duplicates", p, contact_id=contact_id)


@router.post("/contacts/{contact_id}/merge", response_model=ContactOut)
async def merge(contact_id: str, body: MergeIn, p: Auth, gw: GW) -> Any:
    """The contact in the path survives with both histories; `other_id` keeps resolving to it."""
    p.require("admin", "manager")
    return await gw.call("contacts", "merge_contacts", p, contact_id=contact_id, other_id=body.other_id)


@router.get("/contacts/{contact_id}/export")
async def export_person(contact_id: str, p: Auth, gw: GW) -> Any:
    """Everything held about the person across services. A service that cannot answer is listed
    under `errors` instead of failing the export."""
    contacts = await gw.call("contacts", "export_contact", p, contact_id=contact_id)
    real_id = contacts["contact"]["id"]
    out: dict[str, Any] = {"contact_id": real_id, "contacts": contacts, "errors": {}}
    for service in GDPR_SERVICES:
        try:
            out[service] = await gw.call(service, "export_contact", p, timeout=5.0, contact_id=real_id)
        except AppError as exc:
            out[service] = None
            out["errors"][service] = exc.detail
    return out


@router.post("/contacts/{contact_id}/erase", response_model=EraseResult)
async def erase(contact_id: str, p: Auth, gw: GW) -> Any:
    """GDPR erasure (admin): personal data removed in every service (each reacts to
    `contact.erased`); afterwards the contact answers 410 Gone."""
    p.require("admin")
    return await gw.call("contacts", "erase_contact", p, contact_id=contact_id)


@router.post("/companies", status_code=201, response_model=CompanyOut)
async def create_company(body: CompanyIn, p: Auth, gw: GW) -> Any:
    data = body.model_dump(exclude_unset=True)
    await gw.check_refs(p, {"owner_id": data.get("owner_id")})
    return await gw.call("contacts", "create_company", p, body=data)


@router.get("/companies", response_model=Page)
async def list_companies(
    p: Auth, gw: GW, q: str | None = None, limit: Limit = 50, cursor: Cursor = None
) -> Any:
    """`q`: a prefix of any word of the company's name."""
    return await gw.call("contacts", "list_companies", p, q=q, limit=limit, cursor=cursor)


@router.get("/companies/{company_id}", response_model=CompanyOut)
async def get_company(company_id: str, p: Auth, gw: GW) -> Any:
    return await gw.call("contacts", "get_company", p, company_id=company_id)


@router.patch("/companies/{company_id}", response_model=CompanyOut)
async def patch_company(company_id: str, body: CompanyPatch, p: Auth, gw: GW) -> Any:
    changes = body.model_dump(exclude_unset=True)
    await gw.check_refs(p, {"owner_id": changes.get("owner_id")})
    return await gw.call("contacts", "update_company", p, company_id=company_id, changes=changes)


@router.post("/custom-fields", status_code=201, response_model=CustomFieldOut)
async def create_custom_field(body: CustomFieldIn, p: Auth, gw: GW) -> Any:
    """Define a custom field (admin). Values live in the record's `custom` object; a wrong value is
    a 422 naming `custom.<key>`."""
    p.require("admin")
    return await gw.call("contacts", "create_custom_field", p, body=body.model_dump(exclude_unset=True))


@router.get("/custom-fields", response_model=Page)
async def list_custom_fields(
    p: Auth, gw: GW, entity: Literal["contact", "company", "deal"] | None = None
) -> Any:
    return await gw.call("contacts", "list_custom_fields", p, entity=entity)


@router.get("/custom-fields/{field_id}", response_model=CustomFieldOut)
async def get_custom_field(field_id: str, p: Auth, gw: GW) -> Any:
    """One definition, by its id."""
    return pick(await gw.call("contacts", "list_custom_fields", p), field_id, "custom field")
