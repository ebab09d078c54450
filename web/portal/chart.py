"""This month's messages per day as an SVG bar chart, drawn on the server (no script, no CDN). Pure."""

from __future__ import annotations

from html import escape

IN_COLOUR, OUT_COLOUR = "#1f6feb", "#e8a317"
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 640, 220, 34, 24, 12


def usage_svg(days: list[tuple[int, int, int]], *, month_label: str = "") -> str:
    """``days``: (day of month, messages to the device, messages from the device), every day of the month."""
    peak = max([1, *(n for _, i, o in days for n in (i, o))])
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(1, len(days))
    bar = max(1.0, slot / 2 - 1)
    label = escape(f"Messages per day{(' in ' + month_label) if month_label else ''}: to the device and from it")
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{label}" '
        'xmlns="http://www.w3.org/2000/svg" font-family="system-ui, sans-serif" font-size="10">',
        f"<title>{label}</title>",
    ]
    for tick in sorted({0, peak // 2, peak}):
        y = TOP + plot_h - plot_h * tick / peak
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - 8}" y2="{y:.1f}" stroke="#e4e9ef"/>')
        parts.append(f'<text x="{LEFT - 4}" y="{y + 3:.1f}" text-anchor="end" fill="#56606b">{tick}</text>')
    for n, (day, inbound, outbound) in enumerate(days):
        x = LEFT + n * slot
        for k, (count, colour, what) in enumerate(((inbound, IN_COLOUR, "to"), (outbound, OUT_COLOUR, "from"))):
            h = plot_h * count / peak
            parts.append(
                f'<rect x="{x + 1 + k * bar:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>day {day}: {count} {what} the device</title></rect>'
            )
        if day == 1 or day % 5 == 0:
            parts.append(
                f'<text x="{x + slot / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle" fill="#56606b">{day}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)
