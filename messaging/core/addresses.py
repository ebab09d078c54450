"""Email address rules shared by every layer: what a mailbox name may be, reading one address, and the one check
of an address we send to or from (:func:`email_address`). Pure (no DNS)."""

from __future__ import annotations

import re
from email.utils import getaddresses, parseaddr
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

# What a mailbox name (a user's username) may look like; web.accounts validates usernames with it too.
MAILBOX_NAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")
MAX_HEADER_CHARS = 1_000  # a header value is cut here before it is parsed (the stdlib's parser is quadratic)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200d\ufeff\ue000\ue001]")


def normalise_email(addr: str) -> str:
    """Bare lower-case address from "Name <Addr@Dom>" forms; "" when none can be read."""
    if not addr:
        return ""
    cleaned = _CONTROL.sub(" ", addr[:MAX_HEADER_CHARS].replace("\r", " ").replace("\n", " ")).strip()
    try:
        _, spec = parseaddr(cleaned)
    except RecursionError:  # deeply nested "(((" comments: the stdlib's address parser recurses per level
        return ""
    spec = spec.strip().lower()
    return spec if spec.count("@") == 1 else ""


# Checked addresses remembered (pure functions; an address refused, which raises, is not remembered): a device
# writes to the same few contacts, from its one mailbox, and each check costs more than a sent message's SMTP
# exchange.
ADDRESS_CACHE_SIZE = 4096


@lru_cache(maxsize=ADDRESS_CACHE_SIZE)
def mailbox_username(addr: str, domain: str) -> str | None:
    """Local part of ``addr`` when its domain is ``domain`` (case-insensitive), +tag removed. Remembered (a pure
    function, asked for every mail taken: the address parse costs more than the rest of finding its user)."""
    spec = normalise_email(addr)
    local, at, dom = spec.rpartition("@")
    if not at or dom.rstrip(".") != domain.strip().lower().rstrip("."):
        return None
    username = local.split("+", 1)[0].strip('"')
    return username or None


class InvalidAddress(ValueError):
    """Not an email address we can send to or from; the message says why."""


@lru_cache(maxsize=ADDRESS_CACHE_SIZE)
def email_address(addr: str) -> str:
    """The one check of an email address we send to or from (a device's recipient, the relay's From and To, a
    user's contact address), by ``email-validator`` without DNS: a bare ``local@domain``; an ASCII local part
    (SMTPUTF8 is not asked of the relay), unquoted; a domain name with a dot (IDN allowed), not an IP literal nor a
    special-use name (``localhost``, ``.local``, ``.invalid``, ``.onion``, ``.arpa``), except ``.test``, which the
    tests and the sandbox use. Returns the ASCII form (the domain lower-cased and punycoded, the local part as
    given; a fully qualified domain's final dot dropped); else raises :class:`InvalidAddress` saying why."""
    local, at, domain = addr.rpartition("@")
    if at and domain.endswith(".") and not domain.endswith(".."):
        addr = f"{local}@{domain[:-1]}"  # "example.org." is "example.org" (EMAIL_DOMAIN may be written so)
    try:
        checked = validate_email(
            addr,
            check_deliverability=False,
            allow_smtputf8=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
            test_environment=True,  # only: ".test" allowed (RFC 6761 reserves it for tests; no DNS either way)
        )
    except EmailNotValidError as exc:
        raise InvalidAddress(str(exc)) from None
    return checked.ascii_email


@lru_cache(maxsize=ADDRESS_CACHE_SIZE)
def header_address(value: str) -> tuple[str, str]:
    """``(display name, address)`` from a header value holding exactly one address (``Name <local@domain>`` or a
    bare one); the address checked by :func:`email_address`. A line break, no address or several raise
    :class:`InvalidAddress`."""
    if "\r" in value or "\n" in value:
        raise InvalidAddress("address contains a line break")
    pairs = [pair for pair in getaddresses([value]) if pair[1]]
    if len(pairs) != 1:
        raise InvalidAddress("exactly one address expected")
    name, spec = pairs[0]
    return name, email_address(spec.strip())
