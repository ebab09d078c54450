"""Headless Chromium driven by Selenium, for the browser tests of the self-service web (unit: Django's live server;
e2e: the real stack). Where Chromium, chromedriver or Selenium is missing, ``MISSING`` names what: the browser test
modules are then not collected and pytest ends with one line saying so (tests/conftest.py; Debian: apt-get install
chromium chromium-driver; .ci/run installs them).

``Walk`` is a person at the keyboard: open a page, fill in fields, press a button and wait for the next page, and
``shot`` saves the page at phone and desktop width under test-artifacts/browser/ (after checking that it does not
scroll sideways on a phone and has a title).
"""

from __future__ import annotations

import shutil

from tests.paths import REPO_ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - the test extras pin it
    webdriver = None

MISSING = [n for n, ok in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER), ("selenium", webdriver)) if not ok]
SKIP_REASON = f"browser tests skipped: {', '.join(MISSING)} not installed (apt-get install chromium chromium-driver)"

BROWSER_TEST_FILES = frozenset({"test_browser.py", "test_portal_browser.py"})  # left out, with one line, without them
ARTEFACTS = REPO_ROOT / "test-artifacts" / "browser"
PHONE, DESKTOP = (375, 812), (1280, 900)


def start_browser():
    """A headless Chromium showing pages as a 375 px phone would (``screen`` switches to the desktop and back)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--hide-scrollbars"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    screen(driver, PHONE, mobile=True)  # headless windows are at least 500 px wide: emulate the phone's screen
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    return driver


def screen(driver, size: tuple[int, int], *, mobile: bool) -> None:
    width, height = size
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )


class Walk:
    def __init__(self, driver, base: str, *, prefix: str = ""):
        self.driver, self.base, self.prefix = driver, base, prefix

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
        name = self.prefix + name
        width = self.driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= PHONE[0], f"{name}: {width} px wide on a {PHONE[0]} px screen"
        assert self.driver.title.endswith("· Space Beaver"), name
        self.driver.save_screenshot(str(ARTEFACTS / f"{name}-phone.png"))
        screen(self.driver, DESKTOP, mobile=False)
        self.driver.save_screenshot(str(ARTEFACTS / f"{name}-desktop.png"))
        screen(self.driver, PHONE, mobile=True)
