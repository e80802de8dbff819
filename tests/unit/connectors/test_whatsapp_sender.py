"""The WhatsApp sender against a local stand-in of the Cloud API: the request Meta would receive,
and each documented error mapped to retryable or not."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.connectors.adapters.base import ChannelView
from services.connectors.senders.base import OutboundMessage, SendFailed
from services.connectors.senders.whatsapp import SENDER
from tests.support.provider_api import ProviderApi, guarded_client, provider_api

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
WAMID = "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"


def channel(api: ProviderApi, **secrets: str) -> ChannelView:
    return ChannelView(
        id="wa1",
        tenant_id="t1",
        kind="whatsapp",
        config={"phone_number_id": "106540352242922", "api_base_url": f"{api.url}/v26.0/"},
        secrets={"app_secret": "s", "verify_token": "v", "access_token": "EAAGtoken", **secrets},
    )


def message(
    text: str = "Yes, it comes in blue too.", template: dict[str, Any] | None = None
) -> OutboundMessage:
    return OutboundMessage(
        idempotency_key="msg-1",
        conversation_id="c1",
        thread_key="wa:16505551234",
        address={"to": "16505551234"},
        text=text,
        template=template,
    )


def graph_error(code: int, message: str, details: str = "") -> dict[str, Any]:
    return {
        "error": {
            "message": f"(#{code}) {message}",
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details or message},
            "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam",
        }
    }


async def send(api: ProviderApi, msg: OutboundMessage | None = None, **kw: Any):
    async with guarded_client() as http:
        return await SENDER.send(channel(api), msg or message(), http, NOW)


async def failed(api: ProviderApi, msg: OutboundMessage | None = None) -> SendFailed:
    with pytest.raises(SendFailed) as info:
        await send(api, msg)
    return info.value


def accepted() -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "contacts": [{"input": "16505551234", "wa_id": "16505551234"}],
        "messages": [{"id": WAMID, "message_status": "accepted"}],
    }


async def test_text_goes_to_the_numbers_messages_endpoint_with_the_bearer_token():
    with provider_api() as api:
        api.answer(200, accepted())
        result = await send(api)
    assert result.provider_message_id == WAMID and result.status == "sent"
    (req,) = api.requests
    assert req.method == "POST" and req.path == "/v26.0/106540352242922/messages"
    assert req.headers["authorization"] == "Bearer EAAGtoken"
    assert req.headers["content-type"] == "application/json"
    assert req.json() == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "16505551234",
        "type": "text",
        "text": {"preview_url": False, "body": "Yes, it comes in blue too."},
    }


async def test_a_template_is_sent_as_a_template_message():
    tpl = {"name": "order_followup", "language": "ru", "components": [{"type": "body", "parameters": []}]}
    with provider_api() as api:
        api.answer(200, accepted())
        await send(api, message(template=tpl))
    body = api.requests[0].json()
    assert body["type"] == "template" and "text" not in body
    assert body["template"] == {
        "name": "order_followup",
        "language": {"code": "ru"},
        "components": [{"type": "body", "parameters": []}],
    }


async def test_outside_the_24_hour_window_is_final_and_says_to_use_a_template():
    with provider_api() as api:
        api.answer(400, graph_error(131047, "Re-engagement message"))
        err = await failed(api)
    assert err.retryable is False
    assert "template" in err.reason and "24 hours" in err.reason and "131047" in err.reason


@pytest.mark.parametrize(
    ("status", "body", "headers", "wait"),
    [
        (400, graph_error(131056, "(Business Account, Consumer Account) pair rate limit hit"), {}, 6.0),
        (400, graph_error(130429, "Rate limit hit"), {"Retry-After": "3"}, 3.0),
        (400, graph_error(80007, "Rate limit issues"), {}, 60.0),
        (429, {"error": {"message": "Too many calls"}}, {"Retry-After": "12"}, 12.0),
    ],
)
async def test_rate_limits_are_retried_later(status: int, body: Any, headers: dict[str, str], wait: float):
    with provider_api() as api:
        api.answer(status, body, headers)
        err = await failed(api)
    assert err.retryable is True and err.retry_after_s == wait
    assert "rate limit" in err.reason


async def test_server_errors_are_retryable():
    with provider_api() as api:
        api.answer(503, graph_error(2, "Service temporarily unavailable"))
        err = await failed(api)
    assert err.retryable is True


async def test_other_client_errors_are_final_with_the_providers_message():
    with provider_api() as api:
        api.answer(400, graph_error(131026, "Message Undeliverable", "Receiver is incapable of receiving"))
        err = await failed(api)
    assert err.retryable is False
    assert "Receiver is incapable of receiving" in err.reason and "131026" in err.reason


async def test_an_unreachable_api_is_retryable():
    with provider_api() as api:
        pass  # stopped: nothing listens on the port any more
    err = await failed(api)
    assert err.retryable is True and "unreachable" in err.reason


async def test_a_base_url_the_guard_refuses_is_final():
    with provider_api() as api:
        async with guarded_client(allow_private=False) as http:
            with pytest.raises(SendFailed) as info:
                await SENDER.send(channel(api), message(), http, NOW)
    assert info.value.retryable is False and "guard" in info.value.reason
    assert api.requests == []


async def test_missing_token_or_recipient_is_final_and_calls_nothing():
    with provider_api() as api:
        async with guarded_client() as http:
            ch = channel(api)
            no_token = ChannelView(ch.id, ch.tenant_id, ch.kind, ch.config, {"app_secret": "s"})
            with pytest.raises(SendFailed) as info:
                await SENDER.send(no_token, message(), http, NOW)
            assert "secrets.access_token" in info.value.reason and not info.value.retryable
            bare = OutboundMessage("k", "c1", "wa:1", {}, "hi")
            with pytest.raises(SendFailed) as info:
                await SENDER.send(ch, bare, http, NOW)
            assert not info.value.retryable
    assert api.requests == []


async def test_a_user_known_only_by_a_business_scoped_id_is_sent_to_as_recipient():
    bsuid = "US.13491208655302741918"
    msg = OutboundMessage("msg-2", "c1", f"wa:{bsuid}", {"recipient": bsuid}, "Yes, in stock.")
    with provider_api() as api:
        api.answer(200, accepted())
        await send(api, msg)
    body = api.requests[0].json()
    assert body["recipient"] == bsuid and "to" not in body


async def test_no_answer_after_the_request_left_is_not_repeated():
    """WhatsApp has no idempotency key: a send that may have gone out is not sent again."""
    with provider_api() as api:
        api.answer(200, accepted(), delay_s=1.0)
        async with guarded_client(timeout_s=0.3) as http:
            with pytest.raises(SendFailed) as info:
                await SENDER.send(channel(api), message(), http, NOW)
    assert info.value.retryable is False and "may have been delivered" in info.value.reason
    assert SENDER.resend_safe is False
