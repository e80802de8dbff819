"""parse_message over real-shaped .eml fixtures (tests/fixtures/mail)."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.connectors.adapters.base import Captured
from services.connectors.mail.parse import ParsedMail, parse_message

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "mail"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
OWN = ("corp.example",)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def parse(
    name_or_raw: str | bytes,
    *,
    role: str = "inbox",
    mailbox: str = "sales@corp.example",
    own: tuple[str, ...] = OWN,
    forward_mode: bool = False,
) -> ParsedMail:
    raw = fixture(name_or_raw) if isinstance(name_or_raw, str) else name_or_raw
    return parse_message(
        raw,
        mailbox_address=mailbox,
        own_domains=own,
        folder_role=role,  # type: ignore[arg-type]
        channel_id="ch-1",
        now=NOW,
        forward_mode=forward_mode,
    )


def only(parsed: ParsedMail) -> Captured:
    assert parsed.skipped is None
    assert len(parsed.captured) == 1
    return parsed.captured[0]


# ---- charsets -------------------------------------------------------------------------------


def test_koi8r_subject_name_and_body_are_decoded():
    item = only(parse("koi8r_reply.eml"))
    assert item.kind == "email"
    assert item.direction == "in"
    assert item.data["subject"] == "Re: Счёт на оплату"
    assert item.sender.name == "Иван Петров"
    assert "Счёт получили, оплатим до пятницы." in item.data["body_text"]


def test_windows1251_html_only_body_becomes_text_without_script_or_style():
    item = only(parse("cp1251_html_only.eml"))
    assert item.data["subject"] == "Договор и прайс"
    assert item.sender.name == "Ольга Смирнова"
    body = item.data["body_text"]
    assert "Пришлите, пожалуйста, договор & прайс." in body
    assert "alert" not in body and "color" not in body and "<p>" not in body
    # the quoted history inside <blockquote>/gmail_quote is trimmed from the summary
    assert item.summary == "Здравствуйте! Пришлите, пожалуйста, договор & прайс."


def test_utf8_encoded_words_in_q_and_b():
    item = only(parse("utf8_russian_quote_sig.eml"))
    assert item.data["subject"] == "Вопрос по доставке"  # Q-encoded
    assert item.sender.name == "Анна"  # B-encoded


def test_iso8859_5_body_and_raw_8bit_windows1251_subject():
    item = only(parse("iso8859_5_raw_subject.eml"))
    assert item.data["subject"] == "Привет из Москвы"
    assert item.data["body_text"] == "Нужна консультация по тарифам."


def test_unknown_charset_label_falls_back_to_guessing():
    raw = (
        b"From: a@client.ru\r\nTo: sales@corp.example\r\nMessage-ID: <g1@x>\r\n"
        b"Content-Type: text/plain; charset=x-no-such-charset\r\n\r\n" + "Цена устраивает".encode("cp1251")
    )
    assert only(parse(raw)).data["body_text"] == "Цена устраивает"


def test_koi8r_text_without_charset_is_told_apart_from_windows1251():
    for codec in ("koi8-r", "cp1251"):
        raw = (
            b"From: a@client.ru\r\nTo: sales@corp.example\r\nMessage-ID: <g2@x>\r\n"
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            + "Добрый день, нужен счёт на оплату".encode(codec)
        )
        assert only(parse(raw)).data["body_text"] == "Добрый день, нужен счёт на оплату", codec


# ---- quote and signature trimming ------------------------------------------------------------


def test_english_on_wrote_quote_is_trimmed_from_summary():
    item = only(parse("koi8r_reply.eml"))
    assert item.summary == "Добрый день! Счёт получили, оплатим до пятницы."
    assert "Направляем" in item.data["body_text"]  # the full text keeps the history


def test_russian_pishet_quote_and_signature_are_cut():
    item = only(parse("utf8_russian_quote_sig.eml"))
    assert item.summary == "Когда будет доставка?"
    assert "+7 916" not in item.summary


def test_gmail_russian_quote_header_without_pishet_is_trimmed():
    item = only(parse("gmail_ru_quote.eml"))
    assert item.data["subject"] == "Re: Заказ"
    assert item.summary == "Подтверждаю заказ."


def test_russian_original_message_separator_is_trimmed():
    assert only(parse("original_message_ru.eml")).summary == "Хорошо, договорились."


def test_outlook_from_sent_block_is_trimmed():
    item = only(parse("outlook_reply.eml"))
    assert item.summary == "Thanks, approved on our side. John"
    assert item.sender.name == "Smith, John"  # a quoted comma does not split the address


def test_long_body_summary_is_capped_and_body_text_kept_to_limit():
    text = "слово " * 6000
    raw = (
        b"From: a@client.ru\r\nTo: sales@corp.example\r\nMessage-ID: <long@x>\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + text.encode()
    )
    item = only(parse(raw))
    assert len(item.summary) <= 200
    assert item.summary.endswith("…")
    assert 19_000 <= len(item.data["body_text"]) <= 20_000


# ---- skipped --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("auto_submitted.eml", "auto_reply"),
        ("ooo_subject.eml", "auto_reply"),
        ("x_autoreply.eml", "auto_reply"),
        ("bounce.eml", "bounce"),
        ("mailing_list.eml", "bulk"),
        ("precedence_bulk.eml", "bulk"),
        ("internal_only.eml", "no_client"),
    ],
)
def test_machine_and_internal_mail_is_skipped(name: str, reason: str) -> None:
    parsed = parse(name)
    assert parsed.skipped == reason
    assert parsed.captured == ()
    assert parsed.message_id.startswith("<")  # still identified, for counting


def test_auto_submitted_no_is_a_normal_message():
    raw = (
        b"From: a@client.ru\r\nTo: sales@corp.example\r\nMessage-ID: <n1@x>\r\n"
        b"Auto-Submitted: no\r\nSubject: hello\r\n\r\nHi\r\n"
    )
    assert only(parse(raw)).summary == "Hi"


def test_russian_autoreply_subject_is_skipped():
    subject = base64.b64encode("Автоответ: Re: счёт".encode())
    raw = (
        b"From: a@client.ru\r\nTo: sales@corp.example\r\nMessage-ID: <n2@x>\r\n"
        b"Subject: =?UTF-8?B?" + subject + b"?=\r\n\r\n" + "Я в отпуске".encode()
    )
    assert parse(raw).skipped == "auto_reply"


# ---- who is the client ----------------------------------------------------------------------


def test_client_only_in_cc_is_matched_and_own_domains_excluded():
    item = only(parse("client_in_cc.eml"))
    assert item.sender.emails == ("maria@client.com",)  # lower-cased, colleagues dropped
    assert item.sender.name == "Мария"
    assert item.data["from"] == ["colleague@corp.example"]
    assert item.data["cc"] == ["maria@client.com"]
    # subdomains of an own domain are own too
    assert "boss@branch.corp.example" not in item.sender.emails


def test_mailbox_address_is_excluded_even_outside_own_domains():
    raw = (
        b"From: Client <c@client.ru>\r\nTo: me@gmail.example, Friend <f@other.ru>\r\n"
        b"Message-ID: <m1@x>\r\n\r\nhi\r\n"
    )
    item = only(parse(raw, mailbox="Me@Gmail.example", own=()))
    assert item.sender.emails == ("c@client.ru", "f@other.ru")
    assert item.sender.name == "Client"


def test_reply_to_names_the_client_of_a_site_form_notification():
    raw = (
        b"From: Site <noreply@corp.example>\r\nTo: sales@corp.example\r\n"
        b"Reply-To: =?UTF-8?B?0JjQstCw0L0=?= <Ivan@Client.ru>\r\n"
        b"Message-ID: <form-1@corp.example>\r\nSubject: New request\r\n\r\nPhone: 8 916 000\r\n"
    )
    item = only(parse(raw))
    assert item.sender.emails == ("ivan@client.ru",)
    assert item.sender.name == "Иван"
    assert item.data["reply_to"] == ["ivan@client.ru"]


def test_sent_folder_is_outbound_named_after_first_to():
    item = only(parse("sent_outbound.eml", role="sent"))
    assert item.direction == "out"
    assert item.sender.name == "Пётр Сидоров"
    assert item.sender.emails == ("petr@client.com", "other@partner.net")
    assert item.data["subject"] == "Коммерческое предложение"
    assert item.data["body_text"] == "Пётр, направляю предложение во вложении."  # plain preferred
    assert item.data["attachments"] == [{"name": "Предложение.pdf", "type": "application/pdf", "size": 52}]


# ---- ids, threads, dates --------------------------------------------------------------------


def test_idempotency_key_thread_and_date():
    parsed = parse("koi8r_reply.eml")
    item = only(parsed)
    assert parsed.idempotency_key == "imap:ch-1:<koi8-1@client.ru>"
    assert item.idempotency_key == item.subject_key == parsed.idempotency_key
    assert item.data["message_id"] == "<koi8-1@client.ru>"
    assert item.data["thread_id"] == parsed.thread_id == "<root-1@corp.example>"  # References root
    assert item.occurred_at == datetime(2025, 11, 4, 6, 30, tzinfo=UTC)


def test_message_id_without_brackets_is_still_the_key():
    raw = b"From: a@client.ru\r\nTo: sales@corp.example\r\nMessage-ID: 77.abc@mx.client.ru\r\n\r\nx"
    assert parse(raw).idempotency_key == "imap:ch-1:<77.abc@mx.client.ru>"


def test_inline_images_of_html_mail_are_not_listed_as_attachments():
    raw = (
        b"From: a@client.ru\r\nTo: sales@corp.example\r\nMessage-ID: <rel@x>\r\n"
        b'Content-Type: multipart/mixed; boundary="M"\r\n\r\n'
        b'--M\r\nContent-Type: multipart/related; boundary="R"\r\n\r\n'
        b"--R\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hi <img src=cid:logo></p>\r\n"
        b"--R\r\nContent-Type: image/png\r\nContent-ID: <logo>\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--R--\r\n"
        b'--M\r\nContent-Type: application/zip; name="price.zip"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nUEsDBA==\r\n--M--\r\n"
    )
    item = only(parse(raw))
    assert item.data["body_text"] == "Hi"
    assert item.data["attachments"] == [{"name": "price.zip", "type": "application/zip", "size": 4}]


def test_in_reply_to_is_the_thread_when_there_are_no_references():
    raw = (
        b"From: a@client.ru\r\nTo: sales@corp.example\r\nMessage-ID: <r2@x>\r\n"
        b"In-Reply-To: <r1@corp.example>\r\n\r\nok\r\n"
    )
    assert parse(raw).thread_id == "<r1@corp.example>"


def test_same_message_in_inbox_and_sent_shares_the_key():
    raw = fixture("sent_outbound.eml")
    assert parse(raw, role="sent").idempotency_key == parse(raw).idempotency_key


def test_missing_message_id_uses_sha256_of_raw_bytes():
    raw = b"From: a@client.ru\r\nTo: sales@corp.example\r\nSubject: x\r\n\r\nbody\r\n"
    parsed = parse(raw)
    digest = hashlib.sha256(raw).hexdigest()
    assert parsed.idempotency_key == f"imap:ch-1:sha256:{digest}"
    assert parse(raw).idempotency_key == parsed.idempotency_key  # deterministic


def test_missing_or_future_date_falls_back_to_now():
    raw = b"From: a@client.ru\r\nTo: sales@corp.example\r\nMessage-ID: <d@x>\r\n\r\nx\r\n"
    assert only(parse(raw)).occurred_at == NOW
    future = raw.replace(b"\r\n\r\n", b"\r\nDate: Mon, 1 Jan 2035 10:00:00 +0000\r\n\r\n")
    assert only(parse(future)).occurred_at == NOW


# ---- forwards -------------------------------------------------------------------------------


def test_gmail_inline_forward_is_attributed_to_original_sender():
    item = only(parse("forward_inline_gmail.eml", mailbox="crm@corp.example", forward_mode=True))
    assert item.direction == "in"
    assert item.sender.name == "Ольга Кузнецова"
    assert item.sender.emails == ("olga.k@client.org",)
    assert item.data["subject"] == "Заявка"
    assert item.data["forwarded"] is True
    assert item.summary == "Хотим заказать 10 штук."
    assert item.idempotency_key == "imap:ch-1:<fwd-inline@corp.example>"


def test_russian_inline_forward_is_attributed_to_original_sender():
    item = only(parse("forward_inline_ru.eml", mailbox="crm@corp.example", forward_mode=True))
    assert item.sender.name == "Дмитрий"
    assert item.sender.emails == ("dmitry@client.ru",)
    assert item.summary == "Вопрос по счёту."


def test_rfc822_attachment_forward_is_attributed_to_original_sender():
    item = only(parse("forward_rfc822.eml", mailbox="crm@corp.example", forward_mode=True))
    assert item.sender.name == "Sergey Volkov"
    assert item.sender.emails == ("sergey@client.net",)
    assert item.data["subject"] == "Технический вопрос"
    assert item.data["original_message_id"] == "<inner-1@client.net>"
    assert item.occurred_at == datetime(2025, 11, 12, 13, 20, tzinfo=UTC)
    assert item.summary == "Не работает интеграция."


def test_outlook_russian_forward_header_block_is_attributed_to_original_sender():
    item = only(parse("forward_outlook_ru.eml", mailbox="crm@corp.example", forward_mode=True))
    assert item.sender.name == "Николай Орлов"
    assert item.sender.emails == ("nik.orlov@client.ru",)
    assert item.data["subject"] == "Запрос цены"
    assert item.summary == "Сколько стоит 100 штук?"


def test_forward_outside_forward_mode_is_not_reattributed():
    # staff forwarding to staff, read as ordinary mail: nobody on it is a client
    assert parse("forward_inline_gmail.eml", mailbox="crm@corp.example").skipped == "no_client"


def test_bcc_copy_of_staff_mail_in_forward_mailbox_is_outbound():
    item = only(parse("bcc_outgoing.eml", mailbox="crm@corp.example", forward_mode=True))
    assert item.direction == "out"
    assert item.sender.emails == ("buyer@client.ru",)
    assert item.sender.name == "Client"


# ---- robustness -----------------------------------------------------------------------------


def test_malformed_message_is_captured_as_far_as_it_parses():
    parsed = parse("malformed.eml")
    item = only(parsed)
    assert parsed.message_id.startswith("sha256:")
    assert item.sender.emails == ("broken@client.ru",)
    assert item.occurred_at == NOW
    assert "Привет" in item.data["body_text"]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage",
        b"From: <<<@@@>>>\r\n\r\n",
        b"Content-Type: multipart/alternative\r\n\r\nno boundary",
        b"Content-Type: message/rfc822\r\nFrom: x@client.ru\r\n\r\nnot a message",
        b'From: a@client.ru\r\nContent-Type: text/plain; charset="\r\n\r\n\xd0',
        b"From: a@client.ru\r\nSubject: =?utf-8?B?====?= =?koi8-r?Q?=ZZ?=\r\n\r\nx",
    ],
)
def test_garbage_never_raises(raw: bytes) -> None:
    parsed = parse(raw, forward_mode=True)
    assert parsed.idempotency_key.startswith("imap:ch-1:")
