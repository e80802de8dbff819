"""Automation rules by RPC: list, read, create, update, delete (built-in rules are disabled, not deleted)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo.errors import DuplicateKeyError

from services.common.access import must, read_filter, require_admin, tenant_of
from services.tasks import rules as r
from services.tasks.handlers.base import (
    TasksBase,
    _check_event_type,
    _check_webhook_urls,
    _parse_stage_tasks,
    _rule_from_doc,
    _rule_to_doc,
    _seal_webhook_secrets,
)
from shared.clock import new_id
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.mongo import UnitOfWork
from shared.netguard import UrlGuard


class RuleHandlers(TasksBase):
    # ---- automation rules RPC ---------------------------------------------------------------

    @staticmethod
    def _rule_view(rule: r.Rule, settings: Mapping[str, Any]) -> dict[str, Any]:
        view = rule.model_dump(mode="json")
        for action in view.get("actions") or []:
            if action.get("type") == "webhook":  # write-only
                action["secret_set"] = bool(action.pop("secret", None))
        if rule.builtin:
            view["enabled"] = rule.id not in (settings.get("disabled_rules") or [])
        if rule.id == r.STAGE_TASKS:
            view["stage_tasks"] = settings.get("stage_tasks") or {}
        return view

    async def list_rules(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """Built-in rules (with their on/off state), then the tenant's own."""
        tenant = read_filter(ctx)["tenant_id"]
        settings = await self._settings(tenant)
        rules = [*r.default_rules(), *await self._custom_rules(tenant)]
        return {"items": [self._rule_view(x, settings) for x in rules], "next_cursor": None}

    async def get_rule(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        tenant = read_filter(ctx)["tenant_id"]
        rule_id = str(args["rule_id"])
        settings = await self._settings(tenant)
        for builtin in r.default_rules():
            if builtin.id == rule_id:
                return self._rule_view(builtin, settings)
        doc = must(await self.db.rules.find_one({"_id": f"{tenant}:{rule_id}", "tenant_id": tenant}), "rule")
        return self._rule_view(_rule_from_doc(doc), settings)

    async def create_rule(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        require_admin(ctx)
        tenant = tenant_of(ctx)
        body = dict(args.get("body") or {})
        body.setdefault("id", new_id())
        rule = r.parse_rule(body)
        _check_event_type(rule)
        await _check_webhook_urls(rule, UrlGuard.from_settings(self.settings))
        rule = _seal_webhook_secrets(rule, self.rt.secrets, None)

        async def unit(uow: UnitOfWork) -> None:
            doc = {**_rule_to_doc(rule, tenant), "created_at": uow.now, "updated_at": uow.now}
            try:
                await uow.db.rules.insert_one(doc, session=uow.session)
            except DuplicateKeyError as exc:
                raise Conflict("A rule with this id exists.", errors={"id": "already used"}) from exc

        await self.store.atomic(unit)
        return self._rule_view(rule, {})

    async def update_rule(self, ctx: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """Built-in rules: ``enabled`` (and ``stage_tasks`` for the stage rule); custom rules: any
        field but ``id``."""
        require_admin(ctx)
        tenant = tenant_of(ctx)
        rule_id = str(args["rule_id"])
        changes = dict(args.get("changes") or {})
        if rule_id in r.BUILTIN_RULE_IDS:
            return await self._update_builtin(tenant, rule_id, changes)
        doc = must(await self.db.rules.find_one({"_id": f"{tenant}:{rule_id}", "tenant_id": tenant}), "rule")
        if "id" in changes and changes["id"] != rule_id:
            raise ValidationFailed({"id": "cannot be changed"})
        if "stage_tasks" in changes:
            raise ValidationFailed({"stage_tasks": "only the built-in stage_tasks rule has stage tasks"})
        current = _rule_from_doc(doc).model_dump(mode="json")
        previous = _rule_from_doc(doc)
        rule = r.parse_rule({**current, **changes, "builtin": False}, rule_id=rule_id)
        _check_event_type(rule)
        await _check_webhook_urls(rule, UrlGuard.from_settings(self.settings))
        rule = _seal_webhook_secrets(rule, self.rt.secrets, previous)

        async def unit(uow: UnitOfWork) -> None:
            await uow.db.rules.replace_one(
                {"_id": doc["_id"], "tenant_id": tenant},
                {**_rule_to_doc(rule, tenant), "created_at": doc.get("created_at"), "updated_at": uow.now},
                session=uow.session,
            )

        await self.store.atomic(unit)
        return self._rule_view(rule, {})

    async def _update_builtin(self, tenant: str, rule_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        allowed = {"enabled", "stage_tasks"} if rule_id == r.STAGE_TASKS else {"enabled"}
        errors = {k: "cannot be changed on a built-in rule" for k in changes if k not in allowed}
        if "enabled" in changes and not isinstance(changes["enabled"], bool):
            errors["enabled"] = "must be true or false"
        stage_tasks: dict[str, list[dict[str, Any]]] | None = None
        if "stage_tasks" in changes and "stage_tasks" not in errors:
            stage_tasks, st_errors = _parse_stage_tasks(changes["stage_tasks"])
            errors.update(st_errors)
        if errors:
            raise ValidationFailed(errors)
        update: dict[str, Any] = {}
        if "enabled" in changes:
            op = "$pull" if changes["enabled"] else "$addToSet"
            update[op] = {"disabled_rules": rule_id}
        if stage_tasks is not None:
            update["$set"] = {"stage_tasks": stage_tasks}

        async def unit(uow: UnitOfWork) -> None:
            if update:
                await uow.db.settings.update_one({"_id": tenant}, update, upsert=True, session=uow.session)

        await self.store.atomic(unit)
        settings = await self._settings(tenant)
        rule = next(x for x in r.default_rules() if x.id == rule_id)
        return self._rule_view(rule, settings)

    async def delete_rule(self, ctx: dict[str, Any], args: dict[str, Any]) -> None:
        require_admin(ctx)
        tenant = tenant_of(ctx)
        rule_id = str(args["rule_id"])
        if rule_id in r.BUILTIN_RULE_IDS:
            raise ValidationFailed({"id": "a built-in rule cannot be deleted; disable it instead"})
        res = await self.db.rules.delete_one({"_id": f"{tenant}:{rule_id}", "tenant_id": tenant})
        if res.deleted_count == 0:
            raise NotFound("rule")
