"""What merchants, inspectors and citizens add to a shop's record.

Regulated facts (licences, health certificates, honours) a merchant sends enter as pending and
count only once an inspector whose area covers the shop verifies them; descriptive facts apply at
once. Every write is audited and marks the profile for rebuild (through the tables' triggers).
"""

from __future__ import annotations

import datetime
import secrets
from typing import TYPE_CHECKING, Annotated, Literal

import asyncpg
import msgspec

from merchant_code import audit, auth, db, uploads
from merchant_code.codes import CROCKFORD, parse_shop_code
from merchant_code.errors import Conflict, InvalidInput, NotFound

if TYPE_CHECKING:
    from merchant_code.cases import Opened

LicenceKind = Literal[
    "business", "food_business", "pharmacy", "hygiene", "education", "entertainment", "other"
]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
COMPLAINT_CATEGORIES = ("food_safety", "hygiene", "price", "service", "licence", "other")


class ShopRef(msgspec.Struct, frozen=True):
    id: int
    code: str
    area_path: str
    food: bool
    status: str


async def shop_for_owner(conn: asyncpg.Connection, principal: auth.Principal, raw_code: str) -> ShopRef:
    shop = await _shop(conn, raw_code)
    if shop is None or shop.id not in principal.shop_ids:
        raise NotFound("no such shop")
    return shop


async def shop_for_staff(conn: asyncpg.Connection, principal: auth.Principal, raw_code: str) -> ShopRef:
    shop = await _shop(conn, raw_code)
    if shop is None or not principal.covers(shop.area_path):
        raise NotFound("no such shop")
    return shop


async def shop_for_anyone(conn: asyncpg.Connection, raw_code: str) -> ShopRef:
    shop = await _shop(conn, raw_code)
    if shop is None:
        raise NotFound("no shop has this code: the sticker is not valid")
    return shop


async def _shop(conn: asyncpg.Connection, raw_code: str) -> ShopRef | None:
    row = await db.queries.get_shop_for_write(conn, code=parse_shop_code(raw_code))
    return db.one(row, ShopRef)


Unset = msgspec.UnsetType


class ShopUpdate(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The descriptive fields a merchant keeps up to date; they apply at once. Absent fields
    stay as they are; an empty one clears it."""

    opening_hours: Annotated[str, msgspec.Meta(max_length=200)] | Unset | None = msgspec.UNSET
    phone: Annotated[str, msgspec.Meta(pattern=r"^[0-9+() -]{5,30}$")] | Unset | None = msgspec.UNSET
    name_en: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | Unset | None = msgspec.UNSET


async def update_details(
    conn: asyncpg.Connection,
    principal: auth.Principal,
    shop: ShopRef,
    body: ShopUpdate,
    request_id: str | None,
) -> dict[str, object]:
    row = await db.queries.get_shop_contact(conn, code=shop.code)
    assert row is not None
    changes = msgspec.structs.asdict(body)
    changed = {k: v for k, v in changes.items() if v is not msgspec.UNSET and v != row[k]}
    if changed:
        merged = {k: changed.get(k, row[k]) for k in ("opening_hours", "phone", "name_en")}
        await db.queries.update_shop_contact(conn, id=shop.id, **merged)
        await audit.append(
            conn,
            actor=principal.account_id,
            action="shop.update",
            object_type="shop",
            object_id=shop.code,
            request_id=request_id,
            detail={"changed": changed},
        )
    return changed


class LicenceSubmission(msgspec.Struct, forbid_unknown_fields=True):
    kind: LicenceKind
    number: Annotated[str, msgspec.Meta(min_length=4, max_length=60, pattern=r"^[0-9A-Za-z()\-]+$")]
    valid_from: datetime.date
    valid_to: datetime.date | None = None
    issuing_body: Text | None = None


class StaffSubmission(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
    health_cert_number: Annotated[str, msgspec.Meta(min_length=4, max_length=60)]
    health_cert_valid_to: datetime.date
    role: Annotated[str, msgspec.Meta(max_length=40)] | None = None
    phone: Annotated[str, msgspec.Meta(pattern=r"^[0-9+() -]{5,30}$")] | None = None
    id_number: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{17}[0-9Xx]$")] | None = None


class HonourSubmission(msgspec.Struct, forbid_unknown_fields=True):
    title: Text
    issuer: Text
    awarded_on: datetime.date
    valid_to: datetime.date | None = None


class Submitted(msgspec.Struct, frozen=True):
    id: str
    state: Literal["pending"] = "pending"


def _dates(valid_from: datetime.date | None, valid_to: datetime.date | None, to_field: str) -> None:
    if valid_from and valid_to and valid_to < valid_from:
        raise InvalidInput(to_field, "the end date is before the start date")


async def submit_licence(
    conn: asyncpg.Connection,
    principal: auth.Principal,
    shop: ShopRef,
    body: LicenceSubmission,
    image: bytes | None,
    request_id: str | None,
) -> Submitted:
    _dates(body.valid_from, body.valid_to, "valid_to")
    image_id = await _image(conn, "image", image, shop.id, "licence", principal.account_id)
    public_id: str = await db.queries.create_licence_submission(
        conn,
        shop_id=shop.id,
        kind=body.kind,
        number=body.number.upper(),
        issuing_body=body.issuing_body,
        valid_from=body.valid_from,
        valid_to=body.valid_to,
        image_id=image_id,
        account_id=principal.account_id,
    )
    await audit.append(
        conn,
        actor=principal.account_id,
        action="licence.submit",
        object_type="licence",
        object_id=public_id,
        request_id=request_id,
        detail={"shop": shop.code, "kind": body.kind, "image": image_id is not None},
    )
    return Submitted(id=public_id)


async def submit_staff(
    conn: asyncpg.Connection,
    principal: auth.Principal,
    shop: ShopRef,
    body: StaffSubmission,
    image: bytes | None,
    request_id: str | None,
) -> Submitted:
    image_id = await _image(conn, "image", image, shop.id, "health_cert", principal.account_id)
    public_id: str = await db.queries.create_staff_submission(
        conn,
        shop_id=shop.id,
        name=body.name,
        role=body.role,
        phone=body.phone,
        id_number=body.id_number.upper() if body.id_number else None,
        health_cert_number=body.health_cert_number,
        health_cert_valid_to=body.health_cert_valid_to,
        image_id=image_id,
    )
    # the audit trail records that a person was added, not their personal data
    await audit.append(
        conn,
        actor=principal.account_id,
        action="staff.submit",
        object_type="staff",
        object_id=public_id,
        request_id=request_id,
        detail={"shop": shop.code, "image": image_id is not None},
    )
    return Submitted(id=public_id)


async def submit_honour(
    conn: asyncpg.Connection,
    principal: auth.Principal,
    shop: ShopRef,
    body: HonourSubmission,
    image: bytes | None,
    request_id: str | None,
) -> Submitted:
    _dates(body.awarded_on, body.valid_to, "valid_to")
    image_id = await _image(conn, "image", image, shop.id, "honour", principal.account_id)
    public_id: str = await db.queries.create_honour_submission(
        conn,
        shop_id=shop.id,
        title=body.title,
        issuer=body.issuer,
        awarded_on=body.awarded_on,
        valid_to=body.valid_to,
        image_id=image_id,
    )
    await audit.append(
        conn,
        actor=principal.account_id,
        action="honour.submit",
        object_type="honour",
        object_id=public_id,
        request_id=request_id,
        detail={"shop": shop.code, "title": body.title},
    )
    return Submitted(id=public_id)


async def _image(
    conn: asyncpg.Connection,
    field: str,
    data: bytes | None,
    shop_id: int,
    purpose: str,
    account_id: int | None,
) -> int | None:
    if not data:
        return None
    return await uploads.store(
        conn, field=field, data=data, shop_id=shop_id, purpose=purpose, account_id=account_id
    )


class Review(msgspec.Struct, forbid_unknown_fields=True):
    decision: Literal["verify", "reject"]
    note: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class Reviewed(msgspec.Struct, frozen=True):
    id: str
    kind: str
    state: Literal["verified", "rejected"]


async def submission_for_staff(
    conn: asyncpg.Connection, principal: auth.Principal, public_id: str
) -> asyncpg.Record:
    try:
        row = await db.queries.find_submission(conn, public_id=public_id)
    except asyncpg.DataError:
        row = None  # not a uuid: no such submission
    if row is None or not principal.covers(row["area_path"]):
        raise NotFound("no such submission")
    record: asyncpg.Record = row
    return record


async def review_submission(
    conn: asyncpg.Connection, principal: auth.Principal, public_id: str, body: Review, request_id: str | None
) -> Reviewed:
    row = await submission_for_staff(conn, principal, public_id)
    if not row["pending"]:
        raise Conflict("this submission has been reviewed already")
    if body.decision == "reject" and not body.note:
        raise InvalidInput("note", "say why it is rejected: the merchant sees the note")
    approve = body.decision == "verify"
    query = {
        "licence": db.queries.review_licence,
        "staff": db.queries.review_staff,
        "honour": db.queries.review_honour,
    }
    await query[row["kind"]](
        conn, id=row["id"], approve=approve, account_id=principal.account_id, note=body.note
    )
    await audit.append(
        conn,
        actor=principal.account_id,
        action=f"{row['kind']}.{body.decision}",
        object_type=row["kind"],
        object_id=public_id,
        request_id=request_id,
        detail={"shop": row["code"]},
    )
    return Reviewed(id=public_id, kind=row["kind"], state="verified" if approve else "rejected")


class InspectionReport(msgspec.Struct, forbid_unknown_fields=True):
    kind: Literal["routine", "follow_up", "complaint", "special", "licensing"]
    result: Literal["pass", "rectify", "fail"]
    violations: list[Annotated[str, msgspec.Meta(pattern=r"^V[0-9]{2}$")]] = []
    score: Annotated[float, msgspec.Meta(ge=0, le=100)] | None = None
    grade: Literal["A", "B", "C"] | None = None
    rectify_due: datetime.date | None = None
    summary: Annotated[str, msgspec.Meta(max_length=2000)] | None = None


class Filed(msgspec.Struct, frozen=True):
    id: str
    result: str
    grade: str | None
    violations: int


async def file_inspection(
    conn: asyncpg.Connection,
    principal: auth.Principal,
    shop: ShopRef,
    body: InspectionReport,
    photo: bytes | None,
    request_id: str | None,
    today: datetime.date | None = None,
) -> Filed:
    today = today or datetime.date.today()
    if body.result == "rectify" and body.rectify_due is None:
        raise InvalidInput("rectify_due", "a result of 'rectify' needs a rectification deadline")
    if body.rectify_due is not None and body.rectify_due <= today:
        raise InvalidInput("rectify_due", "the rectification deadline must be after today")
    if body.grade is not None and not shop.food:
        raise InvalidInput("grade", "only food trades are graded A/B/C")
    codes = sorted(set(body.violations))
    known = {r["code"] async for r in db.queries.list_violation_codes(conn)}
    if unknown := [c for c in codes if c not in known]:
        raise InvalidInput("violations", f"unknown violation code {unknown[0]}")
    photo_id = await _image(conn, "photo", photo, shop.id, "inspection", principal.account_id)
    row = await db.queries.create_inspection(
        conn,
        shop_id=shop.id,
        kind=body.kind,
        result=body.result,
        score=body.score,
        grade=body.grade,
        rectify_due=body.rectify_due,
        summary=body.summary,
        photo_id=photo_id,
        account_id=principal.account_id,
        inspected_on=today,
    )
    if codes:
        await db.queries.create_violations(conn, inspection_id=row["id"], codes=codes)
    await audit.append(
        conn,
        actor=principal.account_id,
        action="inspection.file",
        object_type="inspection",
        object_id=row["public_id"],
        request_id=request_id,
        detail={"shop": shop.code, "result": body.result, "grade": body.grade, "violations": codes},
    )
    return Filed(id=row["public_id"], result=body.result, grade=body.grade, violations=len(codes))


class Reply(msgspec.Struct, forbid_unknown_fields=True):
    reply: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]


async def inspection_for_owner(
    conn: asyncpg.Connection, principal: auth.Principal, public_id: str
) -> asyncpg.Record:
    try:
        row = await db.queries.get_inspection_for_reply(conn, public_id=public_id)
    except asyncpg.DataError:
        row = None
    if row is None or row["shop_id"] not in principal.shop_ids:
        raise NotFound("no such inspection")
    record: asyncpg.Record = row
    return record


async def reply_to_inspection(
    conn: asyncpg.Connection, principal: auth.Principal, public_id: str, body: Reply, request_id: str | None
) -> None:
    row = await inspection_for_owner(conn, principal, public_id)
    if (
        row["merchant_reply"] is not None
        or await db.queries.set_merchant_reply(conn, id=row["id"], reply=body.reply) is None
    ):
        raise Conflict("this inspection has a reply already: a merchant may reply once")
    await audit.append(
        conn,
        actor=principal.account_id,
        action="inspection.reply",
        object_type="inspection",
        object_id=public_id,
        request_id=request_id,
    )


class Complaint(msgspec.Struct, forbid_unknown_fields=True):
    category: Literal["food_safety", "hygiene", "price", "service", "licence", "other"]
    text: Annotated[str, msgspec.Meta(min_length=5, max_length=2000)]
    name: Annotated[str, msgspec.Meta(max_length=40)] | None = None
    phone: Annotated[str, msgspec.Meta(pattern=r"^[0-9+() -]{5,30}$")] | None = None
    email: Annotated[str, msgspec.Meta(pattern=r"^[^@\s]{1,64}@[^@\s]{1,190}$")] | None = None


class Tracking(msgspec.Struct, frozen=True):
    tracking_number: str
    track_url: str
    # the report joined an open case about the same problem (it is followed there)
    joined: bool = False
    # the report's public id (Open311's service_request_id); unlike the tracking number, no proof
    request_id: str | None = None


def new_tracking_number() -> str:
    """`TS-` and ten Crockford symbols (50 random bits): unguessable, easy to read out."""
    raw = "".join(secrets.choice(CROCKFORD) for _ in range(10))
    return f"TS-{raw[:5]}-{raw[5:]}"


async def file_complaint(
    conn: asyncpg.Connection,
    shop: ShopRef,
    body: Complaint,
    photo: bytes | None,
    request_id: str | None,
    via: str = "web",
) -> Opened:
    """A citizen's complaint becomes a case (or joins the open one about the same problem)."""
    from merchant_code import cases

    async with conn.transaction():
        photo_id = await _image(conn, "photo", photo, shop.id, "complaint", None)
        opened = await cases.open_case(
            conn,
            shop_id=shop.id,
            source="complaint",
            category=body.category,
            description=body.text,
            reporter=cases.Reporter(name=body.name, phone=body.phone, email=body.email),
            photo_id=photo_id,
            via=via,
        )
        # anonymous by default: the trail says a complaint came, not from whom
        await audit.append(
            conn,
            actor=None,
            action="complaint.file",
            object_type="case",
            object_id=opened.case_number,  # the audit trail is staff's: never the reporter's number
            request_id=request_id,
            detail={
                "shop": shop.code,
                "category": body.category,
                "contact": body.phone is not None or body.email is not None,
                "joined": opened.joined,
            },
        )
    return opened
