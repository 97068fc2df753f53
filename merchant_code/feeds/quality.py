"""A data-quality report per source: is what a publisher sends still what we think it is?

Six measures, each against a threshold (the defaults below, overridden per source in its config
under `"quality": {...}`, e.g. `{"quality": {"min_coverage": 0.5, "area": "310104001"}}`):

- coverage: the share of the area's active shops (the source's `quality.area`, else every area)
  that the source's records, or its learned mapping, are about;
- freshness: the time since the last successful pull, in multiples of the source's interval, and
  since its newest record, in multiples of the typical gap between its latest records' times;
- schema drift: the columns (CSV), keys (JSON) or element names (XML) that appeared, vanished or
  changed type between the last two good pulls (each run keeps its pages' `shape`, `shape_of`);
- value drift: the records of the last good pull that brought any against the source's history:
  the scores' distribution shift, a score scale that looks inverted, a rise of unknowns;
- duplicates: records that repeat another of the source under a different id;
- quarantine: the share of the last good pull's records quarantined, and the reasons.

A measure with too little data to judge is shown without a verdict (`ok` None), never as failing.
The report reads the database only; `quality_cases` turns a failing report into a case.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any, Literal

import asyncpg
import msgspec

from merchant_code import db
from merchant_code.errors import InvalidInput
from merchant_code.feeds.quality_shape import Shape, merge_shapes, schema_changes, shape_of

__all__ = ["Measure", "Shape", "SourceReport", "Thresholds", "build", "record_shape", "report_for"]

BINS = 10
RUNS_SHOWN = 20


class Thresholds(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    min_coverage: float = 0.05  # share of the area's active shops
    max_pull_gap: float = 3.0  # multiples of interval_seconds since the last successful pull
    max_record_gap: float = 10.0  # multiples of the typical gap since the newest record
    max_schema_changes: int = 0  # columns vanished or changed type (new ones are shown, not counted)
    max_score_shift: float = 0.3  # two-sample distance, 0..1 (see `_shift`)
    max_unknown_rise: float = 0.2  # share of records with an unknown part, now minus before
    max_duplicate_share: float = 0.02
    max_quarantine_share: float = 0.2
    min_records: int = 10  # fewer recent records than this: value drift is not judged
    # whether a higher score is better; None: by kind (FHRS score points: lower is better)
    higher_is_better: bool | None = None
    area: str | None = None  # an area code: the report covers that area's shops


# what a kind's records are expected to do (news items name few shops; FHRS counts points)
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "rss": {"min_coverage": 0.0},
    "fhrs": {"higher_is_better": False},
}


def thresholds_for(kind: str, config: dict[str, Any] | None) -> Thresholds:
    """The source's thresholds: its config's `quality` over its kind's defaults over the defaults
    (a bad one is InvalidInput naming `quality`)."""
    own = (config or {}).get("quality") or {}
    if not isinstance(own, dict):
        raise InvalidInput("quality", "the source's `quality` must be a JSON object of thresholds")
    try:
        return msgspec.convert({**KIND_DEFAULTS.get(kind, {}), **own}, Thresholds)
    except msgspec.ValidationError as exc:
        raise InvalidInput("quality", f"the source's quality thresholds: {exc}") from None


async def record_shape(conn: asyncpg.Connection, run_id: int | None, shape: Shape, body: bytes) -> Shape:
    """The runner's hook, per page: the run's shape so far with this page's, kept in the run's row."""
    merged = merge_shapes(shape, await asyncio.to_thread(shape_of, body))
    if merged != shape and run_id is not None:
        await db.queries.set_feed_run_shape(conn, id=run_id, shape=merged)
    return merged


class Measure(msgspec.Struct, frozen=True):
    name: Literal["coverage", "pull_gap", "record_gap", "schema", "score_shift", "scale", "unknowns",
                  "duplicates", "quarantine"]  # fmt: skip
    ok: bool | None  # None: too little data to judge
    value: float | None
    threshold: float | None
    detail: str


class RunPoint(msgspec.Struct, frozen=True):
    started_at: datetime.datetime
    status: str
    fetched: int
    quarantined: int


class Reason(msgspec.Struct, frozen=True):
    reason: str
    count: int


class Histogram(msgspec.Struct, frozen=True):
    low: float | None
    high: float | None
    before: list[int]
    now: list[int]


class SourceReport(msgspec.Struct, frozen=True):
    source: str
    kind: str
    department: str
    department_name: str
    department_name_en: str
    checked_at: datetime.datetime
    ok: bool  # no measure fails
    failing: list[str]
    measures: list[Measure]
    schema: dict[str, list[str]]  # appeared, vanished, changed: "file: column (old -> new)"
    runs: list[RunPoint]  # oldest first, for the sparkline
    quarantine: list[Reason]
    histogram: Histogram


async def build(
    conn: asyncpg.Connection, name: str | None = None, *, now: datetime.datetime | None = None
) -> list[SourceReport]:
    """The report of every source, or of the one named (an unknown name gives none)."""
    now = now or datetime.datetime.now(datetime.UTC)
    rows = [row async for row in db.queries.list_quality_sources(conn, name=name)]
    return [await report_for(conn, row, now) for row in rows]


async def report_for(conn: asyncpg.Connection, source: Any, now: datetime.datetime) -> SourceReport:
    limits = thresholds_for(source["kind"], source["config"])
    listed = db.queries.list_quality_runs(conn, source_id=source["id"], limit=RUNS_SHOWN)
    runs = [dict(r) async for r in listed]
    good = [r for r in runs if r["status"] == "ok"]
    productive = next((r for r in good if r["inserted"] + r["updated"] > 0), None)
    since = productive["started_at"] if productive else now + datetime.timedelta(days=1)
    values = {
        r["recent"]: dict(r)
        async for r in db.queries.list_quality_values(conn, source=source["name"], since=since, bins=BINS)
    }
    cover = await db.queries.get_quality_coverage(
        conn, source_id=source["id"], source=source["name"], area_path=source["area_path"]
    )
    fresh = await db.queries.get_quality_freshness(conn, source=source["name"])
    dups = await db.queries.get_quality_duplicates(conn, source=source["name"])
    shapes = [r["shape"] for r in good if r["shape"]]
    changes = schema_changes(shapes[1], shapes[0]) if len(shapes) >= 2 else {}
    recent, before = values.get(True), values.get(False)
    measures = [
        _coverage(cover["matched"], cover["shops"], limits),
        *_freshness(source, fresh, limits, now),
        _schema(changes, limits),
        *_values(recent, before, limits, limits.higher_is_better is not False),
        _duplicates(dups["duplicates"], dups["records"], limits),
        _quarantined(good[0] if good else None, limits),
    ]
    reasons = db.queries.list_quality_rejects(conn, source_id=source["id"])
    rejects = [Reason(r["reason"], r["n"]) async for r in reasons]
    failing: list[str] = [m.name for m in measures if m.ok is False]
    return SourceReport(
        source=source["name"],
        kind=source["kind"],
        department=source["owner_department"],
        department_name=source["department_name"],
        department_name_en=source["department_name_en"],
        checked_at=now,
        ok=not failing,
        failing=failing,
        measures=measures,
        schema=changes,
        runs=[RunPoint(r["started_at"], r["status"], r["fetched"], r["quarantined"]) for r in reversed(runs)],
        quarantine=rejects,
        histogram=Histogram(
            low=(recent or before or {}).get("lo"),
            high=(recent or before or {}).get("hi"),
            before=(before or {}).get("histogram") or [0] * BINS,
            now=(recent or {}).get("histogram") or [0] * BINS,
        ),
    )


def _coverage(matched: int, shops: int, limits: Thresholds) -> Measure:
    if shops == 0:
        return Measure("coverage", None, None, limits.min_coverage, "no active shops in the area")
    share = matched / shops
    return Measure(
        "coverage", share >= limits.min_coverage, share, limits.min_coverage,
        f"{matched} of {shops} active shops matched ({share:.0%})",
    )  # fmt: skip


def _freshness(source: Any, fresh: Any, limits: Thresholds, now: datetime.datetime) -> list[Measure]:
    last = source["last_success_at"]
    if last is None:
        pull = Measure("pull_gap", None, None, limits.max_pull_gap, "no successful pull yet")
    else:
        ratio = (now - last).total_seconds() / source["interval_seconds"]
        pull = Measure(
            "pull_gap", ratio <= limits.max_pull_gap, ratio, limits.max_pull_gap,
            f"last good pull {_span(now - last)} ago:"
            f" {ratio:.1f}x its interval ({source['interval_seconds']} s)",
        )  # fmt: skip
    newest, gap = fresh["newest"], fresh["typical_gap"]
    if newest is None or not gap:
        return [pull, Measure("record_gap", None, None, limits.max_record_gap, "too few records to tell")]
    ratio = max(0.0, (now - newest).total_seconds()) / max(gap.total_seconds(), 1.0)
    record = Measure(
        "record_gap", ratio <= limits.max_record_gap, ratio, limits.max_record_gap,
        f"newest record {_span(now - newest)} old: {ratio:.1f}x its usual gap ({_span(gap)})",
    )  # fmt: skip
    return [pull, record]


def _schema(changes: dict[str, list[str]], limits: Thresholds) -> Measure:
    if not changes:
        return Measure("schema", True, 0, limits.max_schema_changes, "unchanged since the last good pull")
    broken = len(changes.get("vanished", [])) + len(changes.get("changed", []))
    words = "; ".join(f"{kind}: {', '.join(items)}" for kind, items in changes.items() if items)
    return Measure("schema", broken <= limits.max_schema_changes, broken, limits.max_schema_changes, words)


def _values(
    recent: dict[str, Any] | None, before: dict[str, Any] | None, limits: Thresholds, higher_better: bool
) -> list[Measure]:
    enough = recent is not None and recent["n"] >= limits.min_records
    if not enough or recent is None:
        n = 0 if recent is None else recent["n"]
        why = f"{n} record(s) in the last pull that brought any: too few to judge"
        return [
            Measure("score_shift", None, None, limits.max_score_shift, why),
            Measure("scale", None, None, None, why),
            Measure("unknowns", None, None, limits.max_unknown_rise, why),
        ]
    return [
        _shift(recent, before, limits),
        _scale(recent, limits, higher_better),
        _unknowns(recent, before, limits),
    ]


def _shift(recent: dict[str, Any], before: dict[str, Any] | None, limits: Thresholds) -> Measure:
    """The two-sample Kolmogorov-Smirnov distance between the recent scores and the history's,
    over the histogram's bins: the largest gap between the two cumulative shares. Chosen because
    it needs no assumption about the scores' distribution (LIVES 0-100, FHRS points, 1-5 stars
    alike), reads as a share (0: the same, 1: no overlap), catches a shift of the middle as well
    as of a tail, and is computed from the same bins the page draws. Binning makes it a lower
    bound of the exact distance."""
    if before is None or not before["scored"] or not recent["scored"]:
        return Measure("score_shift", None, None, limits.max_score_shift, "no scores to compare with")
    now_bins, old_bins = recent["histogram"], before["histogram"]
    a, b, distance = 0.0, 0.0, 0.0
    for x, y in zip(now_bins, old_bins, strict=True):
        a += x / recent["scored"]
        b += y / before["scored"]
        distance = max(distance, abs(a - b))
    return Measure(
        "score_shift", distance <= limits.max_score_shift, distance, limits.max_score_shift,
        f"mean score {recent['mean']:.1f} now, {before['mean']:.1f} before; distance {distance:.2f}",
    )  # fmt: skip


def _scale(recent: dict[str, Any], limits: Thresholds, higher_better: bool) -> Measure:
    """Scores should go with outcomes the expected way (higher with pass, or lower for points);
    a clear correlation the other way says the scale was inverted."""
    r = recent["correlation"]
    if r is None or recent["pairs"] < limits.min_records:
        return Measure("scale", None, None, None, "too few scores with a result to tell")
    signed = r if higher_better else -r
    way = "higher" if higher_better else "lower"
    return Measure(
        "scale", signed > -0.3, signed, -0.3,
        f"correlation of score and result {signed:+.2f} ({way} should be better)",
    )  # fmt: skip


def _unknowns(recent: dict[str, Any], before: dict[str, Any] | None, limits: Thresholds) -> Measure:
    """A rise of unknowns against the source's own history: a publisher whose shape never states
    a result (LIVES with only the required columns) is not failing, one that stops stating it is.
    Without enough history there is nothing to rise from."""
    now_share = recent["unknowns"] / recent["n"]
    if before is None or before["n"] < limits.min_records:
        why = f"{now_share:.0%} of the recent records have an unknown part; no history to compare with yet"
        return Measure("unknowns", None, None, limits.max_unknown_rise, why)
    old_share = before["unknowns"] / before["n"]
    rise = now_share - old_share
    return Measure(
        "unknowns", rise <= limits.max_unknown_rise, rise, limits.max_unknown_rise,
        f"{now_share:.0%} of the recent records have an unknown part, {old_share:.0%} before",
    )  # fmt: skip


def _duplicates(duplicates: int, records: int, limits: Thresholds) -> Measure:
    if records == 0:
        return Measure("duplicates", None, None, limits.max_duplicate_share, "no records")
    share = duplicates / records
    return Measure(
        "duplicates", share <= limits.max_duplicate_share, share, limits.max_duplicate_share,
        f"{duplicates} of {records} records repeat another under a different id",
    )  # fmt: skip


def _quarantined(run: dict[str, Any] | None, limits: Thresholds) -> Measure:
    if run is None or run["fetched"] == 0:
        why = "no records in the last good pull"
        return Measure("quarantine", None, None, limits.max_quarantine_share, why)
    share = run["quarantined"] / run["fetched"]
    return Measure(
        "quarantine", share <= limits.max_quarantine_share, share, limits.max_quarantine_share,
        f"{run['quarantined']} of {run['fetched']} records of the last good pull quarantined",
    )  # fmt: skip


def _span(delta: datetime.timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"
