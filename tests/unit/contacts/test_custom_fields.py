"""Custom field definitions and value validation."""

from __future__ import annotations

from typing import Any

import pytest

from services.contacts.domain.custom_fields import check_definition, coerce, validate_custom

pytestmark = pytest.mark.unit


def field(key: str, ftype: str, **kw: Any) -> dict[str, Any]:
    return {
        "key": key,
        "type": ftype,
        "options": kw.pop("options", []),
        "required": kw.pop("required", False),
    }


FIELDS = [
    field("segment", "enum", options=["B2B", "B2C"]),
    field("channels", "multi_enum", options=["mail", "phone", "tg"]),
    field("budget", "number"),
    field("vip", "bool"),
    field("birthday", "date"),
    field("alt_phone", "phone"),
    field("alt_email", "email"),
    field("site", "url"),
    field("note", "string"),
]


@pytest.mark.parametrize(
    ("ftype", "value", "expected"),
    [
        ("number", 12, 12),
        ("number", "1 500".replace(" ", ""), 1500),
        ("number", "12,5", 12.5),
        ("bool", "yes", True),
        ("bool", False, False),
        ("date", "2026-02-03", "2026-02-03"),
        ("phone", "8 (916) 555-12-34", "+79165551234"),
        ("email", "Ivan@Пример.РФ", "ivan@пример.рф"),
        ("url", " https://example.ru/a ", "https://example.ru/a"),
        ("string", "Привет", "Привет"),
    ],
)
def test_valid_values_are_stored_in_one_canonical_form(ftype: str, value: Any, expected: Any) -> None:
    assert coerce(field("k", ftype), value) == (expected, None)


@pytest.mark.parametrize(
    ("ftype", "value"),
    [
        ("number", True),
        ("number", "много"),
        ("number", float("nan")),
        ("bool", "maybe"),
        ("date", "2026-02-30"),
        ("date", 20260203),
        ("phone", "12"),
        ("email", "not-an-email"),
        ("url", "ftp://example.ru"),
        ("url", "javascript:alert(1)"),
        ("string", {"a": 1}),
        ("string", "x" * 2001),
    ],
)
def test_wrong_values_are_refused_with_a_reason(ftype: str, value: Any) -> None:
    canonical, reason = coerce(field("k", ftype), value)
    assert canonical is None and reason


def test_enum_and_multi_enum_accept_only_their_options() -> None:
    custom, errors = validate_custom(FIELDS, {"segment": "B2C", "channels": ["tg", "mail", "tg"]})
    assert errors == {} and custom == {"segment": "B2C", "channels": ["tg", "mail"]}
    _, errors = validate_custom(FIELDS, {"segment": "b2c", "channels": ["fax"]})
    assert set(errors) == {"custom.segment", "custom.channels"}


def test_errors_name_each_field_and_nothing_is_returned_to_store() -> None:
    custom, errors = validate_custom(FIELDS, {"budget": "x", "vip": True, "colour": "red"})
    assert custom == {}
    assert errors == {"custom.budget": "must be a number", "custom.colour": "is not a defined custom field"}


def test_required_fields_on_create_but_patch_only_answers_for_keys_it_touches() -> None:
    fields = [field("inn", "string", required=True), field("note", "string")]
    assert validate_custom(fields, {"note": "x"})[1] == {"custom.inn": "is required"}
    custom, errors = validate_custom(fields, {"note": "y"}, existing={}, partial=True)
    assert errors == {} and custom == {"note": "y"}
    _, errors = validate_custom(fields, {"inn": None}, existing={"inn": "77"}, partial=True)
    assert errors == {"custom.inn": "is required"}


def test_patch_merges_and_null_removes_a_key() -> None:
    custom, errors = validate_custom(
        FIELDS, {"budget": None, "vip": "true"}, existing={"budget": 5, "note": "keep"}, partial=True
    )
    assert errors == {} and custom == {"note": "keep", "vip": True}


def test_custom_must_be_an_object() -> None:
    assert validate_custom(FIELDS, ["x"])[1] == {"custom": "must be an object"}


def test_definitions_are_checked() -> None:
    good, errors = check_definition(
        {"entity": "deal", "key": "source_2", "label": "Источник", "type": "enum", "options": ["a", "a", "b"]}
    )
    assert errors == {} and good["options"] == ["a", "b"] and good["required"] is False
    _, errors = check_definition({"entity": "lead", "key": "Bad Key", "label": "", "type": "money"})
    assert set(errors) == {"entity", "key", "label", "type"}
    _, errors = check_definition({"entity": "contact", "key": "k", "label": "K", "type": "enum"})
    assert "options" in errors
    _, errors = check_definition(
        {"entity": "contact", "key": "k", "label": "K", "type": "string", "options": ["x"]}
    )
    assert "options" in errors
