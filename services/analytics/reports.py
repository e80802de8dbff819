"""Reports computed from the analytics read models. Pure functions: documents in, report out.

Every report answers a dict; its ``items`` (or the list named by :data:`CSV_ROWS`) are the CSV rows.
Rates are fractions 0–1; money is a decimal string.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from shared.clock import as_utc

Doc = dict[str, Any]
CSV_ROWS = {"funnel": "stages", "cycle-time": "stages"}


def money(value: Any) -> Decimal:
    try:
        return Decimal(str(value)) if value not in (None, "") else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


def fmt(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


def rate(num: float, den: float) -> float:
    return round(num / den, 4) if den else 0.0


def in_range(at: Any, start: datetime | None, end: datetime | None) -> bool:
    if at is None:
        return False
    at = as_utc(at if isinstance(at, datetime) else datetime.fromisoformat(str(at)))
    return (start is None or at >= start) and (end is None or at < end)


def source_key(source: Doc | None) -> str:
    source = source or {}
    return str(source.get("utm_source") or source.get("kind") or "unknown")


def _visits(deal: Doc) -> list[Doc]:
    return sorted(deal.get("visits", []), key=lambda v: as_utc(v["entered_at"]))


def funnel(pipeline: Doc, deals: Iterable[Doc], start: datetime | None, end: datetime | None) -> Doc:
    """Per open stage: deals that entered it in the period, and those that went on further."""
    stages = pipeline.get("stages", [])
    order = {s["id"]: i for i, s in enumerate(stages) if s["kind"] == "open"}
    won_ids = {s["id"] for s in stages if s["kind"] == "won"}
    entered: dict[str, int] = defaultdict(int)
    moved_on: dict[str, int] = defaultdict(int)
    won = lost = 0
    for deal in deals:
        visits = _visits(deal)
        for stage_id, idx in order.items():
            firsts = [
                v for v in visits if v["stage_id"] == stage_id and in_range(v["entered_at"], start, end)
            ]
            if not firsts:
                continue
            entered[stage_id] += 1
            first_at = as_utc(firsts[0]["entered_at"])
            if any(
                as_utc(v["entered_at"]) > first_at
                and (order.get(v["stage_id"], -1) > idx or v["stage_id"] in won_ids)
                for v in visits
            ):
                moved_on[stage_id] += 1
        if deal.get("status") == "won" and in_range(deal.get("won_at"), start, end):
            won += 1
        elif deal.get("status") == "lost" and in_range(deal.get("lost_at"), start, end):
            lost += 1
    rows = [
        {
            "stage_id": s["id"],
            "name": s["name"],
            "entered": entered[s["id"]],
            "moved_on": moved_on[s["id"]],
            "conversion": rate(moved_on[s["id"]], entered[s["id"]]),
        }
        for s in stages
        if s["kind"] == "open"
    ]
    return {
        "pipeline_id": pipeline["_id"],
        "stages": rows,
        "won": won,
        "lost": lost,
        "win_rate": rate(won, won + lost),
    }


def cycle_time(
    pipeline: Doc | None, deals: Iterable[Doc], start: datetime | None, end: datetime | None
) -> Doc:
    """Days from creation to won, and where deals wait longest (the bottleneck)."""
    names = {s["id"]: s["name"] for s in (pipeline or {}).get("stages", []) if s["kind"] == "open"}
    days: list[float] = []
    in_stage: dict[str, list[float]] = defaultdict(list)
    for deal in deals:
        visits = _visits(deal)
        for i, v in enumerate(visits):
            if v["stage_id"] not in names or not in_range(v["entered_at"], start, end):
                continue
            left = visits[i + 1]["entered_at"] if i + 1 < len(visits) else None
            if left is not None:
                in_stage[v["stage_id"]].append(
                    (as_utc(left) - as_utc(v["entered_at"])).total_seconds() / 3600
                )
        if (
            deal.get("status") == "won"
            and in_range(deal.get("won_at"), start, end)
            and deal.get("created_at")
        ):
            days.append((as_utc(deal["won_at"]) - as_utc(deal["created_at"])).total_seconds() / 86400)
    rows = [
        {
            "stage_id": sid,
            "name": name,
            "deals": len(in_stage[sid]),
            "avg_hours": round(statistics.fmean(in_stage[sid]), 2) if in_stage[sid] else None,
            "median_hours": round(statistics.median(in_stage[sid]), 2) if in_stage[sid] else None,
        }
        for sid, name in names.items()
    ]
    timed = [r for r in rows if r["avg_hours"] is not None]
    bottleneck = max(timed, key=lambda r: r["avg_hours"])["stage_id"] if timed else None
    return {
        "won_deals": len(days),
        "avg_days": round(statistics.fmean(days), 2) if days else None,
        "median_days": round(statistics.median(days), 2) if days else None,
        "stages": rows,
        "bottleneck_stage_id": bottleneck,
    }


def conversion(
    contacts: Sequence[Doc], deals: Sequence[Doc], start: datetime | None, end: datetime | None
) -> Doc:
    """Lead → deal → won, overall and per owner."""
    leads = [c for c in contacts if in_range(c.get("created_at"), start, end)]
    created = [d for d in deals if in_range(d.get("created_at"), start, end)]
    won = [d for d in created if d.get("status") == "won"]
    per_owner: dict[str | None, dict[str, int]] = defaultdict(lambda: {"deals": 0, "won": 0, "lost": 0})
    for d in created:
        row = per_owner[d.get("owner_id")]
        row["deals"] += 1
        if d.get("status") in ("won", "lost"):
            row[d["status"]] += 1
    items = [
        {"owner_id": owner, **row, "win_rate": rate(row["won"], row["won"] + row["lost"])}
        for owner, row in sorted(per_owner.items(), key=lambda kv: str(kv[0]))
    ]
    return {
        "leads": len(leads),
        "deals": len(created),
        "won": len(won),
        "lead_to_deal": rate(len({d.get("contact_id") for d in created}), len(leads)),
        "deal_to_won": rate(len(won), len(created)),
        "items": items,
    }


def sources(
    contacts: Sequence[Doc],
    deals: Sequence[Doc],
    costs: Sequence[Doc],
    start: datetime | None,
    end: datetime | None,
) -> Doc:
    """Per first-touch source: leads, deals, won, revenue, conversion (won/leads), cost and ROI."""
    contact_source = {c["_id"]: source_key(c.get("source")) for c in contacts}
    rows: dict[str, Doc] = defaultdict(
        lambda: {"leads": 0, "deals": 0, "won": 0, "revenue": Decimal(0), "cost": Decimal(0)}
    )
    for c in contacts:
        if in_range(c.get("created_at"), start, end):
            rows[source_key(c.get("source"))]["leads"] += 1
    for d in deals:
        key = (
            source_key(d.get("source"))
            if d.get("source")
            else contact_source.get(d.get("contact_id"), "unknown")
        )
        if in_range(d.get("created_at"), start, end):
            rows[key]["deals"] += 1
        if d.get("status") == "won" and in_range(d.get("won_at"), start, end):
            rows[key]["won"] += 1
            rows[key]["revenue"] += money(d.get("amount"))
    for cost in costs:
        if _period_overlaps(cost.get("period"), start, end):
            rows[str(cost["source"])]["cost"] += money(cost.get("amount"))
    items = []
    for key, row in sorted(rows.items(), key=lambda kv: (-kv[1]["leads"], kv[0])):
        cost = row["cost"]
        items.append(
            {
                "source": key,
                "leads": row["leads"],
                "deals": row["deals"],
                "won": row["won"],
                "revenue": fmt(row["revenue"]),
                "conversion": rate(row["won"], row["leads"]),
                "cost": fmt(cost) if cost else None,
                "roi": round(float((row["revenue"] - cost) / cost), 4) if cost else None,
            }
        )
    return {"items": items}


def _period_overlaps(period: str | None, start: datetime | None, end: datetime | None) -> bool:
    """``YYYY-MM`` against the report window."""
    if not period:
        return True
    try:
        first = datetime.fromisoformat(f"{period}-01T00:00:00+00:00")
    except ValueError:
        return False
    year, month = (first.year + 1, 1) if first.month == 12 else (first.year, first.month + 1)
    after = first.replace(year=year, month=month)
    return (end is None or first < end) and (start is None or after > start)


def month(at: Any) -> str:
    return as_utc(at if isinstance(at, datetime) else datetime.fromisoformat(str(at))).strftime("%Y-%m")


def plan_vs_actual(
    plans: Sequence[Doc], deals: Sequence[Doc], start: datetime | None, end: datetime | None
) -> Doc:
    """Each plan (period, owner, pipeline) against the revenue won in that period."""
    items = []
    for plan in sorted(plans, key=lambda p: (p["period"], str(p.get("owner_id")))):
        if not _period_overlaps(plan["period"], start, end):
            continue
        won = [
            d
            for d in deals
            if d.get("status") == "won"
            and d.get("won_at")
            and month(d["won_at"]) == plan["period"]
            and (plan.get("owner_id") is None or d.get("owner_id") == plan["owner_id"])
            and (plan.get("pipeline_id") is None or d.get("pipeline_id") == plan["pipeline_id"])
        ]
        actual = sum((money(d.get("amount")) for d in won), Decimal(0))
        target = money(plan.get("amount"))
        items.append(
            {
                "period": plan["period"],
                "owner_id": plan.get("owner_id"),
                "pipeline_id": plan.get("pipeline_id"),
                "plan_amount": fmt(target),
                "actual_amount": fmt(actual),
                "completion": round(float(actual / target), 4) if target else None,
                "plan_deals": plan.get("deals"),
                "actual_deals": len(won),
            }
        )
    return {"items": items}


def forecast(deals: Sequence[Doc]) -> Doc:
    """Open deals by expected close month: amount and amount weighted by probability."""
    rows: dict[str, Doc] = defaultdict(lambda: {"deals": 0, "amount": Decimal(0), "weighted": Decimal(0)})
    for d in deals:
        if d.get("status") != "open":
            continue
        key = str(d["expected_close"])[:7] if d.get("expected_close") else "unscheduled"
        amount = money(d.get("amount"))
        rows[key]["deals"] += 1
        rows[key]["amount"] += amount
        rows[key]["weighted"] += amount * Decimal(int(d.get("probability") or 0)) / 100
    items = [
        {"period": k, "deals": v["deals"], "amount": fmt(v["amount"]), "weighted": fmt(v["weighted"])}
        for k, v in sorted(rows.items(), key=lambda kv: (kv[0] == "unscheduled", kv[0]))
    ]
    total = sum((money(i["weighted"]) for i in items), Decimal(0))
    return {"items": items, "weighted_total": fmt(total)}


def ltv_cac(
    contacts: Sequence[Doc],
    deals: Sequence[Doc],
    costs: Sequence[Doc],
    start: datetime | None,
    end: datetime | None,
) -> Doc:
    """Per source: customers won, lifetime revenue per customer (LTV), acquisition cost per new
    customer (CAC) from the recorded marketing costs, and their ratio."""
    contact_source = {c["_id"]: source_key(c.get("source")) for c in contacts}
    revenue: dict[str, Decimal] = defaultdict(Decimal)
    customers: dict[str, set[str]] = defaultdict(set)
    new_customers: dict[str, set[str]] = defaultdict(set)
    for d in deals:
        if d.get("status") != "won":
            continue
        key = (
            source_key(d.get("source"))
            if d.get("source")
            else contact_source.get(d.get("contact_id"), "unknown")
        )
        revenue[key] += money(d.get("amount"))
        customers[key].add(str(d.get("contact_id")))
        if in_range(d.get("won_at"), start, end):
            new_customers[key].add(str(d.get("contact_id")))
    cost: dict[str, Decimal] = defaultdict(Decimal)
    for c in costs:
        if _period_overlaps(c.get("period"), start, end):
            cost[str(c["source"])] += money(c.get("amount"))
    items = []
    for key in sorted(set(revenue) | set(cost)):
        n = len(customers[key])
        ltv = revenue[key] / n if n else None
        cac = cost[key] / len(new_customers[key]) if new_customers[key] and cost[key] else None
        items.append(
            {
                "source": key,
                "customers": n,
                "new_customers": len(new_customers[key]),
                "revenue": fmt(revenue[key]),
                "ltv": fmt(ltv) if ltv is not None else None,
                "cost": fmt(cost[key]),
                "cac": fmt(cac) if cac is not None else None,
                "ltv_cac": round(float(ltv / cac), 2) if ltv is not None and cac else None,
            }
        )
    return {"items": items}


def activity(
    interactions: Sequence[Doc], tasks_done: Sequence[Doc], start: datetime | None, end: datetime | None
) -> Doc:
    """Per user: touches by kind (on the contacts they own) and tasks completed."""
    kinds = ("call", "email", "message", "meeting", "note", "form", "ad_lead")
    rows: dict[str | None, Doc] = defaultdict(lambda: {**{k: 0 for k in kinds}, "tasks_done": 0})
    for i in interactions:
        if in_range(i.get("occurred_at"), start, end) and i.get("kind") in kinds:
            rows[i.get("owner_id")][i["kind"]] += 1
    for t in tasks_done:
        if in_range(t.get("completed_at"), start, end):
            rows[t.get("assignee_id")]["tasks_done"] += 1
    return {"items": [{"user_id": u, **r} for u, r in sorted(rows.items(), key=lambda kv: str(kv[0]))]}


def response_time(
    interactions: Sequence[Doc],
    tasks_done: Sequence[Doc],
    start: datetime | None,
    end: datetime | None,
    sla_minutes: int,
) -> Doc:
    """For each new lead (its first inbound touch): minutes until somebody answered — the first
    outbound touch or completed task on that contact. Per owner: averages and the share within SLA."""
    by_contact: dict[str, list[Doc]] = defaultdict(list)
    for i in interactions:
        by_contact[str(i.get("contact_id"))].append(i)
    done_at: dict[str, list[datetime]] = defaultdict(list)
    for t in tasks_done:
        if t.get("contact_id") and t.get("completed_at"):
            done_at[str(t["contact_id"])].append(as_utc(t["completed_at"]))
    per_owner: dict[str | None, Doc] = defaultdict(lambda: {"leads": 0, "responded": 0, "minutes": []})
    for contact_id, items in by_contact.items():
        items.sort(key=lambda i: as_utc(i["occurred_at"]))
        first_in = next((i for i in items if i.get("direction") == "in"), None)
        if (
            first_in is None
            or not first_in.get("is_new_contact")
            or not in_range(first_in["occurred_at"], start, end)
        ):
            continue
        at = as_utc(first_in["occurred_at"])
        answers = [
            as_utc(i["occurred_at"])
            for i in items
            if i.get("direction") == "out" and as_utc(i["occurred_at"]) >= at
        ]
        answers += [d for d in done_at.get(contact_id, []) if d >= at]
        row = per_owner[first_in.get("owner_id")]
        row["leads"] += 1
        if answers:
            row["responded"] += 1
            row["minutes"].append((min(answers) - at).total_seconds() / 60)
    items = []
    for owner, row in sorted(per_owner.items(), key=lambda kv: str(kv[0])):
        mins = row["minutes"]
        items.append(
            {
                "owner_id": owner,
                "leads": row["leads"],
                "responded": row["responded"],
                "avg_minutes": round(statistics.fmean(mins), 1) if mins else None,
                "median_minutes": round(statistics.median(mins), 1) if mins else None,
                "within_sla": rate(sum(1 for m in mins if m <= sla_minutes), row["leads"]),
            }
        )
    return {"sla_minutes": sla_minutes, "items": items}
