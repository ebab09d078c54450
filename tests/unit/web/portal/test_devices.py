"""Claiming a device by its id AND claim code, replacing and releasing it; the inventory in the admin and by CSV."""

from __future__ import annotations

import csv
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from web.accounts.devices import read_inventory
from web.accounts.models import Device, DeviceAssignment, User, generate_claim_code
from web.delivery.models import Message
from web.portal import ratelimit

pytestmark = pytest.mark.django_db

CODE = "ABCD-EFGH-JKMN"


def stock(device_id: int, code: str = CODE, network: str = "swarm") -> Device:
    device = Device(network=network, device_id=device_id, owner=None, is_active=False)
    device.set_claim_code(code)
    device.save()
    return device


def claim(client, device_id, code=CODE, **extra):
    return client.post(reverse("portal:device"), {"device_id": str(device_id), "claim_code": code, **extra})


def test_claim_with_id_and_code_makes_the_device_yours(client, person):
    user = person()
    stock(5001)
    client.force_login(user)
    page = claim(client, 5001, "abcd efgh jkmn")  # typed loosely: case, spaces
    assert page.status_code == 302
    device = Device.objects.get(device_id=5001)
    assert (device.owner, device.is_active) == (user, True) and device.claimed_at is not None
    assert "5001" in client.get(reverse("portal:device")).content.decode()
    assert DeviceAssignment.objects.filter(device=device, user=user, released_at__isnull=True).exists()


def test_a_rockblock_is_claimed_by_its_imei_and_code(client, person):
    user = person()
    stock(300234010753370, network="rockblock")
    client.force_login(user)
    assert claim(client, 300234010753370).status_code == 302
    device = Device.objects.get(device_id=300234010753370)
    assert (device.owner, device.is_active) == (user, True)
    assert "300234010753370</strong> on RockBLOCK" in client.get(reverse("portal:device")).content.decode()


@pytest.mark.parametrize("device_id,code", [(5001, "WRONG-CODE-XXXX"), (5999, CODE), (5001, "")])
def test_never_by_id_alone_and_unknown_ids_read_the_same(client, person, device_id, code):
    stock(5001)
    client.force_login(person())
    page = claim(client, device_id, code)
    assert page.status_code == 200
    html = page.content.decode()
    assert "No device has this id and claim code" in html or "This field is required" in html
    assert Device.objects.get(device_id=5001).owner is None


def test_a_device_without_a_claim_code_cannot_be_claimed(client, person):
    Device.objects.create(device_id=5002, owner=None, is_active=False)
    client.force_login(person())
    assert "No device has this id" in claim(client, 5002, "").content.decode() + claim(client, 5002).content.decode()
    assert Device.objects.get(device_id=5002).owner is None


def test_someone_elses_device_cannot_be_taken_even_with_its_code(client, person):
    owner, thief = person(), person()
    stock(5003)
    theirs = Client()
    theirs.force_login(owner)
    claim(theirs, 5003)
    client.force_login(thief)
    page = claim(client, 5003)
    assert "registered to another account" in page.content.decode()
    assert Device.objects.get(device_id=5003).owner == owner


def test_replace_releases_the_old_device_and_keeps_the_history(client, person):
    user = person()
    stock(5004)
    stock(5005, "QRST-UVWX-YZ23")
    client.force_login(user)
    claim(client, 5004)
    old = Device.objects.get(device_id=5004)
    Message.objects.create(
        direction="to_device",
        protocol="email",
        sender="friend@example.org",
        recipient="x",
        user=user,
        device=old,
        idempotency_key="k-replace",
        status="sent",
    )
    page = claim(client, 5005, "QRST-UVWX-YZ23")
    assert page.status_code == 200 and "Tick this to confirm" in page.content.decode(), "a replacement is confirmed"
    page = claim(client, 5005, "QRST-UVWX-YZ23", confirm_replace="on")
    assert page.status_code == 302
    old.refresh_from_db()
    assert (old.owner, old.is_active) == (None, False), "the old one goes back to the inventory"
    assert user.devices.get(is_active=True).device_id == 5005, "one active device"
    assert Message.objects.filter(user=user, device=old).count() == 1, "messages stay the user's"
    history = [(a.device.device_id, a.released_at is None) for a in user.device_assignments.all()]
    assert history == [(5005, True), (5004, False)]
    html = client.get(reverse("portal:device")).content.decode()
    assert "Devices you have had" in html and "5004" in html


def test_release_without_replacement(client, person):
    user = person()
    stock(5006)
    client.force_login(user)
    claim(client, 5006)
    assert client.get(reverse("portal:release_device")).status_code == 405
    client.post(reverse("portal:release_device"))
    assert Device.objects.get(device_id=5006).owner is None
    assert not user.devices.filter(is_active=True).exists()


def test_claims_are_rate_limited_per_user(client, person, monkeypatch):
    monkeypatch.setitem(ratelimit.LIMITS, "claim-user", (2, 3600))
    stock(5007)
    client.force_login(person())
    for _ in range(2):
        claim(client, 5007, "WRON-GCOD-EXXX")
    page = claim(client, 5007)
    assert page.status_code == 429 and "Too many tries" in page.content.decode()
    assert Device.objects.get(device_id=5007).owner is None, "even the right code waits"


def test_the_device_page_shows_only_my_device(client, person):
    me, other = person(), person()
    stock(5008)
    stock(5009)
    theirs = Client()
    theirs.force_login(other)
    claim(theirs, 5008)
    client.force_login(me)
    claim(client, 5009)
    html = client.get(reverse("portal:device")).content.decode()
    assert "5009" in html and "5008" not in html
    client.post(reverse("portal:release_device"))
    assert Device.objects.get(device_id=5008).owner == other, "release touches only my device"


def test_the_device_page_needs_a_login(client):
    assert client.get(reverse("portal:device")).status_code == 302


def test_claim_codes_are_stored_hashed_and_random():
    device = stock(5010)
    assert "ABCD" not in device.claim_code and device.claim_code.startswith("pbkdf2_sha256$")
    assert device.check_claim_code("abcdefghjkmn") and not device.check_claim_code("ABCD-EFGH-JKMP")
    codes = {generate_claim_code() for _ in range(50)}
    assert len(codes) == 50 and all(len(c) == 14 and c[4] == "-" for c in codes)


# -- inventory ---------------------------------------------------------------------------------------------


def test_csv_import_loads_inventory_and_prints_generated_codes(tmp_path):
    source = tmp_path / "devices.csv"
    source.write_text("device_id,claim_code,nickname\n6001,KEEP-THIS-CODE,orange\n6002,,\n")
    out = io.StringIO()
    call_command("import_devices", str(source), stdout=out)
    text = out.getvalue()
    assert "imported 2 devices" in text
    generated = dict(row for row in csv.reader(io.StringIO(text.split("now):\n", 1)[1])) if len(row) == 2)
    assert Device.objects.get(device_id=6001).check_claim_code("KEEP-THIS-CODE")
    assert Device.objects.get(device_id=6002).check_claim_code(generated["6002"])
    assert not Device.objects.filter(device_id__in=[6001, 6002], is_active=True).exists()
    call_command("import_devices", str(source), stdout=(again := io.StringIO()))
    assert "skipped device 6001" in again.getvalue() and "imported 0 devices" in again.getvalue()


def test_csv_import_writes_generated_codes_to_a_file(tmp_path):
    source = tmp_path / "devices.csv"
    source.write_text("device_id\n6101\n6102\n")
    codes = tmp_path / "codes.csv"
    call_command("import_devices", str(source), codes_out=str(codes), stdout=io.StringIO())
    rows = list(csv.DictReader(codes.open()))
    assert [r["device_id"] for r in rows] == ["6101", "6102"]
    assert Device.objects.get(device_id=6102).check_claim_code(rows[1]["claim_code"])


def test_a_bad_csv_line_imports_nothing_and_names_the_line(tmp_path):
    source = tmp_path / "devices.csv"
    source.write_text("device_id,claim_code\n6201,GOOD-CODE-HERE\nabc,\n6201,\n6203,short\n")
    with pytest.raises(CommandError) as refused:
        call_command("import_devices", str(source), stdout=io.StringIO())
    text = str(refused.value)
    assert "line 3" in text and "line 4" in text and "line 5" in text
    assert not Device.objects.exists()
    assert read_inventory("serial\n1\n")[1] == [
        "line 1: the header must name a device_id column (optional: claim_code, nickname)"
    ]


@pytest.fixture
def staff(client):
    User.objects.create_superuser(username="ops", password="a-long-pass-phrase", email="ops@example.org")
    client.login(username="ops", password="a-long-pass-phrase")
    return client


def test_admin_add_generates_a_claim_code_shown_once(staff):
    page = staff.post(
        reverse("admin:accounts_device_add"), {"network": "swarm", "device_id": "7001", "nickname": ""}, follow=True
    )
    html = page.content.decode()
    assert "Claim code of device 7001:" in html
    code = html.split("Claim code of device 7001: ", 1)[1].split(" ", 1)[0]
    device = Device.objects.get(device_id=7001)
    assert device.owner is None and not device.is_active and device.check_claim_code(code)


def test_admin_refuses_an_active_device_without_owner(staff):
    page = staff.post(
        reverse("admin:accounts_device_add"), {"network": "swarm", "device_id": "7002", "is_active": "on"}
    )
    assert "cannot be active" in page.content.decode()
    assert not Device.objects.filter(device_id=7002).exists()


def test_admin_sets_a_typed_claim_code(staff):
    device = stock(7003)
    page = staff.post(
        reverse("admin:accounts_device_change", args=[device.pk]),
        {"network": "swarm", "device_id": "7003", "new_claim_code": "NEWC-ODE1-2345"},
    )
    assert page.status_code == 302
    device.refresh_from_db()
    assert device.check_claim_code("NEWC-ODE1-2345") and not device.check_claim_code(CODE)


def test_admin_action_downloads_new_claim_codes(staff):
    devices = [stock(7004), stock(7005)]
    page = staff.post(
        reverse("admin:accounts_device_changelist"),
        {"action": "new_claim_codes", "_selected_action": [d.pk for d in devices]},
    )
    rows = list(csv.DictReader(io.StringIO(page.content.decode())))
    assert [r["device_id"] for r in rows] == ["7004", "7005"]
    assert Device.objects.get(device_id=7005).check_claim_code(rows[1]["claim_code"])


def test_admin_csv_upload_imports_and_returns_generated_codes(staff):
    upload = SimpleUploadedFile("inv.csv", b"device_id,nickname\n7101,red\n")
    page = staff.post(reverse("admin:accounts_device_import"), {"csv_file": upload})
    assert page["Content-Type"] == "text/csv"
    [row] = list(csv.DictReader(io.StringIO(page.content.decode())))
    assert Device.objects.get(device_id=7101).check_claim_code(row["claim_code"])
    bad = SimpleUploadedFile("inv.csv", b"device_id\nnope\n")
    page = staff.post(reverse("admin:accounts_device_import"), {"csv_file": bad})
    assert "line 2" in page.content.decode() and not Device.objects.filter(nickname="nope").exists()
    assert "Import inventory (CSV)" in staff.get(reverse("admin:accounts_device_changelist")).content.decode()


def test_undelivered_messages_follow_a_replacement_and_never_a_released_device(client, person):
    user = person()
    stock(5101)
    stock(5102, "QRST-UVWX-YZ23")
    client.force_login(user)
    claim(client, 5101)
    old = Device.objects.get(device_id=5101)

    def waiting(key, status="queued"):
        return Message.objects.create(
            direction="to_device", protocol="email", sender="a@example.org", recipient="x", user=user, device=old,
            idempotency_key=key, status=status,
        )  # fmt: skip

    queued, done = waiting("k-q"), waiting("k-done", status="sent")
    claim(client, 5102, "QRST-UVWX-YZ23", confirm_replace="on")
    new = Device.objects.get(device_id=5102)
    queued.refresh_from_db()
    done.refresh_from_db()
    assert queued.device == new, "on its way: goes to the new device"
    assert done.device == old, "history stays as it was"
    later = Message.objects.create(
        direction="to_device", protocol="email", sender="b@example.org", recipient="x", user=user, device=new,
        idempotency_key="k-later", status="failed",
    )  # fmt: skip
    client.post(reverse("portal:release_device"))
    later.refresh_from_db()
    assert later.device is None, "a released device gets nothing more of its former owner's"
