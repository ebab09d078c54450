"""The whole path of issue 14 in a real browser on the real stack (Django inside the Serve app, as `make run` serves
it; mail through the stack's relay client to the sandbox relay sink): sign up -> the confirmation link from the mail
the relay sink recorded -> claim a device -> add a contact -> block a sender -> mail to the mailbox over SMTP -> the
history shows it delivered to the device -> the device writes to the contact's short name -> that goes out, and the
history shows it sent. Screenshots of each page at phone and desktop width go to test-artifacts/browser/e2e-*.
"""

from __future__ import annotations

import base64
import smtplib
import time
from email.message import EmailMessage

import pytest

from messaging.core.codec import encode_from_device
from messaging.core.types import Protocol
from tests.browser import MISSING, SKIP_REASON, Walk, start_browser
from tests.mailbox import body_of, link_in

from .conftest import device_texts, wait_until

if MISSING:
    pytest.skip(SKIP_REASON, allow_module_level=True)

pytestmark = pytest.mark.e2e
PASSWORD = "correct-horse-battery-42"


@pytest.fixture
def browser():
    driver = start_browser()
    yield driver
    driver.quit()


def test_sign_up_claim_contact_block_and_see_both_directions_in_the_history(e2e, orm, browser):
    from web.accounts.models import Device, User

    stamp = int(time.time() * 1000) % 10**6
    name, device_id = f"trail{stamp}", int(f"5{stamp:06d}002")
    personal, mailbox = f"{name}@personal.example.org", f"{name}@beaver.test"
    stock = Device(device_id=device_id, owner=None, is_active=False)
    stock.set_claim_code("RIDGE-LINE-1357")  # the operator's inventory (admin or import_devices)
    stock.save()
    walk = Walk(browser, e2e.base_url, prefix="e2e-")

    walk.open("/")
    walk.click("link text", "Sign up")
    walk.fill(username=name, contact_email=personal, password1=PASSWORD, password2=PASSWORD)
    walk.submit("Create my account")
    assert mailbox in walk.text() and "not confirmed yet" in walk.text()
    walk.shot("01-account")

    mail = wait_until(
        lambda: [m for m in e2e.box.relay.messages if personal in m["rcpt_tos"]],
        what="the confirmation mail at the relay sink",
    )[-1]
    walk.open(link_in(body_of(mail)))
    assert "is confirmed" in walk.text()
    assert User.objects.get(username=name).contact_email_verified

    walk.open("/device/")
    walk.fill(device_id=str(device_id), claim_code="ridge line 1357")
    walk.submit("Claim")
    assert f"Device {device_id} is now yours" in walk.text()
    walk.shot("02-device")
    walk.open("/contacts/")
    walk.fill(name="Mom", address="mom@family.example.org")
    walk.submit("Add")
    assert "can now write 'mom' instead of mom@family.example.org" in walk.text()
    walk.shot("03-contacts")
    walk.open("/blocked/")
    walk.fill(address="Pest@Example.org")
    walk.submit("Block")
    assert "pest@example.org is blocked" in walk.text()
    walk.shot("04-blocked")

    with smtplib.SMTP("127.0.0.1", e2e.config.smtp_listen_port, timeout=30) as smtp:
        spam = EmailMessage()
        spam["From"], spam["To"], spam["Subject"] = "pest@example.org", mailbox, "Buy now"
        spam.set_content("spam")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp.send_message(spam)
        hello = EmailMessage()
        hello["From"], hello["To"], hello["Subject"] = "Anna <anna@example.org>", mailbox, "Trail"
        hello.set_content("How is the trail?")
        smtp.send_message(hello)

    def state_in_history(text: str) -> str:
        """The delivery state the history shows for the message with this text ('' while it is not listed)."""
        walk.open("/messages/")
        found = browser.find_elements(
            "xpath", f"//article[contains(@class,'msg')][.//div[@class='text'][contains(., '{text}')]]"
            "//span[contains(@class,'state')]"
        )  # fmt: skip
        return found[0].text if found else ""

    wait_until(
        lambda: state_in_history("How is the trail?") == "delivered to your device's satellite network",
        what="the mail in the history as delivered to the device",
        timeout=60,
        interval=0.5,
    )
    assert any("How is the trail?" in text for text in device_texts(e2e, device_id))
    assert "Buy now" not in walk.text(), "a blocked sender's mail is never stored"
    walk.shot("05-history-delivered")

    data = encode_from_device([("Camp at the lake, all well", Protocol.EMAIL, "Mom")])
    e2e.box.hive.device_send(device_id, base64.b64encode(data).decode())
    out = wait_until(
        lambda: [m for m in e2e.box.relay.messages if "mom@family.example.org" in m["rcpt_tos"]],
        what="the device's mail to mom at the relay",
        timeout=60,
    )
    assert b"Camp at the lake, all well" in out[-1]["raw"]
    wait_until(
        lambda: state_in_history("Camp at the lake, all well") == "sent",
        what="the device's mail in the history as sent",
        timeout=60,
        interval=0.5,
    )
    page = walk.text()
    assert "From your device to mom@family.example.org" in page
    assert page.index("Camp at the lake") < page.index("How is the trail?"), "newest first"
    walk.shot("06-history-sent")
