"""The person's messages (both directions, newest first, searchable) and this month's usage against the quota."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.db.models.functions import ExtractDay
from django.shortcuts import render
from django.utils import timezone

from messaging.core.types import Direction, Status
from web.delivery.models import Message

from .chart import usage_svg
from .words import reason_words, state_tone, state_words

PAGE_SIZE = 25
SHOW_REASON = {Status.FAILED, Status.DEAD, Status.REJECTED}


@login_required
def messages_view(request):
    query = (request.GET.get("q") or "").strip()[:200]
    rows = Message.objects.filter(user=request.user).order_by("-created_at", "-pk")
    if query:
        rows = rows.filter(
            Q(text__icontains=query)
            | Q(subject__icontains=query)
            | Q(sender__icontains=query)
            | Q(recipient__icontains=query)
        )
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    items = [
        {
            "at": m.created_at,
            "to_device": m.direction == Direction.TO_DEVICE,
            "correspondent": m.sender if m.direction == Direction.TO_DEVICE else m.recipient,
            "channel": m.get_protocol_display(),
            "subject": subject_to_show(m.subject, m.text),
            "text": m.text,
            "state": state_words(m.direction, m.status),
            "tone": state_tone(m.status),
            "reason": reason_words(m.last_error) if m.status in SHOW_REASON else "",
        }
        for m in page.object_list
    ]
    return render(request, "portal/messages.html", {"page": page, "items": items, "q": query})


def subject_to_show(subject: str, text: str) -> str:
    """The subject above the text, unless the text already begins with it (what went to the device is
    "subject\nbody")."""
    return "" if not subject or text.startswith(subject) else subject


def month_usage(user, now: datetime | None = None) -> dict:
    """This calendar month (UTC): messages to and from the device that count (refused ones do not), per day."""
    now = now or timezone.now()
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    counted = Message.objects.filter(user=user, created_at__gte=start, created_at__lt=end).exclude(
        status=Status.REJECTED
    )
    per_day: dict[tuple[int, str], int] = {}
    grouped = counted.annotate(day=ExtractDay("created_at")).order_by().values("day", "direction")
    for row in grouped.annotate(n=Count("id")):
        per_day[(row["day"], row["direction"])] = row["n"]
    days = [
        (day, per_day.get((day, "to_device"), 0), per_day.get((day, "from_device"), 0))
        for day in range(1, (end - start).days + 1)
    ]
    inbound = sum(i for _, i, _ in days)
    outbound = sum(o for _, _, o in days)
    return {
        "start": start,
        "days": days,
        "inbound": inbound,
        "outbound": outbound,
        "inbound_quota": user.monthly_quota,
        "outbound_quota": user.monthly_outbound_quota,
    }


@login_required
def usage(request):
    data = month_usage(request.user)
    chart = usage_svg(data["days"], month_label=data["start"].strftime("%B %Y"))
    return render(request, "portal/usage.html", {**data, "chart": chart})
