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

``--vs <checkout>``: an A/B against another commit (a worktree of it, with this file copied in): a second mail
server runs from that checkout, and the rounds alternate between the two (round by round, which goes first
alternating, on the same database), so that a VM whose speed drifts over minutes slows both alike. Printed: each
side's median, and the median of the paired ratios (this checkout's CPU per mail over the other's, round by round).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import statistics
import subprocess
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
    """One more load with py-spy on the server (``--gil``: where its Python CPU goes), summarised as
    ``benchmarks.run --profile-gil`` summarises the actors'."""
    from benchmarks import smtp_load
    from benchmarks.report import package_shares, top_frames

    raw = Path(out_dir) / "smtp_intake.txt"
    py_spy = Path(sys.executable).parent / "py-spy"
    spy = subprocess.Popen(
        [str(py_spy), "record", "--gil", "--rate", "250", "--pid", str(pid), "--format", "raw", "--output", str(raw)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    smtp_load.collect(smtp_load.spawn("127.0.0.1", port, args.messages, args.concurrency, mailboxes, "prof"))
    spy.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
    spy.wait(60)
    collapsed = raw.read_text(encoding="utf-8", errors="replace")
    print("  self time by package: " + ", ".join(f"{name} {share:.0%}" for name, share in package_shares(collapsed)))
    print("  hottest frames (self):")
    for frame, share in top_frames(collapsed, 20, skip_leaves=()):
        print(f"    {share:6.1%}  {frame}")
    print("  our code, inclusive:")
    for frame, share in top_frames(collapsed, 20, leaf=False, focus="messaging/", skip_leaves=()):
        print(f"    {share:6.1%}  {frame}")
    print(f"  (collapsed stacks: {raw})")


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
    from messaging.sandbox.fake_dns import FakeDNS

    mailboxes = seed()
    roots = {"this": Path.cwd()} | ({"vs": Path(args.vs).resolve()} if args.vs else {})
    with FakeDNS() as dns:
        children = {side: start_server(root, dns.nameservers, work) for side, root in roots.items()}
        try:
            ports = {side: json.loads(child.stdout.readline())["port"] for side, child in children.items()}
            for side, child in children.items():
                one_round(child.pid, ports[side], mailboxes, 200, args.concurrency, f"warm{side}{time.time_ns()}")
            figures: dict[str, list[float]] = {side: [] for side in children}
            for n in range(args.rounds):
                order = list(children.items())
                for side, child in order if n % 2 == 0 else order[::-1]:  # ABBA: neither side always goes first
                    tag = f"r{n}{side}x{time.time_ns()}"
                    got = one_round(child.pid, ports[side], mailboxes, args.messages, args.concurrency, tag)
                    per_msg = got["cpu_s"] / max(got["ok"], 1) * 1e3
                    figures[side].append(per_msg)
                    errors = f", errors {got['errors']}" if got["errors"] else ""
                    name = f" ({side}: {roots[side]})" if args.vs else ""
                    print(
                        f"round {n + 1}{name}: {per_msg:.2f} ms CPU per message, {got['rate']:.0f} msg/s{errors}",
                        flush=True,
                    )
            for side, values in figures.items():
                name = f" [{roots[side]}]" if args.vs else ""
                print(
                    f"median of {args.rounds} rounds of {args.messages} messages over {args.concurrency} sessions"
                    f"{name}: {statistics.median(values):.2f} ms CPU per message (the mail server's process)"
                )
            if args.vs:
                ratios = [a / b for a, b in zip(figures["this"], figures["vs"], strict=True)]
                print(
                    f"this / vs, paired by round: median {statistics.median(ratios):.3f} "
                    f"(min {min(ratios):.3f}, max {max(ratios):.3f})"
                )
            if args.profile:
                profile_round(children["this"].pid, ports["this"], mailboxes, args, work)
        finally:
            for child in children.values():
                child.stdin.close()
            for child in children.values():
                child.wait(30)


def start_server(root: Path, nameservers: str, work: str) -> subprocess.Popen:
    """A mail server child run from checkout ``root`` (its code on the path first)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.smtp_intake", "--serve", nameservers, work],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env=env,
    )


if __name__ == "__main__":
    main()
