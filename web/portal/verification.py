"""The link that proves a personal email address: signed (SECRET_KEY), bound to the user and the address, valid
for three days. No table: a changed address makes older links void."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core import signing
from django.core.mail import send_mail
from django.urls import reverse

from messaging.core.errors import DeliveryError
from messaging.core.redact import mask_email

log = logging.getLogger(__name__)

SALT = "portal.verify-email"
MAX_AGE = 3 * 24 * 3600


def make_token(user) -> str:
    return signing.dumps({"u": user.pk, "e": user.contact_email.lower()}, salt=SALT, compress=True)


def read_token(token: str) -> tuple[int, str] | None:
    """(user pk, email) of a valid, unexpired link; None otherwise."""
    try:
        data = signing.loads(token, salt=SALT, max_age=MAX_AGE)
    except signing.BadSignature:  # includes SignatureExpired
        return None
    if not isinstance(data, dict) or not isinstance(data.get("u"), int) or not isinstance(data.get("e"), str):
        return None
    return data["u"], data["e"]


def send_verification(request, user) -> bool:
    """Mail the link to the user's personal address through the relay; False (logged) when it could not go."""
    link = request.build_absolute_uri(reverse("portal:verify_email", args=[make_token(user)]))
    body = (
        f"Hello,\n\nsomeone (we hope you) signed up for the mailbox {user.mailbox} and gave this address as "
        f"the personal one.\nOpen this link within three days to confirm it:\n\n{link}\n\n"
        "If it was not you, ignore this mail.\n"
    )
    try:
        send_mail("Confirm your email address", body, settings.DEFAULT_FROM_EMAIL, [user.contact_email])
    except (DeliveryError, OSError) as exc:
        log.warning("verification mail not sent user_id=%s to=%s: %s", user.pk, mask_email(user.contact_email), exc)
        return False
    except Exception as exc:  # ImproperlyConfigured: no relay. The account stays; the page says to try again.
        log.error("verification mail not sent user_id=%s: %s", user.pk, exc)
        return False
    log.info("verification mail sent user_id=%s to=%s", user.pk, mask_email(user.contact_email))
    return True
