"""Personal data out of INFO logs: addresses and numbers shortened so a line still tells one from another.

Pure functions, no I/O. Use them wherever a log line would otherwise carry a full email address or phone
number; keep the message id on the line so an operator can find the row (which has the full address).
"""

from __future__ import annotations

import re

_DIGITS = re.compile(r"\d")


def mask_email(address: str) -> str:
    """``alice.smith@example.org`` -> ``a***@example.org``: the domain stays (it says where mail goes)."""
    local, at, domain = (address or "").rpartition("@")
    if not at:
        return mask_phone(address) if _DIGITS.search(address or "") else "***"
    return f"{local[:1]}***@{domain}" if local else f"***@{domain}"


def mask_phone(number: str) -> str:
    """``+14155550100`` -> ``+1******0100``: the country code and the last four digits stay."""
    text = (number or "").strip()
    digits = [c for c in text if c.isdigit()]
    if len(digits) <= 4:
        return "***"
    head = "+" + digits[0] if text.startswith("+") else ""
    hidden = len(digits) - 4 - (1 if head else 0)
    return f"{head}{'*' * max(hidden, 1)}{''.join(digits[-4:])}"


def mask_address(address: str) -> str:
    """An email address, a phone number or ``device:<id>`` (device ids are ours, not personal: unchanged)."""
    text = address or ""
    if text.startswith("device:"):
        return text
    if "@" in text:
        return mask_email(text)
    return mask_phone(text)


def mask_key(key: str) -> str:
    """An idempotency key for a log line: ``smtp:<id>:<rcpt>`` has its mailbox masked; others are unchanged."""
    if key.startswith("smtp:") and "@" in key:
        head, _, rcpt = key.rpartition(":")
        return f"{head}:{mask_email(rcpt)}"
    return key


_ANY_EMAIL = re.compile(r"[^\s<>()\[\]\"',;:@]+@[A-Za-z0-9.-]+")
_ANY_PHONE = re.compile(r"\+?\d[\d ()-]{6,}\d")


def scrub(text: str) -> str:
    """Text with every email address and phone number in it taken out (what is kept of a deleted account)."""
    return _ANY_PHONE.sub("(number)", _ANY_EMAIL.sub("(address)", text or ""))
