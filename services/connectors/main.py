"""The connectors service: channels, the hook ingress, parsing and normalisation of every touch."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.errors import ConnectionFailure

from services.common.access import must, require_admin, tenant_of
from services.connectors.adapters import HOOK_KINDS, get_adapter
from services.connectors.adapters._tel_util import call_summary
from services.connectors.adapters.base import (
    CallStatus,
    Captured,
    ChannelView,
    HookError,
    HookOutcome,
    MessageStatus,
    RawRequest,
    RetryLater,
)
from services.connectors.conversations import service as conversations
from services.connectors.hookguard import HookLimiter, auth_health, keep_within_quota, rejected_record
from services.connectors.mail.ingest import MailIngest
from services.connectors.normalise import normalise
from services.connectors.outbound import channel_url_errors, mail_config_errors
from services.connectors.sending import SendWorker
from shared.asgi import BodyLimit
from shared.clock import as_utc, iso, new_id
from shared.errors import AppError, NotFound, ServiceUnavailable, ValidationFailed
from shared.events import Envelope, make_event
from shared.mongo import UnitOfWork
from shared.netguard import GuardedTransport, UrlGuard
from shared.normalize import IDENTITY_KEY_PURPOSE, identity_digest, phone_key
from shared.pagination import clamp_limit, decode_cursor, page
from shared.service import Service

log = logging.getLogger(__name__)

KINDS = (*HOOK_KINDS, "imap")
REQUIRED_SECRETS: dict[str, tuple[str, ...]] = {
    "twilio": ("auth_token",),
    "zadarma": ("api_secret",),
    "mango": ("api_key", "api_salt"),
    "typeform": ("secret",),
    "webflow": ("secret",),
    "meta_leads": ("app_secret", "verify_token", "page_access_token"),
    "google_ads": ("key",),
    "vk": ("confirmation", "secret"),
    "telegram": ("secret_token",),
    "whatsapp": ("app_secret", "verify_token", "access_token"),
    "avito": ("client_id", "client_secret"),
    "imap": ("password",),
}
REQUIRED_CONFIG: dict[str, tuple[str, ...]] = {
    "whatsapp": ("phone_number_id",),
    "avito": ("user_id",),
    "imap": ("host", "username"),
}
NUMERIC_CONFIG: dict[str, tuple[str, ...]] = {"whatsapp": ("phone_number_id",), "avito": ("user_id",)}
CONSUMER_HOOKS = "connectors.hooks"
PROBLEM = "application/problem+json"
ENRICH_GIVE_UP = timedelta(hours=24)
HEALTH_FLUSH_S = 0.5
FINAL_CALL = ("answered", "missed", "busy", "failed")
UNANSWERED = ("missed", "busy", "failed")
CACHE_S = 5.0
"""How long a process keeps a channel or a tenant's region read from the database."""


def problem(err: AppError) -> JSONResponse:
    return JSONResponse(err.to_problem(), status_code=err.status, media_type=PROBLEM, headers=err.headers)


class ConnectorsService(Service):
    name = "connectors"
    indexes: ClassVar = {
        "channels": [IndexModel([("tenant_id", ASCENDING), ("_id", DESCENDING)])],
        "rejected_hooks": [
            IndexModel([("channel_id", ASCENDING), ("at", DESCENDING)]),
            IndexModel([("at", ASCENDING)], expireAfterSeconds=30 * 24 * 3600),
        ],
        "deferred": [IndexModel([("next_at", ASCENDING)])],
        "calls": [
            IndexModel([("seen_at", ASCENDING)], expireAfterSeconds=30 * 24 * 3600),
            IndexModel([("tenant_id", ASCENDING), ("sender_keys", ASCENDING)]),
        ],
        **conversations.INDEXES,
    }

    def setup(self) -> None:
        self._channel_cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._region_cache: dict[str, tuple[float, str]] = {}
        self._opened: dict[Any, dict[str, str]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.http: httpx.AsyncClient | None = None
        self.guard = UrlGuard.from_settings(self.settings)
        self.hook_limiter = HookLimiter(self.settings.hook_rate, self.settings.hook_client_rate)
        # First retry of a deferred enrichment (then doubling, capped at an hour). Tests shorten it.
        self.retry_first_s = self.settings.enrich_retry_s
        self._wake = asyncio.Event()
        self._health_pending: dict[str, dict[str, dict[str, Any]]] = {}
        self._health_wake = asyncio.Event()
        # Held while counts move from memory to the database, and while a channel is read and
        # shown: a read never sees a count in neither place (swapped out, not yet written) or in both.
        self._health_lock = asyncio.Lock()
        self.on("hook.received", self.on_hook_received, consumer=CONSUMER_HOOKS)
        self.on("tenant.settings_changed", self.on_settings_changed)
        self.on("contact.erased", self.on_contact_erased)
        self.mail = MailIngest(self)
        self.mail.setup()
        self.sending = SendWorker(self)
        conversations.install(self)
        for name in (
            "create_channel",
            "list_channels",
            "get_channel",
            "update_channel",
            "list_rejected_hooks",
        ):
            self.rpc.method(name)(getattr(self, name))

    async def on_start(self) -> None:
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(10.0, connect=5.0), transport=GuardedTransport(self.guard)
        )
        self._tasks.append(asyncio.create_task(self._deferred_loop(), name="connectors-deferred"))
        self._tasks.append(asyncio.create_task(self._health_loop(), name="connectors-health"))
        self._tasks.append(asyncio.create_task(self.sending.run(), name="connectors-sending"))
        await self.mail.start()

    async def start_ingress(self) -> None:
        """Serve hooks only (the gateway process of ``crm run all``): the channel-health flusher,
        no consumers, no RPC, no pollers (those run in the workers process)."""
        self._tasks.append(asyncio.create_task(self._health_loop(), name="connectors-ingress-health"))

    async def stop_ingress(self) -> None:
        """Stop the background loops and write the health counts still in memory."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        await self.flush_health()

    async def on_stop(self) -> None:
        await self.mail.stop()
        await self.stop_ingress()
        if self.http:
            await self.http.aclose()

    # ---- channels (RPC) ---------------------------------------------------------------------

    def webhook_url(self, channel_id: str) -> str:
        return f"{self.settings.base_url}/hooks/{channel_id}"

    def view(self, doc: dict[str, Any]) -> dict[str, Any]:
        doc = self._with_pending_health(doc)
        health = dict(doc.get("health") or {})
        for k in ("last_success_at", "last_error_at"):
            health[k] = iso(health.get(k))
        health.setdefault("received", 0)
        health.setdefault("rejected", 0)
        health.setdefault("last_error", None)
        health.update(auth_health(doc["kind"], doc.get("secret_names", [])))
        return {
            "id": doc["_id"],
            "kind": doc["kind"],
            "name": doc["name"],
            "webhook_url": self.webhook_url(doc["_id"]),
            "intake": doc.get("intake", "inbox"),
            "owner_id": doc.get("owner_id"),
            "config": doc.get("config", {}),
            "secrets_set": sorted(doc.get("secret_names", [])),
            "active": doc.get("active", True),
            "health": health,
            "created_at": iso(doc.get("created_at")),
        }

    def _check(self, kind: str, config: dict[str, Any], secrets: dict[str, str]) -> None:
        errors: dict[str, str] = {}
        if kind not in KINDS:
            errors["kind"] = "unknown channel kind"
        for name in REQUIRED_SECRETS.get(kind, ()):
            if not secrets.get(name):
                errors[f"secrets.{name}"] = f"is required for {kind}"
        for name in REQUIRED_CONFIG.get(kind, ()):
            if not config.get(name):
                errors[f"config.{name}"] = f"is required for {kind}"
        errors.update(mail_config_errors(kind, config))
        for name in NUMERIC_CONFIG.get(kind, ()):
            value = config.get(name)
            if value not in (None, "") and not str(value).strip().isdigit():
                errors[f"config.{name}"] = "must be the provider's numeric id"
        if errors:
            raise ValidationFailed(errors)

    async def _check_urls(self, kind: str, config: dict[str, Any]) -> None:
        if errors := await channel_url_errors(kind, config, self.guard):
            raise ValidationFailed(errors)

    async def create_channel(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        require_admin(ctx)
        body = args["body"]
        secrets = {k: str(v) for k, v in (body.get("secrets") or {}).items()}
        config = body.get("config") or {}
        self._check(body["kind"], config, secrets)
        await self._check_urls(body["kind"], config)
        doc = {
            "_id": new_id(),
            "tenant_id": tenant_of(ctx),
            "kind": body["kind"],
            "name": body["name"],
            "config": config,
            "secrets_enc": self.rt.secrets.seal(secrets),
            "secret_names": sorted(secrets),
            "intake": body.get("intake") or "inbox",
            "owner_id": body.get("owner_id"),
            "active": True,
            "health": {"received": 0, "rejected": 0},
            "created_at": self.clock.now(),
        }

        async def unit(uow: UnitOfWork) -> None:
            await uow.db.channels.insert_one(doc, session=uow.session)
            uow.emit("channel.created", doc["tenant_id"], {"channel_id": doc["_id"], "kind": doc["kind"]})

        await self.store.atomic(unit)
        return self.view(doc)

    async def list_channels(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        limit = clamp_limit(args.get("limit"))
        flt: dict[str, Any] = {"tenant_id": tenant_of(ctx)}
        after = decode_cursor(args.get("cursor"))
        if after:
            flt["_id"] = {"$lt": after[0]}
        async with self._health_lock:
            docs = (
                await self.db.channels.find(flt).sort("_id", DESCENDING).limit(limit + 1).to_list(limit + 1)
            )
            return page([self.view(d) for d in docs], limit, lambda it: [it["id"]])

    async def get_channel(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        async with self._health_lock:
            doc = must(
                await self.db.channels.find_one({"tenant_id": tenant_of(ctx), "_id": args["channel_id"]}),
                "channel",
            )
            return self.view(doc)

    async def list_rejected_hooks(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """A channel's recent rejected hooks (admin), newest first: when, the answer given, and
        the start of the body. Headers and query strings are not shown (they may carry tokens)."""
        require_admin(ctx)
        tenant = tenant_of(ctx)
        must(await self.db.channels.find_one({"tenant_id": tenant, "_id": args["channel_id"]}), "channel")
        limit = clamp_limit(args.get("limit"))
        flt: dict[str, Any] = {"tenant_id": tenant, "channel_id": args["channel_id"]}
        after = decode_cursor(args.get("cursor"))
        if after:
            flt["_id"] = {"$lt": after[0]}
        docs = (
            await self.db.rejected_hooks.find(flt).sort("_id", DESCENDING).limit(limit + 1).to_list(limit + 1)
        )
        items = [
            {
                "id": d["_id"],
                "at": iso(d.get("at")),
                "status": d.get("status"),
                "reason": d.get("reason"),
                "method": d.get("method"),
                "subpath": d.get("subpath") or "",
                "body_excerpt": bytes(d.get("body") or b"")[:2000].decode("utf-8", "replace"),
            }
            for d in docs
        ]
        return page(items, limit, lambda it: [it["id"]])

    async def update_channel(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        require_admin(ctx)
        flt = {"tenant_id": tenant_of(ctx), "_id": args["channel_id"]}
        doc = must(await self.db.channels.find_one(flt), "channel")
        changes = dict(args.get("changes") or {})
        update: dict[str, Any] = {
            k: changes[k]
            for k in ("name", "config", "intake", "owner_id", "active")
            if (k in changes and changes[k] is not None) or (k == "owner_id" and k in changes)
        }
        secrets = self.rt.secrets.open(doc.get("secrets_enc"))
        if changes.get("secrets") is not None:
            secrets = {**secrets, **{k: str(v) for k, v in changes["secrets"].items()}}
            update["secrets_enc"] = self.rt.secrets.seal(secrets)
            update["secret_names"] = sorted(secrets)
        self._check(doc["kind"], update.get("config", doc.get("config", {})), secrets)
        await self._check_urls(doc["kind"], update.get("config", doc.get("config", {})))
        if update:
            await self.db.channels.update_one(flt, {"$set": update})
        self._channel_cache.pop(doc["_id"], None)
        async with self._health_lock:
            fresh = must(await self.db.channels.find_one(flt), "channel")
            return self.view(fresh)

    async def on_contact_erased(self, env: Envelope) -> None:
        """Forget the calls of an erased person (what is kept to join a call's events)."""
        await conversations.ON_ERASED(self, env)
        keys = list(env.payload.get("identity_keys") or [])
        if keys:
            await self.db.calls.delete_many({"tenant_id": env.tenant_id, "sender_keys": {"$in": keys}})

    async def on_settings_changed(self, env: Envelope) -> None:
        await self.db.tenants.update_one(
            {"_id": env.tenant_id}, {"$set": {"settings": env.payload["settings"]}}, upsert=True
        )
        self._region_cache.pop(env.tenant_id, None)

    async def region(self, tenant_id: str) -> str:
        """The tenant's default phone region, read at most every ``CACHE_S`` per process (the
        replica that handles a settings change forgets it at once, the others within ``CACHE_S``)."""
        hit = self._region_cache.get(tenant_id)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        doc = await self.db.tenants.find_one({"_id": tenant_id})
        region = str(((doc or {}).get("settings") or {}).get("default_region") or "RU")
        self._region_cache[tenant_id] = (time.monotonic() + CACHE_S, region)
        return region

    # ---- hook ingress -----------------------------------------------------------------------

    async def channel(self, channel_id: str, *, fresh: bool = False) -> dict[str, Any] | None:
        hit = self._channel_cache.get(channel_id)
        if hit and hit[0] > time.monotonic() and not fresh:
            return hit[1]
        doc = await self.db.channels.find_one({"_id": channel_id})
        if doc is not None:
            self._channel_cache[channel_id] = (time.monotonic() + CACHE_S, doc)
        return doc

    def channel_view(self, doc: dict[str, Any]) -> ChannelView:
        return ChannelView(
            id=doc["_id"],
            tenant_id=doc["tenant_id"],
            kind=doc["kind"],
            config=doc.get("config", {}),
            secrets=self._secrets_of(doc),
        )

    def _secrets_of(self, doc: dict[str, Any]) -> dict[str, str]:
        """The channel's secrets, decrypted once per sealed value (not once per hook)."""
        sealed = doc.get("secrets_enc")
        if not sealed:
            return {}
        hit = self._opened.get(sealed)
        if hit is None:
            if len(self._opened) > 10_000:
                self._opened.clear()
            hit = self._opened[sealed] = self.rt.secrets.open(sealed)
        return dict(hit)

    async def _health(
        self, channel_id: str, ok: bool, error: str | None = None, counter: str | None = None
    ) -> None:
        """Count a hook in the channel's health. Kept in memory and written every
        ``HEALTH_FLUSH_S`` so that no database write sits between a hook and its 2xx; this
        process's unwritten counts are added to what ``get_channel`` shows."""
        now = self.clock.now()
        pending = self._health_pending.setdefault(channel_id, {"inc": {}, "set": {}})
        field = f"health.{counter or ('received' if ok else 'rejected')}"
        pending["inc"][field] = pending["inc"].get(field, 0) + 1
        if ok:
            pending["set"]["health.last_success_at"] = now
        else:
            pending["set"].update({"health.last_error_at": now, "health.last_error": error})
        self._health_wake.set()

    async def flush_health(self) -> None:
        async with self._health_lock:
            await self._write_health()

    async def _write_health(self) -> None:
        pending, self._health_pending = self._health_pending, {}
        for channel_id, change in pending.items():
            try:
                await self.db.channels.update_one(
                    {"_id": channel_id}, {"$inc": change["inc"], "$set": change["set"]}
                )
            except Exception:
                log.warning(
                    "channel health not written; kept for the next pass", extra={"channel_id": channel_id}
                )
                again = self._health_pending.setdefault(channel_id, {"inc": {}, "set": {}})
                for k, v in change["inc"].items():
                    again["inc"][k] = again["inc"].get(k, 0) + v
                again["set"] = {**change["set"], **again["set"]}

    async def _health_loop(self) -> None:
        while True:
            await self._health_wake.wait()
            self._health_wake.clear()
            await asyncio.sleep(HEALTH_FLUSH_S)
            await self.flush_health()

    def _with_pending_health(self, doc: dict[str, Any]) -> dict[str, Any]:
        change = self._health_pending.get(doc["_id"])
        if not change:
            return doc
        health = dict(doc.get("health") or {})
        for field, n in change["inc"].items():
            key = field.removeprefix("health.")
            health[key] = int(health.get(key) or 0) + n
        for field, value in change["set"].items():
            health[field.removeprefix("health.")] = value
        return {**doc, "health": health}

    def ingress_app(self) -> FastAPI:
        """The HTTP app behind ``/hooks``: mounted by the gateway, or served on its own."""
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

        @app.api_route("/{channel_id}", methods=["GET", "POST"])
        @app.api_route("/{channel_id}/{subpath:path}", methods=["GET", "POST"])
        async def hook(channel_id: str, request: Request, subpath: str = "") -> Response:
            return await self.receive_hook(channel_id, subpath, request)

        app.add_middleware(BodyLimit, max_body=self.settings.max_body)
        return app

    async def receive_hook(self, channel_id: str, subpath: str, request: Request) -> Response:
        try:
            return await self._receive_hook(channel_id, subpath, request)
        except ConnectionFailure:  # the database is unreachable: nothing was accepted, say so
            log.warning("hook not accepted: the database is unreachable", extra={"channel_id": channel_id})
            return problem(
                ServiceUnavailable(
                    "The hub's database is unreachable; retry later.", headers={"Retry-After": "5"}
                )
            )

    async def _receive_hook(self, channel_id: str, subpath: str, request: Request) -> Response:
        client = request.client.host if request.client else "?"
        if wait := self.hook_limiter.check(channel_id, client, time.monotonic()):
            return problem(
                AppError(
                    "Too many hooks; retry later.",
                    status=429,
                    code="rate_limited",
                    title="Too many requests",
                    headers={"Retry-After": str(wait)},
                )
            )
        doc = await self.channel(channel_id)
        if doc is None or not doc.get("active", True) or doc["kind"] not in HOOK_KINDS:
            return problem(NotFound("channel"))
        adapter = get_adapter(doc["kind"])
        if adapter is None:
            return problem(
                AppError(
                    f"The {doc['kind']} adapter is not available.",
                    status=501,
                    code="not_implemented",
                    title="Not implemented",
                )
            )
        body = await request.body()
        query = request.url.query
        sub = f"/{subpath}" if subpath else ""
        raw = RawRequest(
            method=request.method,
            url=f"{self.settings.base_url}/hooks/{channel_id}{sub}" + (f"?{query}" if query else ""),
            subpath=sub,
            query=query,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        now = self.clock.now()
        try:
            outcome = adapter.handle(self.channel_view(doc), raw, now)
        except HookError as exc:
            await self._reject(doc, raw, exc, now)
            err = AppError(
                exc.detail,
                status=exc.status,
                title=exc.title,
                errors=exc.errors or None,
                code=f"hook_{exc.status}",
            )
            return problem(err)
        except Exception:  # an adapter bug must not lose the lead: keep it, answer 500
            log.exception("adapter crashed", extra={"channel_id": channel_id, "kind": doc["kind"]})
            await self._reject(doc, raw, HookError(500, "Adapter error", "adapter crashed"), now)
            return problem(AppError("Internal error.", status=500, code="internal"))
        if outcome.durable and not outcome.discarded:
            env = make_event(
                "hook.received",
                tenant_id=doc["tenant_id"],
                producer=self.name,
                payload={
                    "channel_id": channel_id,
                    "method": raw.method,
                    "url": raw.url,
                    "subpath": raw.subpath,
                    "query": raw.query,
                    "headers": dict(raw.headers),
                    "body_b64": base64.b64encode(body).decode(),
                    "received_at": now.isoformat(),
                },
            )
            try:
                await self.rt.publisher.publish(env, mandatory=True)
            except Exception:
                log.exception("hook not durably accepted", extra={"channel_id": channel_id})
                return problem(ServiceUnavailable("The hook could not be stored; retry later."))
            await self._health(channel_id, True)
        elif outcome.discarded:
            await self._health(channel_id, True, counter=f"discarded_{outcome.discarded}")
        resp = outcome.response
        return Response(resp.body, status_code=resp.status, media_type=resp.content_type)

    async def _reject(self, doc: dict[str, Any], raw: RawRequest, exc: HookError, now: datetime) -> None:
        record = rejected_record(
            doc,
            record_id=new_id(),
            at=now,
            status=exc.status,
            reason=exc.title,
            method=raw.method,
            subpath=raw.subpath,
            query=raw.query,
            headers=dict(raw.headers),
            body=raw.body,
        )
        await self.db.rejected_hooks.insert_one(record)
        await keep_within_quota(self.db.rejected_hooks, doc["_id"])
        await self._health(doc["_id"], False, error=f"{exc.status} {exc.title}")

    # ---- after the durable accept -----------------------------------------------------------

    @staticmethod
    def _raw_from(payload: dict[str, Any]) -> tuple[RawRequest, datetime]:
        raw = RawRequest(
            method=payload["method"],
            url=payload["url"],
            subpath=payload.get("subpath", ""),
            query=payload.get("query", ""),
            headers=payload.get("headers", {}),
            body=base64.b64decode(payload["body_b64"]),
        )
        return raw, as_utc(datetime.fromisoformat(payload["received_at"]))

    async def on_hook_received(self, env: Envelope) -> None:
        payload = env.payload
        doc = await self.channel(payload["channel_id"], fresh=True)
        if doc is None:
            log.warning("hook for a deleted channel dropped", extra={"channel_id": payload["channel_id"]})
            return
        adapter = get_adapter(doc["kind"])
        if adapter is None:
            raise RuntimeError(f"no adapter for {doc['kind']}")
        raw, received_at = self._raw_from(payload)
        view = self.channel_view(doc)
        try:
            outcome = adapter.handle(view, raw, received_at)
        except HookError as exc:  # secrets rotated in between: keep it for inspection
            await self._reject(doc, raw, exc, received_at)
            return
        if outcome.needs_enrichment:
            # Network work (Meta's Graph API) never holds up the hooks queue: the request is kept
            # in ``deferred`` (durably, before the ack) and the enrichment loop picks it up now.
            await self._defer(env, "enrichment pending", delay_s=0.0)
            self._wake.set()
            return
        try:
            await self._emit(env, doc, list(outcome.items), outcome.statuses)
        except RetryLater as exc:
            await self._defer(env, str(exc))

    async def _emit(
        self,
        env: Envelope,
        doc: dict[str, Any],
        items: list[Captured],
        statuses: Sequence[MessageStatus] = (),
    ) -> None:
        """Publish the interactions of one hook (once per hook event), and the delivery reports on
        messages we sent (``delivery.status_reported``, for conversations); raises
        :class:`RetryLater` when a call event cannot be placed yet (a recording before its call)."""
        region = await self.region(doc["tenant_id"])
        items = [await self._join_call(doc, item, region) for item in items]
        captured = [normalise(item, doc, region) for item in items]

        async def unit(uow: UnitOfWork) -> None:
            for item, payload in zip(items, captured, strict=True):
                uow.emit(
                    "interaction.captured",
                    doc["tenant_id"],
                    payload,
                    idempotency_key=item.idempotency_key,
                    caused_by=env,
                )
            for status in statuses:
                uow.emit(
                    "delivery.status_reported",
                    doc["tenant_id"],
                    {"channel_id": doc["_id"], **dataclasses.asdict(status)},
                    idempotency_key=f"status:{doc['_id']}:{status.idempotency_key}",
                    caused_by=env,
                )

        await self.store.consume(env, CONSUMER_HOOKS, unit)

    async def _join_call(self, doc: dict[str, Any], item: Captured, region: str) -> Captured:
        """Keep what is known about one call (``subject_key``) so its events converge in any order.

        - An event without a client (a recording: Twilio, Zadarma, Mango) takes the call's client
          and direction; before any event with the client has arrived it is retried later, so it
          joins the call instead of opening an inbox item or a contact of its own.
        - Twilio: the inbound parent leg always ends ``completed``; when the ``<Dial>`` leg already
          said nobody answered (and no other leg was answered), that verdict is the call's status.
        - Once any leg of a call was answered (an Asterisk ring group, Twilio simultaneous
          dialling), a later "no answer" of another leg leaves the call answered.
        """
        if item.kind != "call" or not item.subject_key:
            return item
        key = f"{doc['tenant_id']}:{item.subject_key}"
        status = item.data.get("status")
        sets: dict[str, Any] = {"seen_at": self.clock.now()}
        if item.sender.phones:
            sets["sender"] = {"name": item.sender.name, "phones": list(item.sender.phones)}
            sets["sender_keys"] = [
                identity_digest(doc["tenant_id"], e164, self.rt.secrets.derive(IDENTITY_KEY_PURPOSE))
                for e164 in (phone_key(p, region) for p in item.sender.phones)
                if e164
            ]
            sets["direction"] = item.direction
        leg = item.data.get("leg")
        if leg == "dial" and status in FINAL_CALL:
            sets["dial_status"] = status
        if status == "answered" and leg != "parent":
            sets["answered"] = True  # someone of ours picked up (any leg of a ring group)
        call = await self.db.calls.find_one_and_update(
            {"_id": key},
            {"$set": sets, "$setOnInsert": {"tenant_id": doc["tenant_id"]}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        if not item.sender.phones and not item.sender.emails:
            known = call.get("sender")
            if not known:
                raise RetryLater("call event before the call itself")
            item = dataclasses.replace(
                item,
                direction=call.get("direction") or item.direction,
                sender=dataclasses.replace(
                    item.sender, name=item.sender.name or known.get("name"), phones=tuple(known["phones"])
                ),
            )
        dial = call.get("dial_status")
        if leg == "parent" and status == "answered" and dial in UNANSWERED and not call.get("answered"):
            item = self._with_status(item, dial)
        elif status in UNANSWERED and leg != "parent" and call.get("answered"):
            # Another leg of this call was answered (ring group, simultaneous dialling): this
            # leg's "no answer" must not turn the answered call into a missed one.
            item = self._with_status(item, "answered")
        return item

    @staticmethod
    def _with_status(item: Captured, status: CallStatus) -> Captured:
        """The item with the call's verdict instead of its own leg's (leg-only details dropped)."""
        leg_only = ("duration_s", "disposition", "provider_status")
        data = {k: v for k, v in item.data.items() if k not in leg_only}
        data["status"] = status
        summary = call_summary(item.direction, status, None)
        return dataclasses.replace(item, data=data, summary=summary)

    async def _defer(self, env: Envelope, reason: str, delay_s: float | None = None) -> None:
        now = self.clock.now()
        delay = self.retry_first_s if delay_s is None else delay_s
        await self.db.deferred.update_one(
            {"_id": env.event_id},
            {
                "$setOnInsert": {
                    "envelope": env.model_dump(mode="json"),
                    "first_at": now,
                    "attempts": 0,
                    "next_at": now + timedelta(seconds=delay),
                    "reason": reason[:200],
                }
            },
            upsert=True,
        )

    async def retry_deferred(self) -> int:
        """Run the deferred work that is due: enrichments (first try and retries) and call events
        that wait for their call. Back-off doubles from ``retry_first_s`` up to an hour; after
        24 h an entry is marked failed (kept, never dropped) and the channel health says so."""
        done = 0
        while True:
            now = self.clock.now()
            doc = await self.db.deferred.find_one_and_update(
                {"next_at": {"$lte": now}, "failed": {"$ne": True}},
                {"$set": {"next_at": now + timedelta(minutes=5)}},
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                return done
            env = Envelope.model_validate(doc["envelope"])
            channel = await self.channel(env.payload["channel_id"], fresh=True)
            adapter = get_adapter(channel["kind"]) if channel else None
            if channel is None or adapter is None:
                await self.db.deferred.delete_one({"_id": doc["_id"]})
                continue
            raw, received_at = self._raw_from(env.payload)
            view = self.channel_view(channel)
            try:
                outcome: HookOutcome = adapter.handle(view, raw, received_at)
                items = list(outcome.items)
                if outcome.needs_enrichment:
                    items += list(await adapter.enrich(view, outcome, self.http, received_at))
                await self._emit(env, channel, items, outcome.statuses)
            except RetryLater as exc:
                attempts = doc["attempts"] + 1
                failed = now - as_utc(doc["first_at"]) > ENRICH_GIVE_UP
                delay = min(3600.0, self.retry_first_s * 2**attempts)
                await self.db.deferred.update_one(
                    {"_id": doc["_id"]},
                    {
                        "$set": {
                            "attempts": attempts,
                            "reason": str(exc)[:200],
                            "failed": failed,
                            "next_at": now + timedelta(seconds=delay),
                        }
                    },
                )
                if failed:
                    await self._health(channel["_id"], False, error="enrichment failed for 24 h")
                continue
            except HookError as exc:  # secrets rotated in between: keep it for inspection
                await self._reject(channel, raw, exc, received_at)
                await self.db.deferred.delete_one({"_id": doc["_id"]})
                continue
            await self.db.deferred.delete_one({"_id": doc["_id"]})
            done += 1

    async def _deferred_loop(self) -> None:
        while True:
            self._wake.clear()  # a wake-up during the pass below makes the next wait return at once
            try:
                await self.retry_deferred()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("deferred enrichment pass failed", exc_info=True)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=min(2.0, self.retry_first_s))
            except TimeoutError:
                pass
