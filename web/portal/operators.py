"""The operators' dashboard: staff only. Queries in dashboard.py, charts from chart.py (SVG drawn here, no CDN)."""

from __future__ import annotations

from datetime import timedelta
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache

from . import dashboard
from .chart import bar_svg, hbar_svg

OUTCOME_COLOURS = {"sent": "#1e7e34", "on its way": "#1f6feb", "refused": "#e8a317", "dead": "#b3261e"}
CHANNEL_COLOURS = {"satellite": "#17324d", "mailout": "#1f6feb", "sms": "#e8a317", "other": "#9aa7b5"}


def staff_only(view):
    """Anonymous: to the admin's login and back; logged in without staff rights: 403."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), reverse("admin:login"))
        if not (request.user.is_active and request.user.is_staff):
            raise PermissionDenied("staff only")
        return view(request, *args, **kwargs)

    return never_cache(wrapped)


def age_words(age: timedelta) -> str:
    """``3 d 4 h``, ``2 h 5 min``, ``42 s``: how long, to the nearest unit that matters."""
    seconds = max(0, int(age.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{seconds} s"


def hourly_charts(data: dict) -> list[dict]:
    """One stacked chart per channel (the "other" one only when it has messages)."""
    labels = [hour.strftime("%a %d %H:00") for hour in data["hours"]]
    series = [(outcome, OUTCOME_COLOURS[outcome]) for outcome in dashboard.OUTCOMES]
    charts = []
    for channel, by_outcome in data["channels"].items():
        total = sum(sum(counts) for counts in by_outcome.values())
        if channel == dashboard.OTHER and not total:
            continue
        slots = [(label, [by_outcome[o][n] for o in dashboard.OUTCOMES]) for n, label in enumerate(labels)]
        name = dashboard.CHANNEL_LABELS[channel]
        svg = bar_svg(
            slots,
            series,
            label=f"{name}: messages per hour (UTC) over the last {dashboard.DAYS} days, by outcome",
            stacked=True,
            show_label=lambda n, label: label.endswith(" 00:00"),  # each day at midnight (UTC)
            bar_title=lambda slot, outcome, count: f"{slot} UTC: {count} {outcome}",
        )
        charts.append({"channel": channel, "name": name, "total": total, "svg": svg})
    return charts


def backlog_chart(data: dict) -> str:
    states = [state.value for state in dashboard.OPEN_STATES]
    channels = list(data["states"])
    slots = [(state, [data["states"][channel][state] for channel in channels]) for state in states]
    series = [(dashboard.CHANNEL_LABELS[c], CHANNEL_COLOURS[c]) for c in channels]
    return bar_svg(
        slots,
        series,
        label="Messages not finished yet, by state and channel",
        stacked=True,
        bar_title=lambda state, channel, count: f"{state}: {count} {channel}",
    )


@staff_only
def dashboard_view(request):
    now = timezone.now()
    hourly = dashboard.messages_per_hour(now)
    queue = dashboard.backlog(now)
    reasons = dashboard.dead_letter_reasons(now)
    rates = dashboard.send_error_rates(now)
    oldest = queue["oldest_due"]
    if oldest is not None:
        oldest = {
            **oldest,
            "age_words": age_words(oldest["age"]),
            "channel": dashboard.CHANNEL_LABELS[oldest["channel"]],
        }
    context = {
        "now": now,
        "days": dashboard.DAYS,
        "hourly": hourly_charts(hourly),
        "legend": [(outcome, OUTCOME_COLOURS[outcome]) for outcome in dashboard.OUTCOMES],
        "backlog": queue,
        "backlog_rows": [
            (dashboard.CHANNEL_LABELS[channel], [by_state[s.value] for s in dashboard.OPEN_STATES])
            for channel, by_state in queue["states"].items()
        ],
        "open_states": [s.value for s in dashboard.OPEN_STATES],
        "backlog_svg": backlog_chart(queue),
        "channel_legend": [(dashboard.CHANNEL_LABELS[c], CHANNEL_COLOURS[c]) for c in dashboard.CHANNELS],
        "oldest_due": oldest,
        "reasons": reasons,
        "reasons_svg": hbar_svg(
            [(reason, n, str(n)) for reason, n in reasons],
            label=f"Commonest dead-letter reasons, messages stored in the last {dashboard.DAYS} days",
        ),
        "rates": rates,
        "rates_svg": hbar_svg(
            [(r["remote"], r["rate"], f"{r['rate']:.0%}") for r in rates if r["rate"] is not None],
            label=f"Failed send attempts per remote, messages stored in the last {dashboard.DAYS} days",
            peak=1.0,
        ),
    }
    return render(request, "portal/dashboard.html", context)
