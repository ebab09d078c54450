"""Claiming and releasing devices (one active device per user; never by id alone), and reading inventory CSV."""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from messaging.core.types import Direction, Status
from web.delivery.models import Message

from .models import Device, DeviceAssignment, User, generate_claim_code, normalise_claim_code

log = logging.getLogger(__name__)

NOT_FOUND = "No device has this id and claim code. Check both on the device's label."
TAKEN = "This device is registered to another account. If it is yours, contact support."
ALREADY = "This device is already yours and active."


class ClaimRefused(Exception):
    """Why a claim did not happen, in words for the person."""


def parse_device_id(text: str) -> int | None:
    text = (text or "").strip()
    if not text.isdigit() or len(text) > 19:
        return None
    value = int(text)
    return value if 0 < value < 2**63 else None


def claim_device(user: User, device_id: int | None, code: str) -> tuple[Device, Device | None]:
    """Give ``user`` the device with this id if ``code`` is its claim code; a device the user had active before is
    released (the replacement). Returns (the claimed device, the released one or None); raises ClaimRefused."""
    with transaction.atomic():
        device = (
            Device.objects.select_for_update().filter(device_id=device_id).first() if device_id is not None else None
        )
        if device is None:
            Device.no_such_device(code)
            raise ClaimRefused(NOT_FOUND)
        if not device.check_claim_code(code):
            raise ClaimRefused(NOT_FOUND)
        if device.owner_id is not None and device.owner_id != user.pk:
            raise ClaimRefused(TAKEN)
        if device.owner_id == user.pk and device.is_active:
            raise ClaimRefused(ALREADY)
        current = Device.objects.select_for_update().filter(owner=user, is_active=True).first()
        if current is not None:
            _release(current, successor=device)
        now = timezone.now()
        device.owner, device.is_active, device.claimed_at = user, True, now
        device.save(update_fields=["owner", "is_active", "claimed_at"])
        DeviceAssignment.objects.create(device=device, user=user)
        if current is not None:
            _undelivered_to(current, user).update(device=device)  # what was on its way goes to the new device
    log.info(
        "device claimed device=%s user_id=%s replaced=%s",
        device.device_id,
        user.pk,
        current.device_id if current else "-",
    )
    return device, current


def release_device(user: User) -> Device | None:
    """Release the user's active device back to the inventory (their messages stay theirs). None if there was none."""
    with transaction.atomic():
        device = Device.objects.select_for_update().filter(owner=user, is_active=True).first()
        if device is not None:
            _release(device)
    if device is not None:
        log.info("device released device=%s user_id=%s", device.device_id, user.pk)
    return device


def _undelivered_to(device: Device, user: User):
    """The user's messages to ``device`` not delivered yet (one a sender holds right now is left to it)."""
    return Message.objects.filter(
        user=user,
        device=device,
        direction=Direction.TO_DEVICE,
        status__in=[Status.RECEIVED, Status.QUEUED, Status.FAILED],
    )


def _release(device: Device, successor: Device | None = None) -> None:
    user_id = device.owner_id
    if successor is None:  # nothing to send them to: the sender dead-letters them (never to the next owner)
        _undelivered_to(device, device.owner).update(device=None)
    device.owner, device.is_active, device.nickname, device.claimed_at = None, False, "", None
    device.save(update_fields=["owner", "is_active", "nickname", "claimed_at"])
    DeviceAssignment.objects.filter(device=device, user_id=user_id, released_at__isnull=True).update(
        released_at=timezone.now()
    )


# -- inventory CSV --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InventoryRow:
    line: int
    device_id: int
    claim_code: str  # as given or generated, normalised for display
    generated: bool
    nickname: str = ""


def read_inventory(text: str) -> tuple[list[InventoryRow], list[str]]:
    """Rows of an inventory CSV (header ``device_id[,claim_code][,nickname]``), and a problem per bad line.

    A missing claim code is generated. Pure: nothing is stored here."""
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    if "device_id" not in fields:
        return [], ["line 1: the header must name a device_id column (optional: claim_code, nickname)"]
    reader.fieldnames = fields
    rows, problems, seen = [], [], set()
    for n, raw in enumerate(reader, start=2):
        device_id = parse_device_id(raw.get("device_id") or "")
        if device_id is None:
            problems.append(f"line {n}: device_id must be a positive whole number, not {raw.get('device_id')!r}")
            continue
        if device_id in seen:
            problems.append(f"line {n}: device {device_id} is listed twice")
            continue
        seen.add(device_id)
        code = (raw.get("claim_code") or "").strip()
        generated = not code
        if generated:
            code = generate_claim_code()
        elif len(normalise_claim_code(code)) < 8:
            problems.append(f"line {n}: the claim code of device {device_id} is shorter than 8 letters or digits")
            continue
        rows.append(InventoryRow(n, device_id, code, generated, (raw.get("nickname") or "").strip()[:64]))
    return rows, problems


def import_inventory(rows: list[InventoryRow]) -> tuple[list[InventoryRow], list[InventoryRow]]:
    """Store new devices (no owner, inactive) with their claim codes hashed. Returns (added, skipped: the ids
    already known, left as they are)."""
    known = set(Device.objects.filter(device_id__in=[r.device_id for r in rows]).values_list("device_id", flat=True))
    added, skipped = [], []
    with transaction.atomic():
        for row in rows:
            if row.device_id in known:
                skipped.append(row)
                continue
            device = Device(device_id=row.device_id, owner=None, is_active=False, nickname=row.nickname)
            device.set_claim_code(row.claim_code)
            device.save()
            added.append(row)
    log.info("inventory import added=%d skipped=%d", len(added), len(skipped))
    return added, skipped
