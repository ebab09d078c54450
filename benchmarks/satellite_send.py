"""The CPU of sending one message to a device: the satellite sender alone (``delivery/satellite.py`` over
``delivery/base.py``, to the Swarm Hive), without Ray, on a fresh SQLite database (or ``DATABASE_URL``).

    .venv/bin/python -m benchmarks.satellite_send [--messages 1000] [--batch 16] [--rounds 5] [--profile]
                                                  [--vs <checkout>]

The sender runs in a child process of its own; the fake Hive runs in this one, and so does the storing of each
round's messages (as a mail server would store them), so only the sender's CPU is counted: for each batch of ids
(as a kick or a sweep hands them over, ``--batch`` at a time, one batch after the other) the claim, the read of
the rows, the packet fitting, one Hive POST per packet, the record of the sends and their log lines. Printed: for
each round the sender's CPU per message sent (user + system, from ``psutil``) and the rate, then the median.

``--profile``: py-spy samples the sender (``--gil``) during one extra round and prints its self time by package
and its hottest functions. ``--vs <checkout>``: an A/B against another commit (a worktree of it, with this file
and ``alternate.py`` copied in), the rounds alternating between the two senders (``benchmarks/alternate.py``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

USERS = 8
TEXT = "Snow at the pass, camp at the second lake tonight; the ridge tomorrow if the wind drops. All well."


def serve(hive_url: str, username: str, password: str, log_dir: str) -> None:
    """The child: a satellite sender; each stdin line is a JSON list of message ids to deliver, answered with
    one JSON line (how many were sent) once delivered. Ends when stdin closes."""
    import django

    django.setup()
    from messaging.core.types import Status
    from messaging.delivery.satellite import SatelliteBase
    from messaging.operations.console import message_lines_to_file
    from messaging.runtime.config import Config

    message_lines_to_file(Path(log_dir), level="INFO")  # as in a courier: the state-change lines to a file
    sender = SatelliteBase(Config(swarm_hive_url=hive_url, swarm_username=username, swarm_password=password))
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        outcomes = sender.deliver_many(json.loads(line))
        print(json.dumps({"sent": sum(1 for status in outcomes.values() if status == Status.SENT)}), flush=True)


def seed() -> list[tuple[int, int, str]]:
    """Users with a device on Swarm: (user id, device pk, mailbox) each."""
    from django.core.management import call_command

    from web.accounts.models import Device, User

    call_command("migrate", verbosity=0)
    made = []
    for i in range(USERS):
        user = User(username=f"sender{i}", twilio_number=f"+1415557{i:04d}")
        user.set_unusable_password()
        user.save()
        device = Device.objects.create(device_id=800_000 + i, owner=user, nickname=f"bench {i}")
        made.append((user.id, device.id, f"{user.username}@bench.test"))
    return made


def store(users: list[tuple[int, int, str]], count: int, tag: str) -> list[int]:
    """``count`` mails to the users' devices, stored due now as the mail server stores them; their ids."""
    from messaging.core.types import CombinedMessage, Direction, Protocol
    from messaging.outbox.store import ToRecord, record_many

    items = []
    for n in range(count):
        user_id, device_id, mailbox = users[n % len(users)]
        msg = CombinedMessage(
            direction=Direction.TO_DEVICE,
            protocol=Protocol.EMAIL,
            sender="amy@example.org",
            recipient=mailbox,
            text=TEXT,
            subject="Trail",
            idempotency_key=f"bench:{tag}:{n}",
        )
        items.append(ToRecord(msg, user_id=user_id, device_id=device_id, accepted=True))
    ids = []
    for start in range(0, len(items), 200):
        ids += [recorded.message_id for recorded in record_many(items[start : start + 200])]
    return ids


def one_round(child: subprocess.Popen, ids: list[int], batch: int) -> dict:
    import psutil

    sender = psutil.Process(child.pid)
    before, started = sender.cpu_times(), time.perf_counter()
    sent = 0
    for start in range(0, len(ids), batch):
        child.stdin.write(json.dumps(ids[start : start + batch]) + "\n")
        child.stdin.flush()
        sent += json.loads(child.stdout.readline())["sent"]
    wall = time.perf_counter() - started
    after = sender.cpu_times()
    cpu = (after.user - before.user) + (after.system - before.system)
    return {"sent": sent, "cpu_s": cpu, "rate": sent / wall if wall else 0.0}


def profile_round(child: subprocess.Popen, ids: list[int], batch: int, out_dir: str) -> None:
    """One more round with py-spy on the sender (``benchmarks.alternate.profile``)."""
    from benchmarks.alternate import profile

    profile(child.pid, Path(out_dir) / "satellite_send.txt", lambda: one_round(child, ids, batch))


def start_sender(root: Path, hive, work: str) -> subprocess.Popen:
    """A sender child run from checkout ``root``; the Hive's password through its environment, not its arguments."""
    from benchmarks.alternate import start_child

    args = ["benchmarks.satellite_send", "--serve", hive.base_url, hive.username, work]
    child = start_child(root, args, env={"BENCH_HIVE_PASSWORD": hive.password})
    if not json.loads(child.stdout.readline()).get("ready"):
        raise RuntimeError(f"the sender from {root} did not start")
    return child


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=16, help="ids per deliver_many, as one kick hands them over")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--vs", metavar="CHECKOUT", help="alternate the rounds with a sender run from there")
    parser.add_argument("--serve", nargs=3, metavar=("HIVE_URL", "USERNAME", "LOG_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "web.settings")
    if args.serve:
        hive_url, username, log_dir = args.serve
        serve(hive_url, username, os.environ["BENCH_HIVE_PASSWORD"], log_dir)
        return
    work = tempfile.mkdtemp(prefix="sbb-send-")
    os.environ.setdefault("DATA_DIR", work)
    import secrets

    import django

    django.setup()
    from benchmarks.alternate import alternate, checkouts
    from messaging.sandbox.fake_hive import FakeHive

    logging.getLogger("messaging").setLevel(logging.WARNING)  # this process's own lines (the stores) are not news
    users = seed()
    roots = checkouts(args.vs)
    hive = FakeHive(username=f"bench-{secrets.token_hex(4)}", password=secrets.token_urlsafe(16)).start()
    children: dict[str, subprocess.Popen] = {}
    try:
        children = {side: start_sender(root, hive, work) for side, root in roots.items()}
        for side, child in children.items():
            one_round(child, store(users, 100, f"warm-{side}"), args.batch)

        def measured(side: str, n: int) -> tuple[float, str]:
            got = one_round(children[side], store(users, args.messages, f"r{n}-{side}"), args.batch)
            if got["sent"] != args.messages:
                raise RuntimeError(f"round {n + 1} ({side}): {got['sent']} of {args.messages} sent")
            return got["cpu_s"] / got["sent"] * 1e3, f", {got['rate']:.0f} msg/s"

        what = f"{args.messages} messages in batches of {args.batch} (the sender's process)"
        alternate(roots, args.rounds, measured, what)
        if args.profile:
            profile_round(children["this"], store(users, args.messages, "profile"), args.batch, work)
    finally:
        for child in children.values():
            child.stdin.close()
        for child in children.values():
            child.wait(30)
        hive.stop()


if __name__ == "__main__":
    main()
