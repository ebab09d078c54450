"""Blocked senders: the person adds and removes email addresses and phone numbers (normalised as the admin does)."""

from __future__ import annotations

import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from web.accounts.models import BlockedSender

from .forms import BlockForm

log = logging.getLogger(__name__)


@login_required
def blocked(request):
    form = BlockForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        block = BlockedSender.objects.create(user=request.user, address=form.cleaned_data["address"])
        log.info("portal block added user_id=%s kind=%s", request.user.pk, block.kind)
        messages.success(request, f"{block.address} is blocked: its messages no longer reach your device.")
        return redirect("portal:blocked")
    blocks = request.user.blocked_senders.order_by("address")
    return render(request, "portal/blocked.html", {"form": form, "blocks": blocks})


@login_required
@require_POST
def unblock(request, pk: int):
    block = get_object_or_404(BlockedSender, pk=pk, user=request.user)
    block.delete()
    log.info("portal block removed user_id=%s kind=%s", request.user.pk, block.kind)
    messages.success(request, f"{block.address} is no longer blocked.")
    return redirect("portal:blocked")
