"""A real browser for the console's tests: Debian's Chromium, headless, driven through Debian's
chromedriver by Selenium (nothing is downloaded). Without them the test is skipped, except
under ``CI=true``, where it fails (``scripts/services`` installs both).

``KOVA_SCREENSHOTS=<folder>`` makes :func:`screenshot` write each named page there as PNG
(``scripts/console-screenshots`` writes ``docs/console/``); otherwise into the test's folder.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("KOVA_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("KOVA_CHROMEDRIVER", "/usr/bin/chromedriver")


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).exists() or shutil.which(path)):
            return f"no {path} (Debian's chromium and chromium-driver; scripts/services)"
    return None


def start_browser() -> Any:
    """A headless Chromium session (as root it runs without its sandbox, as Chromium asks)."""
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager never reaches the network
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--disable-dev-shm-usage", "--window-size=1280,1100",
                "--disable-gpu", "--no-first-run", "--disable-extensions", "--lang=en-US"):
        options.add_argument(arg)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


@pytest.fixture
def browser() -> Iterator[Any]:
    problem = _missing()
    if problem is not None:
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(problem)
    driver = start_browser()
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any, name: str, fallback: Path) -> Path:
    """The page as ``<name>.png``, the whole page's height (see the module's doc for where)."""
    folder = Path(os.environ.get("KOVA_SCREENSHOTS") or fallback)
    folder.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(600, min(int(height) + 40, 4000)))
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1100)
    return path


def until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Poll ``predicate`` (exceptions count as not yet) until it gives something true."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # the element is being swapped, not there yet...
            last, value = exc, None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or predicate}: {last}")
