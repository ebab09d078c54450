"""Reading the mail a relay sink recorded, as the person it was sent to would: the text, and the link in it."""

from __future__ import annotations

import email
import re
from email import policy


def body_of(record: dict) -> str:
    """The plain-text body of a message the relay sink recorded."""
    msg = email.message_from_bytes(record["raw"], policy=policy.default)
    return msg.get_body(("plain",)).get_content()


def link_in(text: str) -> str:
    """The path of the first http(s) link in a mail body."""
    url = re.search(r"https?://\S+", text).group(0)
    return re.sub(r"^https?://[^/]+", "", url)
