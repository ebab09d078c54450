"""The sandbox's play-the-device commands against the fakes (no Ray): a RockBLOCK device sends through the fake
RockBLOCK's MO posts and reads what the MT API queued for it; `make run` has a demo user on each network."""

from __future__ import annotations

import io
import threading

import pytest
from django.core.management import call_command

from messaging.core.codec import fit_packets
from messaging.core.types import Protocol
from messaging.satellite.rockblock import RockBlockNetwork, verify_post

IMEI = 300434063180550


@pytest.fixture
def fake(monkeypatch):
    from messaging.sandbox.fake_rockblock import FakeRockBlock

    with FakeRockBlock() as fake:
        monkeypatch.setenv("SANDBOX_ROCKBLOCK_PORT", str(fake.port))
        yield fake


def test_device_send_on_rockblock_makes_the_fake_post_a_signed_mo_message(fake):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qsl

    posts = []

    class Webhook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the stdlib's name
            posts.append(dict(parse_qsl(self.rfile.read(int(self.headers["Content-Length"])).decode())))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fake.mo_url = f"http://127.0.0.1:{server.server_address[1]}/rockblock"
    try:
        out = io.StringIO()
        call_command(
            "device_send", "--network", "rockblock", "--device", str(IMEI), "--to", "amy@example.org", "hi", stdout=out
        )
        assert f"RockBLOCK {IMEI} sent MO message 0" in out.getvalue()
        (fields,) = fake.wait_for_mo(1, timeout=10)
    finally:
        server.shutdown()
        server.server_close()
    assert posts == [fields]
    post = verify_post(fields, fake.public_key_file.read_text())
    (message,) = post.device_packet().messages()
    assert (post.imei, message.recipient, message.text, post.latitude) == (IMEI, "amy@example.org", "hi", 52.3867)


def test_device_inbox_on_rockblock_reads_what_the_mt_api_queued(fake):
    (payload,) = fit_packets("Hi from home", to="amy@example.org", protocol=Protocol.EMAIL, limit=270)
    RockBlockNetwork(fake.base_url, "sandbox", "sandbox").send(IMEI, payload)
    out = io.StringIO()
    call_command("device_inbox", "--network", "rockblock", "--device", str(IMEI), stdout=out)
    assert "EMAIL from amy@example.org: Hi from home" in out.getvalue() and "MT " in out.getvalue()


@pytest.mark.django_db
def test_the_sandbox_demo_has_a_user_on_each_network():
    from web.accounts.models import Device
    from web.delivery.management.commands.runbackend import Command

    lines = []
    Command._demo_user(lines.append)
    Command._demo_user(lines.append)  # a second start finds them
    networks = {d.network: (d.device_id, d.owner.username) for d in Device.objects.all()}
    assert networks == {"swarm": (1234, "demo"), "rockblock": (IMEI, "sailor")}
    assert any("RockBLOCK 300434063180550" in line for line in lines)
