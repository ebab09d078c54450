"""The person's device: claim one by id and claim code, replace it, release it; the devices they had."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from web.accounts.devices import ClaimRefused, claim_device, release_device

from . import ratelimit
from .forms import ClaimForm

TOO_MANY_CLAIMS = "Too many tries. Please wait an hour and check the id and code on the label."


@login_required
def device(request):
    user = request.user
    current = user.devices.filter(is_active=True).first()
    form = ClaimForm(request.POST or None, replacing=current)
    status = 200
    if request.method == "POST" and form.is_valid():
        if not ratelimit.allow("claim-user", str(user.pk)):
            form.add_error(None, TOO_MANY_CLAIMS)
            status = 429
        else:
            try:
                claimed, released = claim_device(user, form.cleaned_data["device_id"], form.cleaned_data["claim_code"])
            except ClaimRefused as refusal:
                form.add_error(None, str(refusal))
            else:
                note = f" Device {released.device_id} is released." if released else ""
                messages.success(request, f"Device {claimed.device_id} is now yours.{note}")
                return redirect("portal:device")
    history = user.device_assignments.select_related("device")
    return render(request, "portal/device.html", {"current": current, "form": form, "history": history}, status=status)


@login_required
@require_POST
def release(request):
    released = release_device(request.user)
    if released is not None:
        messages.success(request, f"Device {released.device_id} is released; your messages stay here.")
    return redirect("portal:device")
