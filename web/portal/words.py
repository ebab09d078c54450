"""A message's delivery state, and why it failed, in plain words for its owner. Pure: the tests call it."""

from __future__ import annotations

import re

STATES = {
    ("to_device", "received"): "received, on its way to your device",
    ("to_device", "queued"): "waiting to be sent to your device",
    ("to_device", "sending"): "being sent to your device",
    ("to_device", "sent"): "delivered to your device's satellite network",
    ("to_device", "failed"): "not delivered yet, will try again",
    ("to_device", "rejected"): "refused",
    ("to_device", "dead"): "could not be delivered",
    ("from_device", "received"): "received from your device, about to be sent",
    ("from_device", "queued"): "waiting to be sent",
    ("from_device", "sending"): "being sent",
    ("from_device", "sent"): "sent",
    ("from_device", "failed"): "not sent yet, will try again",
    ("from_device", "rejected"): "not sent",
    ("from_device", "dead"): "could not be sent",
}

GOOD, BAD = {"sent"}, {"rejected", "dead", "failed"}

_VERDICTS = {
    "unknown_recipient": "There is no such mailbox.",
    "inactive_user": "Your account was disabled at the time.",
    "no_device": "You had no active device at the time.",
    "inactive_device": "You had no active device at the time.",
    "blocked_sender": "You blocked this sender.",
    "quota_exceeded": "Your monthly quota of messages to the device was used up.",
    "bad_destination": "The address or phone number the device wrote could not be used.",
    "unsupported_protocol": "This kind of message cannot be delivered.",
    "outbound_quota_exceeded": "Not sent: this month's quota of messages from your device was used up.",
    "device_rate_limited": "Not sent: your device sent too many messages within an hour.",
    "rate_limited": "This sender sent too many messages within an hour.",
}

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"relay said (5\d\d)"), "The email was refused by the receiving mail system (code {0})."),
    (re.compile(r"relay said (4\d\d)"), "The mail system asked us to try again later (code {0})."),
    (re.compile(r"relay unreachable"), "Our mail relay could not be reached."),
    (re.compile(r"invalid (recipient )?address"), "The email address is not valid."),
    (re.compile(r"has no active device"), "You had no active device at the time."),
    (re.compile(r"has no Twilio number"), "Your account has no phone number to send texts from."),
    (re.compile(r"Twilio unreachable|Twilio answered"), "The text message service could not be reached."),
    (re.compile(r"Twilio"), "The text message service refused it."),
    (re.compile(r"hive (send|login|fetch)?:? ?.*HTTP 4"), "The satellite network refused it."),
    (re.compile(r"hive"), "The satellite network could not be reached or refused it."),
    (re.compile(r"rockblock"), "The satellite network could not be reached or refused it."),
    (re.compile(r"could not be stored"), "It could not be stored."),
    (re.compile(r"decode|undecodable|not readable|unreadable", re.I), "The device's message could not be read."),
]


def state_words(direction: str, status: str) -> str:
    return STATES.get((direction, status), status)


def state_tone(status: str) -> str:
    return "good" if status in GOOD else "bad" if status in BAD else ""


def reason_words(last_error: str) -> str:
    """Why a message was refused, failed or died, in a sentence (never a Python exception's name)."""
    text = (last_error or "").strip()
    if not text:
        return ""
    gave_up = text.startswith("gave up after")
    if gave_up:
        text = text.split(": ", 1)[1] if ": " in text else ""
    if text.startswith("permanent: "):
        text = text[len("permanent: ") :]
    head, _, rest = text.partition(":")
    verdict = head.strip()
    if verdict == "refused_destination" or (verdict == "bad_destination" and rest.strip()):
        sentence = rest.strip()
        return (sentence[0].upper() + sentence[1:] + ".") if sentence else "This phone number cannot be texted."
    if verdict in _VERDICTS:
        return _VERDICTS[verdict]
    if text.startswith("SMS"):
        return text.rstrip(".") + "."
    for pattern, template in _PATTERNS:
        match = pattern.search(text)
        if match:
            words = template.format(*match.groups())
            break
    else:
        words = "Delivery failed; support can see the details."
    return ("Delivery kept failing, so we stopped trying. " + words) if gave_up else words
