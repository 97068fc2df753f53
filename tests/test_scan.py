"""One sticker, three views: a citizen, the shop's owner and an inspector over its area each
get their own view of `GET /s/{code}`, in HTML and JSON; bad and revoked codes say so."""

from __future__ import annotations

import datetime
import json
from typing import Any

import asyncpg
import jinja2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from litestar.testing import AsyncTestClient

from merchant_code import genuine, profiles, qr
from merchant_code.codes import new_shop_code
from merchant_code.settings import Settings
from tests import factories
from tests import world as w
from tests.watermark import caught_up

DAY = datetime.timedelta(days=1)
JSON = {"accept": "application/json"}


async def test_a_scan_shows_licence_states_latest_grade_and_rating(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, today: datetime.date
) -> None:
    shop_id, code = await factories.shop(conn)
    await factories.licence(conn, shop_id, kind="business", valid_to=None)
    await factories.licence(conn, shop_id, kind="food_business", valid_to=today + 10 * DAY)
    await factories.licence(conn, shop_id, kind="hygiene", valid_to=today - DAY)
    await factories.inspection(conn, shop_id, on=today - 400 * DAY, grade="C", result="fail")
    await factories.inspection(conn, shop_id, on=today - 20 * DAY, grade="A")
    for rating in (5, 4):
        await factories.review(conn, shop_id, rating)
    await profiles.drain(conn)

    body = (await client.get(f"/s/{code}", headers=JSON)).json()

    states = {lic["kind"]: lic["state"] for lic in body["licences"]}
    assert states == {"business": "valid", "food_business": "expiring", "hygiene": "expired"}
    assert (body["grade"], body["grade_date"]) == ("A", str(today - 20 * DAY))
    assert body["inspections"][0]["inspected_on"] == str(today - 20 * DAY)
    assert (body["rating"], body["review_count"]) == (4.5, 2)
    page = (await client.get(f"/s/{code}")).text
    assert "优秀" in page and "未发现问题或只有个别轻微问题" in page  # the grade in plain words


async def test_a_change_reaches_the_citizen_page_once_the_profile_is_rebuilt(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, today: datetime.date
) -> None:
    shop_id, code = await factories.shop(conn)
    before = await client.get(f"/s/{code}", headers=JSON)
    assert before.json()["grade"] is None
    await factories.inspection(conn, shop_id, on=today, grade="B")
    cached = await client.get(f"/s/{code}", headers=JSON)
    assert cached.json()["grade"] is None  # the profile is rebuilt off the writer's path
    await profiles.drain(conn)
    await caught_up(client.app)
    after = await client.get(f"/s/{code}", headers=JSON)
    assert after.json()["grade"] == "B"
    assert after.headers["etag"] != before.headers["etag"]
    again = await client.get(f"/s/{code}", headers={**JSON, "if-none-match": after.headers["etag"]})
    assert again.status_code == 304


async def test_the_page_carries_json_ld_and_is_chinese_by_default(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    shop_id, code = await factories.shop(conn, name="老王面馆")
    await factories.review(conn, shop_id, 5)
    await profiles.drain(conn)
    zh = await client.get(f"/s/{code}")
    assert zh.status_code == 200 and zh.headers["content-type"] == "text/html; charset=utf-8"
    assert 'lang="zh-CN"' in zh.text and "证照" in zh.text
    ld = json.loads(zh.text.split('<script type="application/ld+json">')[1].split("</script>")[0])
    assert (ld["@type"], ld["name"], ld["aggregateRating"]["ratingValue"]) == (
        "LocalBusiness",
        "老王面馆",
        5.0,
    )
    en = await client.get(f"/s/{code}", headers={"accept-language": "en-GB,en;q=0.9"})
    assert 'lang="en"' in en.text and "Licences" in en.text
    assert 'lang="en"' in (await client.get(f"/s/{code}?lang=en")).text


async def test_closed_and_suspended_shops_say_so(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    _, closed = await factories.shop(conn, status="closed")
    _, suspended = await factories.shop(conn, status="suspended")
    assert "该商户已歇业" in (await client.get(f"/s/{closed}")).text
    assert "suspended by the regulator" in (await client.get(f"/s/{suspended}?lang=en")).text
    assert (await client.get(f"/s/{closed}", headers=JSON)).json()["status"] == "closed"


async def test_a_shop_name_cannot_inject_markup(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    _, code = await factories.shop(conn, name="<script>alert(1)</script>面馆")
    page = (await client.get(f"/s/{code}")).text
    assert "<script>alert(1)" not in page and "&lt;script&gt;" in page
    assert "</script>面馆" not in page.split('application/ld+json">')[1].split("</script>")[0]


async def test_malformed_unknown_and_revoked_codes(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    _, code = await factories.shop(conn)
    wrong_check = code[:-1] + ("0" if code[-1] != "0" else "1")
    malformed = await client.get(f"/s/{wrong_check}", headers=JSON)
    assert malformed.status_code == 422 and malformed.json()["errors"][0]["field"] == "code"
    page = await client.get(f"/s/{wrong_check}")
    assert page.status_code == 422 and "该二维码无效" in page.text and "12315" in page.text

    unknown = new_shop_code()
    assert (await client.get(f"/s/{unknown}", headers=JSON)).status_code == 404
    assert "No registered shop has this code" in (await client.get(f"/s/{unknown}?lang=en")).text

    await conn.execute(
        "INSERT INTO qr_revocation (code, reason) VALUES ($1, 'sticker reported stolen')", code
    )
    await profiles.drain(conn)
    revoked = await client.get(f"/s/{code}")
    assert revoked.status_code == 410 and "已注销" in revoked.text


async def test_each_person_gets_their_own_view(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    world = await w.build(conn, client)
    await profiles.drain(conn)

    async def view(role: str, accept: str = "application/json", query: str = "") -> Any:
        response = await client.get(f"/s/{world.shop_a}{query}", headers=world.headers(role, accept=accept))
        assert response.status_code == 200
        return response.json() if accept == "application/json" else response.text

    citizen = await view("anonymous")
    assert "owner_name" not in citizen and "risk_score" not in citizen
    owner = await view("merchant_a")
    assert owner["owner_name"] == w.PII["owner_name"] and "risk_score" not in owner
    assert "owner_name" not in await view("merchant_b")  # another shop's owner is a citizen here
    inspector = await view("inspector_in")
    assert inspector["owner_name"] == "王*" and inspector["pii_masked"] and "risk_score" in inspector
    assert "owner_name" not in await view("inspector_out")
    assert (await view("pii_inspector"))["owner_name"] == w.PII["owner_name"]

    # the switch to preview the citizen view, in HTML
    full_page = await view("inspector_in", "text/html")
    assert "风险评分" in full_page and "以市民视角预览" in full_page
    preview = await view("inspector_in", "text/html", "?view=citizen")
    assert "风险评分" not in preview and "王*" not in preview and "返回完整视图" in preview
    owner_page = await view("merchant_a", "text/html")
    assert w.PII["staff_name"] in owner_page and w.PII["staff_cert"] in owner_page


def signature_of(payload: str) -> str:
    """The `q` of a sticker's payload (`{base}/s/{code}?q={kid}.{signature}`)."""
    return payload.split("?q=", 1)[1]


def forged(q: str) -> str:
    """Another signature of the same shape (still canonical base64url): a forger's."""
    return q[:-2] + ("AA" if not q.endswith("AA") else "BA")


async def stickers_of_every_status(conn: asyncpg.Connection, settings: Settings, code: str) -> dict[str, str]:
    """A query string for each status of a sticker of this shop: three keys, the first revoked,
    the second retired, the third signing."""
    first = await qr.ensure_signing_key(conn, settings)
    second, _ = await qr.rotate(conn, settings)
    third, _ = await qr.rotate(conn, settings)
    await qr.revoke_key(conn, first.kid)
    genuine = signature_of(third.payload(settings.base_url, code))
    return {
        "genuine": f"q={genuine}",
        "retired": f"q={signature_of(second.payload(settings.base_url, code))}",
        "revoked": f"q={signature_of(first.payload(settings.base_url, code))}",
        "forged": f"q={forged(genuine)}",
        "unsigned": "",
    }


# what each status's notice says, in Chinese and in English
NOTICES = {
    "genuine": ("正品二维码", "Genuine sticker"),
    "retired": ("旧版二维码：", "Old sticker:"),
    "revoked": ("签发它的密钥已被市场监管部门注销", "The key it was signed with has been withdrawn"),
    "forged": ("签名校验未通过，可能为伪造", "Its signature does not check out"),
    "unsigned": ("本页由链接打开", "Opened from a link"),
}


async def test_each_sticker_status_on_the_scan_page(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, settings: Settings
) -> None:
    _, code = await factories.shop(conn, name="老王面馆")
    _, other = await factories.shop(conn)
    await profiles.drain(conn)
    asks = await stickers_of_every_status(conn, settings, code)
    third = await qr.ensure_signing_key(conn, settings)
    await caught_up(client.app)
    asks_forged_too = {
        "another shop's signature": f"q={signature_of(third.payload(settings.base_url, other))}",
        "another host's signature": f"q={signature_of(third.payload('https://evil.example', code))}",
        "an unknown key": "q=zzzz." + asks["genuine"].split(".", 1)[1],
        "not a signature": "q=hello",
        "an empty q": "q=",
        "two signatures": f"{asks['genuine']}&{asks['genuine']}",
    }
    genuine = {"genuine": True, "retired": True, "revoked": False, "forged": False, "unsigned": None}
    for status, query in [*asks.items(), *(("forged", q) for q in asks_forged_too.values())]:
        zh = await client.get(f"/s/{code}?{query}")
        en = await client.get(f"/s/{code}?{query}&lang=en")
        as_json = await client.get(f"/s/{code}?{query}", headers=JSON)
        assert (zh.status_code, en.status_code, as_json.status_code) == (200, 200, 200), query
        assert f'data-sticker="{status}"' in zh.text and NOTICES[status][0] in zh.text, query
        assert f'data-sticker="{status}"' in en.text and NOTICES[status][1] in en.text, query
        assert "老王面馆" in zh.text  # the shop's record is there, under the notice
        assert as_json.json()["sticker"] == {"status": status, "genuine": genuine[status]}, query
        assert as_json.json()["code"] == code
        if genuine[status] is False:
            # not genuine: how to report it
            assert "该二维码不是正品" in zh.text and "12315" in zh.text, query
            assert f'href="/s/{code}/complaint"' in zh.text
            assert "This sticker is not genuine" in en.text and "How to report it" in en.text
            assert f'href="/s/{code}/complaint?lang=en"' in en.text
        else:
            assert "不是正品" not in zh.text and "not genuine" not in en.text, query
        # one notice, and no other status's words (an old sticker is a genuine one)
        same = {status, "genuine"} if status == "retired" else {status}
        others = [w for s, words in NOTICES.items() if s not in same for w in words]
        assert zh.text.count('data-sticker="') == 1 and not [w for w in others if w in zh.text + en.text]
    # the page of a revoked code says so whatever its sticker says
    await qr.revoke_code(conn, code, "sticker stolen")
    await profiles.drain(conn)
    await caught_up(client.app)
    for query in asks.values():
        revoked = await client.get(f"/s/{code}?{query}")
        assert revoked.status_code == 410 and "已注销" in revoked.text and "12315" in revoked.text
        assert (await client.get(f"/s/{code}?{query}", headers=JSON)).status_code == 404


async def test_a_sticker_turns_old_then_not_genuine_as_its_key_is_retired_then_revoked(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, settings: Settings
) -> None:
    _, code = await factories.shop(conn)
    await profiles.drain(conn)
    key = await qr.ensure_signing_key(conn, settings)
    url = f"/s/{code}?q={signature_of(key.payload(settings.base_url, code))}"
    statuses = []
    etags = set()
    for change in (None, "rotate", "revoke"):
        if change == "rotate":
            await qr.rotate(conn, settings)
        elif change == "revoke":
            await qr.revoke_key(conn, key.kid)
        await caught_up(client.app)
        # no rebuild, no new version: the worker's cached answer takes the key's new state
        for _ in range(2):
            answer = await client.get(url, headers=JSON)
            statuses.append(answer.json()["sticker"]["status"])
        etags.add(answer.headers["etag"])
        again = await client.get(url, headers={**JSON, "if-none-match": answer.headers["etag"]})
        assert again.status_code == 304
    assert statuses == ["genuine"] * 2 + ["retired"] * 2 + ["revoked"] * 2
    assert len(etags) == 3  # a phone's cached copy of the genuine page is not shown again


async def test_a_scan_renders_no_template_whatever_its_sticker_says(
    client: AsyncTestClient[Any],
    conn: asyncpg.Connection,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, code = await factories.shop(conn)
    await profiles.drain(conn)
    asks = await stickers_of_every_status(conn, settings, code)
    await caught_up(client.app)
    kinds: list[tuple[str, dict[str, str]]] = [("zh", {}), ("en", {}), ("zh", JSON)]
    scans = [(f"/s/{code}?{q}&lang={lang}", headers) for q in asks.values() for lang, headers in kinds]
    first = [(await client.get(url, headers=headers)).content for url, headers in scans]

    def no_rendering(*_: Any, **__: Any) -> None:
        raise AssertionError("a scan rendered a template")

    monkeypatch.setattr(jinja2.Environment, "get_template", no_rendering)
    again = [(await client.get(url, headers=headers)).content for url, headers in scans]
    assert again == first and len(set(first)) == len(scans)


def test_a_worker_checks_a_signature_once_and_keeps_a_bounded_number_of_verdicts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes_raw()
    kid, base = qr.kid_for(public), "https://hsm.example.gov.cn"
    codes = [new_shop_code() for _ in range(3)]
    claims = [genuine.claim([signature_of(qr.sign_payload(base, c, kid, private))]) for c in codes]
    checked: list[str] = []
    real = genuine.verify

    def counted(*args: Any) -> bool:
        checked.append(args[1])
        return real(*args)

    monkeypatch.setattr(genuine, "verify", counted)
    checker = genuine.Checker(base, max_entries=2)
    key = genuine.Key(public, "active")
    for i in (0, 0, 1, 0, 2, 2, 1):
        assert checker.status(codes[i], claims[i], key) == "genuine"
    assert checked == [codes[0], codes[1], codes[2], codes[1]]  # the second was the oldest kept
    assert checker.status(codes[0], claims[0], genuine.Key(public, "revoked")) == "revoked"
    assert checker.status(codes[1], claims[0], key) == "forged"  # a signature moved to another code


async def test_staff_and_owners_see_the_sticker_status_too(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, settings: Settings
) -> None:
    world = await w.build(conn, client)
    await profiles.drain(conn)
    key = await qr.ensure_signing_key(conn, settings)
    bad = forged(signature_of(key.payload(settings.base_url, world.shop_a)))
    for role in ("inspector_in", "merchant_a", "merchant_b"):
        page = await client.get(f"/s/{world.shop_a}?q={bad}", headers=world.headers(role))
        assert 'data-sticker="forged"' in page.text and "该二维码不是正品" in page.text, role
        body = (await client.get(f"/s/{world.shop_a}?q={bad}", headers=world.headers(role, **JSON))).json()
        assert body["sticker"] == {"status": "forged", "genuine": False}, role
    preview = await client.get(f"/s/{world.shop_a}?view=citizen", headers=world.headers("inspector_in"))
    assert 'data-sticker="unsigned"' in preview.text and "返回完整视图" in preview.text


async def test_the_hot_path_answers_exactly_as_the_handler_does(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, settings: Settings, today: datetime.date
) -> None:
    # an anonymous scan is answered by the middleware's hot path; `view=citizen` sends the same
    # request to the handler instead, which for an anonymous caller gives the citizen view anyway
    shop_id, code = await factories.shop(conn, name="老王面馆")
    _, closed = await factories.shop(conn, status="closed")
    await factories.inspection(conn, shop_id, on=today, grade="A")
    _, revoked = await factories.shop(conn)
    await conn.execute("INSERT INTO qr_revocation (code, reason) VALUES ($1, 'stolen')", revoked)
    await profiles.drain(conn)
    etag = (await client.get(f"/s/{code}")).headers["etag"]
    stickers = await stickers_of_every_status(conn, settings, code)
    # cached scans learn the new keys' states from the watermark: both paths then agree
    await caught_up(client.app)
    genuine_etag = (await client.get(f"/s/{code}?{stickers['genuine']}")).headers["etag"]
    asks: list[tuple[str, str, dict[str, str]]] = [
        (code, "", {}),
        (code, "lang=en", {}),
        (code, "lang=zh", {"accept-language": "en-GB,en;q=0.9"}),
        (code, "", {"accept-language": "en-US"}),
        (code, "", JSON),
        (code, "q=K1.c2lnbmF0dXJl", {}),  # not a signature
        (code, "utm_source=poster&lang=en", {}),  # a campaign's tag is ignored
        (code, "", {"if-none-match": etag}),
        (code, "", {"if-none-match": 'W/"0-zh"'}),
        # each status of a sticker, as a phone sends it, in each kind of answer
        *((code, query, {}) for query in stickers.values()),
        *((code, f"{query}&lang=en", {}) for query in stickers.values()),
        *((code, query, JSON) for query in stickers.values()),
        (code, stickers["genuine"], {"if-none-match": genuine_etag}),
        (code, stickers["forged"], {"if-none-match": genuine_etag}),  # the genuine page is not reused
        (code, f"{stickers['genuine']}&{stickers['genuine']}", {}),
        (closed, stickers["genuine"], {}),
        (closed, "", {}),
        (revoked, "", {}),
        (revoked, "", JSON),
        (new_shop_code(), "", {}),
        (code[:-1] + ("0" if code[-1] != "0" else "1"), "", JSON),
    ]
    scan_route = next(r for r in client.app.routes if r.path == "/s/{code:str}")
    handler_opt = scan_route.route_handlers[0].opt
    hot_path, answered = handler_opt["hot_path"], []

    async def counted(*args: Any) -> bool:
        answered.append(await hot_path(*args))
        return answered[-1]

    handler_opt["hot_path"] = counted
    seen: set[int] = set()
    for scanned, query, headers in asks:
        hot = await client.get(f"/s/{scanned}?{query}", headers=headers)
        handler = await client.get(f"/s/{scanned}?{query}&view=citizen", headers=headers)
        assert (hot.status_code, hot.content) == (handler.status_code, handler.content), (query, headers)
        drop = {"x-request-id", "date"}
        assert {k: v for k, v in hot.headers.items() if k not in drop} == {
            k: v for k, v in handler.headers.items() if k not in drop
        }, (query, headers)
        seen.add(hot.status_code)
    assert seen == {200, 304, 404, 410, 422}
    # the hot path answered with the stored answers (the closed shop's page too) and declined the
    # revoked, unknown and malformed codes and every `view=` twin
    assert answered == [True, False] * (11 + 3 * len(stickers) + 4) + [False, False] * 3
    # the handler's to refuse or answer
    for odd, status in (("lang=fr", 400), ("lang=en&lang=zh", 200), ("view=full", 400)):
        assert (await client.get(f"/s/{code}?{odd}")).status_code == status, odd
        assert answered[-1] is False
    # and each status of a sticker has an answer of its own
    pages = {(await client.get(f"/s/{code}?{query}")).content for query in stickers.values()}
    assert len(pages) == len(stickers)
