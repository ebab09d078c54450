"""Privacy: download my data (JSON), delete my account."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpResponse
from django.shortcuts import redirect, render

from .account_data import delete_account, export_data
from .forms import DeleteAccountForm


@login_required
def privacy(request):
    form = DeleteAccountForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        user = request.user
        logout(request)
        delete_account(user)
        messages.success(request, "Your account is deleted. Thank you for travelling with us.")
        return redirect("portal:home")
    return render(request, "portal/privacy.html", {"form": form})


@login_required
def export(request):
    data = export_data(request.user)
    body = json.dumps(data, cls=DjangoJSONEncoder, ensure_ascii=False, indent=1)
    response = HttpResponse(body, content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="spacebeaver-{request.user.username}.json"'
    response["Cache-Control"] = "no-store"
    return response
