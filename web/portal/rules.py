"""What a new mailbox name may be (pure: the portal's forms and the tests call it)."""

from __future__ import annotations

from messaging.core.addresses import MAILBOX_NAME

# Names mail systems and people expect to reach the operator, never a device owner (RFC 2142 and common use).
RESERVED_MAILBOXES = frozenset(
    {
        "postmaster",
        "abuse",
        "admin",
        "root",
        "mailer-daemon",
        "hostmaster",
        "webmaster",
        "noreply",
        "no-reply",
        "support",
    }
)


def mailbox_name_problem(name: str) -> str | None:
    """None when ``name`` (already lower-cased) may be a new mailbox; else why not, in words for the form."""
    if not name:
        return "Choose a mailbox name."
    if MAILBOX_NAME.fullmatch(name) is None:
        return "Use 1 to 64 lower-case letters, digits, '.', '_' or '-', starting and ending with a letter or digit."
    if name in RESERVED_MAILBOXES:
        return f"'{name}' is reserved; choose another name."
    return None
