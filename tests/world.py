"""A small district where every kind of person has an account: the stage of the access tests.

Shop A is in subdistrict 001 and belongs to merchant_a; shop B is in subdistrict 002 and
belongs to merchant_b. inspector_in works in 001, inspector_out in 002; the manager has the
whole district; pii_inspector works in 001 and holds `pii:read`.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
from litestar.testing import AsyncTestClient

from tests import factories

PASSWORD = "correct horse battery"
ROLES = ("anonymous", "merchant_a", "merchant_b", "inspector_in", "inspector_out", "manager", "admin")

# every personal value of shop A; none may reach a view that may not see it
PII = {
    "owner_name": "王伟",
    "owner_phone": "13812341234",
    "owner_id_number": "310104198001011234",
    "staff_name": "赵敏",
    "staff_id_number": "310104199202023456",
    "staff_phone": "13998765432",
    "staff_cert": "JK2026-310104-0042",
}


class World(msgspec.Struct):
    shop_a: str
    shop_b: str
    shop_a_id: int
    tokens: dict[str, str]
    inspection_a: str  # public id of an inspection of shop A
    submission_a: str  # public id of a licence shop A's owner sent in, not yet verified
    complaint_a: str  # the reporter's tracking number of a complaint about shop A
    case_a: str  # that complaint's case: its own number, as staff and the shop see it
    policy: str  # public id of a policy sent to subdistrict 001's catering shops (shop A)
    inbox_a: str  # the public id of its delivery to shop A's inbox

    def fill(self, path: str) -> str:
        return path.format(
            a=self.shop_a,
            b=self.shop_b,
            i=self.inspection_a,
            s=self.submission_a,
            c=self.complaint_a,
            case=self.case_a,
            p=self.policy,
            m=self.inbox_a,
        )

    def headers(self, role: str, **extra: str) -> dict[str, str]:
        headers = dict(extra)
        if role in self.tokens:
            headers["authorization"] = f"Bearer {self.tokens[role]}"
        return headers


async def log_in(client: AsyncTestClient[Any], login: str, password: str = PASSWORD) -> str:
    response = await client.post("/api/v1/auth/login", json={"login": login, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


async def build(conn: asyncpg.Connection, client: AsyncTestClient[Any]) -> World:
    sub1 = await factories.area(conn, "310199001", "一街道")
    sub2 = await factories.area(conn, "310199002", "二街道")
    shop_a, code_a = await factories.shop(
        conn, name="老王面馆", owner_name=PII["owner_name"], owner_phone=PII["owner_phone"]
    )
    await factories.move_shop(conn, shop_a, sub1)
    await factories.staff(
        conn,
        shop_a,
        name=PII["staff_name"],
        id_number=PII["staff_id_number"],
        phone=PII["staff_phone"],
        cert=PII["staff_cert"],
    )
    shop_b, code_b = await factories.shop(
        conn,
        name="李记小吃",
        owner_name="李娜",
        owner_phone="13700001111",
        owner_id_number="31010419900303777X",
    )
    await factories.move_shop(conn, shop_b, sub2)
    await factories.account(conn, "merchant_a", "merchant", shop_ids=(shop_a,))
    await factories.account(conn, "merchant_b", "merchant", shop_ids=(shop_b,))
    await factories.account(conn, "inspector_in", "inspector", area_code="310199001")
    await factories.account(conn, "inspector_out", "inspector", area_code="310199002")
    await factories.account(conn, "manager", "manager", area_code="310199")
    await factories.account(conn, "admin", "admin")
    await factories.account(
        conn, "pii_inspector", "inspector", area_code="310199001", permissions=("pii:read",)
    )
    tokens = {role: await log_in(client, role) for role in (*ROLES[1:], "pii_inspector")}
    inspection = await conn.fetchval(
        "INSERT INTO inspection (shop_id, source, external_id, inspected_on, result, grade)"
        " VALUES ($1, 'test', 'world-1', current_date - 30, 'pass', 'A') RETURNING public_id::text",
        shop_a,
    )
    submission = await conn.fetchval(
        "INSERT INTO licence (shop_id, source, external_id, kind, number, valid_from, status)"
        " VALUES ($1, 'merchant', 'world-2', 'hygiene', 'WS20260001', current_date, 'pending_verification')"
        " RETURNING public_id::text",
        shop_a,
    )
    await conn.execute(
        "INSERT INTO case_file (public_id, tracking_number, request_id, shop_id, source, category,"
        " description, area_path, department, sla_due_at) VALUES ('CS-WORLD-00001', 'TS-WORLD-00001',"
        " 'SR-WORLD-00001', $1, 'complaint', 'hygiene',"
        " '门口垃圾堆放',"
        " '310199.310199001', 'food_safety', now() + interval '3 days')",
        shop_a,
    )
    policy = await conn.fetchval(
        "INSERT INTO policy (title, body_md, trades, area_ids, status, next_at, last_sent_at)"
        " VALUES ('夏季食品安全', '请做好**防暑**。', '{catering}', ARRAY[$1::bigint], 'sent', NULL, now())"
        " RETURNING id",
        sub1,
    )
    inbox_a = await conn.fetchval(
        "INSERT INTO delivery (policy_id, shop_id, occurrence, status, delivered_at)"
        " VALUES ($1, $2, now(), 'delivered', now()) RETURNING public_id::text",
        policy,
        shop_a,
    )
    return World(
        policy=await conn.fetchval("SELECT public_id::text FROM policy WHERE id = $1", policy),
        inbox_a=inbox_a,
        shop_a=code_a,
        shop_b=code_b,
        shop_a_id=shop_a,
        tokens=tokens,
        inspection_a=inspection,
        submission_a=submission,
        complaint_a="TS-WORLD-00001",
        case_a="CS-WORLD-00001",
    )
