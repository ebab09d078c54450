"""Email address rules shared by every layer: what a mailbox name may be, and reading one address. Pure."""

from __future__ import annotations

import re
from email.utils import parseaddr

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


def mailbox_username(addr: str, domain: str) -> str | None:
    """Local part of ``addr`` when its domain is ``domain`` (case-insensitive), +tag removed."""
    spec = normalise_email(addr)
    local, at, dom = spec.rpartition("@")
    if not at or dom.rstrip(".") != domain.strip().lower().rstrip("."):
        return None
    username = local.split("+", 1)[0].strip('"')
    return username or None
