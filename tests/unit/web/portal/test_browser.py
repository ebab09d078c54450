"""The self-service web in a real browser: headless Chromium driven by Selenium against Django's live server.

Walks sign up -> the confirmation link from the mail the relay sink recorded -> claim a device -> block a sender ->
the message history and usage, then the operator's dashboard, at phone width (375 px), and saves a screenshot of
every page at phone and desktop width under test-artifacts/browser/. Skipped, with one line saying so, where Chromium
or chromedriver is missing (Debian: apt-get install chromium chromium-driver; .ci/run installs them).
"""

from __future__ import annotations

import pytest

from tests.browser import ARTEFACTS, MISSING, SKIP_REASON, Walk, start_browser

if MISSING:
    pytest.skip(SKIP_REASON, allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402

from tests.mailbox import body_of, link_in  # noqa: E402

from .conftest import PASSWORD  # noqa: E402


@pytest.fixture
def browser():
    driver = start_browser()
    yield driver
    driver.quit()


@pytest.mark.django_db(transaction=True)
def test_sign_up_confirm_claim_block_and_see_the_history(browser, live_server, relay, settings):
    from django.utils import timezone

    from web.accounts.models import Device, User
    from web.delivery.models import Message

    stock = Device(device_id=246810, owner=None, is_active=False)
    stock.set_claim_code("TRAIL-HEAD-2468")  # the operator's inventory (admin or import_devices)
    stock.save()
    walk = Walk(browser, live_server.url)

    walk.open("/")
    walk.shot("01-landing")
    walk.click(By.LINK_TEXT, "Sign up")
    walk.shot("02-signup")
    walk.fill(username="hiker", contact_email="hiker@personal.example.org", password1=PASSWORD, password2=PASSWORD)
    walk.submit("Create my account")
    assert "hiker@example.com" in walk.text() and "not confirmed yet" in walk.text()
    walk.shot("03-account")

    [mail] = relay.wait_for(lambda ms: any("hiker@personal.example.org" in m["rcpt_tos"] for m in ms))
    walk.open(link_in(body_of(mail)))
    assert "is confirmed" in walk.text()
    assert User.objects.get(username="hiker").contact_email_verified

    walk.open("/device/")
    walk.fill(device_id="246810", claim_code="WRONG-CODE-0000")
    walk.submit("Claim")
    assert "No device has this id and claim code" in walk.text()
    walk.shot("04-device-claim-error")
    walk.fill(device_id="246810", claim_code="trail head 2468")
    walk.submit("Claim")
    assert "Device 246810 is now yours" in walk.text()
    walk.shot("05-device")

    walk.open("/contacts/")
    walk.fill(name="Mom", address="mom@family.example.org")
    walk.submit("Add")
    assert "can now write 'mom' instead of mom@family.example.org" in walk.text()
    walk.shot("05b-contacts")

    walk.open("/blocked/")
    walk.fill(address="Pest@Example.org")
    walk.submit("Block")
    assert "pest@example.org is blocked" in walk.text()
    walk.shot("06-blocked")

    user, device = User.objects.get(username="hiker"), Device.objects.get(device_id=246810)
    for n, (direction, status, who, text, error) in enumerate(
        [
            ("to_device", "sent", "anna@example.org", "How is the trail?", ""),
            ("from_device", "sent", "+14155550123", "Camp at the lake tonight", ""),
            ("from_device", "dead", "bob@example.net", "Back on Sunday", "permanent: relay said 550 5.1.1 unknown"),
        ]
    ):
        Message.objects.create(
            direction=direction, protocol="sms" if who.startswith("+") else "email", user=user, device=device,
            sender=who if direction == "to_device" else "device:246810",
            recipient="hiker" if direction == "to_device" else who,
            text=text, status=status, last_error=error, idempotency_key=f"browser:{n}",
            sent_at=timezone.now() if status == "sent" else None,
        )  # fmt: skip
    walk.open("/messages/")
    page = walk.text()
    assert page.index("Back on Sunday") < page.index("Camp at the lake") < page.index("How is the trail?")
    assert "refused by the receiving mail system" in page
    walk.shot("07-messages")
    walk.fill(q="lake")
    walk.submit("Search")
    assert "Camp at the lake" in walk.text() and "How is the trail?" not in walk.text()
    walk.open("/usage/")
    assert browser.find_element(By.ID, "usage-in").text == "1"
    assert browser.find_element(By.ID, "usage-out").text == "2"
    walk.shot("08-usage")
    walk.open("/privacy/")
    walk.shot("09-privacy")
    walk.open("/email/")
    walk.shot("10-change-email")
    walk.open("/password/")
    walk.shot("11-change-password")
    walk.submit_nav("Log out")
    walk.open("/login/")
    walk.fill(username="Hiker", password="wrong-password")
    walk.submit("Log in")
    assert "enter a correct" in walk.text().lower()
    walk.shot("12-login-error")
    walk.fill(username="Hiker", password=PASSWORD)  # a phone capitalises the first letter: still the mailbox
    walk.submit("Log in")
    assert "hiker@example.com" in walk.text()
    walk.submit_nav("Log out")
    walk.open("/password/reset/")
    walk.shot("13-password-reset")

    # an operator: the admin's login leads on to the dashboard, whose charts show the messages above
    Message.objects.filter(idempotency_key="browser:1").update(attempts=3)  # two failed tries through Twilio
    User.objects.create_user(
        username="operator", password=PASSWORD, contact_email="ops@personal.example.org", is_staff=True
    )
    walk.open("/dashboard/")
    walk.fill(username="operator", password=PASSWORD)
    walk.click(By.XPATH, "//input[@type='submit']")
    assert "Operator dashboard" in walk.text() and "Send error rate per remote" in walk.text()
    assert len(browser.find_elements(By.CSS_SELECTOR, "[data-chart] svg")) >= 6
    walk.shot("14-operator-dashboard")

    assert len(list(ARTEFACTS.glob("*-phone.png"))) >= 14 and len(list(ARTEFACTS.glob("*-desktop.png"))) >= 14
