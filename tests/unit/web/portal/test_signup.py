"""Sign up, confirm the personal email by the link mailed through the relay, log in and out, passwords."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from tests.mailbox import body_of, link_in
from web.accounts.models import RetiredMailbox, User
from web.portal import ratelimit

from .conftest import PASSWORD

pytestmark = pytest.mark.django_db


def signup_data(**overrides):
    data = {
        "username": "trailrunner",
        "contact_email": "Runner@Personal.example.org",
        "password1": PASSWORD,
        "password2": PASSWORD,
    }
    data.update(overrides)
    return data


def title_of(html: str) -> str:
    return re.search(r"<title>(.*?)</title>", html, re.S).group(1).strip()


def test_root_is_the_portal_home_with_sign_up_and_log_in_for_anonymous_visitors(client):
    page = client.get("/")
    html = page.content.decode()
    assert page.status_code == 200
    assert reverse("portal:signup") in html and reverse("portal:login") in html
    assert title_of(html) == "Welcome · Space Beaver"
    assert client.get("/admin/").status_code == 302, "the admin is still there, behind its own login"


def test_the_stylesheet_is_served_like_the_admin_static_files(client):
    css = client.get("/static/portal/portal.css")
    assert css.status_code == 200
    assert b"max-width" in b"".join(css.streaming_content)


def test_sign_up_mails_a_verification_link_through_the_relay_and_the_link_confirms(client, relay, settings):
    response = client.post(reverse("portal:signup"), signup_data())
    assert response.status_code == 302 and response["Location"] == reverse("portal:home")
    user = User.objects.get(username="trailrunner")
    assert user.contact_email == "runner@personal.example.org" and not user.contact_email_verified
    assert user.check_password(PASSWORD)
    [record] = relay.wait_for(lambda ms: len(ms) >= 1)
    assert record["rcpt_tos"] == ["runner@personal.example.org"]
    assert record["mail_from"] == f"noreply@{settings.EMAIL_DOMAIN}"
    home = client.get(reverse("portal:home")).content.decode()
    assert "trailrunner@example.com" in home and "not confirmed yet" in home, "signed in at once"
    page = client.get(link_in(body_of(record)), follow=True)
    assert page.status_code == 200 and "is confirmed" in page.content.decode()
    user.refresh_from_db()
    assert user.contact_email_verified


def test_sign_up_when_the_relay_is_down_keeps_the_account_and_says_so(client, relay):
    relay.stop()
    page = client.post(reverse("portal:signup"), signup_data(), follow=True)
    assert page.status_code == 200
    assert "could not be sent" in page.content.decode()
    assert User.objects.filter(username="trailrunner").exists()


@pytest.mark.parametrize(
    "name", ["postmaster", "abuse", "admin", "root", "mailer-daemon", "hostmaster", "webmaster", "noreply", "support"]
)
def test_reserved_names_are_refused(client, name):
    page = client.post(reverse("portal:signup"), signup_data(username=name))
    assert page.status_code == 200 and "is reserved" in page.content.decode()
    assert not User.objects.filter(username=name).exists()


@pytest.mark.parametrize("name", ["-dash", "has space", "a@b", "x" * 65, "dot.", ""])
def test_names_that_cannot_be_a_mailbox_are_refused(client, name):
    page = client.post(reverse("portal:signup"), signup_data(username=name))
    assert page.status_code == 200
    assert 'class="error"' in page.content.decode()
    assert User.objects.count() == 0


def test_taken_and_retired_names_are_refused_whatever_the_case(client, person):
    person("taken")
    RetiredMailbox.retire("gone")
    for name in ("taken", "TAKEN", "gone"):
        page = client.post(reverse("portal:signup"), signup_data(username=name))
        assert "is taken" in page.content.decode(), name
    assert User.objects.count() == 1


def test_upper_case_is_folded_to_the_mailbox_name(client):
    client.post(reverse("portal:signup"), signup_data(username="Trail.Runner"))
    assert User.objects.filter(username="trail.runner").exists()


def test_weak_or_mismatched_passwords_are_refused_with_django_validators(client):
    page = client.post(reverse("portal:signup"), signup_data(password1="password", password2="password"))
    assert "too common" in page.content.decode()
    page = client.post(reverse("portal:signup"), signup_data(password2=PASSWORD + "x"))
    assert "didn’t match" in page.content.decode() or "didn't match" in page.content.decode()
    page = client.post(reverse("portal:signup"), signup_data(contact_email="not-an-address"))
    assert "valid email" in page.content.decode()
    assert User.objects.count() == 0


def test_every_form_needs_its_csrf_token(person):
    strict = Client(enforce_csrf_checks=True)
    assert strict.post(reverse("portal:signup"), signup_data()).status_code == 403
    assert strict.post(reverse("portal:login"), {"username": "x", "password": "y"}).status_code == 403
    assert strict.post(reverse("portal:password_reset"), {"email": "a@b.org"}).status_code == 403
    html = strict.get(reverse("portal:signup")).content.decode()
    assert 'name="csrfmiddlewaretoken"' in html


def test_a_bad_or_foreign_verification_link_confirms_nothing(client, person):
    from web.portal.verification import make_token

    user = person("one", verified=False)
    other = person("two", verified=False)
    token = make_token(user)
    assert client.get(reverse("portal:verify_email", args=["garbage"])).status_code == 400
    assert client.get(reverse("portal:verify_email", args=[token[:-2] + "xx"])).status_code == 400
    user.contact_email = "new@personal.example.org"
    user.save()
    assert client.get(reverse("portal:verify_email", args=[token])).status_code == 400, "address changed since"
    client.force_login(other)
    client.get(reverse("portal:verify_email", args=[make_token(user)]))
    other.refresh_from_db()
    assert not other.contact_email_verified, "a link confirms only its own user"


def test_verification_can_be_sent_again_but_not_without_limit(client, person, relay, monkeypatch):
    monkeypatch.setitem(ratelimit.LIMITS, "verify-user", (2, 3600))
    client.force_login(person(verified=False))
    for _ in range(3):
        client.post(reverse("portal:resend_verification"))
    assert len(relay.wait_for(lambda ms: len(ms) >= 2)) == 2
    page = client.post(reverse("portal:resend_verification"), follow=True)
    assert "Too many attempts" in page.content.decode()
    assert len(relay.messages) == 2
    assert client.get(reverse("portal:resend_verification")).status_code == 405, "POST only"


def test_log_in_log_out_and_change_password(client, person):
    user = person("walker")
    page = client.post(reverse("portal:login"), {"username": "walker", "password": "wrong"})
    assert page.status_code == 200 and "correct" in page.content.decode()
    page = client.post(reverse("portal:login"), {"username": " Walker", "password": PASSWORD})
    assert page.status_code == 302, "a phone keyboard's capital is forgiven"
    assert "walker@example.com" in client.get("/").content.decode()
    page = client.post(
        reverse("portal:password_change"),
        {"old_password": PASSWORD, "new_password1": "another-long-phrase-7", "new_password2": "another-long-phrase-7"},
    )
    assert page.status_code == 302
    user.refresh_from_db()
    assert user.check_password("another-long-phrase-7")
    assert client.post(reverse("portal:logout")).status_code == 302
    assert "Sign up" in client.get("/").content.decode()
    assert client.get(reverse("portal:password_change")).status_code == 302, "login needed"


def test_forgotten_password_is_reset_by_a_link_to_the_confirmed_address_only(client, person):
    person("confirmed")
    person("unconfirmed", verified=False)
    client.post(reverse("portal:password_reset"), {"email": "unconfirmed@personal.example.org"})
    assert mail.outbox == [], "never to an address nobody confirmed"
    page = client.post(reverse("portal:password_reset"), {"email": "CONFIRMED@personal.example.org"})
    assert page.status_code == 302
    [sent] = mail.outbox
    assert sent.to == ["confirmed@personal.example.org"] and "confirmed@example.com" in sent.body
    link = link_in(sent.body)
    page = client.get(link, follow=True)
    assert page.status_code == 200 and "Choose a new password" in page.content.decode()
    page = client.post(
        page.redirect_chain[-1][0], {"new_password1": "fresh-long-phrase-9", "new_password2": "fresh-long-phrase-9"}
    )
    assert page.status_code == 302
    assert User.objects.get(username="confirmed").check_password("fresh-long-phrase-9")


def test_password_reset_mail_goes_through_the_relay(client, person, relay):
    person("relayed")
    client.post(reverse("portal:password_reset"), {"email": "relayed@personal.example.org"})
    [record] = relay.wait_for(lambda ms: len(ms) >= 1)
    assert record["rcpt_tos"] == ["relayed@personal.example.org"]
    assert "/password/reset/" in body_of(record)


def test_login_is_rate_limited_per_name(client, person, monkeypatch):
    monkeypatch.setitem(ratelimit.LIMITS, "login-name", (3, 900))
    person("target")
    for _ in range(3):
        assert client.post(reverse("portal:login"), {"username": "target", "password": "nope"}).status_code == 200
    page = client.post(reverse("portal:login"), {"username": "target", "password": PASSWORD})
    assert page.status_code == 429 and "Too many attempts" in page.content.decode()
    assert "_auth_user_id" not in client.session, "not even the right password gets in while limited"


def test_login_is_rate_limited_per_client_address(client, person, monkeypatch):
    monkeypatch.setitem(ratelimit.LIMITS, "login-ip", (2, 900))
    for n in range(2):
        client.post(reverse("portal:login"), {"username": f"name{n}", "password": "nope"})
    assert client.post(reverse("portal:login"), {"username": "other", "password": "x"}).status_code == 429


def test_sign_up_is_rate_limited(client, monkeypatch):
    monkeypatch.setitem(ratelimit.LIMITS, "signup-ip", (1, 3600))
    client.post(reverse("portal:signup"), signup_data(username="first"))
    client.post(reverse("portal:logout"))
    page = client.post(reverse("portal:signup"), signup_data(username="second"))
    assert page.status_code == 429 and "Too many attempts" in page.content.decode()
    assert not User.objects.filter(username="second").exists()


def test_sign_up_tries_are_limited_apart_from_accounts_made(client, monkeypatch):
    monkeypatch.setitem(ratelimit.LIMITS, "signup-try-ip", (3, 3600))
    for _ in range(3):
        page = client.post(reverse("portal:signup"), signup_data(password2="typo"))
        assert page.status_code == 200, "typos do not use up the accounts one may make"
    page = client.post(reverse("portal:signup"), signup_data())
    assert page.status_code == 429 and not User.objects.exists()


def test_behind_the_ingress_the_client_is_the_last_forwarded_address(client, monkeypatch, settings):
    settings.PRODUCTION = True
    monkeypatch.setitem(ratelimit.LIMITS, "login-ip", (1, 900))

    def attempt(forwarded: str) -> int:
        data = {"username": "nobody", "password": "x"}
        return client.post(reverse("portal:login"), data, HTTP_X_FORWARDED_FOR=forwarded).status_code

    assert attempt("198.51.100.7") == 200
    assert attempt("203.0.113.9") == 200, "another client behind the same proxy has its own count"
    assert attempt("1.2.3.4, 198.51.100.7") == 429, "what the client wrote before the proxy's entry is ignored"


def test_password_reset_is_rate_limited(client, person, monkeypatch):
    monkeypatch.setitem(ratelimit.LIMITS, "reset-email", (1, 3600))
    person("forgetful")
    client.post(reverse("portal:password_reset"), {"email": "forgetful@personal.example.org"})
    page = client.post(reverse("portal:password_reset"), {"email": "forgetful@personal.example.org"})
    assert page.status_code == 429
    assert len(mail.outbox) == 1


@pytest.mark.parametrize(
    "name", ["portal:signup", "portal:login", "portal:password_reset", "portal:password_reset_done"]
)
def test_every_public_page_has_a_title_and_labels(client, name):
    html = client.get(reverse(name)).content.decode()
    assert title_of(html).endswith("· Space Beaver") and len(title_of(html)) > len("· Space Beaver")
    assert html.count("<input") - html.count('type="hidden"') == html.count("<label"), "a label per input"


def test_change_personal_email_needs_the_password_and_a_new_confirmation(client, person, relay):
    user = person("mover")
    client.force_login(user)
    page = client.post(reverse("portal:change_email"), {"contact_email": "new@personal.example.org", "password": "x"})
    assert "That is not your password" in page.content.decode()
    page = client.post(
        reverse("portal:change_email"), {"contact_email": "New@Personal.example.org", "password": PASSWORD}
    )
    assert page.status_code == 302
    user.refresh_from_db()
    assert (user.contact_email, user.contact_email_verified) == ("new@personal.example.org", False)
    [record] = relay.wait_for(lambda ms: len(ms) >= 1)
    assert record["rcpt_tos"] == ["new@personal.example.org"]
    client.post(reverse("portal:password_reset"), {"email": "new@personal.example.org"})
    assert len(relay.messages) == 1, "no reset to the address before it is confirmed"
    client.get(link_in(body_of(record)))
    user.refresh_from_db()
    assert user.contact_email_verified
    assert Client().get(reverse("portal:change_email")).status_code == 302, "login needed"
