"""Every change an administrator, manager or inspector makes, through a route or a command, leaves
an audit row. The routes and the commands are enumerated from the app and from the command's
parser, so one added without an audit row (or a reason in the exemption table) fails here.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from merchant_code import cli
from tests import factories
from tests import world as w

Ctx = dict[str, Any]
Step = Callable[[AsyncTestClient[Any], w.World, Ctx], Awaitable[httpx.Response]]
PRIVILEGED = {"staff", "manager", "admin"}


WORLD = {k: "{" + k + "}" for k in [*"abiscpm", "case"]}  # the world's own placeholders, kept for world.fill


def _url(world: w.World, path: str, ctx: Ctx) -> str:
    return world.fill(path.format(**WORLD, **ctx))


def api(method: str, path: str, role: str = "manager", json: Any = None, keep: str | None = None) -> Step:
    """A call as `role`; `keep` stores the answer's `id` in the context for a later step."""

    async def step(client: AsyncTestClient[Any], world: w.World, ctx: Ctx) -> httpx.Response:
        body = json(ctx) if callable(json) else json
        url = _url(world, path, ctx)
        response = await client.request(method, url, json=body, headers=world.headers(role))
        if keep is not None and response.status_code < 300:
            ctx[keep] = response.json()["id"]
        return response

    return step


def page(path: str, form: dict[str, str], role: str = "manager") -> Step:
    async def step(client: AsyncTestClient[Any], world: w.World, ctx: Ctx) -> httpx.Response:
        url = _url(world, path, ctx)
        return await client.post(url, data=form, headers=world.headers(role), follow_redirects=False)

    return step


def _later() -> str:
    return (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)).isoformat()


def _policy(ctx: Ctx) -> dict[str, Any]:
    return {"title": "夏季食品安全", "body_md": "请做好**防暑**。", "area_codes": ["310199001"],
            "send_at": _later()}  # fmt: skip


INSPECTION = {"kind": "routine", "result": "pass", "grade": "A"}
POLICY_FORM = {"title": "冬季防火", "body_md": "注意用火", "area_codes": "310199001", "send": "at",
               "send_at": "2099-01-01T09:00"}  # fmt: skip
MANUAL_CASE = {"category": "price", "description": "价格不明"}
ROUTE = {"area_code": "310199001", "category": "food_safety", "department": "enforcement"}
WEBHOOK = {"name": "city-app", "url": "https://hooks.example/in", "events": ["case_opened"],
           "area_code": "310199001"}  # fmt: skip
# (method, route path as Litestar lists it) -> how to make the change, and the audit action it leaves.
# Run in this order: later steps use what earlier ones made (ctx).
AUDITED_ROUTES: dict[tuple[str, str], tuple[Step, str]] = {
    ("POST", "/api/v1/inspect/shops/{code:str}/inspections"): (
        api("POST", "/api/v1/inspect/shops/{a}/inspections", "inspector_in", INSPECTION),
        "inspection.file",
    ),
    ("POST", "/s/{code:str}/inspections"): (
        page("/s/{a}/inspections", INSPECTION, "inspector_in"),
        "inspection.file",
    ),
    ("POST", "/api/v1/inspect/submissions/{id:str}"): (
        api("POST", "/api/v1/inspect/submissions/{s}", "inspector_in", {"decision": "verify"}),
        "licence.verify",
    ),
    ("POST", "/s/{code:str}/submissions/{id:str}"): (
        page("/s/{a}/submissions/{second}", {"decision": "reject", "note": "照片不清楚"}, "inspector_in"),
        "licence.reject",
    ),
    ("POST", "/api/v1/manage/policies"): (
        api("POST", "/api/v1/manage/policies", json=_policy, keep="policy_id"),
        "policy.create",
    ),
    ("PUT", "/api/v1/manage/policies/{policy_id:str}"): (
        api("PUT", "/api/v1/manage/policies/{policy_id}", json=_policy),
        "policy.edit",
    ),
    ("POST", "/api/v1/manage/policies/{policy_id:str}/cancel"): (
        api("POST", "/api/v1/manage/policies/{policy_id}/cancel"),
        "policy.cancel",
    ),
    ("POST", "/api/v1/manage/policies/{policy_id:str}/corrections"): (
        api("POST", "/api/v1/manage/policies/{p}/corrections", json={"title": "更正", "body_md": "时间有误"}),
        "policy.correct",
    ),
    ("POST", "/manage/policies"): (
        page("/manage/policies", POLICY_FORM),
        "policy.create",
    ),
    ("POST", "/manage/policies/{policy_id:str}/cancel"): (
        page("/manage/policies/{policy_id}/cancel", {}),
        "policy.cancel",
    ),
    ("POST", "/manage/policies/{policy_id:str}/corrections"): (
        page("/manage/policies/{p}/corrections", {"title": "再更正", "body_md": "以此为准"}),
        "policy.correct",
    ),
    ("POST", "/api/v1/cases"): (
        api("POST", "/api/v1/cases", json=lambda c: {**MANUAL_CASE, "shop_code": c["shop_a"]}),
        "case.open",
    ),
    ("POST", "/api/v1/cases/{number:str}/transitions"): (
        api("POST", "/api/v1/cases/{case}/transitions", "inspector_in", {"action": "note", "note": "已联系"}),
        "case.note",
    ),
    ("POST", "/cases/{number:str}/transitions"): (
        page("/cases/{case}/transitions", {"action": "assign", "assignee": "inspector_in"}),
        "case.assign",
    ),
    ("PUT", "/api/v1/manage/routes"): (
        api("PUT", "/api/v1/manage/routes", json=ROUTE, keep="route_id"),
        "route.set",
    ),
    ("DELETE", "/api/v1/manage/routes/{route_id:str}"): (
        api("DELETE", "/api/v1/manage/routes/{route_id}"),
        "route.delete",
    ),
    ("POST", "/api/v1/manage/webhooks"): (
        api("POST", "/api/v1/manage/webhooks", json=WEBHOOK),
        "webhook.subscribe",
    ),
    ("DELETE", "/api/v1/manage/webhooks/{name:str}"): (
        api("DELETE", "/api/v1/manage/webhooks/city-app"),
        "webhook.unsubscribe",
    ),
}
EXEMPT_ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/api/v1/manage/audience"): "a preview: counts the shops a policy would reach, changes nothing",
}


def privileged_writes(client: AsyncTestClient[Any]) -> list[tuple[str, str]]:
    return sorted(
        (method, route.path)
        for route in client.app.routes
        if isinstance(route, HTTPRoute)
        for method, (handler, _) in route.route_handler_map.items()
        if method not in ("GET", "HEAD", "OPTIONS") and handler.opt.get("access") in PRIVILEGED
    )


async def _count(conn: asyncpg.Connection, action: str) -> int:
    found: int = await conn.fetchval("SELECT count(*) FROM audit_event WHERE action = $1", action)
    return found


async def test_every_change_by_staff_managers_and_admins_through_a_route_is_audited(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    routes = privileged_writes(client)
    unlisted = [r for r in routes if r not in AUDITED_ROUTES and r not in EXEMPT_ROUTES]
    assert unlisted == [], "state-changing routes with neither an audit row nor a reason"
    stale = [r for r in [*AUDITED_ROUTES, *EXEMPT_ROUTES] if r not in routes]
    assert stale == [], "rows for routes that no longer exist (or are no longer privileged)"

    world = await w.build(conn, client)
    ctx: Ctx = {
        "shop_a": world.shop_a,
        "second": await conn.fetchval(
            "INSERT INTO licence (shop_id, source, external_id, kind, number, valid_from, status) VALUES"
            " ($1, 'merchant', 'audit-2', 'business', 'YY001', current_date, 'pending_verification')"
            " RETURNING public_id::text",
            world.shop_a_id,
        ),
    }
    unaudited = []
    for route, (step, action) in AUDITED_ROUTES.items():
        before = await _count(conn, action)
        response = await step(client, world, ctx)
        location = response.headers.get("location", "")
        assert response.status_code < 400 and "error=" not in location, (route, response.text, location)
        if route == ("POST", "/manage/policies"):  # the page answers with the new policy's page
            ctx["policy_id"] = location.rsplit("/", 1)[-1].split("?")[0]
        if await _count(conn, action) != before + 1:
            unaudited.append(f"{route}: no {action} row")
    assert unaudited == []
    row = await conn.fetchrow(
        "SELECT a.login, e.object_id, e.request_id FROM audit_event e JOIN account a"
        " ON a.id = e.actor_account_id WHERE e.action = 'route.delete'"
    )
    assert row is not None and row["login"] == "manager" and row["object_id"] == str(ctx["route_id"])
    assert row["request_id"]


# --- the command line ---------------------------------------------------------------------------

# (subcommand path) -> the command line that makes the change ({code}, {kid}: from the context), and
# the audit action it leaves. Run in this order.
AUDITED_COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("account", "create"): ("account create li.ops --role admin", "account.create"),
    ("account", "reset-password"): ("account reset-password li.ops", "account.reset-password"),
    ("account", "disable"): ("account disable li.ops", "account.disable"),
    ("shop", "claim-code"): ("shop claim-code {code}", "shop.claim-code"),
    ("qr", "keys", "rotate"): ("qr keys rotate", "qr-key.rotate"),
    ("qr", "keys", "revoke"): ("qr keys revoke {kid}", "qr-key.revoke"),
    ("qr", "revoke-code"): ("qr revoke-code {code} --reason stolen", "shop-code.revoke"),
    ("channels", "add"): ("channels add sms --url https://sms.example/send", "channel.add"),
    ("feeds", "add"): ("feeds add city --kind lives --url https://data.example/lives.csv", "feed.add"),
    ("feeds", "disable"): ("feeds disable city", "feed.disable"),
    ("feeds", "enable"): ("feeds enable city", "feed.enable"),
    ("feeds", "map"): ("feeds map city 4412 {code}", "feed.map"),
    ("feeds", "remove"): ("feeds remove city", "feed.remove"),
    ("open311", "key", "create"): ("open311 key create city-app", "open311-key.create"),
    ("open311", "key", "disable"): ("open311 key disable city-app", "open311-key.disable"),
}
EXEMPT_COMMANDS: dict[tuple[str, ...], str] = {
    ("serve",): "runs the service; what it changes is audited where it changes it",
    ("demo",): "runs the service on a demo district",
    ("migrate",): "schema changes: recorded with their checksums in schema_migration",
    ("backup",): "reads one snapshot",
    ("restore",): "fills an empty database from a backup, verified against its manifest",
    ("seed",): "generates a synthetic demo district: a development tool",
    ("profiles",): "recomputes derived profiles from inputs that are audited as they change",
    ("feeds", "run"): "pulls outside data; every run is recorded in feed_run",
    ("feeds", "status"): "reads",
    ("feeds", "unmatched"): "reads",
    ("feeds", "quality"): "reads; a case it raises is opened in the case's own trail (case_event),"
    " as the intake's are",
    ("channels", "list"): "reads",
    ("open311", "key", "list"): "reads",
    ("audit", "verify"): "reads, after sealing what has committed (the chain itself, not a change)",
    ("audit", "export-checkpoints"): "reads the checkpoints into a file",
    ("audit", "checkpoint"): "signs the chain's head into audit_checkpoint, itself append-only and"
    " signed; an audit row would move the head it signs",
    ("qr", "verify"): "reads",
    ("qr", "sheet"): "writes sticker sheets to a file; nothing in force changes",
}


def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every runnable subcommand of the parser, by its path of names."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path
        return
    for name, child in subs[0].choices.items():
        yield from leaves(child, (*path, name))


def _run(argv: list[str]) -> int:
    try:
        cli.main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


async def test_every_command_that_changes_security_or_delivery_is_audited(
    conn: asyncpg.Connection, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands = sorted(leaves(cli._parser()))
    unlisted = [c for c in commands if c not in AUDITED_COMMANDS and c not in EXEMPT_COMMANDS]
    assert unlisted == [], "commands with neither an audit row nor a reason"
    stale = [c for c in [*AUDITED_COMMANDS, *EXEMPT_COMMANDS] if c not in commands]
    assert stale == [], "rows for commands that no longer exist"

    for name in [k for k in os.environ if k.startswith("MERCHANT_CODE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MERCHANT_CODE_DATABASE_URL", db_url)
    monkeypatch.setenv("MERCHANT_CODE_DATA_DIR", str(tmp_path))
    _, code = await factories.shop(conn)
    ctx: Ctx = {"code": code}
    unaudited = []
    for command, (argv, action) in AUDITED_COMMANDS.items():
        if command == ("qr", "keys", "revoke"):
            ctx["kid"] = await conn.fetchval("SELECT kid FROM qr_key ORDER BY created_at LIMIT 1")
        before = await _count(conn, action)
        assert await asyncio.to_thread(_run, argv.format(**ctx).split()) == 0, command
        if await _count(conn, action) != before + 1:
            unaudited.append(f"{' '.join(command)}: no {action} row")
    assert unaudited == []
    detail = await conn.fetchval("SELECT detail FROM audit_event WHERE action = 'qr-key.rotate'")
    assert detail == {"retired": []}
