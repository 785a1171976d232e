"""Small inline-SVG charts for the list-health report (:mod:`warehouse.report`).

Each helper returns one ``<svg>`` element as :class:`markupsafe.Markup`; every label and
title from data goes through ``Markup.format``, which HTML-escapes it (addresses and
source names are untrusted). Colours come from CSS classes (``seg-valid``,
``seg-invalid``...) defined by the page, so a chart is only shapes and text.

Every bar segment carries ``data-key`` and ``data-value`` (the count it draws) and a
``<title>`` (the tooltip), so a reader, a screen reader and a test can read the figures
behind the shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

__all__ = ["Bar", "Segment", "bar_rows", "columns", "legend"]

_FONT = 12
_ROW_H = 22
_LABEL_W = 230
_VALUE_W = 120


@dataclass(frozen=True)
class Segment:
    """One coloured piece of a bar: ``key`` names its CSS class (``seg-<key>``)."""

    key: str
    value: float
    title: str = ""


@dataclass(frozen=True)
class Bar:
    """One bar: its label and its segments, drawn left to right (or bottom up)."""

    label: str
    segments: tuple[Segment, ...]
    note: str = ""  # text drawn after the bar (e.g. "12.5 % of 40")

    @property
    def total(self) -> float:
        return sum(s.value for s in self.segments)


def _short(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, keeping its end (a file name, a domain)."""
    return text if len(text) <= limit else "\u2026" + text[-(limit - 1):]


def _css_key(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in key)


def _rect(x: float, y: float, w: float, h: float, seg: Segment) -> Markup:
    return Markup(
        '<rect class="seg seg-{}" x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" '
        'data-key="{}" data-value="{}"><title>{}</title></rect>'
    ).format(_css_key(seg.key), x, y, max(w, 0.0), max(h, 0.0), seg.key, _num(seg.value), seg.title)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def bar_rows(
    chart_id: str, bars: Sequence[Bar], *, scale: float | None = None, width: int = 540,
    label_width: int = _LABEL_W, title: str = "",
) -> Markup:
    """Horizontal bars, one per row, segments stacked left to right.

    ``scale`` is the value of a full-width bar (default: the largest bar's total), so
    shares can be drawn on a 0..1 scale and counts on their own."""
    plot_w = width - label_width - _VALUE_W
    top = max((b.total for b in bars), default=0.0)
    full = scale if scale else (top or 1.0)
    height = max(len(bars), 1) * _ROW_H + 8
    parts = [Markup(
        '<svg id="{}" class="chart bar-rows" role="img" viewBox="0 0 {} {}" width="{}" height="{}" '
        'xmlns="http://www.w3.org/2000/svg"><title>{}</title>'
    ).format(chart_id, width, height, width, height, title)]
    for i, bar in enumerate(bars):
        y = 4 + i * _ROW_H
        parts.append(Markup(
            '<g class="bar" data-label="{}"><text class="label" x="{}" y="{:.1f}" text-anchor="end">{}'
            '<title>{}</title></text>'
        ).format(bar.label, label_width - 8, y + _ROW_H / 2 + _FONT / 3, _short(bar.label, int(label_width / 7)),
                 bar.label))
        x = float(label_width)
        for seg in bar.segments:
            w = plot_w * seg.value / full
            parts.append(_rect(x, y + 3, w, _ROW_H - 6, seg))
            x += w
        parts.append(Markup('<text class="value" x="{:.1f}" y="{:.1f}">{}</text></g>').format(
            x + 6, y + _ROW_H / 2 + _FONT / 3, bar.note or _num(bar.total)))
    if not bars:
        parts.append(Markup('<text class="empty" x="8" y="18">nothing recorded yet</text>'))
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)


def columns(
    chart_id: str, bars: Sequence[Bar], *, scale: float | None = None, width: int = 1100,
    height: int = 220, threshold: float | None = None, threshold_label: str = "",
    axis: Sequence[tuple[float, str]] = (), title: str = "",
) -> Markup:
    """Vertical columns, one per bar, segments stacked bottom up; labels under each column.

    ``axis`` lists (value, text) gridlines; ``threshold`` draws a dashed line at that value
    (e.g. the gate's largest unknown share)."""
    left, bottom, top_pad = 44, 46, 10
    plot_w, plot_h = width - left - 8, height - bottom - top_pad
    top = max((b.total for b in bars), default=0.0)
    full = scale if scale else (top or 1.0)
    parts = [Markup(
        '<svg id="{}" class="chart columns" role="img" viewBox="0 0 {} {}" width="{}" height="{}" '
        'xmlns="http://www.w3.org/2000/svg"><title>{}</title>'
    ).format(chart_id, width, height, width, height, title)]

    def y_of(value: float) -> float:
        return top_pad + plot_h * (1 - min(value / full, 1.0))

    for value, text in axis:
        parts.append(Markup(
            '<line class="grid" x1="{}" x2="{}" y1="{:.1f}" y2="{:.1f}"/>'
            '<text class="axis" x="{}" y="{:.1f}" text-anchor="end">{}</text>'
        ).format(left, width - 8, y_of(value), y_of(value), left - 4, y_of(value) + 4, text))
    n = max(len(bars), 1)
    slot = plot_w / n
    bar_w = min(48.0, slot * 0.7)
    for i, bar in enumerate(bars):
        x = left + i * slot + (slot - bar_w) / 2
        parts.append(Markup('<g class="bar" data-label="{}">').format(bar.label))
        base = 0.0
        for seg in bar.segments:
            y1, y0 = y_of(base + seg.value), y_of(base)
            parts.append(_rect(x, y1, bar_w, y0 - y1, seg))
            base += seg.value
        parts.append(Markup(
            '<text class="tick" x="{:.1f}" y="{}" text-anchor="middle">{}<title>{}</title></text></g>'
        ).format(x + bar_w / 2, height - bottom + 16, _short(bar.label, max(4, int(slot / 7))),
                 bar.label))
        if bar.note:
            parts.append(Markup(
                '<text class="tick note" x="{:.1f}" y="{}" text-anchor="middle">{}</text>'
            ).format(x + bar_w / 2, height - bottom + 32, _short(bar.note, max(4, int(slot / 7)))))
    if threshold is not None:
        parts.append(Markup(
            '<line class="threshold" x1="{}" x2="{}" y1="{:.1f}" y2="{:.1f}"/>'
            '<text class="threshold-label" x="{}" y="{:.1f}" text-anchor="end">{}</text>'
        ).format(left, width - 8, y_of(threshold), y_of(threshold), width - 10,
                 y_of(threshold) - 4, threshold_label))
    parts.append(Markup('<line class="baseline" x1="{}" x2="{}" y1="{:.1f}" y2="{:.1f}"/>').format(
        left, width - 8, y_of(0), y_of(0)))
    if not bars:
        parts.append(Markup('<text class="empty" x="{}" y="40">nothing recorded yet</text>').format(left + 8))
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)


def legend(keys: Sequence[tuple[str, str]]) -> Markup:
    """A row of colour swatches: (css key, text)."""
    items = [Markup('<span class="swatch"><svg width="12" height="12"><rect class="seg seg-{}" '
                    'width="12" height="12" rx="2"/></svg> {}</span>').format(_css_key(k), text)
             for k, text in keys]
    return Markup('<div class="legend">{}</div>').format(Markup(" ").join(items))
