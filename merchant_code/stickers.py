"""Sticker, poster and batch-sheet images of a shop's signed QR code, made once and cached.

Every QR is made by `segno.make_qr` (never `segno.make`, which may pick a Micro QR that phones
do not read), error level M at least: a street sticker gets dirty. Images are cached in
DATA_DIR/stickers/ under a name that holds the code, the key id, the kind and a hash of every
input, so a changed grade or name makes a new file and an unchanged one is never drawn twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import math
import multiprocessing
import os
import re
import secrets
import struct
import threading
import time
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import escape

import asyncpg
import msgspec
import segno

from merchant_code import csvsafe, db, qr
from merchant_code.codes import parse_shop_code
from merchant_code.errors import InvalidInput, NotFound, StartupError
from merchant_code.settings import Settings, cores

log = logging.getLogger("merchant_code")

VERSION = "1"  # bump when a drawing changes: every cached file is then made anew
QR_ERROR = "m"
QUIET = 4  # modules of quiet zone the standard asks for
STICKER_QR_MM = 30
PER_PAGE, COLS = 12, 3
MEMO_SECONDS = 60.0  # a rotation or revocation reaches a worker's memory within this
Kind = Literal["sticker.svg", "sticker.png", "poster-a4.svg", "poster-a5.svg"]
MEDIA = {"svg": "image/svg+xml", "png": "image/png", "zip": "application/zip"}
GRADE_COLOURS = {"A": "#1a7f37", "B": "#c77c02", "C": "#c62828"}
SANS = "Noto Sans CJK SC, Source Han Sans SC, PingFang SC, Microsoft YaHei, sans-serif"
MONO = "DejaVu Sans Mono, Menlo, Consolas, monospace"
PAGE_MM = {"a4": (210, 297), "a5": (148, 210)}


class Rendered(msgspec.Struct, frozen=True):
    data: bytes
    etag: str
    media_type: str


class Cell(msgspec.Struct, frozen=True, array_like=True):
    payload: str
    code: str
    name: str


class Sheet(msgspec.Struct, frozen=True):
    data: bytes
    etag: str
    pages: int
    shops: int
    seconds: float
    processes: int
    cached: bool


def make_qr(payload: str) -> Any:
    return segno.make_qr(payload, error=QR_ERROR, boost_error=True)


def etag_of(data: bytes) -> str:
    return f'"{hashlib.sha256(data).hexdigest()}"'


def spaced(code: str) -> str:
    return f"{code[:4]} {code[4:8]} {code[8:]}"


def _qr_svg(symbol: Any, x: float, y: float, size: float) -> str:
    """segno's own drawing of the symbol, placed as a nested <svg> (no quiet zone: the caller
    keeps four modules around it free)."""
    inner: str = symbol.svg_inline(border=0, omitsize=True, svgclass=None)
    box = f'<svg x="{x:.2f}" y="{y:.2f}" width="{size:.2f}" height="{size:.2f}" shape-rendering="crispEdges" '
    return inner.replace("<svg ", box, 1)


def _text(x: float, y: float, size: float, body: str, **attrs: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return (
        f'<text x="{x:.2f}" y="{y:.2f}" font-size="{size:.2f}" text-anchor="middle"{extra}>'
        f"{escape(body)}</text>"
    )


def _fit(text: str, width: float, largest: float) -> float:
    """A font size at which `text` fits `width` (CJK about 1 em a character, Latin about 0.6)."""
    ems = sum(1.0 if ord(ch) > 0x2E7F else 0.6 for ch in text) or 1.0
    return min(largest, width / ems)


def _svg(width_mm: float, height_mm: float, view: tuple[float, float], body: list[str]) -> bytes:
    head = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg"'
        f' width="{width_mm:.2f}mm" height="{height_mm:.2f}mm" viewBox="0 0 {view[0]:.2f} {view[1]:.2f}"'
        f' font-family="{SANS}">'
    )
    return "\n".join(
        [head, f'<rect width="{view[0]:.2f}" height="{view[1]:.2f}" fill="#fff"/>', *body, "</svg>\n"]
    ).encode()


# --- sticker -------------------------------------------------------------------------------


def sticker_svg(payload: str, code: str) -> bytes:
    """The QR printed STICKER_QR_MM wide, with the code spelled out under it (in modules)."""
    symbol = make_qr(payload)
    n = symbol.symbol_size(border=0)[0]
    width = n + 2 * QUIET
    font = width * 0.075
    height = width + font * 1.5
    mm = STICKER_QR_MM / n
    body = [
        f"<title>merchant-code {code}</title>",
        _qr_svg(symbol, QUIET, QUIET, n),
        _text(width / 2, width + font * 0.9, font, spaced(code), font_family=MONO),
    ]
    return _svg(width * mm, height * mm, (width, height), body)


# 5x7 glyphs of the code's alphabet (Crockford: no I, L, O, U), for the PNG: no font is needed
_GLYPHS = """
0 01110 10001 10011 10101 11001 10001 01110|1 00100 01100 00100 00100 00100 00100 01110
2 01110 10001 00001 00010 00100 01000 11111|3 11111 00010 00100 00010 00001 10001 01110
4 00010 00110 01010 10010 11111 00010 00010|5 11111 10000 11110 00001 00001 10001 01110
6 00110 01000 10000 11110 10001 10001 01110|7 11111 00001 00010 00100 01000 01000 01000
8 01110 10001 10001 01110 10001 10001 01110|9 01110 10001 10001 01111 00001 00010 01100
A 01110 10001 10001 10001 11111 10001 10001|B 11110 10001 10001 11110 10001 10001 11110
C 01110 10001 10000 10000 10000 10001 01110|D 11100 10010 10001 10001 10001 10010 11100
E 11111 10000 10000 11110 10000 10000 11111|F 11111 10000 10000 11110 10000 10000 10000
G 01110 10001 10000 10111 10001 10001 01111|H 10001 10001 10001 11111 10001 10001 10001
J 00111 00010 00010 00010 00010 10010 01100|K 10001 10010 10100 11000 10100 10010 10001
M 10001 11011 10101 10101 10001 10001 10001|N 10001 10001 11001 10101 10011 10001 10001
P 11110 10001 10001 11110 10000 10000 10000|Q 01110 10001 10001 10001 10101 10010 01101
R 11110 10001 10001 11110 10100 10010 10001|S 01111 10000 10000 01110 00001 00001 11110
T 11111 00100 00100 00100 00100 00100 00100|V 10001 10001 10001 10001 10001 01010 00100
W 10001 10001 10001 10101 10101 10101 01010|X 10001 10001 01010 00100 01010 10001 10001
Y 10001 10001 10001 01010 00100 00100 00100|Z 11111 00001 00010 00100 01000 10000 11111
"""
FONT = {g.split()[0]: g.split()[1:] for g in _GLYPHS.replace("\n", "|").split("|") if g.strip()}
FONT[" "] = ["00000"] * 7


def _text_rows(text: str, width: int, scale: int) -> list[str]:
    """Pixel rows ('0' ink, '1' paper) of `text` centred in `width` pixels."""
    units = len(text) * 6 - 1
    unit = max(1, min(scale, int(width * 0.85) // units))
    left = "1" * ((width - units * unit) // 2)
    rows = []
    for y in range(7):
        ink = "0".join(FONT[ch][y] for ch in text)
        line = left + "".join(("0" if bit == "1" else "1") * unit for bit in ink)
        rows += [line.ljust(width, "1")] * unit
    return rows + ["1" * width] * (2 * scale)


def sticker_png(payload: str, code: str, scale: int = 8) -> bytes:
    """1-bit PNG: the QR with its quiet zone, the code under it; pHYs makes it print 30 mm wide."""
    symbol = make_qr(payload)
    rows: list[str] = []
    for modules in symbol.matrix_iter(scale=1, border=QUIET):
        line = "".join(("0" if dark else "1") * scale for dark in modules)
        rows += [line] * scale
    width = len(rows[0])
    rows += _text_rows(spaced(code), width, scale)
    per_metre = round(1000 * symbol.symbol_size(border=0)[0] * scale / STICKER_QR_MM)
    return _png(rows, width, per_metre)


def _png(rows: list[str], width: int, per_metre: int) -> bytes:
    pad = "1" * (-width % 8)
    packed: dict[str, bytes] = {}
    raw = bytearray()
    for line in rows:
        if line not in packed:
            packed[line] = int(line + pad, 2).to_bytes((width + len(pad)) // 8, "big")
        raw += b"\x00" + packed[line]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, len(rows), 1, 0, 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", header),
            chunk(b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1)),
            chunk(b"IDAT", zlib.compress(bytes(raw), 9)),
            chunk(b"IEND", b""),
        ]
    )


# --- poster --------------------------------------------------------------------------------


def poster_svg(payload: str, code: str, name: str, trade: str, grade: str | None, size: str = "a4") -> bytes:
    """A5 drawing (mm), printed A5 or scaled to A4: name, trade, grade face, QR, instructions."""
    symbol = make_qr(payload)
    colour = GRADE_COLOURS.get(grade or "")
    body = [
        f"<title>merchant-code {code}</title>",
        _text(74, 24, _fit(name, 132, 10), name, font_weight="bold"),
        _text(74, 33, _fit(trade, 132, 5.5), trade, fill="#555"),
    ]
    if colour:
        body += [
            f'<circle cx="74" cy="52" r="13" fill="{colour}"/>',
            _text(74, 58.5, 18, grade or "", fill="#fff", font_weight="bold"),
            _text(74, 73, 3.6, f"食品安全等级 {grade} · food safety grade {grade}", fill="#333"),
        ]
    else:
        body += [
            '<circle cx="74" cy="52" r="13" fill="#9e9e9e"/>',
            _text(74, 52, 5.5, "未评级", fill="#fff", font_weight="bold"),
            _text(74, 58, 3.4, "not graded", fill="#fff"),
        ]
    body += [
        _qr_svg(symbol, 35, 83, 78),
        _text(74, 174, 5, spaced(code), font_family=MONO),
        _text(74, 186, 5.4, "扫码查看证照、检查结果和评价", font_weight="bold"),
        _text(74, 194, 4, "Scan to see licences, inspections and reviews", fill="#333"),
    ]
    width, height = PAGE_MM[size]
    return _svg(width, height, (148, 210), body)


# --- batch sheet ---------------------------------------------------------------------------


def sheet_page_svg(cells: list[Cell], page: int, pages: int, title: str) -> bytes:
    """One A4 page of 3 x 4 stickers (40 mm QR), with cut lines, each named and numbered."""
    cell_w, cell_h, margin = 190 / COLS, 277 / (PER_PAGE // COLS), 10.0
    body = [f"<title>{escape(title)}: page {page} of {pages}</title>"]
    for i, cell in enumerate(cells):
        x, y = margin + (i % COLS) * cell_w, margin + (i // COLS) * cell_h
        body += [
            f'<g data-code="{cell.code}">',
            _qr_svg(make_qr(cell.payload), x + (cell_w - 40) / 2, y + 7, 40),
            _text(x + cell_w / 2, y + 56, _fit(cell.name, cell_w - 8, 4), cell.name),
            _text(x + cell_w / 2, y + 62, 3.6, spaced(cell.code), font_family=MONO),
            "</g>",
        ]
    cuts = [
        f'<line x1="{margin + c * cell_w:.2f}" y1="{margin}" x2="{margin + c * cell_w:.2f}" y2="287"/>'
        for c in range(COLS + 1)
    ]
    cuts += [
        f'<line x1="{margin}" y1="{margin + r * cell_h:.2f}" x2="200" y2="{margin + r * cell_h:.2f}"/>'
        for r in range(PER_PAGE // COLS + 1)
    ]
    body.append('<g stroke="#bbb" stroke-width="0.2" stroke-dasharray="1 1">' + "".join(cuts) + "</g>")
    body.append(_text(105, 293, 3, f"{title} · 第 {page}/{pages} 页 · page {page} of {pages}", fill="#666"))
    return _svg(210, 297, (210, 297), body)


def _meet(barrier: Any) -> None:
    """Every worker waits until all have started, so that each takes a share of the chunks."""
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait(timeout=60)


def _render_chunk(job: tuple[str, int, list[tuple[int, list[Cell]]]]) -> tuple[int, list[tuple[int, bytes]]]:
    title, pages, items = job
    return os.getpid(), [(number, sheet_page_svg(cells, number, pages, title)) for number, cells in items]


def render_sheet(cells: list[Cell], title: str, workers: int | None = None) -> tuple[bytes, int]:
    """A zip of A4 SVG pages (and shops.csv), drawn by one spawned process per core over chunks of
    pages; returns the zip and how many processes drew it."""
    pages = [cells[i : i + PER_PAGE] for i in range(0, len(cells), PER_PAGE)]
    numbered = list(enumerate(pages, 1))
    workers = max(1, min(workers or cores(), len(pages)))
    size = max(1, math.ceil(len(numbered) / (workers * 4)))
    jobs = [(title, len(pages), numbered[i : i + size]) for i in range(0, len(numbered), size)]
    context = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_meet, initargs=(context.Barrier(workers),)
        ) as pool:
            results = list(pool.map(_render_chunk, jobs))
    except BrokenProcessPool:
        raise StartupError("a process drawing the sheet died (out of memory?); try again") from None
    drawn = sorted(page for _, chunk in results for page in chunk)
    index = io.StringIO()
    csvsafe.writer(index, lineterminator="\n").writerows(
        [("page", "code", "name"), *((n, c.code, c.name) for n, page in numbered for c in page)]
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in [
            *((f"page-{n:03d}.svg", svg) for n, svg in drawn),
            ("shops.csv", index.getvalue().encode()),
        ]:
            archive.writestr(
                zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED
            )
    return out.getvalue(), len({pid for pid, _ in results})


# --- cache and database --------------------------------------------------------------------

_memo: dict[tuple[str, str, str, str], tuple[float, Rendered]] = {}


def _cache_path(settings: Settings, name: str, kid: str, kind: str, inputs: Any) -> Path:
    digest = hashlib.sha256(msgspec.json.encode([VERSION, settings.base_url, kid, kind, inputs])).hexdigest()
    stem, _, ext = kind.rpartition(".")
    return Path(settings.data_dir) / "stickers" / f"{name}.{kid}.{stem}.{digest[:16]}.{ext}"


def _store(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        draft.write_bytes(data)
        os.replace(draft, path)
    except OSError as exc:  # the image is still served; only the cache is missing
        log.warning("cannot cache %s: %s", path, exc.strerror or exc)


def _draw(settings: Settings, key: qr.SigningKey, kind: Kind, shop: dict[str, Any]) -> Rendered:
    code = shop["code"]
    inputs = [code] if kind.startswith("sticker") else [code, shop["name"], shop["trade_name"], shop["grade"]]
    path = _cache_path(settings, code, key.kid, kind, inputs)
    try:
        data = path.read_bytes()
    except OSError:
        payload = key.payload(settings.base_url, code)
        if kind == "sticker.svg":
            data = sticker_svg(payload, code)
        elif kind == "sticker.png":
            data = sticker_png(payload, code)
        else:
            data = poster_svg(payload, code, shop["name"], shop["trade_name"], shop["grade"], kind[7:9])
        _store(path, data)
    return Rendered(data=data, etag=etag_of(data), media_type=MEDIA[kind.rpartition(".")[2]])


async def shop_image(pool: asyncpg.Pool, settings: Settings, raw_code: str, kind: Kind) -> Rendered:
    """A shop's sticker or poster. Kept in memory for MEMO_SECONDS, so a busy code costs no query."""
    code = parse_shop_code(raw_code)
    memo_key = (settings.data_dir, settings.base_url, kind, code)
    now = time.monotonic()
    hit = _memo.get(memo_key)
    if hit is not None and hit[0] > now:
        return hit[1]
    async with db.acquire(pool, settings.acquire_seconds) as conn:
        row = await db.queries.get_qr_sticker_inputs(conn, code=code)
        if row is None:
            raise NotFound("no shop has this code: the sticker is not valid")
        if row["revoked"]:
            raise NotFound("this shop code has been revoked: the sticker is not valid")
        key = await qr.ensure_signing_key(conn, settings)
    rendered = await asyncio.to_thread(_draw, settings, key, kind, dict(row))
    if len(_memo) >= 2048:
        _memo.pop(next(iter(_memo)))
    _memo[memo_key] = (now + MEMO_SECONDS, rendered)
    return rendered


async def area_sheet(conn: asyncpg.Connection, settings: Settings, area_code: str) -> Sheet:
    """The batch sheet of every shop of an area and its sub-areas (not closed, code not revoked)."""
    started = time.perf_counter()
    if not re.fullmatch(r"[0-9]{6,15}", area_code):
        raise InvalidInput("area", "an area code has 6 to 15 digits")
    area = await db.queries.get_qr_area_by_code(conn, code=area_code)
    if area is None:
        raise NotFound(f"no area has the code {area_code}")
    shops = [(r["code"], r["name"]) async for r in db.queries.list_qr_sheet_shops(conn, path=area["path"])]
    if not shops:
        raise NotFound(f"area {area_code} has no shop that needs a sticker")
    key = await qr.ensure_signing_key(conn, settings)
    title = f"{area['name']} {area['code']}"
    path = _cache_path(settings, area_code, key.kid, "sheet.zip", [title, shops])
    processes, cached = 0, path.exists()
    if cached:
        data = path.read_bytes()
    else:
        cells = [Cell(key.payload(settings.base_url, code), code, name) for code, name in shops]
        data, processes = await asyncio.to_thread(render_sheet, cells, title)
        _store(path, data)
    seconds = time.perf_counter() - started
    pages = math.ceil(len(shops) / PER_PAGE)
    return Sheet(data, etag_of(data), pages, len(shops), seconds, processes, cached)
