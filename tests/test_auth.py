"""Logging in: the same answer for every kind of wrong, tokens that cannot be forged, sessions
that end when they should, throttling, claims, and the limits on what a request may send."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import re
import time
from typing import Any

import asyncpg
import jwt
import pytest
from litestar.testing import AsyncTestClient

from merchant_code import accounts, auth
from tests import factories
from tests import world as w
from tests.service import wait_until

ME = "/api/v1/me"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def _login(client: AsyncTestClient[Any], login: str, password: str) -> Any:
    return await client.post("/api/v1/auth/login", json={"login": login, "password": password})


async def test_a_login_gives_a_token_that_says_who_you_are(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    await factories.area(conn, "310199001", "一街道")
    await factories.account(conn, "li.inspector", "inspector", area_code="310199001", name="李检查员")
    response = await _login(client, "Li.Inspector", w.PASSWORD)
    assert response.status_code == 200
    me = (await client.get(ME, headers=bearer(response.json()["token"]))).json()
    assert (me["login"], me["role"], me["area_code"], me["display_name"]) == (
        "li.inspector",
        "inspector",
        "310199001",
        "李检查员",
    )


async def test_wrong_password_unknown_login_and_disabled_account_look_the_same(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    await factories.account(conn, "active", "admin")
    await factories.account(conn, "gone", "admin")
    await accounts.disable(conn, "gone")
    cases = {"wrong password": ("active", "not it at all"), "unknown": ("nobody", w.PASSWORD)}
    cases["disabled"] = ("gone", w.PASSWORD)
    bodies = {}
    times: dict[str, list[float]] = {}
    # the kinds take turns, so that a busy moment of the machine slows them all alike
    for _ in range(3):
        for name, (login, password) in cases.items():
            # the CPU this process spends answering (the password hashing happens here): the
            # work an attacker could time, which other programs on the machine do not stretch
            started = time.process_time()
            response = await _login(client, login, password)
            times.setdefault(name, []).append(time.process_time() - started)
            assert response.status_code == 401
            body = response.json()
            bodies[name] = (body["title"], body["detail"])
    assert len(set(bodies.values())) == 1
    # each case verifies one argon2 hash: no case answers with markedly less work than another
    # (the least of each is compared: a busy machine only ever adds to an answer)
    fastest = [min(t) for t in times.values()]
    assert max(fastest) < 3 * min(fastest), times


@pytest.mark.parametrize("kind", ["expired", "tampered", "alg none", "wrong key", "garbage"])
async def test_a_forged_or_stale_token_is_refused(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, kind: str
) -> None:
    await factories.account(conn, "owner", "admin")
    good = (await _login(client, "owner", w.PASSWORD)).json()["token"]
    claims = jwt.decode(good, options={"verify_signature": False})
    key = client.app.state.signing_key
    if kind == "expired":
        past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
        token = jwt.encode({**claims, "exp": past}, key, algorithm="HS256")
    elif kind == "tampered":
        header, _, signature = good.split(".")
        raised = {**claims, "sub": str(int(claims["sub"]) + 1)}
        forged = base64.urlsafe_b64encode(json.dumps(raised).encode()).rstrip(b"=").decode()
        token = f"{header}.{forged}.{signature}"
    elif kind == "alg none":
        head = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
        body = good.split(".")[1]
        token = f"{head}.{body}."
    elif kind == "wrong key":
        token = jwt.encode(claims, b"another key of enough length for HS256!!", algorithm="HS256")
    else:
        token = "not-a-token"
    assert (await client.get(ME, headers=bearer(good))).status_code == 200
    response = await client.get(ME, headers=bearer(token))
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_a_bad_token_on_a_public_page_still_gets_the_public_page(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    _, code = await factories.shop(conn)
    response = await client.get(f"/s/{code}", headers=bearer("stale.token.value"))
    assert response.status_code == 200


async def test_logout_and_password_change_end_sessions(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    await factories.account(conn, "owner", "admin")
    first, second, third = [(await _login(client, "owner", w.PASSWORD)).json()["token"] for _ in range(3)]
    assert (await client.post("/api/v1/auth/logout", headers=bearer(first))).status_code == 204
    assert (await client.get(ME, headers=bearer(first))).status_code == 401

    change = {"current_password": w.PASSWORD, "new_password": "a much newer password"}
    assert (
        await client.post("/api/v1/auth/password", json=change, headers=bearer(second))
    ).status_code == 204
    assert (await client.get(ME, headers=bearer(second))).status_code == 200  # the session that changed it
    assert (await client.get(ME, headers=bearer(third))).status_code == 401  # every other one
    assert (await _login(client, "owner", w.PASSWORD)).status_code == 401
    assert (await _login(client, "owner", "a much newer password")).status_code == 200


async def test_a_weak_new_password_is_refused_naming_the_field(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    await factories.account(conn, "owner", "admin")
    token = (await _login(client, "owner", w.PASSWORD)).json()["token"]
    change = {"current_password": w.PASSWORD, "new_password": "short"}
    response = await client.post("/api/v1/auth/password", json=change, headers=bearer(token))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "new_password"


async def test_disabling_an_account_ends_its_sessions(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    await factories.account(conn, "owner", "admin")
    token = (await _login(client, "owner", w.PASSWORD)).json()["token"]
    await accounts.disable(conn, "owner")
    assert (await client.get(ME, headers=bearer(token))).status_code == 401


async def test_repeated_failures_are_throttled_per_account_then_per_address(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    await factories.account(conn, "owner", "admin")
    await factories.account(conn, "other", "admin")
    for _ in range(5):
        assert (await _login(client, "owner", "wrong password")).status_code == 401
    throttled = await _login(client, "owner", w.PASSWORD)  # even the right password waits
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) == 15 * 60
    assert (await _login(client, "other", w.PASSWORD)).status_code == 200  # another account is not held up

    for n in range(15):  # the address's allowance is four accounts' worth
        assert (await _login(client, f"guess{n}", "wrong password")).status_code == 401
    assert (await _login(client, "other", w.PASSWORD)).status_code == 429


async def test_the_login_page_sets_a_session_cookie_the_pages_accept(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    await factories.account(conn, "owner", "admin", name="张科长")
    response = await client.post(
        "/login",
        data={"login": "owner", "password": w.PASSWORD, "next": "//evil.example/x"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/me"  # never an open redirect
    cookie = response.headers["set-cookie"]
    assert "mc_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    page = await client.get("/me")
    assert page.status_code == 200 and "张科长" in page.text

    # a form posted from another site cannot use the cookie
    cross = await client.post("/logout", headers={"origin": "https://evil.example"}, follow_redirects=False)
    assert cross.status_code == 403
    assert (await client.get("/me", follow_redirects=False)).status_code == 200
    same = await client.post("/logout", headers={"origin": "http://testserver.local"}, follow_redirects=False)
    assert same.status_code == 303
    assert (await client.get("/me", follow_redirects=False)).status_code == 303


async def test_a_login_form_posted_from_another_site_is_refused(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    """Login CSRF: an attacker's page must not log a victim into the attacker's account (whose
    claims would then hand the victim's shop to the attacker)."""
    await factories.account(conn, "attacker", "merchant")
    form = {"login": "attacker", "password": w.PASSWORD}
    forged = await client.post(
        "/login", data=form, headers={"origin": "https://evil.example"}, follow_redirects=False
    )
    assert forged.status_code == 403 and "set-cookie" not in forged.headers
    sandboxed = await client.post("/login", data=form, headers={"origin": "null"}, follow_redirects=False)
    assert sandboxed.status_code == 403
    own = await client.post(
        "/login", data=form, headers={"origin": "http://testserver.local"}, follow_redirects=False
    )
    assert own.status_code == 303


async def test_parallel_guesses_count_against_each_other(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    await factories.account(conn, "owner", "admin")
    answers = await asyncio.gather(*(_login(client, "owner", f"guess {n}") for n in range(12)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(401) <= 5 and statuses.count(429) >= 7, statuses


async def test_wrong_current_passwords_are_throttled_too(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    await factories.account(conn, "owner", "admin")
    token = (await _login(client, "owner", w.PASSWORD)).json()["token"]
    wrong = {"current_password": "a guess at it", "new_password": "a brand new password"}
    for _ in range(5):
        response = await client.post("/api/v1/auth/password", json=wrong, headers=bearer(token))
        assert response.status_code == 422
    right = {**wrong, "current_password": w.PASSWORD}
    response = await client.post("/api/v1/auth/password", json=right, headers=bearer(token))
    assert response.status_code == 429


async def test_a_page_without_a_session_sends_you_to_log_in_and_back(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/me", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/login?next=/me")
    page = await client.get("/login?next=/me")
    assert 'name="next" value="/me"' in page.text
    assert "登录" in page.text


async def test_a_wrong_login_on_the_page_says_so_in_both_languages(client: AsyncTestClient[Any]) -> None:
    zh = await client.post("/login", data={"login": "nobody", "password": "x"})
    en = await client.post("/login?lang=en", data={"login": "nobody2", "password": "x"})
    assert zh.status_code == en.status_code == 401
    assert "账号或密码错误" in zh.text
    assert "The login or password is wrong" in en.text


# --- claims --------------------------------------------------------------------------------


async def test_a_merchant_claims_a_shop_once_with_code_and_phone(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    _, code = await factories.shop(conn, owner_phone="13812341234")
    claim_code = await accounts.issue_claim_code(conn, code)
    body = {"shop_code": code.lower(), "claim_code": claim_code.lower(), "phone": "138 1234 1234"}
    body |= {"login": "wang", "password": "my own password"}
    response = await client.post("/api/v1/claims", json=body)
    assert response.status_code == 201, response.text
    me = (await client.get(ME, headers=bearer(response.json()["token"]))).json()
    assert (me["role"], me["shops"]) == ("merchant", [code])

    again = await client.post("/api/v1/claims", json={**body, "login": "wang2"})
    assert again.status_code == 401  # a used code


async def test_a_wrong_claim_code_and_a_wrong_phone_get_the_same_answer(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    _, code = await factories.shop(conn, owner_phone="13812341234")
    claim_code = await accounts.issue_claim_code(conn, code)
    base = {"shop_code": code, "login": "wang", "password": "my own password"}
    wrong_code = await client.post(
        "/api/v1/claims", json={**base, "claim_code": "AAAA-AAAA-AAAA-AAAA", "phone": "13812341234"}
    )
    wrong_phone = await client.post(
        "/api/v1/claims", json={**base, "claim_code": claim_code, "phone": "13900000000"}
    )
    assert wrong_code.status_code == wrong_phone.status_code == 401
    assert wrong_code.json()["detail"] == wrong_phone.json()["detail"]
    for _ in range(3):
        await client.post("/api/v1/claims", json={**base, "claim_code": "BBBB-BBBB-BBBB-BBBB", "phone": "1"})
    right = await client.post(
        "/api/v1/claims", json={**base, "claim_code": claim_code, "phone": "13812341234"}
    )
    assert right.status_code == 429  # five failures on this shop: even the right code waits


async def test_a_new_claim_takes_the_shop_from_its_previous_owner(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    shop_id, code = await factories.shop(conn, owner_phone="13812341234")
    await factories.account(conn, "old.owner", "merchant", shop_ids=(shop_id,))
    old = (await _login(client, "old.owner", w.PASSWORD)).json()["token"]
    claim_code = await accounts.issue_claim_code(conn, code)
    body = {"shop_code": code, "claim_code": claim_code, "phone": "13812341234"}
    response = await client.post("/api/v1/claims", json={**body, "login": "new.owner", "password": "x" * 12})
    assert response.status_code == 201
    assert (await client.get(f"/api/v1/merchant/shops/{code}", headers=bearer(old))).status_code == 404
    new = bearer(response.json()["token"])
    assert (await client.get(f"/api/v1/merchant/shops/{code}", headers=new)).status_code == 200


async def test_a_taken_login_does_not_use_up_the_claim_code(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    _, code = await factories.shop(conn, owner_phone="13812341234")
    await factories.account(conn, "wang", "admin")
    claim_code = await accounts.issue_claim_code(conn, code)
    body = {"shop_code": code, "claim_code": claim_code, "phone": "13812341234", "password": "x" * 12}
    taken = await client.post("/api/v1/claims", json={**body, "login": "wang"})
    assert taken.status_code == 422 and taken.json()["errors"][0]["field"] == "login"
    assert (await client.post("/api/v1/claims", json={**body, "login": "wang2"})).status_code == 201


async def test_a_shop_without_an_owner_phone_cannot_be_claimed_with_any_phone(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    _, code = await factories.shop(conn, owner_phone="")
    claim_code = await accounts.issue_claim_code(conn, code)
    body = {"shop_code": code, "claim_code": claim_code, "phone": "", "login": "wang", "password": "x" * 12}
    for phone in ("", "---"):
        assert (await client.post("/api/v1/claims", json={**body, "phone": phone})).status_code in (400, 401)


async def test_a_logged_in_merchant_adds_a_second_shop(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    first, _ = await factories.shop(conn)
    _, second = await factories.shop(conn, owner_phone="13700001111")
    await factories.account(conn, "wang", "merchant", shop_ids=(first,))
    token = (await _login(client, "wang", w.PASSWORD)).json()["token"]
    claim_code = await accounts.issue_claim_code(conn, second)
    body = {"shop_code": second, "claim_code": claim_code, "phone": "13700001111"}
    response = await client.post("/api/v1/claims", json=body, headers=bearer(token))
    assert response.status_code == 201 and response.json()["token"] is None
    assert second in (await client.get(ME, headers=bearer(token))).json()["shops"]


# --- bad input and limits ------------------------------------------------------------------


async def test_unknown_and_malformed_fields_are_named(client: AsyncTestClient[Any]) -> None:
    async def fields(body: bytes) -> list[str]:
        response = await client.post(
            "/api/v1/auth/login", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "Traceback" not in response.text
        return [e["field"] for e in response.json()["errors"]]

    assert await fields(b'{"login": "a", "password": "b", "admin": true}') == ["admin"]
    assert await fields(b'{"login": "a"}') == ["password"]
    assert await fields(b'{"login": 1, "password": "b"}') == ["login"]
    assert await fields(b'{"login": "a",') == ["body"]
    assert await fields(b"[]") == ["body"]


async def test_a_body_over_the_limit_is_refused_with_413(client: AsyncTestClient[Any]) -> None:
    huge = b'{"login": "' + b"a" * 2_000_000 + b'", "password": "x"}'
    response = await client.post(
        "/api/v1/auth/login", content=huge, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_list_pages_are_capped(client: AsyncTestClient[Any], conn: asyncpg.Connection) -> None:
    await factories.account(conn, "boss", "admin")
    token = (await _login(client, "boss", w.PASSWORD)).json()["token"]
    for path in ("/api/v1/inspect/shops", "/api/v1/accounts", "/api/v1/audit"):
        response = await client.get(f"{path}?limit=101", headers=bearer(token))
        assert response.status_code == 400, path
        assert response.json()["errors"][0]["field"] == "limit"


async def test_every_answer_carries_a_request_id(client: AsyncTestClient[Any]) -> None:
    mine = await client.get("/healthz", headers={"x-request-id": "trace-12345678"})
    assert mine.headers["x-request-id"] == "trace-12345678"
    made = await client.get("/healthz", headers={"x-request-id": "bad id\x7f"})
    other = await client.get("/healthz")
    assert re.fullmatch("[0-9a-f]{24}", made.headers["x-request-id"])
    assert other.headers["x-request-id"] != made.headers["x-request-id"]
    # refusals too: no route, no session, the wrong role, a page of another site
    refused = [
        await client.get("/no/such/page", headers={"x-request-id": "trace-404-0001"}),
        await client.get("/api/v1/accounts", headers={"x-request-id": "trace-401-0001"}),
        await client.get(
            "/manage/policies", headers={"x-request-id": "trace-303-0001"}, follow_redirects=False
        ),
        await client.post(
            "/login", headers={"x-request-id": "trace-403-0001", "origin": "https://evil.example"}
        ),
    ]
    assert [(r.status_code, r.headers.get("x-request-id")) for r in refused] == [
        (404, "trace-404-0001"),
        (401, "trace-401-0001"),
        (303, "trace-303-0001"),
        (403, "trace-403-0001"),
    ]
    assert "x-request-id" in (await client.get("/no/such/page")).headers


def test_claim_codes_are_long_random_and_forgiving_to_type() -> None:
    code = auth.new_claim_code()
    assert len(code) == 19 and code.count("-") == 3
    assert auth.claim_code_hash(code.lower().replace("-", " ")) == auth.claim_code_hash(code)
    assert auth.new_claim_code() != code


async def test_housekeeping_forgets_old_failures_and_ended_sessions(
    db_url: str, conn: asyncpg.Connection
) -> None:
    from litestar.datastructures import State

    from merchant_code import db
    from merchant_code.scheduler import registered_jobs
    from merchant_code.settings import Settings

    account_id = await factories.account(conn, "owner", "admin")
    await conn.execute(
        "INSERT INTO auth_attempt (key, at) VALUES ('login:owner', now() - interval '1 hour'),"
        " ('login:owner', now())"
    )
    await conn.execute(
        "INSERT INTO session (id, account_id, expires_at) VALUES ('OLD', $1, now() - interval '8 days'),"
        " ('LIVE', $1, now() + interval '1 hour')",
        account_id,
    )
    job = next(j for j in registered_jobs() if j.id == "auth-housekeeping")
    pool = await db.create_pool(db_url)
    try:
        await job.func(State({"pool": pool, "settings": Settings(database_url=db_url)}))
    finally:
        await pool.close()
    assert await conn.fetchval("SELECT count(*) FROM auth_attempt") == 1
    assert [r["id"] for r in await conn.fetch("SELECT id FROM session")] == ["LIVE"]


def test_the_signing_key_is_made_once_kept_private_and_reused(tmp_path: Any) -> None:
    import stat

    from merchant_code.secret import signing_key
    from merchant_code.settings import Settings

    settings = Settings(data_dir=str(tmp_path))
    first = signing_key(settings)
    assert len(first) >= 32
    mode = stat.S_IMODE((tmp_path / "secret_key").stat().st_mode)
    assert mode == 0o600
    assert signing_key(settings) == first  # a restart keeps every session valid
    configured = Settings(data_dir=str(tmp_path), secret_key="k" * 40)
    assert signing_key(configured) == b"k" * 40
    with pytest.raises(ValueError, match="at least 32"):
        Settings(secret_key="short")


def test_the_client_address_comes_from_a_trusted_proxy_only() -> None:
    from merchant_code.access import client_address, cross_site

    scope: Any = {"client": ("10.0.0.2", 5000), "headers": [(b"x-forwarded-for", b"1.2.3.4, 203.0.113.9")]}
    assert client_address(scope) == "10.0.0.2"  # no proxy trusted: the header is anyone's to write
    assert client_address(scope, frozenset({"10.0.0.2"})) == "203.0.113.9"
    assert client_address(scope, frozenset({"10.0.0.2", "203.0.113.9"})) == "1.2.3.4"

    post: Any = {
        "method": "POST",
        "headers": [(b"host", b"10.0.0.5:8000"), (b"origin", b"https://shop.gov.example")],
    }
    assert cross_site(post, None)
    assert not cross_site(post, "https://shop.gov.example")  # behind a proxy that rewrites Host
    assert not cross_site({**post, "method": "GET"}, None)


def _key_in_another_process(folder: str) -> bytes:
    from merchant_code.secret import signing_key
    from merchant_code.settings import Settings

    return signing_key(Settings(data_dir=folder))


def test_workers_starting_together_agree_on_one_signing_key(tmp_path: Any) -> None:
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(6, mp_context=context) as pool:
        keys = list(pool.map(_key_in_another_process, [str(tmp_path)] * 12))
    assert len(set(keys)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]  # no draft left behind


async def test_password_hashes_queue_on_one_low_priority_thread_and_past_the_queue_are_refused_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A burst of logins for made-up accounts costs a hash each: one at a time per worker, on a
    thread the scheduler ranks below the scans, and the ones past a short queue get 503 at once."""
    import os
    import threading

    from merchant_code.errors import Busy

    release = threading.Event()
    niceness: list[int] = []

    def slow() -> bool:
        niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        release.wait(30)
        return False

    hashing = auth._Hashing()
    monkeypatch.setattr(auth._Hashing, "MAX_WAITING", 3)
    waiting = [asyncio.create_task(hashing.run(slow)) for _ in range(3)]

    async def queued() -> bool:
        return hashing.waiting == 3

    await wait_until(queued, 30, "three hashes waiting their turn")
    with pytest.raises(Busy) as refused:  # the queue is full: answered now, not after the others
        await hashing.run(slow)
    assert refused.value.status == 503 and refused.value.extra["retry_after"] == 1
    release.set()
    assert await asyncio.gather(*waiting) == [False, False, False]
    assert niceness == [19, 19, 19]  # one after another, on the lowered thread
