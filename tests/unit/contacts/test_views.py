"""The card and the GDPR export show every identity held about the person, messenger handles too."""

from __future__ import annotations

from datetime import UTC, datetime

from services.contacts.domain.views import contact_view

DOC = {
    "_id": "c1",
    "tenant_id": "t1",
    "name": "Ivan",
    "phones": ["+79165550142"],
    "emails": [],
    "handles": ["telegram:123456789"],
    "created_at": datetime(2026, 12, 1, tzinfo=UTC),
    "updated_at": datetime(2026, 12, 1, tzinfo=UTC),
}


def test_a_telegram_handle_shows_on_the_contact_and_in_its_export() -> None:
    assert contact_view(DOC).model_dump(mode="json")["handles"] == ["telegram:123456789"]
