"""Headless Chromium driven by Selenium, as the browser tests use it."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is installed by the test command")


def chromium() -> tuple[str, str]:
    """The browser and its driver, or skip (they are Debian packages .ci/setup installs)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium chromium-driver; "
                    ".ci/setup does it)")
    return browser, driver


def start_browser(profile: Path):
    """A headless Chromium with its own profile directory; the caller quits it."""
    binary, driver_path = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    # headless, as root in a container, and quiet on a closed network: no background fetches
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    return driver


def browser_fixture():
    """A module fixture: one headless Chromium for the test module (``browser = browser_fixture()``)."""

    @pytest.fixture(scope="module")
    def browser(tmp_path_factory):
        driver = start_browser(tmp_path_factory.mktemp("chromium-profile"))
        yield driver
        driver.quit()

    return browser


def screenshots_fixture(env_var: str, what: str):
    """A module fixture: the folder screenshots go to (``$env_var``, else a temporary one), printed at the end."""

    @pytest.fixture(scope="module")
    def shots(tmp_path_factory, pytestconfig) -> Path:
        from book_build import report

        folder = Path(os.environ.get(env_var) or tmp_path_factory.mktemp("screenshots"))
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        report(pytestconfig, f"[browser] screenshots of {what} in {folder}: "
                             + ", ".join(sorted(p.name for p in folder.glob("*.png"))))

    return shots
