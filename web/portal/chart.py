"""Bar charts as SVG, drawn on the server (no script, no CDN): the person's usage and the operators' dashboard. Pure.

``bar_svg`` draws vertical bars, one slot per label, its series side by side or stacked; ``hbar_svg`` draws one
labelled horizontal bar per row (reasons, rates). Every number and label is escaped; the only URL is the SVG
namespace.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

IN_COLOUR, OUT_COLOUR = "#1f6feb", "#e8a317"
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 640, 220, 34, 24, 12
AXIS, GRID = "#56606b", "#e4e9ef"


def _open(width: float, height: float, label: str) -> list[str]:
    label = escape(label)
    return [
        f'<svg class="chart" viewBox="0 0 {width:g} {height:g}" role="img" aria-label="{label}" '
        'xmlns="http://www.w3.org/2000/svg" font-family="system-ui, sans-serif" font-size="10">',
        f"<title>{label}</title>",
    ]


def bar_svg(
    slots: Sequence[tuple[str, Sequence[int]]],
    series: Sequence[tuple[str, str]],
    *,
    label: str,
    stacked: bool = False,
    show_label: Callable[[int, str], bool] = lambda n, text: True,
    bar_title: Callable[[str, str, int], str] = lambda slot, name, count: f"{slot}: {count} {name}",
) -> str:
    """``slots``: (label, one count per series) in order; ``series``: (name, colour). Grouped bars draw every bar
    (a zero is a flat one); stacked bars draw only the parts that are not zero. ``show_label(index, label)`` says
    which slot labels the axis shows; ``bar_title(slot, series name, count)`` is each bar's tooltip."""
    totals = [sum(values) if stacked else max(values, default=0) for _, values in slots]
    peak = max([1, *totals])
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    slot_w = plot_w / max(1, len(slots))
    bar = max(0.5, slot_w - 1) if stacked else max(1.0, slot_w / max(1, len(series)) - 1)
    parts = _open(WIDTH, HEIGHT, label)
    for tick in sorted({0, peak // 2, peak}):
        y = TOP + plot_h - plot_h * tick / peak
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - 8}" y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(f'<text x="{LEFT - 4}" y="{y + 3:.1f}" text-anchor="end" fill="{AXIS}">{tick}</text>')
    for n, (slot, values) in enumerate(slots):
        x = LEFT + n * slot_w
        base = TOP + plot_h
        for k, ((name, colour), count) in enumerate(zip(series, values, strict=True)):
            if stacked and not count:
                continue
            h = plot_h * count / peak
            left = x + (0.5 if stacked else 1 + k * bar)
            top = base - h
            if stacked:
                base = top
            parts.append(
                f'<rect x="{left:.1f}" y="{top:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{escape(bar_title(slot, name, count))}</title></rect>"
            )
        if show_label(n, slot):
            parts.append(
                f'<text x="{x + slot_w / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle" fill="{AXIS}">'
                f"{escape(slot)}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def hbar_svg(rows: Sequence[tuple[str, float, str]], *, label: str, colour: str = "#b3261e", peak: float = 0) -> str:
    """``rows``: (label, value, the value as shown), one bar each, its label above it (long ones cut, whole in the
    tooltip). ``peak``: the value of a full bar (the largest value when 0). No rows: a line saying so."""
    row_h, pad = 34, 6
    height = max(1, len(rows)) * row_h + pad
    parts = _open(WIDTH, height, label)
    if not rows:
        parts.append(f'<text x="4" y="20" fill="{AXIS}">none</text></svg>')
        return "".join(parts)
    top_value = peak or max([1e-9, *(value for _, value, _ in rows)])
    plot_w = WIDTH - 8 - 70
    for n, (text, value, shown) in enumerate(rows):
        y = pad + n * row_h
        cut = text if len(text) <= 110 else text[:109] + "…"
        w = max(1.0, plot_w * min(value, top_value) / top_value) if value else 0
        parts.append(f'<text x="4" y="{y + 10}" fill="#1d2430">{escape(cut)}<title>{escape(text)}</title></text>')
        parts.append(f'<rect x="4" y="{y + 14}" width="{plot_w:.1f}" height="12" fill="{GRID}"/>')
        parts.append(
            f'<rect x="4" y="{y + 14}" width="{w:.1f}" height="12" fill="{colour}">'
            f"<title>{escape(text)}: {escape(shown)}</title></rect>"
        )
        parts.append(f'<text x="{plot_w + 10:.1f}" y="{y + 24}" fill="{AXIS}">{escape(shown)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def usage_svg(days: list[tuple[int, int, int]], *, month_label: str = "") -> str:
    """``days``: (day of month, messages to the device, messages from the device), every day of the month."""
    return bar_svg(
        [(str(day), (inbound, outbound)) for day, inbound, outbound in days],
        [("to", IN_COLOUR), ("from", OUT_COLOUR)],
        label=f"Messages per day{(' in ' + month_label) if month_label else ''}: to the device and from it",
        show_label=lambda n, day: day == "1" or int(day) % 5 == 0,
        bar_title=lambda day, what, count: f"day {day}: {count} {what} the device",
    )
