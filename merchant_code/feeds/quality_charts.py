"""The small charts of the quality page, as numbers an inline SVG draws (no script, no library):
a sparkline of the records fetched per pull, a bar per reason of quarantine, and the scores'
histogram now against before (each as shares, so a small pull compares with a long history)."""

from __future__ import annotations

import msgspec

from merchant_code.feeds.quality import SourceReport

WIDTH = 300
SPARK_HEIGHT = 40
HIST_HEIGHT = 60
BAR_HEIGHT = 12


class Dot(msgspec.Struct, frozen=True):
    x: float
    y: float
    failed: bool
    label: str


class Bar(msgspec.Struct, frozen=True):
    label: str
    count: int
    y: float
    width: float


class Pair(msgspec.Struct, frozen=True):
    x: float
    width: float
    before_h: float
    now_h: float
    label: str


class Charts(msgspec.Struct, frozen=True):
    width: int
    spark_height: int
    spark_points: str  # an SVG polyline's points
    dots: list[Dot]
    bars: list[Bar]
    bars_height: float
    hist_height: int
    pairs: list[Pair]


def charts(report: SourceReport) -> Charts:
    return Charts(
        width=WIDTH,
        spark_height=SPARK_HEIGHT,
        spark_points=" ".join(f"{d.x:.1f},{d.y:.1f}" for d in _dots(report)),
        dots=_dots(report),
        bars=_bars(report),
        bars_height=len(report.quarantine) * (BAR_HEIGHT + 18),
        hist_height=HIST_HEIGHT,
        pairs=_pairs(report),
    )


def _dots(report: SourceReport) -> list[Dot]:
    runs = report.runs
    top = max((r.fetched for r in runs), default=0) or 1
    step = WIDTH / max(len(runs) - 1, 1)
    return [
        Dot(
            x=i * step,
            y=SPARK_HEIGHT - 2 - (SPARK_HEIGHT - 4) * r.fetched / top,
            failed=r.status == "failed",
            label=f"{r.started_at:%m-%d %H:%M} {r.status} {r.fetched}",
        )
        for i, r in enumerate(runs)
    ]


def _bars(report: SourceReport) -> list[Bar]:
    top = max((q.count for q in report.quarantine), default=0) or 1
    return [
        Bar(label=q.reason[:60], count=q.count, y=i * (BAR_HEIGHT + 18) + 14, width=WIDTH * q.count / top)
        for i, q in enumerate(report.quarantine)
    ]


def _pairs(report: SourceReport) -> list[Pair]:
    h = report.histogram
    before_total, now_total = sum(h.before) or 1, sum(h.now) or 1
    shares = [(b / before_total, n / now_total) for b, n in zip(h.before, h.now, strict=True)]
    top = max((max(b, n) for b, n in shares), default=0) or 1
    slot = WIDTH / max(len(shares), 1)
    pairs = []
    for i, (b, n) in enumerate(shares):
        low = None if h.low is None or h.high is None else h.low + (h.high - h.low) * i / len(shares)
        pairs.append(
            Pair(
                x=i * slot,
                width=slot / 2 - 1,
                before_h=HIST_HEIGHT * b / top,
                now_h=HIST_HEIGHT * n / top,
                label="" if low is None else f"≥{low:.4g}: {b:.0%} → {n:.0%}",
            )
        )
    return pairs
