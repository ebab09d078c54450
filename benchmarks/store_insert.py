"""The CPU of storing a message (``outbox/store.py`` ``record_many``): the store's own INSERT (``insert_rows``)
against Django's ``bulk_create``, in one process, on a fresh SQLite database (or ``DATABASE_URL``).

    .venv/bin/python -m benchmarks.store_insert [--messages 400] [--rounds 6]

Each round stores ``--messages`` new messages in batches of 1 and of 4 (intake's usual batch sizes at a few
clients) each way, the two ways alternated; printed: the median over the rounds of the CPU per message stored
(``time.process_time``, so the commit's wait for the disk is not in it: ``synchronous=OFF`` on SQLite).
The state-change log lines are off (their cost is the same either way).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "web.settings")
    os.environ["DATA_DIR"] = tempfile.mkdtemp(prefix="sbb-store-")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from messaging.core.types import CombinedMessage, Direction, Protocol
    from messaging.outbox import store
    from web.delivery.models import Message

    call_command("migrate", verbosity=0)
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA synchronous=OFF")
    logging.getLogger("messaging").setLevel(logging.WARNING)
    ways = {"insert_rows": store.insert_rows, "bulk_create": lambda rows: Message.objects.bulk_create(rows)}
    figures: dict[tuple[str, int], list[float]] = {}
    stamp, n = int(time.time()), 0
    try:
        for _ in range(args.rounds):
            for name, insert in ways.items():
                store.insert_rows = insert  # record_many calls it by name
                for batch in (1, 4):
                    items = []
                    for _ in range(args.messages):
                        n += 1
                        msg = CombinedMessage(
                            direction=Direction.TO_DEVICE,
                            protocol=Protocol.EMAIL,
                            sender="amy@example.org",
                            recipient="bench",
                            text="hello from the valley " * 8,
                            idempotency_key=f"bench-{stamp}-{n}",
                        )
                        items.append(store.ToRecord(msg, user_id=None, device_id=None, accepted=True))
                    started = time.process_time()
                    for at in range(0, len(items), batch):
                        store.record_many(items[at : at + batch])
                    figures.setdefault((name, batch), []).append((time.process_time() - started) / len(items))
    finally:
        store.insert_rows = ways["insert_rows"]
    print(f"{connection.vendor}, {args.rounds} rounds of {args.messages} messages each way (CPU per message stored):")
    for (name, batch), values in figures.items():
        print(f"  {name:<12} batches of {batch}: median {statistics.median(values) * 1e6:4.0f} us")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
