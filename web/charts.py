"""Charts drawn on the server as SVG: no script, no style attribute (the CSP allows neither inline)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

__all__ = ["bars", "grouped_bars"]

WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP = 640, 200, 32, 28, 12
COLOURS = ("#2f6db5", "#e0a030", "#3a9a5b", "#b53f3f", "#7a5ab5", "#6b7280")


def _top(values: Sequence[int]) -> int:
    """The axis' top: even and at least 2, so its middle tick is a whole number too."""
    top = max([2, *values])
    return top + top % 2


def _axis(top: int) -> list[str]:
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    parts = []
    for fraction in (0, 0.5, 1):
        y = PAD_TOP + plot_h * (1 - fraction)
        value = round(top * fraction)
        parts.append(f'<line x1="{PAD_LEFT}" y1="{y:.1f}" x2="{WIDTH}" y2="{y:.1f}" stroke="#d8dde3"/>')
        parts.append(f'<text x="{PAD_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#555">'
                     f'{value}</text>')
    return parts


def grouped_bars(labels: Sequence[str], series: Sequence[tuple[str, Sequence[int]]], title: str) -> Markup:
    """Bars per label, one colour per series, with a legend; `title` is the chart's accessible name."""
    top = _top([v for _, values in series for v in values])
    plot_w = WIDTH - PAD_LEFT
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    slot = plot_w / max(1, len(labels))
    bar = max(2.0, (slot * 0.8) / max(1, len(series)))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT + 20}" role="img" '
             f'class="chart"><title>{escape(title)}</title>', *_axis(top)]
    for i, label in enumerate(labels):
        x0 = PAD_LEFT + i * slot + slot * 0.1
        for j, (name, values) in enumerate(series):
            value = values[i]
            h = plot_h * value / top
            parts.append(f'<rect x="{x0 + j * bar:.1f}" y="{PAD_TOP + plot_h - h:.1f}" width="{bar - 1:.1f}" '
                         f'height="{h:.1f}" fill="{COLOURS[j % len(COLOURS)]}"><title>{escape(name)} '
                         f'{escape(label)}: {value}</title></rect>')
        if len(labels) <= 16 or i % 2 == 0:
            parts.append(f'<text x="{x0 + slot * 0.4:.1f}" y="{HEIGHT - PAD_BOTTOM + 16}" text-anchor="middle" '
                         f'font-size="11" fill="#555">{escape(label)}</text>')
    for j, (name, _) in enumerate(series):
        x = PAD_LEFT + j * 170
        parts.append(f'<rect x="{x}" y="{HEIGHT + 6}" width="12" height="12" fill="{COLOURS[j % len(COLOURS)]}"/>'
                     f'<text x="{x + 18}" y="{HEIGHT + 16}" font-size="12" fill="#222">{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def bars(items: Sequence[tuple[str, int]], title: str) -> Markup:
    """One bar per item, each its own colour, labelled under it."""
    labels = [label for label, _ in items]
    top = _top([v for _, v in items])
    plot_w = WIDTH - PAD_LEFT
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    # A few states must not become bars half the chart wide.
    slot = min(plot_w / max(1, len(items)), 120.0)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" class="chart">'
             f'<title>{escape(title)}</title>', *_axis(top)]
    for i, (label, value) in enumerate(items):
        h = plot_h * value / top
        x = PAD_LEFT + i * slot + slot * 0.2
        parts.append(f'<rect x="{x:.1f}" y="{PAD_TOP + plot_h - h:.1f}" width="{slot * 0.6:.1f}" height="{h:.1f}" '
                     f'fill="{COLOURS[i % len(COLOURS)]}"><title>{escape(label)}: {value}</title></rect>')
        parts.append(f'<text x="{x + slot * 0.3:.1f}" y="{PAD_TOP + plot_h - h - 4:.1f}" text-anchor="middle" '
                     f'font-size="12" fill="#222">{value}</text>')
        parts.append(f'<text x="{x + slot * 0.3:.1f}" y="{HEIGHT - PAD_BOTTOM + 16}" text-anchor="middle" '
                     f'font-size="11" fill="#555">{escape(labels[i])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
