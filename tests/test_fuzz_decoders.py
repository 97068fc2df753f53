"""Property-based fuzzing of every decoder that takes outside bytes: sticker payloads and key sets,
shop codes and USCCs, uploaded images, form and JSON bodies, and the five feed parsers (plus the
body reading their fetch does). Whatever comes in, only the declared validation error escapes,
and whatever comes out is well-typed: records of the module's record types, rejects carrying
the raw bytes of what they quarantine.

Each fuzz test runs its Hypothesis search inside (`fuzz`), counting what the decoder did, and then
checks that the strategy reached both outcomes (accepted and refused), so that a strategy that
broke into producing only garbage, or only the unchanged fixture, fails instead of passing
silently. Fixed seed (derandomize), no example database, no deadline: the same run in CI.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import hashlib
import json
import math
import zipfile
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Request

from merchant_code import decoding, forms, genuine, policies, qr, records, uploads
from merchant_code.codes import CODE_LENGTH, code_check_symbol, new_shop_code, parse_shop_code, parse_uscc
from merchant_code.errors import InvalidInput, UnreadableBody
from merchant_code.feeds import fhrs, licences, lives, reviews, rss
from merchant_code.feeds.base import (
    FeedError,
    InspectionRecord,
    LicenceRecord,
    Page,
    Parsed,
    Reject,
    ReviewRecord,
    SentimentRecord,
    ShopRecord,
)
from tests.fuzz_strategies import (
    RAW_JSON,
    TEXTS,
    build_zip,
    csv_mutation,
    encode_json,
    feed_document,
    json_mutation,
    json_values,
    mutated,
    weighted,
    zip_mutation,
)

# a failing example may be a megabyte of JSON: Hypothesis warns before printing it, and that
# warning (an error under the suite's filterwarnings) must not hide the failure itself
pytestmark = pytest.mark.filterwarnings(
    "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning"
)
FIXTURES = Path(__file__).parent / "fixtures" / "feeds"
SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
T = TypeVar("T")


def fuzz(
    strategy: st.SearchStrategy[T], check: Callable[[T], str], examples: int = 150
) -> collections.Counter[str]:
    """Runs `check` on `examples` drawn values (Hypothesis reports and shrinks any exception it
    lets through) and counts the outcomes it names."""
    seen: collections.Counter[str] = collections.Counter()

    @settings(SETTINGS, max_examples=examples)
    @given(strategy)
    def run(value: T) -> None:
        seen[check(value)] += 1

    run()
    return seen


def read(path: str) -> bytes:
    return (FIXTURES / path).read_bytes()


def _floats(value: Any) -> Iterator[float]:
    if isinstance(value, float):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _floats(item)
    elif isinstance(value, list):
        for item in value:
            yield from _floats(item)


def well_typed(parsed: Parsed, kinds: tuple[type[Any], ...], body: bytes | None) -> str:
    """Every record one of `kinds` whose fields hold what the struct declares (converting its
    fields back into the declared type gives it back: no wrong type, no value outside a Literal)
    and no float that is not finite; every reject the raw bytes it quarantines (a slice of `body`
    when given) and a reason."""
    assert isinstance(parsed, Parsed)
    for record in parsed.records:
        assert isinstance(record, kinds), record
        fields = msgspec.to_builtins(record, builtin_types=(datetime.datetime, datetime.date))
        assert msgspec.convert(fields, type(record)) == record
        assert all(math.isfinite(value) for value in _floats(fields)), record
    for reject in parsed.rejects:
        assert isinstance(reject, Reject)
        assert isinstance(reject.raw, bytes) and reject.raw
        assert isinstance(reject.reason, str) and reject.reason
        assert reject.external_id is None or isinstance(reject.external_id, str)
        if body is not None:
            assert reject.raw in body
    return "records" if parsed.records else "rejects only" if parsed.rejects else "empty"


def accepted_and_refused(seen: collections.Counter[str], accepted: str = "records") -> None:
    assert seen[accepted] > 0, seen
    assert seen["refused"] > 0, seen


# --- sticker payloads ------------------------------------------------------------------------------


def _key(name: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(name.encode()).digest())


ACTIVE, RETIRED, REVOKED = _key("fuzz-active"), _key("fuzz-retired"), _key("fuzz-revoked")
KIDS = {k: qr.kid_for(k.public_key().public_bytes_raw()) for k in (ACTIVE, RETIRED, REVOKED)}
BASES = ("https://hsm.xuhui.gov.cn", "http://127.0.0.1:8000/mc")
CODE, REVOKED_CODE = new_shop_code(randbits=0x0123456789ABCDE), new_shop_code(randbits=0xFEDCBA987654321)
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
STATUSES: tuple[tuple[Ed25519PrivateKey, qr.KeyStatus], ...] = (
    (ACTIVE, "active"),
    (RETIRED, "retired"),
    (REVOKED, "revoked"),
)
KEYSET_DOC = qr.KeySetDocument(
    keys=[
        qr.KeyEntry(KIDS[key], "Ed25519", qr.b64url(key.public_key().public_bytes_raw()), status, NOW)
        for key, status in STATUSES
    ],
    revoked_codes=[qr.RevokedCode(REVOKED_CODE, NOW, "fuzz")],
)
KEYSET = qr.KeySet.from_document(KEYSET_DOC)
# the payloads that verify, and the key status they verify with
VALID = {
    qr.sign_payload(BASES[0], CODE, KIDS[ACTIVE], ACTIVE): "active",
    qr.sign_payload(BASES[1], CODE, KIDS[RETIRED], RETIRED): "retired",
}
REFUSED = (
    qr.sign_payload(BASES[0], CODE, KIDS[REVOKED], REVOKED),  # revoked key
    qr.sign_payload(BASES[0], REVOKED_CODE, KIDS[ACTIVE], ACTIVE),  # revoked code
)
SIGNED = (*VALID, *REFUSED)
_PRINTABLE = [chr(c) for c in range(0x20, 0x7F)]


def _alias_last_symbol(text: str, flip: int) -> str:
    """The last signature symbol carries 4 spare bits: another spelling of the same 64 bytes."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    if not text or text[-1] not in alphabet:
        return text
    return text[:-1] + alphabet[alphabet.index(text[-1]) ^ flip]


@st.composite
def payload_mutation(draw: st.DrawFn) -> str:
    """A signed payload after one to three edits: a character replaced, inserted, deleted, moved
    or re-cased; the code in an alias spelling (I/L for 1, O for 0, lower case, hyphens); the
    signature in a non-canonical spelling; parts of two payloads spliced (a signature moved to
    another base, code or key)."""
    text = draw(st.sampled_from(SIGNED))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, max(len(text) - 1, 0)))
        op = draw(st.integers(0, 8))
        char = draw(st.sampled_from([*_PRINTABLE, "é", "\x00", "Ｑ", "\n"]))
        if op == 0:
            text = text[:at] + char + text[at + 1 :]
        elif op == 1:
            text = text[:at] + char + text[at:]
        elif op == 2:
            text = text[:at] + text[at + 1 :]
        elif op == 3:
            text = text[:at] + text[at + 1 : at + 2] + text[at : at + 1] + text[at + 2 :]
        elif op == 4:
            text = text[:at] + text[at : at + 1].swapcase() + text[at + 1 :]
        elif op == 5:
            text = text[:at]
        elif op == 6:
            text = _alias_last_symbol(text, draw(st.integers(1, 15)))
        elif op == 7:
            code = text.partition("/s/")[2][:CODE_LENGTH]
            alias = draw(st.sampled_from(["lower", "I", "L", "O", "hyphen"]))
            spelled = {
                "lower": code.lower(),
                "I": code.replace("1", "I"),
                "L": code.replace("1", "L"),
                "O": code.replace("0", "O"),
                "hyphen": code[:4] + "-" + code[4:],
            }[alias]
            text = text.replace(code, spelled, 1)
        else:
            other = draw(st.sampled_from(SIGNED))
            cut = draw(st.integers(0, min(len(text), len(other))))
            text = text[:cut] + other[cut:]
    return text


@st.composite
def forged_payload(draw: st.DrawFn) -> str:
    """A well-formed payload of a known key with a signature that is not the key's."""
    code = new_shop_code(randbits=draw(st.integers(0, (1 << 60) - 1)))
    kid = draw(st.sampled_from(sorted(KIDS.values())))
    signature = qr.b64url(draw(st.binary(min_size=64, max_size=64)))
    return f"{draw(st.sampled_from(BASES))}/s/{code}?q={kid}.{signature}"


PAYLOAD_TEXTS = st.one_of(
    payload_mutation(),
    forged_payload(),
    st.from_regex(qr._PAYLOAD, fullmatch=True),
    st.text(max_size=200),
    st.sampled_from(SIGNED),
)


def test_the_signed_payloads_verify_and_the_refused_ones_say_why() -> None:
    for text, status in VALID.items():
        assert qr.verify(text, KEYSET).key_status == status
        assert qr.verify(text.encode(), KEYSET) == qr.verify(text, KEYSET)
    reasons = []
    for text in REFUSED:
        with pytest.raises(qr.InvalidSticker) as refused:
            qr.verify(text, KEYSET)
        reasons.append(refused.value.reason)
    assert reasons == ["revoked-key", "revoked-code"]
    assert qr.parse_keyset(msgspec.json.encode(KEYSET_DOC)).keys.keys() == KEYSET.keys.keys()


def test_a_payload_verifies_only_when_it_is_byte_identical_to_a_signed_one() -> None:
    def check(drawn: tuple[str, bool]) -> str:
        text, as_bytes = drawn
        payload: str | bytes = text.encode("utf-8", "surrogatepass") if as_bytes else text
        try:
            verified = qr.verify(payload, KEYSET)
        except qr.InvalidSticker as exc:
            refused = exc
        else:
            assert text in VALID, f"a payload that was never signed verifies: {text!r}"
            assert verified.key_status == VALID[text] and verified.code == CODE
            return "records"
        assert refused.reason in {"malformed", "unknown-key", "revoked-key", "bad-signature", "revoked-code"}
        assert text not in VALID
        return "refused"

    seen = fuzz(st.tuples(PAYLOAD_TEXTS, st.booleans()), check, examples=400)
    accepted_and_refused(seen)


def test_the_scan_calls_a_sticker_genuine_exactly_when_its_payload_verifies() -> None:
    # the scan checks the `q` of the URL it was asked for: the code as the router read it, its own
    # base; a revoked code is its stored 410 page, so here only keys and signatures count
    keys_only = qr.KeySet(keys=KEYSET.keys, revoked_codes=frozenset())

    def check(text: str) -> str:
        base, _, rest = text.partition("/s/")
        code, _, q = rest.partition("?q=")
        try:
            code = parse_shop_code(code)
        except InvalidInput:  # not a scan of a shop: an arbitrary q on a real one
            base, code, q = BASES[0], CODE, text
        sent = genuine.claim([q])
        entry = keys_only.keys.get(sent.kid or "")
        key = None if entry is None else genuine.Key(entry[1].public_bytes_raw(), entry[0])
        status = genuine.Checker(base).status(code, sent, key)
        payload = f"{base}/s/{code}?q={q}"
        try:
            verified = qr.verify(payload, keys_only)
        except qr.InvalidSticker as exc:
            refused = exc
        else:
            assert status == {"active": "genuine", "retired": "retired"}[verified.key_status], text
            return "records"
        if status == "revoked":  # a true signature of a withdrawn key
            assert refused.reason == "revoked-key" and payload == REFUSED[0], text
        else:
            assert status == "forged", (text, status)
        return "refused"

    seen = fuzz(PAYLOAD_TEXTS, check, examples=300)
    accepted_and_refused(seen)


def test_parse_payload_takes_its_parts_as_they_are_or_refuses_the_text() -> None:
    def check(value: str | bytes) -> str:
        try:
            payload = qr.parse_payload(value)
        except qr.InvalidSticker as exc:
            reason: str | None = exc.reason
        else:
            reason = None
        if reason is not None:
            assert reason == "malformed"
            return "refused"
        text = value.decode("ascii") if isinstance(value, bytes) else value
        assert isinstance(payload, qr.Payload) and len(payload.signature) == 64
        assert f"{payload.base}/s/{payload.code}?q={payload.kid}.{qr.b64url(payload.signature)}" == text
        return "records"

    texts = st.one_of(
        PAYLOAD_TEXTS,
        st.binary(max_size=600),
        PAYLOAD_TEXTS.map(lambda t: t.encode("utf-8", "surrogatepass")),
    )
    accepted_and_refused(fuzz(texts, check, examples=300))


KEYSET_KEYS = (
    "keys",
    "revoked_codes",
    "kid",
    "alg",
    "x",
    "status",
    "created_at",
    "code",
    "revoked_at",
    "reason",
)


@st.composite
def keyset_documents(draw: st.DrawFn) -> bytes:
    """A key set in the published shape whose keys are any 32 bytes, or not 32 bytes, or not
    canonical base64url, with any kid, status and revoked code."""
    x = st.one_of(
        st.binary(min_size=32, max_size=32).map(qr.b64url),
        st.binary(max_size=40).map(qr.b64url),
        st.binary(min_size=32, max_size=32).map(lambda b: qr.b64url(b) + "="),
        st.text(max_size=50),
    )
    entries = st.fixed_dictionaries(
        {
            "kid": st.text(max_size=20),
            "alg": st.sampled_from(["Ed25519", "EdDSA", ""]),
            "x": x,
            "status": st.sampled_from(["active", "retired", "revoked", "ACTIVE"]),
            "created_at": st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01", "yesterday"]),
        }
    )
    codes = st.fixed_dictionaries(
        {
            "code": st.text(max_size=15),
            "revoked_at": st.just("2026-01-01T00:00:00Z"),
            "reason": st.text(max_size=10),
        }
    )
    doc = {"keys": draw(st.lists(entries, max_size=4)), "revoked_codes": draw(st.lists(codes, max_size=2))}
    return json.dumps(doc, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


def test_parse_keyset_gives_a_key_set_or_invalid_input() -> None:
    document = json.loads(msgspec.json.encode(KEYSET_DOC))

    def check(data: bytes) -> str:
        try:
            keyset = qr.parse_keyset(data)
        except InvalidInput:
            return "refused"
        for kid, (status, public) in keyset.keys.items():
            assert isinstance(kid, str) and status in {"active", "retired", "revoked"}
            assert isinstance(public, Ed25519PublicKey)
        assert all(isinstance(code, str) for code in keyset.revoked_codes)
        return "records" if keyset.keys else "empty"

    bodies = st.one_of(
        st.binary(max_size=300),
        json_mutation([document], KEYSET_KEYS),
        mutated([msgspec.json.encode(KEYSET_DOC)]),
        keyset_documents(),
    )
    accepted_and_refused(fuzz(bodies, check, examples=300))


# --- shop codes and USCCs --------------------------------------------------------------------------

VALID_USCC = "91310106MA1FL0XX2B"


def _spellings(valid: str) -> st.SearchStrategy[str]:
    full_width = str.maketrans({chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)})
    return st.builds(
        lambda at, char, how: {
            0: valid[:at] + char + valid[at + 1 :],
            1: valid[:at] + char + valid[at:],
            2: valid[:at] + valid[at + 1 :],
            3: valid.lower(),
            4: valid.translate(full_width),
            5: f" {valid[:4]}-{valid[4:]} ",
        }[how],
        st.integers(0, len(valid) - 1),
        st.characters(codec="utf-8") | st.sampled_from(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-ｉｌｏ")),
        st.integers(0, 5),
    )


def test_parse_shop_code_gives_the_canonical_code_or_invalid_input() -> None:
    assert parse_shop_code(CODE.lower()) == CODE

    def check(raw: str) -> str:
        try:
            code = parse_shop_code(raw)
        except InvalidInput:
            return "refused"
        assert len(code) == CODE_LENGTH and parse_shop_code(code) == code
        assert code_check_symbol(code[:-1]) == code[-1]
        return "records"

    texts = st.one_of(
        st.text(max_size=30), st.from_regex(r"[0-9A-Za-z -]{11,16}", fullmatch=True), _spellings(CODE)
    )
    accepted_and_refused(fuzz(texts, check, examples=300))


def test_parse_uscc_gives_the_canonical_code_or_invalid_input() -> None:
    assert parse_uscc(VALID_USCC.lower()) == VALID_USCC

    def check(raw: str) -> str:
        try:
            uscc = parse_uscc(raw)
        except InvalidInput:
            return "refused"
        assert len(uscc) == 18 and parse_uscc(uscc) == uscc
        return "records"

    texts = st.one_of(
        st.text(max_size=30), st.from_regex(r"[0-9A-Z]{18}", fullmatch=True), _spellings(VALID_USCC)
    )
    accepted_and_refused(fuzz(texts, check, examples=300))


# --- uploaded images and request bodies ------------------------------------------------------------

MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WEBP", b"RIFF", b"\x89PN", b"GIF89a")


def test_an_upload_is_a_jpeg_png_or_webp_or_invalid_input() -> None:
    assert uploads.check("photo", MAGIC[1] + b"\x00" * 100) == "image/png"
    with pytest.raises(InvalidInput):
        uploads.check("photo", MAGIC[1] + b"\x00" * uploads.MAX_BYTES)

    def check(data: bytes) -> str:
        kind = uploads.sniff(data)
        try:
            checked = uploads.check("photo", data)
        except InvalidInput as exc:
            field: str | None = exc.field
        else:
            field = None
        if field is not None:
            assert kind is None and field == "photo"
            return "refused"
        assert checked == kind and checked in {"image/jpeg", "image/png", "image/webp"}
        return "records"

    images = st.one_of(
        st.binary(max_size=64), st.builds(bytes.__add__, st.sampled_from(MAGIC), st.binary(max_size=64))
    )
    accepted_and_refused(fuzz(images, check, examples=200))


class _Form:
    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self.pairs = pairs

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(key for key, _ in self.pairs))

    def getall(self, key: str) -> list[str]:
        return [value for k, value in self.pairs if k == key]


class _Request:
    """What forms.read uses of a Litestar request: the content type, the JSON, the form."""

    def __init__(self, body: Any, as_json: bool) -> None:
        self.headers = {
            "content-type": "application/json" if as_json else "application/x-www-form-urlencoded"
        }
        self.body = body

    async def json(self) -> Any:
        # bytes are read as the app reads them (decoding.JSONRequest); anything else is the value
        return decoding.decode(self.body) if isinstance(self.body, bytes) else self.body

    async def form(self) -> _Form:
        return _Form(self.body)


FORM_SHAPES: tuple[tuple[type[Any], tuple[str, ...]], ...] = (
    (records.Complaint, ()),
    (records.InspectionReport, ("violations",)),
    (records.LicenceSubmission, ()),
    (records.StaffSubmission, ()),
    (records.Reply, ()),
    (policies.CorrectionIn, ()),
)


@st.composite
def form_request(draw: st.DrawFn) -> tuple[_Request, type[Any], tuple[str, ...]]:
    shape, lists = draw(st.sampled_from(FORM_SHAPES))
    names = [f.encode_name for f in msgspec.structs.fields(shape)]
    keys = st.sampled_from(names) | st.text(max_size=8)
    values = TEXTS | json_values(names)
    if draw(st.booleans()):
        body: Any = {name: draw(values) for name in names if draw(st.integers(0, 3))}
        body.update(draw(st.dictionaries(keys, values, max_size=2)))
        if draw(st.integers(0, 5)) == 0:
            body = draw(json_values(names))  # not an object at all
        return _Request(body, True), shape, lists
    pairs = [(name, draw(TEXTS)) for name in names if draw(st.integers(0, 3))]
    pairs += draw(st.lists(st.tuples(keys, TEXTS), max_size=3))
    return _Request(draw(st.permutations(pairs)), False), shape, lists


def test_a_form_or_json_body_becomes_its_struct_or_invalid_input() -> None:
    def check(drawn: tuple[_Request, type[Any], tuple[str, ...]]) -> str:
        request, shape, lists = drawn
        try:
            value, image = asyncio.run(forms.read(cast(Request[Any, Any, Any], request), shape, lists=lists))
        except InvalidInput as exc:
            refused = exc
        else:
            assert isinstance(value, shape) and image is None
            return "records"
        assert isinstance(refused.field, str) and refused.field
        return "refused"

    accepted_and_refused(fuzz(form_request(), check, examples=300))


# --- JSON bodies, as every route reads them (decoding.decode) -------------------------------------

BODY_DOCS = (
    {"kind": "routine", "result": "pass", "score": 92.5, "violations": [{"code": "V1", "note": "ok"}]},
    {"title": "通知", "body_md": "请注意", "filters": {"licence_expires_within_days": 30}},
    {"text": "很脏", "contact": {"phone": "13812341234"}, "tags": ["a", "b"]},
)
BODY_KEYS = ("kind", "result", "score", "violations", "code", "title", "body_md", "filters", "text")
# what the decoder must refuse, and what it must not confuse with it
BODY_TOKENS = (
    b"\\u0000",  # a NUL character, escaped
    b"\\\\u0000",  # a backslash and "u0000": no NUL
    b"\\ud800",
    b"\\udc00",
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775809",
    b"1e309",
    b"[" * 32,
    b"]" * 32,
    b"{" * 40,
)


@st.composite
def nested_bodies(draw: st.DrawFn) -> bytes:
    """Brackets of both kinds nested around a value, about the depth limit or far past it, some
    of them inside strings (which do not count)."""
    depth = draw(st.sampled_from([1, 31, 32, 33, 34, 200, 990, 1010, 5000]) | st.integers(0, 70))
    opening = [draw(st.sampled_from([b"[", b'{"k":'])) for _ in range(min(depth, 40))] * (depth // 40 + 1)
    opening = opening[:depth]
    closing = [b"]" if part == b"[" else b"}" for part in reversed(opening)]
    brackets_in_a_string = b'"' + b"[" * 40 + b'"'
    core = draw(st.sampled_from([b"1", brackets_in_a_string, b'"\\u0000"', b"[]", b"{}"]))
    return b"".join(opening) + core + b"".join(closing)


def _depth(value: Any) -> int:
    """How deep a decoded value nests (the oracle: a walk, not the decoder's bracket passes)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level + 1)
            stack.extend((item, level + 1) for item in (node.values() if isinstance(node, dict) else node))
    return deepest


def _offending(value: Any) -> bool:
    return any(
        (isinstance(leaf, str) and "\x00" in leaf)
        or (isinstance(leaf, int) and not isinstance(leaf, bool) and abs(leaf) > decoding.BIGINT_MAX)
        for _, leaf in decoding.leaves(value)
    )


def test_a_json_body_is_its_value_or_a_400_or_422_naming_a_field() -> None:
    def check(raw: bytes) -> str:
        try:
            expected = msgspec.json.decode(raw) if raw else None
        except (msgspec.DecodeError, RecursionError):
            readable = False
        else:
            readable = _depth(expected) <= decoding.MAX_DEPTH
        try:
            value = decoding.decode(raw)
        except InvalidInput as exc:
            refused = exc
        else:
            assert readable and value == expected and not _offending(value), raw[:80]
            return "records"
        assert refused.field and refused.status in (400, 422), refused
        assert readable or isinstance(refused, UnreadableBody), (raw[:80], refused)
        assert not readable or _offending(expected), (raw[:80], refused)
        return "refused"

    bodies = weighted(
        (3, json_mutation(BODY_DOCS, BODY_KEYS)),
        (2, mutated([json.dumps(d, ensure_ascii=False).encode() for d in BODY_DOCS], BODY_TOKENS)),
        (2, nested_bodies()),
        (1, st.sampled_from(RAW_JSON)),
        (1, st.binary(max_size=40)),
    )
    accepted_and_refused(fuzz(bodies, check, examples=400))


VALID_BODIES: dict[type[Any], dict[str, Any]] = {
    records.Complaint: {"category": "hygiene", "text": "后厨很脏，有老鼠"},
    records.InspectionReport: {"kind": "routine", "result": "rectify", "violations": ["V01"], "score": 71.5},
    records.LicenceSubmission: {"kind": "business", "number": "JY31010400001", "valid_from": "2026-01-01"},
    records.StaffSubmission: {
        "name": "赵敏",
        "health_cert_number": "JK2026",
        "health_cert_valid_to": "2027-01-01",
    },
    records.Reply: {"reply": "已整改"},
    policies.CorrectionIn: {"title": "更正", "body_md": "请注意"},
}


def test_a_body_read_through_the_app_becomes_its_struct_or_invalid_input() -> None:
    def check(drawn: tuple[bytes, type[Any], tuple[str, ...]]) -> str:
        raw, shape, lists = drawn
        request = cast(Request[Any, Any, Any], _Request(raw, True))
        try:
            value, _ = asyncio.run(forms.read(request, shape, lists=lists))
        except InvalidInput as exc:
            refused = exc
        else:
            assert isinstance(value, shape)
            return "records"
        assert isinstance(refused.field, str) and refused.field and refused.status in (400, 422)
        return "refused"

    @st.composite
    def raw_bodies(draw: st.DrawFn) -> tuple[bytes, type[Any], tuple[str, ...]]:
        shape, lists = draw(st.sampled_from(FORM_SHAPES))
        names = [f.encode_name for f in msgspec.structs.fields(shape)]
        # the fixture itself too: a mutation seldom leaves a body valid, and which of 300 do
        # depends on how Hypothesis draws, so "some are accepted" must not rest on them alone
        valid = st.builds(encode_json, st.just(VALID_BODIES[shape]), ascii_only=st.booleans())
        return draw(valid | json_mutation([VALID_BODIES[shape]], names) | nested_bodies()), shape, lists

    accepted_and_refused(fuzz(raw_bodies(), check, examples=300))


# --- LIVES ---------------------------------------------------------------------------------------

LIVES_MULTI = {path.name: path.read_bytes() for path in sorted((FIXTURES / "lives" / "multi").iterdir())}
LIVES_TABLES = (read("lives/flat.csv"), read("lives/inspections_minimal.csv"), *LIVES_MULTI.values())
LIVES_COLUMNS = (
    "business_id",
    "date",
    "inspection_date",
    "inspection_id",
    "name",
    "score",
    "result",
    "type",
    "code",
    "description",
    "critical",
    "feed_date",
    "latitude",
    "longitude",
    "violation_code",
    "business_latitude",
)
LIVES_CONFIGS = st.builds(
    lives.Config,
    url=st.just("http://127.0.0.1:8123/lives.zip"),
    timezone=st.sampled_from(["Asia/Shanghai", "UTC", "Pacific/Kiritimati", "Etc/GMT+12"]),
    min_date=st.sampled_from([datetime.date(2000, 1, 1), datetime.date.min, datetime.date.max]),
)
LIVES_TOKENS = (b",", b'"', b'""', b"\n", b",,,,", b"PK\x03\x04", b"PK\x05\x06", b"0001-01-01T00:00:00+14:00")


def test_the_lives_fixtures_parse_to_their_records() -> None:
    config = lives.Config(url="http://127.0.0.1:8123/lives.zip")
    counts = [
        (len(p.records), len(p.rejects))
        for p in (
            lives.parse(Page(read("lives/flat.csv")), config),
            lives.parse(Page(read("lives/inspections_minimal.csv")), config),
            lives.parse(Page(LIVES_MULTI["businesses.csv"]), config),
        )
    ]
    zipped = lives.parse(
        Page(build_zip([(f"putuo/{n}", d) for n, d in LIVES_MULTI.items()], zipfile.ZIP_DEFLATED)), config
    )
    assert counts == [(7, 3), (3, 0), (3, 4)] and (len(zipped.records), len(zipped.rejects)) == (10, 12)


def test_lives_parse_gives_records_and_rejects_or_feed_error() -> None:
    def check(drawn: tuple[bytes, lives.Config]) -> str:
        body, config = drawn
        try:
            parsed = lives.parse(Page(body), config)
        except FeedError:
            return "refused"
        zipped = body[:4] in (b"PK\x03\x04", b"PK\x05\x06")
        return well_typed(
            parsed, (ShopRecord, InspectionRecord), None if zipped else body.removeprefix(b"\xef\xbb\xbf")
        )

    bodies = weighted(
        (1, st.binary(max_size=200)),
        (2, csv_mutation(LIVES_TABLES, LIVES_COLUMNS)),
        (1, mutated(LIVES_TABLES, tokens=LIVES_TOKENS)),
    )
    accepted_and_refused(fuzz(st.tuples(bodies, LIVES_CONFIGS), check, examples=600))


def test_a_lives_zip_with_wrong_members_or_headers_gives_records_or_feed_error() -> None:
    config = lives.Config(url="http://127.0.0.1:8123/lives.zip")

    def check(body: bytes) -> str:
        try:
            parsed = lives.parse(Page(body), config)
        except FeedError:
            return "refused"
        return well_typed(parsed, (ShopRecord, InspectionRecord), None)

    accepted_and_refused(fuzz(zip_mutation(sorted(LIVES_MULTI.items())), check, examples=400))


# --- the JSON feeds ------------------------------------------------------------------------------

FHRS_PAGES = (read("fhrs/page1.json"), read("fhrs/page2.json"))
FHRS_KEYS = (
    "establishments",
    "meta",
    "totalPages",
    "FHRSID",
    "BusinessName",
    "AddressLine1",
    "PostCode",
    "Phone",
    "RatingValue",
    "RatingDate",
    "scores",
    "Scores",
    "Hygiene",
    "Structural",
    "ConfidenceInManagement",
    "geocode",
    "Geocode",
    "longitude",
    "latitude",
)
LICENCE_PAGES = (read("licences/page1.json"), read("licences/page2.json"))
LICENCE_KEYS = (
    "items",
    "next_updated_since",
    "has_more",
    "licence_no",
    "kind",
    "holder_uscc",
    "holder_name",
    "issued_on",
    "valid_from",
    "valid_to",
    "status",
    "updated_at",
)
REVIEW_PAGES = (read("reviews/page1.json"), read("reviews/last.json"))
REVIEW_KEYS = (
    "data",
    "next_cursor",
    "id",
    "business_ref",
    "rating",
    "text",
    "author",
    "created_at",
    "updated_at",
    "deleted",
)
FHRS_CONFIG = fhrs.Config(url="http://127.0.0.1:8123/Establishments")
LICENCE_CONFIG = licences.Config(url="http://127.0.0.1:8123/licences")
REVIEW_CONFIG = reviews.Config(url="http://127.0.0.1:8123/reviews")
JSON_TOKENS = (b'"', b"{", b"}", b"[", b"]", b",", b":", b"null", b"1e999", b"[" * 5000)


def json_bodies(pages: Sequence[bytes], keys: Sequence[str]) -> st.SearchStrategy[bytes]:
    return weighted(
        (1, st.binary(max_size=200)),
        (4, json_mutation([json.loads(page) for page in pages], keys)),
        (2, mutated(pages, tokens=JSON_TOKENS)),
        (1, st.sampled_from(RAW_JSON)),
    )


def test_the_json_fixtures_parse_to_their_records() -> None:
    def counts(parse: Callable[[Page], Parsed], pages: Sequence[bytes]) -> list[tuple[int, int]]:
        return [(len(p.records), len(p.rejects)) for p in (parse(Page(page)) for page in pages)]

    assert counts(lambda p: fhrs.parse(p, FHRS_CONFIG), FHRS_PAGES) == [(6, 1), (11, 2)]
    assert counts(lambda p: licences.parse(p, LICENCE_CONFIG), LICENCE_PAGES) == [(4, 6), (2, 0)]
    assert counts(lambda p: reviews.parse(p, REVIEW_CONFIG), REVIEW_PAGES) == [(4, 8), (1, 0)]


def test_fhrs_parse_gives_records_and_rejects_or_feed_error() -> None:
    def check(body: bytes) -> str:
        try:
            parsed = fhrs.parse(Page(body), FHRS_CONFIG)
        except FeedError:
            return "refused"
        return well_typed(parsed, (ShopRecord, InspectionRecord), body)

    accepted_and_refused(fuzz(json_bodies(FHRS_PAGES, FHRS_KEYS), check, examples=400))


def test_licences_parse_gives_records_and_rejects_or_feed_error() -> None:
    def check(body: bytes) -> str:
        try:
            parsed = licences.parse(Page(body), LICENCE_CONFIG)
        except FeedError:
            return "refused"
        return well_typed(parsed, (LicenceRecord,), body)

    accepted_and_refused(fuzz(json_bodies(LICENCE_PAGES, LICENCE_KEYS), check, examples=400))


def test_reviews_parse_gives_records_and_rejects_or_feed_error() -> None:
    def check(body: bytes) -> str:
        try:
            parsed = reviews.parse(Page(body), REVIEW_CONFIG)
        except FeedError:
            return "refused"
        return well_typed(parsed, (ReviewRecord,), body)

    accepted_and_refused(fuzz(json_bodies(REVIEW_PAGES, REVIEW_KEYS), check, examples=400))


async def _fetch_all(body: bytes, cursor: str | None) -> list[Page | str]:
    """Each JSON feed's fetch on one 200 answer: the page, or "refused" for a FeedError."""
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    got: list[Page | str] = []
    async with httpx.AsyncClient(transport=transport) as client:
        fetches: tuple[Callable[[], Awaitable[Page]], ...] = (
            lambda: fhrs.fetch(client, FHRS_CONFIG, cursor if cursor and cursor.isdigit() else None),
            lambda: licences.fetch(client, LICENCE_CONFIG, cursor),
            lambda: reviews.fetch(client, REVIEW_CONFIG, cursor),
        )
        for fetch in fetches:
            try:
                got.append(await fetch())
            except FeedError:
                got.append("refused")
    return got


def test_the_json_feeds_fetch_reads_any_body_into_a_page_or_feed_error() -> None:
    def check(drawn: tuple[bytes, str | None]) -> str:
        body, cursor = drawn
        pages = asyncio.run(_fetch_all(body, cursor))
        for page in pages:
            if isinstance(page, Page):
                assert page.body == body and isinstance(page.last, bool)
                assert page.next_cursor is None or isinstance(page.next_cursor, str)
        return "refused" if "refused" in pages else "records"

    bodies = st.one_of(
        json_bodies(FHRS_PAGES, FHRS_KEYS),
        json_bodies(LICENCE_PAGES, LICENCE_KEYS),
        json_bodies(REVIEW_PAGES, REVIEW_KEYS),
    )
    cursors = st.sampled_from([None, "2", "2024-05-01T10:23:00+08:00", "eyJwIjoxMn0"])
    seen = fuzz(st.tuples(bodies, cursors), check, examples=200)
    assert seen["records"] > 0, seen


# --- RSS and Atom --------------------------------------------------------------------------------

RSS_CONFIG = rss.Config(url="http://127.0.0.1:8900/feed.xml")
RSS_FIXTURES = tuple(read(f"rss/{name}") for name in ("rss2.xml", "atom.xml", "gb2312.xml", "not_xml.html"))
XML_TOKENS = (
    b"<",
    b">",
    b"&",
    b"&amp;",
    b"&lol;",
    b"&#0;",
    b"]]>",
    b"<![CDATA[",
    b"<!-- ",
    b"<!DOCTYPE rss>",
    b'<!ENTITY a "b">',
    b"<item>",
    b"</item>",
    b"<entry>",
    b"</channel>",
    b'encoding="utf-16"',
    b'encoding="gbk"',
    b'encoding="rot13"',
    b"<?xml ",
    b"\xfe\xff",
    b"<a>" * 100,
)


def _utf16_without_bom(body: bytes) -> bool:
    """What expat recognises as UTF-16 by itself, so that rss.py does not re-encode it."""
    return b"\x00" in body[:2]


def _check_rss(body: bytes) -> str:
    try:
        parsed = rss.parse(Page(body), RSS_CONFIG)
    except FeedError:
        return "refused"
    if not _utf16_without_bom(body):  # see test_a_reject_of_a_utf16_feed_without_a_bom_is_its_item
        for reject in parsed.rejects:  # the whole item element, as UTF-8
            assert reject.raw.startswith(b"<") and reject.raw.endswith(b">"), reject.raw[:200]
            assert reject.raw.endswith((b"</item>", b"</entry>", b"/>")), reject.raw[-200:]
    return well_typed(parsed, (SentimentRecord,), None)


def test_the_rss_fixtures_parse_and_the_entity_bombs_are_refused() -> None:
    counts = [
        (len(p.records), len(p.rejects)) for p in (rss.parse(Page(b), RSS_CONFIG) for b in RSS_FIXTURES[:3])
    ]
    assert counts == [(3, 2), (2, 1), (1, 0)]
    for name in ("billion_laughs.xml", "xxe.xml"):
        with pytest.raises(FeedError, match="DOCTYPE"):
            rss.parse(Page(read(f"rss/{name}")), RSS_CONFIG)


def test_rss_parse_gives_records_and_rejects_or_feed_error() -> None:
    bodies = weighted((1, st.binary(max_size=200)), (3, mutated(RSS_FIXTURES, tokens=XML_TOKENS)))
    accepted_and_refused(fuzz(bodies, _check_rss, examples=400))


def test_a_built_feed_parses_or_gives_feed_error_and_a_doctype_is_always_refused() -> None:
    def check(drawn: tuple[bytes, bool]) -> str:
        body, doctype = drawn
        outcome = _check_rss(body)
        assert outcome == "refused" or not doctype, "a document with a DOCTYPE was read"
        return outcome

    accepted_and_refused(fuzz(feed_document(), check, examples=400))


def test_a_reject_of_a_utf16_feed_without_a_bom_is_its_item() -> None:
    body = '<rss version="2.0"><channel><item><title>t</title></item></channel></rss>'.encode("utf-16-le")
    (reject,) = rss.parse(Page(body), RSS_CONFIG).rejects
    assert reject.raw == b"<item><title>t</title></item>"


# --- what the fuzzing found, kept as plain examples ------------------------------------------------

DEEP_JSON = b'{"meta":' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def test_the_inputs_the_fuzzing_found_give_only_the_declared_errors() -> None:
    # lives: a timestamp at the end of the datetime range whose zone change leaves it (OverflowError)
    for moment in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-05:00"):
        parsed = lives.parse(Page(f"business_id,date\nB1,{moment}\n".encode()), lives.Config(url="http://x"))
        assert parsed.records == [] and [r.reason for r in parsed.rejects] == [
            f"inspections.csv: invalid date '{moment}'"
        ]
    # lives: an LZMA member with damaged properties or data (LZMAError)
    archive = build_zip([("inspections.csv", b"business_id,date\nB1,20230314\n")], zipfile.ZIP_LZMA)
    start = 30 + len("inspections.csv") + 4  # the local header, the name, lzma's own 4-byte header
    for at, value in ((start, 0xFF), (start + 16, 0x00)):
        damaged = bytearray(archive)
        damaged[at] = value
        with pytest.raises(FeedError, match="LZMAError"):
            lives.parse(Page(bytes(damaged)), lives.Config(url="http://x"))
    # fhrs: deep nesting (RecursionError), in parse and in the page count that fetch reads
    with pytest.raises(FeedError):
        fhrs.parse(Page(DEEP_JSON), FHRS_CONFIG)
    (page, _, _) = asyncio.run(_fetch_all(DEEP_JSON, None))
    assert isinstance(page, Page) and (page.next_cursor, page.last) == (None, True)
    # qr key set: invalid UTF-8 in a string (UnicodeDecodeError) and deep nesting (RecursionError)
    for data in (b'{"keys":[{"kid":"\x80"}],"revoked_codes":[]}', DEEP_JSON):
        with pytest.raises(InvalidInput):
            qr.parse_keyset(data)
    # rss: UTF-16 without a BOM declaring an encoding expat hands to Python's codecs (LookupError,
    # UnicodeError, ValueError, and a DeprecationWarning from unicode_escape)
    for encoding in ("rot13", "idna", "punycode", "unicode_escape", "utf-8-sig", "no-such-codec"):
        body = f'<?xml version="1.0" encoding="{encoding}"?><rss><channel/></rss>'.encode("utf-16-le")
        assert rss.parse(Page(body), RSS_CONFIG) == Parsed(records=[], rejects=[])
