"""The self-service web in a real browser: headless Chromium driven by Selenium against Django's live server.

Walks sign up -> the confirmation link from the mail the relay sink recorded -> claim a device -> block a sender ->
the message history and usage, then the operator's dashboard, at phone width (375 px), and saves a screenshot of
every page at phone and desktop width under test-artifacts/browser/. Skipped, with one line saying so, where Chromium
or chromedriver is missing (Debian: apt-get install chromium chromium-driver; .ci/run installs them).
"""

from __future__ import annotations

import shutil

import pytest

from tests.paths import REPO_ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401
except ImportError:  # pragma: no cover - the test extras pin it
    selenium = None

if not (CHROMIUM and CHROMEDRIVER and selenium):
    missing = [
        n for n, ok in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER), ("selenium", selenium)) if not ok
    ]
    pytest.skip(
        f"browser tests skipped: {', '.join(missing)} not installed (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from .conftest import PASSWORD, body_of, link_in  # noqa: E402

ARTEFACTS = REPO_ROOT / "test-artifacts" / "browser"
PHONE, DESKTOP = (375, 812), (1280, 900)


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--hide-scrollbars"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    screen(driver, PHONE, mobile=True)  # headless windows are at least 500 px wide: emulate the phone's screen
    yield driver
    driver.quit()


def screen(driver, size: tuple[int, int], *, mobile: bool) -> None:
    width, height = size
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )


class Walk:
    def __init__(self, driver, base: str):
        self.driver, self.base = driver, base

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def fill(self, **fields: str) -> None:
        for name, value in fields.items():
            box = self.driver.find_element(By.NAME, name)
            box.clear()
            box.send_keys(value)

    def tick(self, name: str) -> None:
        self.driver.find_element(By.NAME, name).click()

    def submit(self, label: str) -> None:
        self.click(By.XPATH, f"//main//button[normalize-space()='{label}']")

    def submit_nav(self, label: str) -> None:
        self.click(By.XPATH, f"//header//button[normalize-space()='{label}']")

    def click(self, by: str, what: str) -> None:
        """Click, then wait (bounded) until the next page has replaced this one. While the page is being replaced,
        chromedriver may answer a look at the old one with an error of its own ("Cannot find context"): ask again."""
        old = self.driver.find_element(By.TAG_NAME, "html")
        self.driver.find_element(by, what).click()
        wait = WebDriverWait(self.driver, 30, ignored_exceptions=(WebDriverException,))
        wait.until(expected_conditions.staleness_of(old))

    def text(self) -> str:
        return self.driver.find_element(By.TAG_NAME, "body").text

    def shot(self, name: str) -> None:
        """Screenshots of this page at phone and desktop width; it must not scroll sideways on a phone."""
        width = self.driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= PHONE[0], f"{name}: {width} px wide on a {PHONE[0]} px screen"
        assert self.driver.title.endswith("· Space Beaver"), name
        self.driver.save_screenshot(str(ARTEFACTS / f"{name}-phone.png"))
        screen(self.driver, DESKTOP, mobile=False)
        self.driver.save_screenshot(str(ARTEFACTS / f"{name}-desktop.png"))
        screen(self.driver, PHONE, mobile=True)


@pytest.mark.django_db(transaction=True)
def test_sign_up_confirm_claim_block_and_see_the_history(browser, live_server, relay, settings):
    from django.utils import timezone

    from web.accounts.models import Device, User
    from web.delivery.models import Message

    ARTEFACTS.mkdir(parents=True, exist_ok=True)
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
