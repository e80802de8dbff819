"""The contacts service's typed RPC contract: one request model per method, the answers, the enums.

The gateway imports this module (and nothing else of the service): it builds a request, sends it
with ``gw.ask(request, principal)``, and uses the answer models as its ``response_model``. The
service validates every request against the same model before a handler sees it
(``services/contacts/service.py``), so a shape or an enum is written once, here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.contacts.domain.csvformat import export_header as export_header
from services.contacts.domain.csvformat import export_row as export_row
from services.contacts.domain.csvformat import header_problem as header_problem
from services.contacts.domain.csvformat import parse_header as parse_header
from services.contacts.domain.csvformat import split_records as split_records
from services.contacts.domain.csvformat import to_csv_line as to_csv_line
from shared.contract import RpcRequest
from shared.docsafe import StoredDict

SERVICE = "contacts"

InboxStatus = Literal["pending", "accepted", "rejected", "linked"]
ManualKind = Literal["note", "call", "meeting", "email"]
Direction = Literal["in", "out"]
CustomEntity = Literal["contact", "company", "deal"]
CustomType = Literal["string", "number", "date", "enum", "multi_enum", "bool", "phone", "email", "url"]
DuplicateReason = Literal["phone", "email", "name", "captured"]

# The CSV format of /contacts/import and /contacts/export.csv is part of the contract (the names
# imported above): the gateway streams the body and cuts it into records (split_records), checks
# the header before the first batch and writes the export rows; the service parses the rows.


class Request(RpcRequest):
    """One RPC call on the contacts service."""

    SERVICE: ClassVar[str] = SERVICE


# ---- bodies (input) -----------------------------------------------------------------------------


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
    """Only the fields sent change (``model_fields_set``); null clears."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=300)
    phones: list[str] | None = Field(default=None, max_length=20)
    emails: list[str] | None = Field(default=None, max_length=20)
    company_id: str | None = None
    owner_id: str | None = None
    tags: list[str] | None = Field(default=None, max_length=50)
    custom: StoredDict | None = None


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
    kind: ManualKind
    direction: Direction | None = None
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
    entity: CustomEntity
    key: str = Field(min_length=1, max_length=64)
    label: str = Field(min_length=1, max_length=200)
    type: CustomType
    options: list[str] | None = Field(default=None, max_length=200)
    required: bool = False


class AcceptIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"pipeline_id": "01hx..."}, {}]}
    )
    pipeline_id: str | None = None
    owner_id: str | None = None


class LinkIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"contact_id": "01hx..."}]})
    contact_id: str = Field(min_length=1, max_length=64)


# ---- answers (output) ---------------------------------------------------------------------------


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


class DuplicateOut(ContactOut):
    reasons: list[DuplicateReason]


class TimelineItemOut(BaseModel):
    id: str
    kind: str
    direction: str
    occurred_at: str
    channel_id: str | None = None
    summary: str
    data: dict[str, Any] = Field(default_factory=dict)


class Sender(BaseModel):
    name: str | None = None
    phones: list[str] = Field(default_factory=list)
    emails: list[str] = Field(default_factory=list)


class InboxItemOut(BaseModel):
    id: str
    status: InboxStatus
    channel_id: str | None = None
    channel_kind: str | None = None
    received_at: str | None = None
    sender: Sender
    interaction: TimelineItemOut
    contact_id: str | None = None
    resolved_at: str | None = None


class AcceptedInboxItem(InboxItemOut):
    contact: ContactOut


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


class CustomFieldOut(BaseModel):
    id: str
    entity: str
    key: str
    label: str
    type: str
    options: list[str] = Field(default_factory=list)
    required: bool = False


class Page(BaseModel):
    items: list[Any]
    next_cursor: str | None = None


class InboxPage(BaseModel):
    items: list[InboxItemOut]
    next_cursor: str | None = None


class FailedRow(BaseModel):
    line: int
    reason: str


class ImportResult(BaseModel):
    imported: int
    updated: int
    failed: list[FailedRow]


class EraseResult(BaseModel):
    contact_id: str
    erased: bool


class ContactExportCard(ContactOut):
    raw_phones: list[str] = Field(default_factory=list)
    merged_ids: list[str] = Field(default_factory=list)
    last_activity_at: datetime | None = None


class ContactExport(BaseModel):
    """Everything the contacts service holds about a person (GDPR export)."""

    contact: ContactExportCard
    company: CompanyOut | None = None
    timeline: list[TimelineItemOut]
    inbox: list[InboxItemOut]


class CustomValues(BaseModel):
    custom: dict[str, Any]


# ---- requests -----------------------------------------------------------------------------------


class ContactFilters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    phone: str | None = None
    email: str | None = None
    q: str | None = None
    owner_id: str | None = None
    company_id: str | None = None


class ListContacts(Request):
    """Newest first; at most one filter drives the query (phone, email, q, company, owner)."""

    METHOD = "list_contacts"
    filters: ContactFilters = Field(default_factory=ContactFilters)
    limit: int | None = None
    cursor: str | None = None


class GetContact(Request):
    METHOD = "get_contact"
    contact_id: str


class CreateContact(Request):
    METHOD = "create_contact"
    body: ContactIn


class UpdateContact(Request):
    METHOD = "update_contact"
    contact_id: str
    changes: ContactPatch


class DeleteContact(Request):
    METHOD = "delete_contact"
    contact_id: str


class GetTimeline(Request):
    METHOD = "timeline"
    contact_id: str
    limit: int | None = None
    cursor: str | None = None


class AddInteraction(Request):
    METHOD = "add_interaction"
    contact_id: str
    body: InteractionIn


class FindDuplicates(Request):
    METHOD = "duplicates"
    contact_id: str


class MergeContacts(Request):
    METHOD = "merge_contacts"
    contact_id: str
    other_id: str


class ExportContact(Request):
    METHOD = "export_contact"
    contact_id: str


class EraseContact(Request):
    METHOD = "erase_contact"
    contact_id: str


class ImportContacts(Request):
    """One batch of CSV records (``[line, text]``) under the file's header record."""

    METHOD = "import_contacts"
    header: str = ""
    records: list[tuple[int, str]] = Field(default_factory=list)


class CreateCompany(Request):
    METHOD = "create_company"
    body: CompanyIn


class ListCompanies(Request):
    METHOD = "list_companies"
    q: str | None = None
    limit: int | None = None
    cursor: str | None = None


class GetCompany(Request):
    METHOD = "get_company"
    company_id: str


class UpdateCompany(Request):
    METHOD = "update_company"
    company_id: str
    changes: CompanyPatch


class CreateCustomField(Request):
    METHOD = "create_custom_field"
    body: CustomFieldIn


class ListCustomFields(Request):
    METHOD = "list_custom_fields"
    entity: CustomEntity | None = None


class ValidateCustom(Request):
    """For other services (deals): the canonical values, or 422 naming each ``custom.<key>``."""

    METHOD = "validate_custom"
    entity: CustomEntity = "contact"
    custom: dict[str, Any] = Field(default_factory=dict)
    existing: dict[str, Any] = Field(default_factory=dict)
    partial: bool = False


class ListInbox(Request):
    METHOD = "list_inbox"
    status: InboxStatus | None = None
    limit: int | None = None
    cursor: str | None = None


class GetInboxItem(Request):
    METHOD = "get_inbox_item"
    item_id: str


class AcceptInboxItem(Request):
    METHOD = "accept_inbox_item"
    item_id: str
    pipeline_id: str | None = None
    owner_id: str | None = None


class LinkInboxItem(Request):
    METHOD = "link_inbox_item"
    item_id: str
    contact_id: str


class RejectInboxItem(Request):
    METHOD = "reject_inbox_item"
    item_id: str
