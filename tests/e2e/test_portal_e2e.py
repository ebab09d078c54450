"""The self-service web on the real stack (Django inside the Serve app, as `make run` serves it): log in, claim a
device with its claim code, block a sender, then mail over SMTP and a device's own message show up in the history
with their delivery state."""

from __future__ import annotations

import base64
import re
import smtplib
import time
from email.message import EmailMessage

import pytest
import requests

from messaging.core.codec import encode_from_device
from messaging.core.types import Protocol

from .conftest import wait_until

pytestmark = pytest.mark.e2e
PASSWORD = "correct-horse-battery-42"


def post(session: requests.Session, url: str, data: dict) -> requests.Response:
    page = session.get(url, timeout=30)
    assert page.status_code == 200, page.text[:500]
    token = session.cookies["csrftoken"]
    return session.post(url, data={"csrfmiddlewaretoken": token, **data}, headers={"Referer": url}, timeout=30)


def test_claim_block_and_see_mail_and_device_messages_in_the_history(e2e, orm):
    from web.accounts.models import Device, User

    stamp = int(time.time() * 1000) % 10**6
    name, device_id = f"walk{stamp}", int(f"6{stamp:06d}001")
    User.objects.create_user(
        username=name, password=PASSWORD, contact_email=f"{name}@personal.example.org", contact_email_verified=True
    )
    stock = Device(device_id=device_id, owner=None, is_active=False)
    stock.set_claim_code("TRAIL-HEAD-2468")
    stock.save()
    web = requests.Session()
    base = e2e.base_url

    assert "Sign up" in web.get(f"{base}/", timeout=30).text
    page = post(web, f"{base}/login/", {"username": name, "password": PASSWORD})
    assert page.status_code == 200 and "Your account" in page.text
    page = post(web, f"{base}/device/", {"device_id": str(device_id), "claim_code": "WRONG-CODE-0000"})
    assert "No device has this id and claim code" in page.text
    page = post(web, f"{base}/device/", {"device_id": str(device_id), "claim_code": "trail-head-2468"})
    assert f"Device {device_id} is now yours" in page.text
    page = post(web, f"{base}/blocked/", {"address": "Pest@Example.org"})
    assert "pest@example.org is blocked" in page.text

    mailbox = f"{name}@beaver.test"
    with smtplib.SMTP("127.0.0.1", e2e.config.smtp_listen_port, timeout=30) as smtp:
        blocked = EmailMessage()
        blocked["From"], blocked["To"], blocked["Subject"] = "pest@example.org", mailbox, "Buy now"
        blocked.set_content("spam")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp.send_message(blocked)
        hello = EmailMessage()
        hello["From"], hello["To"], hello["Subject"] = "Anna <anna@example.org>", mailbox, "Trail"
        hello.set_content("How is the trail?")
        smtp.send_message(hello)

    def history() -> str:
        return web.get(f"{base}/messages/", timeout=30).text

    page = wait_until(
        lambda: (text := history()) and "delivered to your device" in text and text,
        what="the mail in the history as delivered to the device",
        timeout=60,
    )
    assert "anna@example.org" in page and "How is the trail?" in page
    assert "Buy now" not in page, "a refused sender's mail was never stored"

    data = encode_from_device([("Camp at the lake, all well", Protocol.EMAIL, "mum@example.org")])
    e2e.box.hive.device_send(device_id, base64.b64encode(data).decode())
    page = wait_until(
        lambda: (
            (text := history()) and "Camp at the lake" in text and re.search(r'class="state good">sent<', text) and text
        ),
        what="the device's mail in the history as sent",
        timeout=60,
    )
    assert page.index("Camp at the lake") < page.index("How is the trail?"), "newest first"
    assert wait_until(lambda: [m for m in e2e.box.relay.messages if "mum@example.org" in m["rcpt_tos"]])
    usage = web.get(f"{base}/usage/", timeout=30).text
    assert re.search(r'id="usage-in">1<', usage) and re.search(r'id="usage-out">1<', usage)
