"""Signed stickers: every image decodes (with a real decoder) to a payload that verifies, and
anything else, down to one flipped bit, is refused with InvalidSticker and nothing else."""

from __future__ import annotations

import asyncio
import csv
import datetime
import io
import json
import os
import random
import re
import stat
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
import zxingcpp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from litestar.testing import AsyncTestClient
from PIL import Image

from merchant_code import db, qr, stickers
from merchant_code.codes import code_check_symbol
from merchant_code.settings import Settings
from tests import factories

ROOT = Path(__file__).resolve().parent.parent
XUHUI = "https://hsm.xuhui.gov.cn"


# --- decoding what was drawn ---------------------------------------------------------------


# only QR symbols: a run of modules can also read as a short 1D code (ITF "3359")
QR_ONLY = zxingcpp.BarcodeFormat.QRCode


def decode_png(data: bytes) -> list[str]:
    return [b.text for b in zxingcpp.read_barcodes(Image.open(io.BytesIO(data)), formats=QR_ONLY)]


def _raster(path_d: str, px: int = 4) -> Image.Image:
    """segno's SVG path (rows of `h` strokes, relative `m` moves) back into pixels, with a quiet
    zone, so that the decoder reads exactly what the SVG draws."""
    x = y = 0.0
    dark: list[tuple[int, int, int]] = []
    for op, a, b in re.findall(r"([MmHh])\s*(-?[\d.]+)(?:\s+(-?[\d.]+))?", path_d):
        if op == "M":
            x, y = float(a), float(b)
        elif op == "m":
            x, y = x + float(a), y + float(b)
        else:
            dark.append((int(x), int(y - 0.5), int(float(a))))
            x += float(a)
    assert re.fullmatch(r"[MmHh0-9. -]+", path_d), "segno's path uses only M, m and h"
    size = max(x0 + n for x0, _, n in dark) + 8
    image = Image.new("L", (size * px, size * px), 255)
    for x0, row, n in dark:
        image.paste(0, ((x0 + 4) * px, (row + 4) * px, (x0 + 4 + n) * px, (row + 5) * px))
    return image


def decode_svg(data: bytes) -> list[str]:
    """Every QR of an SVG (a sticker, a poster, a sheet page), decoded one by one."""
    texts = []
    for path_d in re.findall(rb'<path class="qrline"[^>]* d="([^"]+)"', data):
        found = zxingcpp.read_barcodes(_raster(path_d.decode()), formats=QR_ONLY)
        assert len(found) == 1, [(b.text, b.format) for b in found]
        texts.append(found[0].text)
    return texts


def _keyset(*keys: tuple[str, Ed25519PrivateKey, qr.KeyStatus], revoked: tuple[str, ...] = ()) -> qr.KeySet:
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    doc = qr.KeySetDocument(
        keys=[
            qr.KeyEntry(kid, "Ed25519", qr.b64url(k.public_key().public_bytes_raw()), status, now)
            for kid, k, status in keys
        ],
        revoked_codes=[qr.RevokedCode(code, now, "test") for code in revoked],
    )
    return qr.KeySet.from_document(doc)


def _key() -> tuple[str, Ed25519PrivateKey]:
    private = Ed25519PrivateKey.generate()
    return qr.kid_for(private.public_key().public_bytes_raw()), private


CODE = "A1B2C3D4E5F6" + code_check_symbol("A1B2C3D4E5F6")


# --- the payload ---------------------------------------------------------------------------


def test_the_payload_is_the_scan_url_with_a_key_id_and_a_signature_over_base_code_and_kid() -> None:
    kid, private = _key()
    text = qr.sign_payload(XUHUI, CODE, kid, private)
    assert re.fullmatch(rf"{XUHUI}/s/{CODE}\?q={kid}\.[A-Za-z0-9_-]{{86}}", text)
    payload = qr.parse_payload(text)
    assert (payload.base, payload.code, payload.kid) == (XUHUI, CODE, kid)
    assert payload.message == f"merchant-code/1\n{XUHUI}/s/{CODE}\n{kid}".encode()
    private.public_key().verify(payload.signature, payload.message)
    assert len(text) == 134  # what a sticker of the Xuhui deployment carries


def test_a_typical_payload_is_a_version_8_qr_at_error_level_m() -> None:
    """The figures in the README: 134 bytes (131 for the demo base) make a version 8-M symbol of
    49 modules; printed 30 mm wide that is 0.61 mm a module."""
    kid, private = _key()
    for base in (XUHUI, Settings().base_url):
        symbol = stickers.make_qr(qr.sign_payload(base, CODE, kid, private))
        assert (symbol.designator, symbol.symbol_size(border=0)) == ("8-M", (49, 49))
        assert not symbol.is_micro


def test_every_single_bit_flip_of_a_payload_is_refused_with_invalid_sticker_only() -> None:
    """Each bit of each byte, passed as bytes as they are, and as text decoded with
    errors="replace" (what a scanner app might hand over)."""
    kid, private = _key()
    keyset = _keyset((kid, private, "active"))
    good = qr.sign_payload(XUHUI, CODE, kid, private).encode()
    assert qr.verify(good, keyset).code == CODE
    reasons: dict[str, int] = {}
    for i in range(len(good)):
        for bit in range(8):
            flipped = bytearray(good)
            flipped[i] ^= 1 << bit
            for candidate in (bytes(flipped), bytes(flipped).decode("utf-8", errors="replace")):
                with pytest.raises(qr.InvalidSticker) as caught:
                    qr.verify(candidate, keyset)
                reasons[caught.value.reason] = reasons.get(caught.value.reason, 0) + 1
    assert sum(reasons.values()) == len(good) * 8 * 2
    assert {"malformed", "bad-signature", "unknown-key"} <= set(reasons)


def test_garbage_of_any_kind_is_refused_with_invalid_sticker_only() -> None:
    kid, private = _key()
    keyset = _keyset((kid, private, "active"))
    good = qr.sign_payload(XUHUI, CODE, kid, private)
    rng = random.Random(4)
    samples: list[str | bytes] = [
        "",
        b"",
        "\ud800",
        "\x00" * 10,
        good + "\n",
        good + "=",
        good.replace("https", "HTTPS"),
        good.replace(CODE, CODE.lower()),
        good.replace(CODE, CODE[:4] + "-" + CODE[4:]),
        good.replace("?q=", "?Q="),
        good[:-1],
        good + "A",
        good * 5,
        "https://x/s/" + CODE + "?q=" + kid + "." + "A" * 86,
        "全角" + good,
    ]
    samples += [bytes(rng.getrandbits(8) for _ in range(rng.randrange(200))) for _ in range(300)]
    samples += ["".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(150))) for _ in range(300)]
    for sample in samples:
        with pytest.raises(qr.InvalidSticker):
            qr.verify(sample, keyset)


def test_a_wrong_kid_a_revoked_kid_and_a_revoked_code_are_refused_and_a_retired_kid_verifies() -> None:
    kid, private = _key()
    other_kid, other = _key()
    good = qr.sign_payload(XUHUI, CODE, kid, private)
    with pytest.raises(qr.InvalidSticker, match="unknown-key"):
        qr.verify(good, _keyset((other_kid, other, "active")))
    # the kid is signed too: naming another valid key does not carry the signature over
    swapped = good.replace(f"q={kid}.", f"q={other_kid}.")
    with pytest.raises(qr.InvalidSticker, match="bad-signature"):
        qr.verify(swapped, _keyset((kid, private, "active"), (other_kid, other, "active")))
    with pytest.raises(qr.InvalidSticker, match="revoked-key"):
        qr.verify(good, _keyset((kid, private, "revoked")))
    assert qr.verify(good, _keyset((kid, private, "retired"))).key_status == "retired"
    with pytest.raises(qr.InvalidSticker, match="revoked-code"):
        qr.verify(good, _keyset((kid, private, "active"), revoked=(CODE,)))
    # a signature for this code on another host does not verify here
    moved = good.replace(XUHUI, "https://evil.example")
    with pytest.raises(qr.InvalidSticker, match="bad-signature"):
        qr.verify(moved, _keyset((kid, private, "active")))


# --- keys ----------------------------------------------------------------------------------


async def test_the_first_key_is_made_once_kept_private_and_rotation_retires_the_old_one(
    conn: asyncpg.Connection, db_url: str, settings: Settings
) -> None:
    conns = [await db.connect(db_url) for _ in range(4)]
    try:
        made = await asyncio.gather(*(qr.ensure_signing_key(c, settings) for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert len({k.kid for k in made}) == 1
    first = made[0]
    path = Path(settings.data_dir) / "qr_keys" / f"{first.kid}.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_bytes()) == 32
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no draft left behind
    _, shop_code = await factories.shop(conn)
    old = first.payload(settings.base_url, shop_code)

    new, retired = await qr.rotate(conn, settings)
    assert retired == [first.kid] and new.kid != first.kid
    assert (await qr.ensure_signing_key(conn, settings)).kid == new.kid
    keyset = await qr.load_keyset(conn)
    assert qr.verify(old, keyset).key_status == "retired"
    assert qr.verify(new.payload(settings.base_url, shop_code), keyset).key_status == "active"

    await qr.revoke_key(conn, first.kid)
    with pytest.raises(qr.InvalidSticker, match="revoked-key"):
        qr.verify(old, await qr.load_keyset(conn))


async def test_a_key_file_in_pem_is_read_too(conn: asyncpg.Connection, settings: Settings) -> None:
    from cryptography.hazmat.primitives import serialization

    key = await qr.ensure_signing_key(conn, settings)
    path = Path(settings.data_dir) / "qr_keys" / f"{key.kid}.key"
    path.write_bytes(
        key.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    qr._loaded.clear()
    again = await qr.ensure_signing_key(conn, settings)
    assert again.private.private_bytes_raw() == key.private.private_bytes_raw()


# --- routes --------------------------------------------------------------------------------


async def test_stickers_and_posters_decode_to_payloads_that_verify(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, settings: Settings
) -> None:
    shop_id, code = await factories.shop(conn, name="老王面馆 & <Co>")
    await factories.inspection(conn, shop_id, on=datetime.date(2026, 3, 1), grade="B")
    texts = []
    png = await client.get(f"/s/{code}/sticker.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    texts += decode_png(png.content)
    for path in ("sticker.svg", "poster.svg", "poster.svg?size=a5"):
        response = await client.get(f"/s/{code}/{path}")
        assert response.status_code == 200 and response.headers["content-type"].startswith("image/svg+xml")
        texts += decode_svg(response.content)
    poster = (await client.get(f"/s/{code}/poster.svg")).text
    assert "老王面馆 &amp; &lt;Co&gt;" in poster and "餐饮服务" in poster and ">B</text>" in poster
    assert (
        "扫码查看证照、检查结果和评价" in poster and "Scan to see licences, inspections and reviews" in poster
    )
    assert 'width="210.00mm"' in poster
    keyset = await qr.load_keyset(conn)
    assert len(texts) == 4 and len(set(texts)) == 1
    assert texts[0].startswith(f"{settings.base_url}/s/{code}?q=")
    assert qr.verify(texts[0], keyset).code == code


async def test_a_poster_without_a_grade_says_not_graded(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    _, code = await factories.shop(conn, name="张记五金", trade="retail")
    poster = (await client.get(f"/s/{code}/poster.svg")).text
    assert "未评级" in poster and "not graded" in poster and "零售" in poster


async def test_images_carry_a_strong_etag_and_answer_304_when_it_matches(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, settings: Settings
) -> None:
    _, code = await factories.shop(conn)
    for path in ("sticker.svg", "sticker.png", "poster.svg"):
        first = await client.get(f"/s/{code}/{path}")
        etag = first.headers["etag"]
        assert re.fullmatch(r'"[0-9a-f]{64}"', etag)
        assert first.headers["cache-control"] == "public, max-age=86400"
        again = await client.get(f"/s/{code}/{path}", headers={"if-none-match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
        other = await client.get(f"/s/{code}/{path}", headers={"if-none-match": '"abc"'})
        assert other.status_code == 200 and other.content == first.content
    cached = sorted(p.name.split(".")[2] for p in (Path(settings.data_dir) / "stickers").iterdir())
    assert cached == ["poster-a4", "sticker", "sticker"]


async def test_the_cached_file_is_served_again_without_drawing(
    client: AsyncTestClient[Any],
    conn: asyncpg.Connection,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, code = await factories.shop(conn)
    first = await client.get(f"/s/{code}/sticker.svg")
    stickers._memo.clear()

    def no_drawing(*_: Any) -> bytes:
        raise AssertionError("drawn again")

    monkeypatch.setattr(stickers, "sticker_svg", no_drawing)
    again = await client.get(f"/s/{code}/sticker.svg")
    assert again.content == first.content and again.headers["etag"] == first.headers["etag"]


async def test_unknown_malformed_and_revoked_codes(
    client: AsyncTestClient[Any], conn: asyncpg.Connection
) -> None:
    from merchant_code.codes import new_shop_code

    unknown = await client.get(f"/s/{new_shop_code(7)}/sticker.svg")
    assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"
    for path in ("sticker.png", "poster.svg"):
        bad = await client.get(f"/s/NOT-A-CODE/{path}")
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "code"
    typo = await client.get("/s/A1B2C3D4E5F6Z/sticker.svg")
    assert typo.status_code == 422
    _, code = await factories.shop(conn)
    await qr.revoke_code(conn, code, "sticker stolen")
    revoked = await client.get(f"/s/{code}/sticker.svg")
    assert revoked.status_code == 404 and "revoked" in revoked.json()["detail"]


async def test_the_key_set_lists_every_key_and_revoked_code(
    client: AsyncTestClient[Any], conn: asyncpg.Connection, settings: Settings
) -> None:
    first = await qr.ensure_signing_key(conn, settings)
    second, _ = await qr.rotate(conn, settings)
    third, _ = await qr.rotate(conn, settings)
    await qr.revoke_key(conn, first.kid)
    _, code = await factories.shop(conn)
    await qr.revoke_code(conn, code, "shop closed for good")
    response = await client.get("/.well-known/merchant-code-keys.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert [(k["kid"], k["status"], k["alg"]) for k in body["keys"]] == [
        (first.kid, "revoked", "Ed25519"),
        (second.kid, "retired", "Ed25519"),
        (third.kid, "active", "Ed25519"),
    ]
    assert qr.b64url_decode(body["keys"][2]["x"]) == third.private.public_key().public_bytes_raw()
    assert [(r["code"], r["reason"]) for r in body["revoked_codes"]] == [(code, "shop closed for good")]
    assert set(body["keys"][0]) == {"kid", "alg", "x", "status", "created_at"}
    again = await client.get(
        "/.well-known/merchant-code-keys.json", headers={"if-none-match": response.headers["etag"]}
    )
    assert again.status_code == 304
    # the document is all an offline verifier needs
    keyset = qr.parse_keyset(response.content)
    assert qr.verify(third.payload(settings.base_url, CODE), keyset).kid == third.kid


# --- the batch sheet -----------------------------------------------------------------------


async def _area_with_shops(conn: asyncpg.Connection) -> tuple[set[str], set[str]]:
    """Subdistrict 310199001 with a grid below it, and shops that must and must not be printed."""
    sub = await factories.area(conn, "310199001", "一街道")
    sibling = await factories.area(conn, "3101990019", "像前缀的街道")  # path 310199.3101990019
    grid: int = await conn.fetchval(
        "INSERT INTO area (parent_id, level, code, path, name) VALUES ($1, 'grid', '310199001001',"
        " '310199.310199001.310199001001', '一网格') RETURNING id",
        sub,
    )
    inside: set[str] = set()
    outside: set[str] = set()
    for i in range(14):
        shop_id, code = await factories.shop(conn, name=f"一街道小店{i}")
        await factories.move_shop(conn, shop_id, grid if i % 3 == 0 else sub)
        inside.add(code)
    for area_id, status in ((sibling, "active"), (sub, "closed")):
        shop_id, code = await factories.shop(conn, status=status)
        await factories.move_shop(conn, shop_id, area_id)
        outside.add(code)
    shop_id, code = await factories.shop(conn)
    await factories.move_shop(conn, shop_id, sub)
    await qr.revoke_code(conn, code, "replaced")
    outside.add(code)
    return inside, outside


async def test_the_sheet_of_an_area_holds_exactly_its_shops_drawn_by_several_processes(
    conn: asyncpg.Connection, settings: Settings
) -> None:
    inside, _ = await _area_with_shops(conn)
    hostile = await conn.fetchval("UPDATE shop SET name = ' =1+1' WHERE name = '一街道小店13' RETURNING code")
    sheet = await stickers.area_sheet(conn, settings, "310199001")
    assert (sheet.pages, sheet.shops, sheet.cached) == (2, 14, False)
    assert sheet.processes > 1
    archive = zipfile.ZipFile(io.BytesIO(sheet.data))
    assert archive.namelist() == ["page-001.svg", "page-002.svg", "shops.csv"]
    keyset = await qr.load_keyset(conn)
    decoded = [t for name in archive.namelist()[:2] for t in decode_svg(archive.read(name))]
    assert len(decoded) == 14
    assert {qr.verify(t, keyset).code for t in decoded} == inside
    rows = list(csv.DictReader(io.StringIO(archive.read("shops.csv").decode())))
    assert {r["code"] for r in rows} == inside and [r["page"] for r in rows].count("1") == 12
    assert {r["code"]: r["name"] for r in rows}[hostile] == "' =1+1"  # text, not a formula
    page = archive.read("page-001.svg").decode()
    assert "一街道 310199001" in page and "一街道小店" in page and 'width="210.00mm"' in page

    again = await stickers.area_sheet(conn, settings, "310199001")
    assert again.cached and again.etag == sheet.etag


async def test_a_sheet_for_an_unknown_or_malformed_area_is_refused(
    conn: asyncpg.Connection, settings: Settings
) -> None:
    from merchant_code.errors import InvalidInput, NotFound

    with pytest.raises(NotFound):
        await stickers.area_sheet(conn, settings, "310199999")
    with pytest.raises(InvalidInput):
        await stickers.area_sheet(conn, settings, "31x")


# --- the command ---------------------------------------------------------------------------


def _cli(url: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERCHANT_CODE_")}
    env |= {"MERCHANT_CODE_DATABASE_URL": url, "MERCHANT_CODE_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "merchant_code", "qr", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )


async def test_qr_verify_says_ok_or_names_the_reason_in_one_line(
    conn: asyncpg.Connection, db_url: str, settings: Settings, tmp_path: Path
) -> None:
    key = await qr.ensure_signing_key(conn, settings)
    _, code = await factories.shop(conn)
    good = key.payload(settings.base_url, code)
    ok = await asyncio.to_thread(_cli, db_url, tmp_path, "verify", good)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"OK: shop code {code}, key {key.kid} (active)")
    forged = good[:-2] + ("AA" if not good.endswith("AA") else "BA")
    bad = await asyncio.to_thread(_cli, db_url, tmp_path, "verify", forged)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.startswith("merchant-code: error: sticker not valid (")
    assert len(bad.stderr.strip().splitlines()) == 1

    # offline: the published document in a file, no database
    keyset_file = tmp_path / "keys.json"
    keyset_file.write_bytes(msgspec.json.encode(await qr.keyset_document(conn)))
    offline = await asyncio.to_thread(
        _cli, "postgresql://nobody@127.0.0.1:1/none", tmp_path, "verify", good, "--keyset", str(keyset_file)
    )
    assert offline.returncode == 0 and "(offline)" in offline.stdout, offline.stderr
    await qr.revoke_code(conn, code, "stolen")
    keyset_file.write_bytes(msgspec.json.encode(await qr.keyset_document(conn)))
    refused = await asyncio.to_thread(_cli, db_url, tmp_path, "verify", good, "--keyset", str(keyset_file))
    assert refused.returncode == 1
    assert refused.stderr.startswith("merchant-code: error: sticker not valid (revoked-code)")
    keyset_file.write_text(json.dumps({"keys": "nope"}))
    broken = await asyncio.to_thread(_cli, db_url, tmp_path, "verify", good, "--keyset", str(keyset_file))
    assert broken.returncode == 1 and "key set" in broken.stderr


async def test_qr_commands_rotate_revoke_and_print_a_sheet(
    conn: asyncpg.Connection, db_url: str, tmp_path: Path
) -> None:
    inside, _ = await _area_with_shops(conn)
    out = tmp_path / "sheet.zip"
    sheet = await asyncio.to_thread(_cli, db_url, tmp_path, "sheet", "--area", "310199001", "--out", str(out))
    assert sheet.returncode == 0, sheet.stderr
    assert re.match(r"wrote .*sheet\.zip: 2 pages, 14 shops in [\d.]+ s \(\d+ processes\)", sheet.stdout)
    rows = csv.DictReader(io.StringIO(zipfile.ZipFile(out).read("shops.csv").decode()))
    assert {r["code"] for r in rows} == inside

    first = await conn.fetchval("SELECT kid FROM qr_key")
    rotated = await asyncio.to_thread(_cli, db_url, tmp_path, "keys", "rotate")
    assert rotated.returncode == 0 and f"retired (still verify): {first}" in rotated.stdout
    revoked = await asyncio.to_thread(_cli, db_url, tmp_path, "keys", "revoke", first)
    assert revoked.returncode == 0
    missing = await asyncio.to_thread(_cli, db_url, tmp_path, "keys", "revoke", "nokey")
    assert missing.returncode == 1 and missing.stderr.startswith("merchant-code: error: no QR key")
    code = sorted(inside)[0]
    gone = await asyncio.to_thread(_cli, db_url, tmp_path, "revoke-code", code.lower(), "--reason", "stolen")
    assert gone.returncode == 0, gone.stderr
    rows_db = await conn.fetch(
        "SELECT kid, retired_at IS NOT NULL AS r, revoked_at IS NOT NULL AS v FROM qr_key"
    )
    assert sorted((r["kid"] == first, r["r"], r["v"]) for r in rows_db) == [
        (False, False, False),
        (True, True, True),
    ]
    assert await conn.fetchval("SELECT reason FROM qr_revocation WHERE code = $1", code) == "stolen"
