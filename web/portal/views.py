"""Home, sign-up, email verification and the auth views (Django's, with our templates and rate limits)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.views.decorators.http import require_POST

from web.accounts.models import User

from . import ratelimit
from .forms import ChangeEmailForm, LoginForm, PortalPasswordResetForm, SignUpForm
from .verification import read_token, send_verification

log = logging.getLogger(__name__)

TOO_MANY = "Too many attempts from here. Please wait a while and try again."


def home(request):
    if not request.user.is_authenticated:
        return render(request, "portal/landing.html", {"domain": settings.EMAIL_DOMAIN})
    user = request.user
    device = user.devices.filter(is_active=True).first()
    return render(request, "portal/home.html", {"device": device, "mailbox": user.mailbox})


def signup(request):
    if request.user.is_authenticated:
        return redirect("portal:home")
    form = SignUpForm(request.POST or None, domain=settings.EMAIL_DOMAIN)
    if request.method == "POST":
        address = ratelimit.client_ip(request)
        if not ratelimit.allow("signup-try-ip", address) or (
            form.is_valid() and not ratelimit.allow("signup-ip", address)
        ):
            form.add_error(None, TOO_MANY)
            return render(request, "portal/signup.html", {"form": form}, status=429)
        if form.is_valid():
            user = form.save()
            log.info("portal sign-up user_id=%s", user.pk)
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            if send_verification(request, user):
                messages.success(request, f"Welcome! We sent a link to {user.contact_email}: open it to confirm.")
            else:
                messages.warning(
                    request,
                    "Your account is ready, but the confirmation mail could not be sent just now. "
                    "Use 'Send the link again' below in a few minutes.",
                )
            return redirect("portal:home")
    return render(request, "portal/signup.html", {"form": form})


def verify_email(request, token: str):
    found = read_token(token)
    user = User.objects.filter(pk=found[0]).first() if found else None
    if user is None or user.contact_email.lower() != found[1]:
        return render(request, "portal/verify_failed.html", status=400)
    if not user.contact_email_verified:
        user.contact_email_verified = True
        user.save(update_fields=["contact_email_verified"])
        log.info("portal email verified user_id=%s", user.pk)
    messages.success(request, f"Thank you: {user.contact_email} is confirmed.")
    return redirect("portal:home")


@login_required
@require_POST
def resend_verification(request):
    user = request.user
    if user.contact_email_verified or not user.contact_email:
        return redirect("portal:home")
    if not ratelimit.allow("verify-user", str(user.pk)):
        messages.error(request, TOO_MANY)
    elif send_verification(request, user):
        messages.success(request, f"We sent a new link to {user.contact_email}.")
    else:
        messages.error(request, "The mail could not be sent just now; please try again in a few minutes.")
    return redirect("portal:home")


@login_required
def change_email(request):
    """A new personal email: unconfirmed until its link is opened (resets go only to a confirmed address)."""
    user = request.user
    form = ChangeEmailForm(request.POST or None, user=user)
    if request.method == "POST" and form.is_valid():
        if not ratelimit.allow("verify-user", str(user.pk)):
            form.add_error(None, TOO_MANY)
            return render(request, "portal/change_email.html", {"form": form}, status=429)
        user.contact_email, user.contact_email_verified = form.cleaned_data["contact_email"], False
        user.save(update_fields=["contact_email", "contact_email_verified"])
        log.info("portal personal email changed user_id=%s", user.pk)
        if send_verification(request, user):
            messages.success(request, f"We sent a link to {user.contact_email}: open it to confirm.")
        else:
            messages.warning(request, "Saved, but the confirmation mail could not be sent just now; try again later.")
        return redirect("portal:home")
    return render(request, "portal/change_email.html", {"form": form})


class LoginView(auth_views.LoginView):
    template_name = "portal/login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        name = (request.POST.get("username") or "").strip().lower()
        ok_ip = ratelimit.allow("login-ip", ratelimit.client_ip(request))
        ok_name = ratelimit.allow("login-name", name) if name else True
        if not (ok_ip and ok_name):
            form = self.get_form()
            form.errors.clear()
            form.add_error(None, TOO_MANY)
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().post(request, *args, **kwargs)


class PasswordResetView(auth_views.PasswordResetView):
    template_name = "portal/password_reset.html"
    email_template_name = "portal/email/password_reset.txt"
    subject_template_name = "portal/email/password_reset_subject.txt"
    form_class = PortalPasswordResetForm
    success_url = reverse_lazy("portal:password_reset_done")

    def post(self, request, *args, **kwargs):
        email = (request.POST.get("email") or "").strip().lower()
        if not (
            ratelimit.allow("reset-ip", ratelimit.client_ip(request))
            and (ratelimit.allow("reset-email", email) if email else True)
        ):
            form = self.get_form()
            form.errors.clear()
            form.add_error(None, TOO_MANY)
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().post(request, *args, **kwargs)


logout = auth_views.LogoutView.as_view(next_page=reverse_lazy("portal:home"))
password_change = auth_views.PasswordChangeView.as_view(
    template_name="portal/password_change.html", success_url=reverse_lazy("portal:password_change_done")
)
password_change_done = auth_views.PasswordChangeDoneView.as_view(template_name="portal/password_change_done.html")
password_reset_done = auth_views.PasswordResetDoneView.as_view(template_name="portal/password_reset_done.html")
password_reset_confirm = auth_views.PasswordResetConfirmView.as_view(
    template_name="portal/password_reset_confirm.html", success_url=reverse_lazy("portal:password_reset_complete")
)
password_reset_complete = auth_views.PasswordResetCompleteView.as_view(
    template_name="portal/password_reset_complete.html"
)
