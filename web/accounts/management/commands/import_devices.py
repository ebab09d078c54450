"""Load device inventory from CSV: ``python manage.py import_devices devices.csv [--codes-out codes.csv]``.

Columns: ``device_id`` (required), ``claim_code`` and ``nickname`` (optional). A missing claim code is generated;
the generated codes are written (device_id,claim_code) to --codes-out, or printed, because only their hashes are
stored. Any bad line stops the import before anything is stored; ids already in the inventory are skipped.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from web.accounts.devices import import_inventory, read_inventory


class Command(BaseCommand):
    help = "Load device inventory (device_id[,claim_code][,nickname]) from a CSV file ('-': standard input)"

    def add_arguments(self, parser):
        parser.add_argument("csv", help="the CSV file, or - for standard input")
        parser.add_argument("--codes-out", default="", help="write generated claim codes here (else they are printed)")

    def handle(self, *args, csv: str, codes_out: str, **options):
        try:
            text = sys.stdin.read() if csv == "-" else Path(csv).read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise CommandError(f"cannot read {csv}: {exc.strerror}") from None
        rows, problems = read_inventory(text)
        if problems:
            raise CommandError("nothing imported:\n  " + "\n  ".join(problems))
        added, skipped = import_inventory(rows)
        for row in skipped:
            self.stdout.write(f"skipped device {row.device_id}: already in the inventory (unchanged)")
        generated = [row for row in added if row.generated]
        if generated:
            self._write_codes(generated, codes_out)
        self.stdout.write(f"imported {len(added)} devices, skipped {len(skipped)}")

    def _write_codes(self, rows, codes_out: str) -> None:
        if codes_out:
            with open(codes_out, "w", newline="", encoding="utf-8") as out:
                _codes_csv(out, rows)
            self.stdout.write(f"generated claim codes written to {codes_out} (they are not stored; keep this file)")
        else:
            self.stdout.write("generated claim codes (they are not stored; print them on the labels now):")
            _codes_csv(self.stdout, rows)


def _codes_csv(out, rows) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["device_id", "claim_code"])
    for row in rows:
        writer.writerow([row.device_id, row.claim_code])
