"""The CPU of taking one mail by SMTP: the mail server alone (``intake/smtp/server.py`` with the user desk in its
process, as in a courier), without Ray, on a fresh SQLite database (or ``DATABASE_URL``).

    .venv/bin/python -m benchmarks.smtp_intake [--messages 1000] [--concurrency 4] [--rounds 5] [--profile]

The mail server runs in a child process of its own (the fake DNS and the load generator run elsewhere, so only
the server's CPU is counted); no sender pool is given, so nothing is kicked or sent: what is measured is the SMTP
dialogue, the parse, the sender checks (SPF, DKIM, DMARC against a fake DNS with no records), the user desk's
decision and the store. The state-change log lines go to a file, as a courier's do. Printed: for each round the
server's CPU per message accepted (user + system, from ``psutil``) and the rate, then the median.

``--profile``: py-spy samples the server (``--gil``: the thread holding the GIL) during one extra round and
prints its self time by package and its hottest functions (the collapsed stacks are kept).

``--vs <checkout>``: an A/B against another commit (a worktree of it, with this file and ``alternate.py`` copied
in): a second mail server runs from that checkout, on the same database, and the rounds alternate between the two
(``benchmarks/alternate.py``: each side's median, and the median of the paired ratios).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

DOMAIN = "bench.test"
USERS = 8


def serve(nameservers: str, log_dir: str) -> None:
    """The child: a mail server on a free loopback port (printed as one JSON line), until stdin closes."""
    import django

    django.setup()
    from messaging.intake.smtp.server import MailHandler, smtp_protocol
    from messaging.intake.user_store import LocalUsers
    from messaging.operations.console import AIOSMTPD_LOGGER, message_lines_to_file
    from messaging.runtime.config import Config

    # As in a courier (operations/console.py worker_logging): our lines to a file, aiosmtpd's from WARNING up.
    logging.getLogger(AIOSMTPD_LOGGER).setLevel(logging.WARNING)
    message_lines_to_file(Path(log_dir), level="INFO")
    # As benchmarks.run by default: the hourly limits off (one sender and 8 mailboxes would meet them).
    config = Config(
        email_domain=DOMAIN, dns_nameservers=nameservers, inbound_per_sender_per_hour=0, device_outbound_per_hour=0
    )
    handler = MailHandler(config, LocalUsers(config, {}))

    async def run() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: smtp_protocol(handler, config), host="127.0.0.1", port=0)
        print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
        await loop.run_in_executor(None, sys.stdin.read)  # the parent closes stdin to stop us
        server.close()

    asyncio.run(run())


def seed() -> list[str]:
    from django.core.management import call_command

    from web.accounts.models import Device, User

    call_command("migrate", verbosity=0)
    mailboxes = []
    for i in range(USERS):
        user = User(username=f"intake{i}", twilio_number=f"+1415556{i:04d}")
        user.set_unusable_password()
        user.save()
        Device.objects.create(device_id=900_000 + i, owner=user, nickname=f"bench {i}")
        mailboxes.append(f"{user.username}@{DOMAIN}")
    return mailboxes


def one_round(pid: int, port: int, mailboxes: list[str], messages: int, concurrency: int, tag: str) -> dict:
    import psutil

    from benchmarks import smtp_load

    server = psutil.Process(pid)
    before = server.cpu_times()
    result = smtp_load.collect(smtp_load.spawn("127.0.0.1", port, messages, concurrency, mailboxes, tag))
    after = server.cpu_times()
    cpu = (after.user - before.user) + (after.system - before.system)
    return {"ok": result.ok, "sent": result.sent, "cpu_s": cpu, "rate": result.rate, "errors": result.errors}


def profile_round(pid: int, port: int, mailboxes: list[str], args, out_dir: str) -> None:
    """One more load with py-spy on the server (``benchmarks.alternate.profile``)."""
    from benchmarks import smtp_load
    from benchmarks.alternate import profile

    tag = "prof"
    profile(
        pid,
        Path(out_dir) / "smtp_intake.txt",
        lambda: smtp_load.collect(smtp_load.spawn("127.0.0.1", port, args.messages, args.concurrency, mailboxes, tag)),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--vs", metavar="CHECKOUT", help="alternate the rounds with a mail server run from there")
    parser.add_argument("--serve", nargs=2, metavar=("NAMESERVERS", "LOG_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "web.settings")
    if args.serve:
        serve(*args.serve)
        return
    work = tempfile.mkdtemp(prefix="sbb-intake-")
    os.environ.setdefault("DATA_DIR", work)
    import django

    django.setup()
    from benchmarks.alternate import alternate, checkouts, start_child
    from messaging.sandbox.fake_dns import FakeDNS

    mailboxes = seed()
    roots = checkouts(args.vs)
    with FakeDNS() as dns:
        children = {
            side: start_child(root, ["benchmarks.smtp_intake", "--serve", dns.nameservers, work])
            for side, root in roots.items()
        }
        try:
            ports = {side: json.loads(child.stdout.readline())["port"] for side, child in children.items()}
            for side, child in children.items():
                one_round(child.pid, ports[side], mailboxes, 200, args.concurrency, f"warm{side}{time.time_ns()}")

            def measured(side: str, n: int) -> tuple[float, str]:
                tag = f"r{n}{side}x{time.time_ns()}"
                got = one_round(children[side].pid, ports[side], mailboxes, args.messages, args.concurrency, tag)
                errors = f", errors {got['errors']}" if got["errors"] else ""
                return got["cpu_s"] / max(got["ok"], 1) * 1e3, f", {got['rate']:.0f} msg/s{errors}"

            what = f"{args.messages} messages over {args.concurrency} sessions (the mail server's process)"
            alternate(roots, args.rounds, measured, what)
            if args.profile:
                profile_round(children["this"].pid, ports["this"], mailboxes, args, work)
        finally:
            for child in children.values():
                child.stdin.close()
            for child in children.values():
                child.wait(30)


if __name__ == "__main__":
    main()
