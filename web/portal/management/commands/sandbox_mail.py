"""``manage.py sandbox_mail [--to ADDRESS]``: the last mail the sandbox relay sink recorded (e.g. the portal's
verification or password-reset mail), with its body, so its link can be opened."""

from __future__ import annotations

import email
from email import policy

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from messaging.sandbox.relay_sink import read_records


class Command(BaseCommand):
    help = "Show the last mail the sandbox relay sink recorded ($DATA_DIR/sandbox/relay.jsonl), body included."

    def add_arguments(self, parser):
        parser.add_argument("--to", default="", help="only mail to this address")

    def handle(self, *args, to: str, **options) -> None:
        record = settings.DATA_DIR / "sandbox" / "relay.jsonl"
        if not record.exists():
            raise CommandError(f"no mail recorded yet ({record}); is `make run` (the sandbox) going?")
        records = [r for r in read_records(record) if not to or to.lower() in [a.lower() for a in r["rcpt_tos"]]]
        if not records:
            raise CommandError(f"no mail to {to} in {record}")
        msg = email.message_from_bytes(records[-1]["raw"], policy=policy.default)
        body = msg.get_body(("plain",))
        self.stdout.write(f"From: {msg['From']}\nTo: {msg['To']}\nSubject: {msg['Subject']}\n")
        self.stdout.write(body.get_content() if body is not None else "(no plain-text part)")
