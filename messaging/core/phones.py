"""Phone numbers in one canonical form, E.164 (``+14155550100``). Pure, no I/O.

Parsing and length rules come from ``phonenumbers`` (Google's libphonenumber metadata).

By default a number only has to be *possible* (right length for its country), not *valid*
(in a range the metadata knows is allocated): a webhook from Twilio may carry a number from a
range newer than our copy of the metadata, and fictional test ranges (``+1 555 01xx``,
``+44 7700 900xxx``) must still work in the sandbox. Pass ``strict=True`` to require validity.

Where a device may *send* SMS is stricter (``sms_destination_refusal``): a valid mobile or fixed-line
number in an allowed country, so a device cannot run up premium-rate bills (toll fraud).
"""

from __future__ import annotations

import functools
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
    return _normalised(raw.strip(), default_region.upper() if default_region else None, bool(strict))


@functools.lru_cache(maxsize=4096)
def _normalised(raw: str, region: str | None, strict: bool) -> str | None:
    """The parse behind ``normalise_phone``, remembered: the same few numbers (a user's Twilio number, the
    people who text them) come back on every message, and phonenumbers' parse costs tens of microseconds."""
    try:
        number = phonenumbers.parse(raw, region)
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


# -- where a device may send SMS (toll fraud) -------------------------------------------------------------

# The only kinds of number a device may text: a person's phone. Everything else (premium-rate, shared-cost,
# UAN, toll-free, VoIP, personal, pager, voicemail, and numbers in no allocated range) is refused.
SMS_NUMBER_TYPES = frozenset(
    {
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    }
)

_TYPE_WORDS = {
    phonenumbers.PhoneNumberType.PREMIUM_RATE: "premium-rate numbers",
    phonenumbers.PhoneNumberType.SHARED_COST: "shared-cost numbers",
    phonenumbers.PhoneNumberType.UAN: "UAN (universal access) numbers",
    phonenumbers.PhoneNumberType.TOLL_FREE: "toll-free numbers",
    phonenumbers.PhoneNumberType.VOIP: "VoIP numbers",
    phonenumbers.PhoneNumberType.PERSONAL_NUMBER: "personal (forwarding) numbers",
    phonenumbers.PhoneNumberType.PAGER: "pager numbers",
    phonenumbers.PhoneNumberType.VOICEMAIL: "voicemail numbers",
}


def parse_countries(text: str) -> frozenset[str]:
    """``"us, CA"`` -> ``{"US", "CA"}``: ISO 3166 alpha-2 codes that phonenumbers knows; raises ValueError
    naming any other entry (a typo must not silently stop or widen SMS)."""
    codes = {part.strip().upper() for part in (text or "").split(",") if part.strip()}
    unknown = sorted(c for c in codes if c not in phonenumbers.SUPPORTED_REGIONS)
    if unknown:
        raise ValueError(f"SMS_ALLOWED_COUNTRIES: not ISO 3166 alpha-2 country codes: {', '.join(unknown)}")
    return frozenset(codes)


def sms_destination_refusal(number: str, allowed_countries: frozenset[str] | set[str]) -> str | None:
    """None if a device may text ``number``; else why not, in words the owner can read.

    The answer for a number and set of countries is remembered (libphonenumber's checks cost more than a sent
    SMS's request; a device texts the same few numbers, checked at intake and again when sent).

    Allowed: a valid mobile or fixed-line number (libphonenumber's type) of a country in
    ``allowed_countries`` (ISO codes; ``+1`` numbers belong to their own country: US, CA, JM, ...).
    The sentence names the number by its country code and first digits only (``+44 909…``): it goes
    into log lines, and the row it is stored on holds the full number.
    """
    return _destination_refusal(number, frozenset(allowed_countries))


@functools.lru_cache(maxsize=4096)
def _destination_refusal(number: str, allowed_countries: frozenset[str]) -> str | None:
    try:
        parsed = phonenumbers.parse((number or "").strip(), None)
    except phonenumbers.NumberParseException:
        return "SMS refused: the recipient is not a phone number"
    shown = f"+{parsed.country_code} {phonenumbers.national_significant_number(parsed)[:3]}…"
    kind = phonenumbers.number_type(parsed)
    if kind is phonenumbers.PhoneNumberType.UNKNOWN or not phonenumbers.is_valid_number(parsed):
        return f"SMS to {shown} refused: not a number in any allocated range (unknown type)"
    if kind not in SMS_NUMBER_TYPES:
        words = _TYPE_WORDS.get(kind, "numbers of this type")
        return f"SMS to {shown} refused: {words} are not allowed, only mobile and fixed-line numbers"
    region = phonenumbers.region_code_for_number(parsed) or "?"
    if region not in allowed_countries:
        allowed = ", ".join(sorted(allowed_countries)) or "none"
        return f"SMS to {shown} refused: {region} is not an allowed country (SMS_ALLOWED_COUNTRIES: {allowed})"
    return None
