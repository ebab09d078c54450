"""Phone numbers in one canonical form, E.164 (``+14155550100``). Pure, no I/O.

Parsing and length rules come from ``phonenumbers`` (Google's libphonenumber metadata).

By default a number only has to be *possible* (right length for its country), not *valid*
(in a range the metadata knows is allocated): a webhook from Twilio may carry a number from a
range newer than our copy of the metadata, and fictional test ranges (``+1 555 01xx``,
``+44 7700 900xxx``) must still work in the sandbox. Pass ``strict=True`` to require validity.
"""

from __future__ import annotations

import re

import phonenumbers

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


def normalise_phone(raw: str, default_region: str | None = None, *, strict: bool = False) -> str | None:
    """Return ``raw`` as E.164, or None if it is not a possible (``strict``: valid) number.

    ``default_region`` (ISO 3166 alpha-2, e.g. ``"GB"``) is used for numbers written without a
    leading ``+``; without it such national numbers are rejected.
    """
    if not isinstance(raw, str) or not raw.strip():
        return None
    region = default_region.upper() if default_region else None
    try:
        number = phonenumbers.parse(raw.strip(), region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    if strict and not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def is_e164(s: str) -> bool:
    """True if ``s`` is written in E.164 syntax: ``+``, no leading zero, at most 15 digits."""
    return isinstance(s, str) and _E164.fullmatch(s) is not None
