"""Headless Chromium for the page tests: Debian's browser (``apt-get install chromium``, which
``.ci/run`` does) driven by Playwright's Python package; no browser is downloaded."""

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("ANOMALY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def screenshot_dir(tmp_path: Path) -> Path:
    """Where the tests' screenshots go: ``ANOMALY_SCREENSHOTS`` (e.g. docs/img for the README), else a temp folder."""
    out = Path(os.environ.get("ANOMALY_SCREENSHOTS") or tmp_path / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


@contextmanager
def chromium(width: int = 1400, height: int = 900):
    """A page of a fresh headless Chromium."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's package (apt-get install -y chromium; "
                    ".ci/run does it) or set ANOMALY_CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()
