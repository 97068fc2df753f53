"""Schemathesis against the app's own OpenAPI document, in process: every operation it describes,
sent as every kind of person (anonymous and the six roles of the access tests' world, plus an
admin token that was logged out and one signed with another key, which must count for nobody).

For each operation a few cases are generated (fixed seed: `derandomize`, no example database, no
deadline, so CI runs the same requests every time): schema-valid ones, schema-breaking ones, and
schema-valid ones aimed at the world's real objects with only the body fields the document
declares (so they get past the 404 and the unknown-field 400 and reach the handler). Each case is
sent once per identity and must show

- no 5xx;
- a body that matches what the document declares for that status and media type (Schemathesis'
  `response_schema_conformance`: the 2xx JSON bodies, the problem details every other 4xx answers
  with, and the Open311 error lists);
- auth never ignored: on an operation whose access rule does not admit the identity, never a 2xx
  (nor a redirect anywhere but to the login page).

The HTML pages are not in the document (`include_in_schema=False`); test_access covers them.

Nothing stops at the first failure: every finding of every operation is collected, and the test
fails once, with the list, after the whole run; the per-operation outcome is printed either way
(`pytest -s` shows it).

What is not sent as is, and why:
- the two operations that end a session (logout, password change) are sent with a fresh session
  of the identity's account each time, minted for the purpose, so the world's tokens outlive them;
- the fuzzed app allows many failed logins and scans (`throttle_failures`, `scan_rate`): its own
  address is the same for every request, and once throttled, login, claims and scans answer 429
  to everything and stop being exercised. 429s are fine; they only cover less.
No operation of the document has an irreversible effect on the rest of the run (there is no
account disabling in the API; a claim needs a claim code no generator guesses).
"""

from __future__ import annotations

import collections
import os
import re
from collections.abc import Callable
from typing import Any

import asyncpg
import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Ok
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import response_schema_conformance

from merchant_code import access, auth
from merchant_code.app import create_app
from merchant_code.settings import Settings
from tests import world as w

# per operation (each is sent as every identity); MERCHANT_CODE_FUZZ_EXAMPLES=200 for a deeper run
EXAMPLES = int(os.environ.get("MERCHANT_CODE_FUZZ_EXAMPLES", "6"))
ROLE_OF = {
    "anonymous": None,
    "merchant_a": "merchant",
    "merchant_b": "merchant",
    "inspector_in": "inspector",
    "inspector_out": "inspector",
    "manager": "manager",
    "admin": "admin",
    # and two that are nobody: the admin's token after logging out, and one signed with another key
    "admin_logged_out": None,
    "admin_forged": None,
}
# operations that end the session they are sent with: each call gets a session of its own
ENDS_SESSION = {("POST", "/api/v1/auth/logout"), ("POST", "/api/v1/auth/password")}
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.generate],  # findings are collected, not raised: nothing to shrink
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)

Key = tuple[str, str]  # (METHOD, OpenAPI path)
Case = schemathesis.Case[Any]
Operation = schemathesis.APIOperation[Any, Any, Any, Any]


def access_rules(routes: list[Any]) -> dict[Key, str]:
    """The access rule of every (method, path) the app serves, with the path spelt as in OpenAPI."""
    rules: dict[Key, str] = {}
    for route in routes:
        if isinstance(route, HTTPRoute):
            path = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", route.path)
            for method, (handler, _) in route.route_handler_map.items():
                rules[(method, path)] = handler.opt.get("access", "")
    return rules


def real_path_parameters(world: w.World, path: str) -> dict[str, Any]:
    """The world's own objects for an operation's path parameters (those it has)."""
    known: dict[str, Any] = {
        "code": world.shop_a,
        # a case's own number for staff and the shop, the reporter's tracking number for /track
        "number": world.complaint_a if path.startswith("/track/") else world.case_a,
        "policy_id": world.policy,
        "item_id": world.inbox_a,
        "request_file": "SR-WORLD-00001.json",
        "service_file": "hygiene.json",
        "id": world.submission_a if "/submissions/" in path else world.inspection_a,
    }
    names = re.findall(r"\{(\w+)\}", path)
    return {name: known[name] for name in names if name in known}


def declared_fields(document: dict[str, Any], operation: Operation) -> frozenset[str]:
    """The top-level fields of the operation's JSON body, as the document declares them."""
    body = operation.definition.raw.get("requestBody", {}).get("content", {}).get("application/json", {})
    schema = body.get("schema", {})
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return frozenset(schema.get("properties", {}))


def only(fields: frozenset[str]) -> Callable[[Case], Case]:
    """Drop the undeclared fields a positive body may carry: the document allows them (it does not
    say `additionalProperties: false`) but every body struct forbids them, so a body with one stops
    at the 400 and never reaches the handler."""

    def drop(case: Case) -> Case:
        if isinstance(case.body, dict):
            case.body = {k: v for k, v in case.body.items() if k in fields}
        return case

    return drop


def allows(rule: str, identity: str) -> bool:
    role = ROLE_OF[identity]
    return rule == "public" or (role is not None and role in access.RULES[rule])


async def mint_sessions(conn: asyncpg.Connection, key: bytes, count: int) -> dict[str, list[str]]:
    """`count` fresh bearer tokens of each role's account, for the operations that end a session."""
    tokens: dict[str, list[str]] = {}
    for identity in w.ROLES[1:]:
        account_id = await conn.fetchval("SELECT id FROM account WHERE login = $1", identity)
        tokens[identity] = [
            (await auth.open_session(conn, key, account_id, 60, None))[0] for _ in range(count)
        ]
    return tokens


async def identities(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, world: w.World, key: bytes
) -> dict[str, dict[str, str]]:
    """The headers each identity sends: the world's people, then the two bad tokens."""
    headers = {role: world.headers(role) for role in w.ROLES}
    ended = {"authorization": f"Bearer {await w.log_in(client, 'admin')}"}
    assert (await client.post("/api/v1/auth/logout", headers=ended)).status_code == 204
    token, expires = await auth.open_session(
        conn, key, await conn.fetchval("SELECT id FROM account WHERE login = 'admin'"), 60, None
    )
    session_id, account_id = auth.read_token(key, token)
    forged = auth.issue_token(b"not the service's key, but as long" * 2, session_id, account_id, expires)
    headers["admin_logged_out"] = ended
    headers["admin_forged"] = {"authorization": f"Bearer {forged}"}
    assert set(headers) == set(ROLE_OF)
    return headers


class Findings:
    """What each operation answered (status per identity) and what it got wrong."""

    def __init__(self) -> None:
        self.statuses: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.problems: dict[str, dict[str, str]] = collections.defaultdict(dict)  # label -> what -> repro

    def add(self, label: str, what: str, case: Case, headers: dict[str, str]) -> None:
        if what not in self.problems[label]:
            self.problems[label][what] = case.as_curl_command(headers=headers)

    def report(self) -> str:
        lines = []
        for label in sorted(self.statuses):
            seen = " ".join(f"{k}×{n}" for k, n in sorted(self.statuses[label].items()))
            verdict = f"{len(self.problems[label])} problem(s)" if self.problems.get(label) else "ok"
            lines.append(f"{label}: {verdict} [{seen}]")
        return "\n".join(lines)

    def failures(self) -> list[str]:
        return [
            f"{label}: {what}\n    {repro}"
            for label, problems in sorted(self.problems.items())
            for what, repro in problems.items()
        ]


def _failure_text(failure: Failure) -> str:
    return f"{failure.title}: {failure.message.splitlines()[0] if failure.message else ''}"


def exercise(
    document: dict[str, Any],
    operation: Operation,
    rule: str,
    world: w.World,
    people: dict[str, dict[str, str]],
    fresh: dict[str, list[str]] | None,
    findings: Findings,
) -> None:
    label = f"{operation.method.upper()} {operation.path}"
    strategies = [
        operation.as_strategy(schemathesis.GenerationMode.POSITIVE),
        operation.as_strategy(schemathesis.GenerationMode.NEGATIVE),
    ]
    real = real_path_parameters(world, operation.path)
    fields = declared_fields(document, operation)
    if real or fields:  # aimed at the world's objects, with a body the handler gets to read
        aimed = operation.as_strategy(schemathesis.GenerationMode.POSITIVE, path_parameters=real or None)
        strategies.append(aimed.map(only(fields)) if fields else aimed)

    @FUZZ
    @given(case=st.one_of(strategies))
    def run(case: Case) -> None:
        for identity, own in people.items():
            headers = own
            if fresh is not None and identity in fresh:
                assert fresh[identity], f"{label}: out of fresh sessions for {identity}"
                headers = {"authorization": f"Bearer {fresh[identity].pop()}"}
            response = case.call(headers=headers, allow_redirects=False)
            status = response.status_code
            findings.statuses[label][f"{identity}:{status}"] += 1
            if status >= 500:
                findings.add(label, f"{status} as {identity}", case, headers)
            if not allows(rule, identity):
                redirect = next((v[0] for k, v in response.headers.items() if k.lower() == "location"), "")
                if 200 <= status < 300 or (300 <= status < 400 and not redirect.startswith("/login")):
                    findings.add(label, f"auth ignored: {status} as {identity} (rule {rule})", case, headers)
            try:
                case.validate_response(response, checks=[response_schema_conformance])
            except FailureGroup as group:
                for failure in group.exceptions:
                    findings.add(label, f"{status}: {_failure_text(failure)}", case, headers)

    run()


async def test_every_operation_as_every_identity(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, settings: Settings
) -> None:
    world = await w.build(conn, client)
    fresh_count = EXAMPLES + 2
    # many failed logins and scans from the one test address, so that they stay exercised
    fuzzed = create_app(msgspec.structs.replace(settings, throttle_failures=100_000, scan_rate=0))
    rules = access_rules(fuzzed.routes)
    people = await identities(client, conn, world, fuzzed.state.signing_key)
    findings = Findings()
    try:
        schema = schemathesis.openapi.from_asgi("/schema/openapi.json", fuzzed)
        results = list(schema.get_all_operations())
        operations = [result.ok() for result in results if isinstance(result, Ok)]
        assert len(operations) == len(results), "operations Schemathesis cannot read"
        assert len(operations) > 50, "the OpenAPI document lost its operations"
        keys = [(op.method.upper(), op.path) for op in operations]
        assert [k for k in keys if k not in rules] == [], "operations the app does not serve"
        assert set(keys) >= ENDS_SESSION
        for operation, key in zip(operations, keys, strict=True):
            fresh = None
            if key in ENDS_SESSION:
                fresh = await mint_sessions(conn, fuzzed.state.signing_key, fresh_count)
            exercise(schema.raw_schema, operation, rules[key], world, people, fresh, findings)
    finally:
        schemathesis_asgi.shutdown_lifespans()
    print(findings.report())  # the per-operation outcome, shown with -s
    assert len(findings.statuses) == len(operations)
    failures = findings.failures()
    assert failures == [], f"{len(failures)} finding(s):\n" + "\n".join(failures)


# --- what the fuzzing found, pinned: each was a 500 or a body its schema did not describe ------


OUT_OF_RANGE = [  # (who asks, what, the field the 400 names)
    ("manager", "/api/v1/accounts?after=a%00b", "after"),
    ("manager", "/api/v1/inspect/shops?after=A%00B", "after"),
    ("anonymous", "/api/v1/shops?after=A%00B", "after"),
    ("merchant_a", f"/api/v1/merchant/inbox?before={2**63}", "before"),
    ("manager", f"/api/v1/cases?before={2**63}", "before"),
    ("admin", f"/api/v1/audit?before={2**63}", "before"),
    ("anonymous", f"/api/v1/changes?since={2**63}", "since"),
]


async def test_a_cursor_or_id_out_of_range_is_a_400_naming_it(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    answers = []
    for role, url, _ in OUT_OF_RANGE:
        method = "DELETE" if "/routes/" in url else "GET"
        response = await client.request(method, url, headers=world.headers(role))
        fields = [e["field"] for e in response.json()["errors"]] if response.status_code == 400 else []
        answers.append((url, response.status_code, fields))
    assert answers == [(url, 400, [field]) for _, url, field in OUT_OF_RANGE]


async def test_a_nul_character_in_a_text_is_refused_naming_its_field(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    search = await client.get("/api/v1/shops?q=%E9%9D%A2%00")
    assert search.status_code == 422, search.text
    assert search.json()["errors"] == [
        {"field": "q", "message": "text cannot contain the NUL character (U+0000)"}
    ]
    correction = await client.post(
        f"/api/v1/manage/policies/{world.policy}/corrections",
        json={"title": "更正", "body_md": "请\u0000注意"},
        headers=world.headers("manager"),
    )
    assert correction.status_code == 422, correction.text
    assert correction.headers["content-type"] == "application/problem+json"
    assert correction.json()["errors"][0]["field"] == "body_md"  # read with the body, so named
    assert await conn.fetchval("SELECT count(*) FROM policy WHERE title = '更正'") == 0
    open311 = await client.get("/open311/v2/requests.json?service_code=a%00")
    assert open311.status_code == 400, open311.text
    assert open311.json() == [
        {"code": 400, "description": "service_code: text cannot contain the NUL character (U+0000)"}
    ]


@pytest.mark.parametrize(
    ("query", "field"), [("to=0001-01-01", "to"), ("from=9999-12-31&to=9999-12-31", "from")]
)
async def test_a_day_at_the_end_of_the_calendar_is_refused_naming_it(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, query: str, field: str
) -> None:
    world = await w.build(conn, client)
    for path in ("/api/v1/dashboard", "/api/v1/dashboard.csv"):
        response = await client.get(f"{path}?{query}", headers=world.headers("manager"))
        assert response.status_code == 422, response.text
        assert [e["field"] for e in response.json()["errors"]] == [field]


def test_the_document_describes_the_bodies_sent_as_bytes(settings: Settings) -> None:
    document = create_app(settings).openapi_schema.to_schema()
    for path, struct in [
        ("/api/v1/shops", "ShopPage"),
        ("/api/v1/shops/{code}", "PublicProfile"),
        ("/api/v1/changes", "Changes"),
    ]:
        body = document["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        assert body["schema"] == {"$ref": f"#/components/schemas/{struct}"}
    for path, method in [
        ("/open311/v2/services.json", "get"),
        ("/open311/v2/services/{service_file}", "get"),
        ("/open311/v2/requests.json", "get"),
        ("/open311/v2/requests.json", "post"),
        ("/open311/v2/requests/{request_file}", "get"),
    ]:
        body = document["paths"][path][method]["responses"]["400"]["content"]["application/json"]
        assert body["schema"]["items"] == {"$ref": "#/components/schemas/Open311Error"}, (method, path)


def test_every_write_that_takes_a_body_describes_it_as_json_and_as_a_form(settings: Settings) -> None:
    document = create_app(settings).openapi_schema.to_schema()
    bodiless = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in ("post", "put", "patch") and "requestBody" not in operation
    }
    # logging out and cancelling a policy take nothing
    assert bodiless == {
        ("POST", "/api/v1/auth/logout"),
        ("POST", "/api/v1/manage/policies/{policy_id}/cancel"),
    }
    filed = document["paths"]["/api/v1/inspect/shops/{code}/inspections"]["post"]["requestBody"]["content"]
    assert filed["application/json"]["schema"]["required"] == ["kind", "result"]
    form = filed["multipart/form-data"]["schema"]["properties"]
    assert form["photo"]["format"] == "binary" and "5 MB" in form["photo"]["description"]
    assert form["score"] == {"type": "number", "minimum": 0, "maximum": 100}  # a form sends no null
    reopen = document["paths"]["/track/{number}/reopen"]["post"]["requestBody"]["content"]
    assert set(reopen) == {"application/json", "application/x-www-form-urlencoded"}


def test_every_error_is_described_as_problem_details_except_open311s_own(settings: Settings) -> None:
    document = create_app(settings).openapi_schema.to_schema()
    assert document["components"]["schemas"]["Problem"]["required"] == ["type", "title", "status"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            if path.startswith("/open311/"):
                assert "4XX" not in responses, (method, path)
                continue
            assert "400" not in responses, (method, path)  # Litestar's shape, never sent
            content = responses["4XX"]["content"]
            assert content == {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            }, (method, path)
