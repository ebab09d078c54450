"""Contacts: short names the device can write instead of addresses (add, remove), and contacts-only mode."""

from __future__ import annotations

import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from web.accounts.models import Contact

from .forms import ContactForm, ContactsOnlyForm

log = logging.getLogger(__name__)


@login_required
def contacts(request):
    user = request.user
    form = ContactForm(request.POST or None, user=user)
    if request.method == "POST" and form.is_valid():
        contact = Contact.objects.create(
            owner=user, name=form.cleaned_data["name"], address=form.cleaned_data["address"]
        )
        log.info("portal contact added user_id=%s kind=%s", user.pk, contact.kind)
        messages.success(request, f"Your device can now write '{contact.name}' instead of {contact.address}.")
        return redirect("portal:contacts")
    page = {
        "form": form,
        "mode_form": ContactsOnlyForm(initial={"contacts_only": user.contacts_only}),
        "contacts": user.contacts.order_by("name"),
    }
    return render(request, "portal/contacts.html", page)


@login_required
@require_POST
def remove_contact(request, pk: int):
    contact = get_object_or_404(Contact, pk=pk, owner=request.user)
    contact.delete()
    log.info("portal contact removed user_id=%s kind=%s", request.user.pk, contact.kind)
    messages.success(request, f"'{contact.name}' is no longer a contact.")
    return redirect("portal:contacts")


@login_required
@require_POST
def contacts_only(request):
    form = ContactsOnlyForm(request.POST)
    user = request.user
    if form.is_valid():
        user.contacts_only = form.cleaned_data["contacts_only"]
        user.save(update_fields=["contacts_only"])
        log.info("portal contacts-only user_id=%s on=%s", user.pk, user.contacts_only)
        if user.contacts_only:
            messages.success(request, "Contacts only: from now on only your contacts and your own email reach you.")
        else:
            messages.success(request, "Contacts only is off: anyone who is not blocked can reach your device.")
    return redirect("portal:contacts")
