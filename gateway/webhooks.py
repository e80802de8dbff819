"""Outbound webhooks: subscriptions per tenant, durable signed deliveries, retries for up to 24 h.

- An event consumer (its own durable queue on ``#``) writes one delivery per (subscription, event);
  the delivery id is derived from both, so a redelivered event never makes a second delivery.
- A worker claims due deliveries with an atomic update (several gateway processes may run it) and
  POSTs them with httpx: ``X-CRM-Signature: sha256=<hex HMAC-SHA256 of the body>`` and the
  Standard Webhooks headers (``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,...``),
  ``X-CRM-Delivery-Id`` (stable across retries: receivers dedupe on it), ``X-CRM-Event-Type``.
- A failure (non-2xx, timeout, refused) is retried with exponential back-off and jitter (tenacity's
  ``wait_exponential_jitter``); the schedule lives in the database, so retries survive restarts.
  After ``max_age_s`` (24 h) the delivery is ``failed``.
- Isolation: at most ``per_subscription`` deliveries of one subscription are in flight and every
  request has a timeout, so a slow or dead endpoint only ever occupies its own slots.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import httpx
from pydantic_settings import BaseSettings, SettingsConfigDict
from pymongo.errors import DuplicateKeyError
from tenacity import wait_exponential_jitter

from gateway.live import is_internal, public_event
from shared.clock import Clock, new_id
from shared.crypto import SecretBox
from shared.errors import NotFound, ValidationFailed
from shared.events import Envelope
from shared.netguard import GuardedTransport, UrlGuard, UrlRefused
from shared.pagination import DEFAULT_LIMIT, decode_cursor, page

log = logging.getLogger(__name__)

LOG_KEEP = 20


class WebhookSettings(BaseSettings):
    """``CRM_WEBHOOK_*``: the delivery policy (tests shorten the back-off)."""

    model_config = SettingsConfigDict(env_prefix="CRM_WEBHOOK_", extra="ignore")

    backoff_s: float = 30.0
    """First retry after about this long; doubles each attempt."""
    max_backoff_s: float = 3600.0
    max_age_s: float = 24 * 3600.0
    """A delivery not done this long after the event is marked failed."""
    timeout_s: float = 10.0
    concurrency: int = 32
    """Deliveries in flight in one gateway process."""
    per_subscription: int = 8
    """Deliveries of one subscription in flight in one gateway process (no order between them,
    as before: a retry never waited for later events either). Measured in tests/perf/README.md."""
    poll_s: float = 1.0


def sign(secret: str, body: bytes) -> str:
    """The ``X-CRM-Signature`` header value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _rule_secret(value: Any) -> str | None:
    """The sealed secret a rule's webhook request carries (``sealed:<token>``), else None (a rule
    stored before rules had secrets: delivered unsigned)."""
    if isinstance(value, str) and value.startswith("sealed:"):
        return value.removeprefix("sealed:")
    return None


def signing_key(secret: str) -> bytes:
    """The Standard Webhooks key of a secret: a ``whsec_<base64>`` secret is decoded as the
    standard libraries do; any other secret signs with its UTF-8 bytes."""
    if secret.startswith("whsec_"):
        key = base64.b64decode(secret.removeprefix("whsec_") + "==")
        if key:
            return key
    return secret.encode()


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``webhook-signature`` of the Standard Webhooks scheme: ``v1,<base64 HMAC-SHA256 of
    "<id>.<timestamp>.<body>">``."""
    mac = hmac.new(signing_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def delivery_id(subscription_id: str, event_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"crm-delivery/{subscription_id}/{event_id}"))


def retry_delay(attempt: int, settings: WebhookSettings) -> float:
    """Seconds before the next try after ``attempt`` failed tries (exponential, jittered)."""
    wait = wait_exponential_jitter(
        multiplier=settings.backoff_s, max=settings.max_backoff_s, exp_base=2, jitter=settings.backoff_s
    )
    return float(wait(SimpleNamespace(attempt_number=attempt)))  # type: ignore[arg-type]


def subscription_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["_id"],
        "url": doc["url"],
        "events": doc["events"],
        "active": doc.get("active", True),
        "description": doc.get("description"),
        "created_at": doc.get("created_at"),
        "created_by": doc.get("created_by"),
    }


def delivery_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["_id"],
        "subscription_id": doc["subscription_id"],
        "event_id": doc["event_id"],
        "event_type": doc["event_type"],
        "state": doc["state"],
        "attempts": doc.get("attempts", 0),
        "created_at": doc.get("created_at"),
        "next_attempt_at": doc.get("next_attempt_at") if doc["state"] == "pending" else None,
        "delivered_at": doc.get("delivered_at"),
        "last_status": doc.get("last_status"),
        "last_error": doc.get("last_error"),
        "log": doc.get("log", []),
    }


class Webhooks:
    """Subscriptions, the fan-out consumer and the delivery worker over one database."""

    def __init__(
        self,
        db: Any,
        secrets: SecretBox,
        clock: Clock,
        settings: WebhookSettings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        observe: Callable[[str], None] | None = None,
        guard: UrlGuard | None = None,
    ) -> None:
        self.db = db
        self.secrets = secrets
        self.clock = clock
        self.settings = settings or WebhookSettings()
        self.guard = guard or UrlGuard()
        self.transport = transport
        self.observe = observe or (lambda outcome: None)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    # ---- subscriptions ------------------------------------------------------------------------

    async def create(
        self, tenant_id: str, user_id: str, url: str, events: list[str], secret: str, description: str | None
    ) -> dict[str, Any]:
        url = await self.check_url(url)
        doc = {
            "_id": new_id(),
            "tenant_id": tenant_id,
            "url": url,
            "events": sorted(set(events)),
            "secret": self.secrets.seal({"secret": secret}),
            "active": True,
            "description": description,
            "created_at": self.clock.now(),
            "created_by": user_id,
        }
        await self.db.subscriptions.insert_one(doc)
        return subscription_view(doc)

    async def check_url(self, url: str, field: str = "url") -> str:
        """The outbound guard on a stored URL: 422 naming ``field`` when refused."""
        try:
            return await self.guard.validate(str(url))
        except UrlRefused as exc:
            raise ValidationFailed({field: str(exc)}) from None

    async def list(
        self, tenant_id: str, limit: int = DEFAULT_LIMIT, cursor: str | None = None
    ) -> dict[str, Any]:
        flt: dict[str, Any] = {"tenant_id": tenant_id, "active": True}
        after = decode_cursor(cursor)
        if after:
            flt["_id"] = {"$gt": str(after[0])}
        docs = await self.db.subscriptions.find(flt).sort("_id", 1).limit(limit + 1).to_list(limit + 1)
        return page([subscription_view(d) for d in docs], limit, lambda s: [s["id"]])

    async def get(self, tenant_id: str, sub_id: str) -> dict[str, Any]:
        doc = await self.db.subscriptions.find_one({"tenant_id": tenant_id, "_id": sub_id, "active": True})
        if not doc:
            raise NotFound("subscription")
        return subscription_view(doc)

    async def update(self, tenant_id: str, sub_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        await self.get(tenant_id, sub_id)
        sets = {k: v for k, v in changes.items() if k in ("url", "description")}
        if sets.get("url") is not None:
            sets["url"] = await self.check_url(sets["url"])
        if changes.get("events") is not None:
            sets["events"] = sorted(set(changes["events"]))
        if changes.get("secret") is not None:
            sets["secret"] = self.secrets.seal({"secret": changes["secret"]})
        if sets:
            await self.db.subscriptions.update_one({"tenant_id": tenant_id, "_id": sub_id}, {"$set": sets})
        return await self.get(tenant_id, sub_id)

    async def delete(self, tenant_id: str, sub_id: str) -> None:
        """Deactivate; pending deliveries are canceled, the log stays readable."""
        res = await self.db.subscriptions.update_one(
            {"tenant_id": tenant_id, "_id": sub_id, "active": True}, {"$set": {"active": False}}
        )
        if not res.matched_count:
            raise NotFound("subscription")
        await self.db.deliveries.update_many(
            {"tenant_id": tenant_id, "subscription_id": sub_id, "state": "pending"},
            {"$set": {"state": "canceled"}},
        )

    async def deliveries(
        self,
        tenant_id: str,
        sub_id: str,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
        state: str | None = None,
    ) -> dict[str, Any]:
        exists = await self.db.subscriptions.find_one({"tenant_id": tenant_id, "_id": sub_id}, {"_id": 1})
        if not exists:
            raise NotFound("subscription")
        flt: dict[str, Any] = {"tenant_id": tenant_id, "subscription_id": sub_id}
        if state:
            flt["state"] = state
        after = decode_cursor(cursor)
        if after:
            flt["seq"] = {"$lt": str(after[0])}
        docs = await self.db.deliveries.find(flt).sort("seq", -1).limit(limit + 1).to_list(limit + 1)
        result = page(docs, limit, lambda d: [d["seq"]])
        result["items"] = [delivery_view(d) for d in result["items"]]
        return result

    # ---- fan-out ------------------------------------------------------------------------------

    async def on_event(self, env: Envelope) -> None:
        """One delivery per matching subscription of the event's tenant (idempotent)."""
        if env.event_type == "rule.webhook_requested":
            await self.on_rule_webhook(env)
            return
        if is_internal(env.event_type):
            return
        subs = await self.db.subscriptions.find(
            {"tenant_id": env.tenant_id, "active": True, "events": {"$in": [env.event_type, "*"]}}
        ).to_list(1000)
        now = self.clock.now()
        for sub in subs:
            did = delivery_id(sub["_id"], env.event_id)
            body = {"delivery_id": did, **public_event(env)}
            try:
                await self.db.deliveries.insert_one(
                    {
                        "_id": did,
                        "seq": new_id(),
                        "tenant_id": env.tenant_id,
                        "subscription_id": sub["_id"],
                        "event_id": env.event_id,
                        "event_type": env.event_type,
                        "body": json.dumps(body, ensure_ascii=False, separators=(",", ":")),
                        "state": "pending",
                        "attempts": 0,
                        "created_at": now,
                        "next_attempt_at": now,
                        "claimed_until": None,
                        "log": [],
                    }
                )
            except DuplicateKeyError:
                continue
        if subs:
            self._wake.set()

    async def on_rule_webhook(self, env: Envelope) -> None:
        """An automation rule's ``webhook`` action (``rule.webhook_requested`` from tasks): one
        delivery of the triggering event to the rule's URL, keyed by the action's idempotency key.
        The rule's secret (sealed by tasks with the installation's key) signs it like a
        subscription's delivery; retries and isolation (per rule) are the same as for subscriptions."""
        payload = env.payload
        url, rule_id = payload.get("url"), payload.get("caused_by_rule")
        if not isinstance(url, str) or not isinstance(rule_id, str):
            log.warning("rule webhook without url or rule id dropped", extra={"event_id": env.event_id})
            return
        raw_event = payload.get("event")
        event: dict[str, Any] = raw_event if isinstance(raw_event, dict) else {}
        key = str(payload.get("action_key") or env.event_id)
        did = delivery_id(f"rule:{rule_id}", key)
        body = {
            "delivery_id": did,
            "rule_id": rule_id,
            "event_id": event.get("event_id"),
            "event_type": event.get("event_type"),
            "occurred_at": event.get("occurred_at"),
            "tenant_id": env.tenant_id,
            "payload": event.get("payload", {}),
        }
        now = self.clock.now()
        try:
            await self.db.deliveries.insert_one(
                {
                    "_id": did,
                    "seq": new_id(),
                    "tenant_id": env.tenant_id,
                    "subscription_id": f"rule:{rule_id}",
                    "url": url,
                    "secret": _rule_secret(payload.get("secret")),
                    "event_id": str(event.get("event_id") or env.event_id),
                    "event_type": str(event.get("event_type") or env.event_type),
                    "body": json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str),
                    "state": "pending",
                    "attempts": 0,
                    "created_at": now,
                    "next_attempt_at": now,
                    "claimed_until": None,
                    "log": [],
                }
            )
        except DuplicateKeyError:
            return
        self._wake.set()

    async def observe_backlog(self, metrics: Any) -> None:
        """Set the backlog gauges: pending deliveries, and the wait of the oldest due one."""
        now = self.clock.now()
        metrics.webhook_pending.set(await self.db.deliveries.count_documents({"state": "pending"}))
        oldest = await self.db.deliveries.find_one(
            {"state": "pending", "next_attempt_at": {"$lte": now}}, sort=[("next_attempt_at", 1)]
        )
        lag = 0.0
        if oldest:
            due = oldest["next_attempt_at"]
            if due.tzinfo is None:
                due = due.replace(tzinfo=now.tzinfo)
            lag = max(0.0, (now - due).total_seconds())
        metrics.webhook_lag.set(lag)

    # ---- delivery worker ----------------------------------------------------------------------

    def _new_client(self) -> httpx.AsyncClient:
        """Every delivery goes through the outbound guard, to the address it checked."""
        return httpx.AsyncClient(
            timeout=self.settings.timeout_s,
            transport=GuardedTransport(self.guard, self.transport),
            follow_redirects=False,
        )

    def start(self) -> None:
        self._client = self._new_client()
        self._task = asyncio.create_task(self._loop(), name="webhook-deliveries")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client:
            await self._client.aclose()
            self._client = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.dispatch_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("webhook dispatch failed", exc_info=True)
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_s)
            except TimeoutError:
                pass
            self._wake.clear()

    async def dispatch_due(self) -> int:
        """Claim due deliveries into free slots and start them; returns how many started."""
        started = 0
        while (free := self.settings.concurrency - len(self._tasks)) > 0:
            docs = await self.claim_batch(free)
            if not docs:
                break
            subs = await self._subscriptions_of(docs)
            for doc in docs:
                sub_id = doc["subscription_id"]
                self._inflight[sub_id] = self._inflight.get(sub_id, 0) + 1
                task = asyncio.create_task(self._run(doc, subs), name=f"webhook:{doc['_id']}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                started += 1
        return started

    def _claim_filter(self, now: Any) -> dict[str, Any]:
        return {
            "state": "pending",
            "next_attempt_at": {"$lte": now},
            "$or": [{"claimed_until": None}, {"claimed_until": {"$lt": now}}],
        }

    async def claim_batch(self, limit: int) -> builtins.list[dict[str, Any]]:
        """Up to ``limit`` due deliveries, at most ``per_subscription`` of one subscription in
        flight here, claimed in three round trips whatever their number: the candidates' ids,
        one ``update_many`` that claims those still unclaimed under a token of this call (atomic
        per document: another gateway claiming the same ones gets each only once), and a read of
        what carries the token."""
        now = self.clock.now()
        per_sub = self.settings.per_subscription
        busy = [s for s, n in self._inflight.items() if n >= per_sub]
        flt = self._claim_filter(now)
        if busy:
            flt["subscription_id"] = {"$nin": busy}
        candidates = (
            await self.db.deliveries.find(flt, {"_id": 1, "subscription_id": 1})
            .sort("next_attempt_at", 1)
            .limit(limit * 4)
            .to_list(limit * 4)
        )
        slots = {s: per_sub - n for s, n in self._inflight.items()}
        ids: builtins.list[str] = []
        for c in candidates:
            sub = c["subscription_id"]
            if slots.setdefault(sub, per_sub) > 0 and len(ids) < limit:
                slots[sub] -= 1
                ids.append(c["_id"])
        if not ids:
            return []
        token = uuid.uuid4().hex
        until = now + timedelta(seconds=self.settings.timeout_s + 30)
        await self.db.deliveries.update_many(
            {"_id": {"$in": ids}, **self._claim_filter(now)},
            {"$set": {"claimed_until": until, "claim": token}},
        )
        docs: builtins.list[dict[str, Any]] = await self.db.deliveries.find(
            {"_id": {"$in": ids}, "claim": token}
        ).to_list(len(ids))
        return docs

    async def claim(self) -> dict[str, Any] | None:
        """One due delivery (see :meth:`claim_batch`)."""
        docs = await self.claim_batch(1)
        return docs[0] if docs else None

    async def _subscriptions_of(
        self, docs: builtins.list[dict[str, Any]]
    ) -> dict[str, dict[str, Any] | None]:
        """The subscriptions of claimed deliveries, read once for the batch (a subscription
        deleted meanwhile has canceled its pending deliveries; an attempt already claimed goes)."""
        ids = sorted({d["subscription_id"] for d in docs if not d.get("url")})
        found: dict[str, dict[str, Any] | None] = dict.fromkeys(ids)
        if ids:
            async for sub in self.db.subscriptions.find({"_id": {"$in": ids}}):
                found[sub["_id"]] = sub
        return found

    async def _run(self, doc: dict[str, Any], subs: dict[str, dict[str, Any] | None]) -> None:
        try:
            await self.attempt(doc, subs)
        except Exception:
            log.exception("webhook attempt crashed", extra={"delivery_id": doc["_id"]})
        finally:
            sub = doc["subscription_id"]
            self._inflight[sub] -= 1
            if self._inflight[sub] <= 0:
                del self._inflight[sub]
            self._wake.set()

    async def attempt(self, doc: dict[str, Any], subs: dict[str, dict[str, Any] | None] | None = None) -> str:
        """One POST of a claimed delivery; records the outcome and returns the new state.
        ``subs``: the batch's subscriptions, already read (else it is read here)."""
        sub: dict[str, Any] | None
        if doc.get("url"):  # an automation rule's webhook: no subscription, the rule's secret
            sub = {"url": doc["url"], "secret": doc.get("secret")}
        elif subs is not None and doc["subscription_id"] in subs:
            sub = subs[doc["subscription_id"]]
            if sub is not None and sub.get("tenant_id") != doc["tenant_id"]:
                sub = None
        else:
            sub = await self.db.subscriptions.find_one(
                {"_id": doc["subscription_id"], "tenant_id": doc["tenant_id"]}
            )
        if not sub or not sub.get("active", True):
            await self.db.deliveries.update_one({"_id": doc["_id"]}, {"$set": {"state": "canceled"}})
            return "canceled"
        body = doc["body"].encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "crm-hub-webhooks/1",
            "X-CRM-Delivery-Id": doc["_id"],
            "X-CRM-Event-Type": doc["event_type"],
            "X-CRM-Event-Id": doc["event_id"],
        }
        if sub.get("secret"):
            secret = self.secrets.open(sub["secret"]).get("secret", "")
            timestamp = int(self.clock.now().timestamp())
            headers["X-CRM-Signature"] = sign(secret, body)
            # Standard Webhooks: the id is stable across retries (dedupe), the timestamp is this
            # attempt's (receivers reject replays outside their tolerance).
            headers["webhook-id"] = doc["_id"]
            headers["webhook-timestamp"] = str(timestamp)
            headers["webhook-signature"] = standard_signature(secret, doc["_id"], timestamp, body)
        client = self._client or self._new_client()
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            # httpx's timeouts are per phase; this bounds the whole attempt (a slow drip too).
            resp = await asyncio.wait_for(
                client.post(sub["url"], content=body, headers=headers), self.settings.timeout_s
            )
            status = resp.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except (httpx.TimeoutException, TimeoutError):
            error = "timeout"
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        finally:
            if client is not self._client:
                await client.aclose()
        now = self.clock.now()
        attempts = doc.get("attempts", 0) + 1
        entry = {
            "attempt": attempts,
            "at": now,
            "status": status,
            "error": error,
            "duration_ms": int((time.monotonic() - started) * 1000),
        }
        sets: dict[str, Any] = {
            "attempts": attempts,
            "last_status": status,
            "last_error": error,
            "claimed_until": None,
        }
        if error is None:
            sets |= {"state": "delivered", "delivered_at": now}
        else:
            next_at = now + timedelta(seconds=retry_delay(attempts, self.settings))
            created = doc["created_at"]
            if created.tzinfo is None:
                created = created.replace(tzinfo=now.tzinfo)
            if next_at > created + timedelta(seconds=self.settings.max_age_s):
                sets["state"] = "failed"
            else:
                sets["next_attempt_at"] = next_at
        await self.db.deliveries.update_one(
            {"_id": doc["_id"]},
            {"$set": sets, "$push": {"log": {"$each": [entry], "$slice": -LOG_KEEP}}},
        )
        state = str(sets.get("state", "pending"))
        self.observe("delivered" if error is None else ("failed" if state == "failed" else "retry"))
        return state
