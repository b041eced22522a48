"""Headless Chromium for the dashboard's tests: Debian's ``chromium`` and ``chromium-driver`` (installed by
scripts/setup.sh) driven by selenium, never a downloaded browser. Skips the test where they are missing."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest

T = TypeVar("T")
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@contextmanager
def headless_chromium(width: int = 1500, height: int = 1000) -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip("chromium and chromium-driver are not installed (scripts/setup.sh installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # with both paths given, selenium fetches nothing
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-extensions"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # --disable-dev-shm-usage puts Chromium's shared memory files under TMPDIR, and it leaves them behind
    # (/tmp/org.chromium.Chromium.*): a scratch TMPDIR of the test's own is removed with everything in it.
    scratch = tempfile.mkdtemp(prefix="edgectl-chromium-")
    try:
        service = Service(CHROMEDRIVER, env={**os.environ, "TMPDIR": scratch})
        driver = webdriver.Chrome(options=options, service=service)
        try:
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def poll(check: Callable[[], T], timeout: float, interval: float = 0.01, what: str = "condition") -> tuple[T, float]:
    """``check()``'s first truthy value and the seconds it took; AssertionError with ``what`` at the timeout."""
    started = time.monotonic()
    while True:
        value = check()
        if value:
            return value, time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


def attribute_values(driver: Any, selector: str, attribute: str) -> set[str]:
    """One round trip: the ``attribute`` of every element ``selector`` matches."""
    values = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((e) => e.getAttribute(arguments[1]))",
        selector,
        attribute,
    )
    return {str(v) for v in values}


def attribute_of(driver: Any, selector: str, attribute: str) -> str | None:
    """The ``attribute`` of the first element ``selector`` matches, read in the page in one step (the page
    redraws its elements: a reference found earlier may be gone by the time it is read)."""
    value = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e && e.getAttribute(arguments[1])",
        selector,
        attribute,
    )
    return None if value is None else str(value)


def page_errors(driver: Any) -> list[str]:
    """The page's script errors (a missing optional route's 404 is not one)."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]
    ]
