"""A real browser for the web UI tests: Debian's chromium (installed by `.ci/run`) driven by
Playwright for Python. Playwright's own browser download is not used (nor reachable): the
installed binary is launched with `executable_path`.

In CI (CI=true) a missing chromium or Playwright fails the tests; elsewhere they are skipped with
a message saying what to install."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def _missing(message: str) -> None:
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{message} (CI=true: the browser tests must run, not skip)")
    pytest.skip(f"{message}; install it to run the browser tests")


def chromium_path() -> str | None:
    found = next((c for c in CANDIDATES if Path(c).exists()), None)
    return found or shutil.which("chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One chromium per test module. Not per session: Playwright's sync API keeps an asyncio loop
    running in the main thread while it is open, which would break later tests' `asyncio.run`."""
    executable = chromium_path()
    if executable is None:
        _missing("chromium is not installed (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright Python package is not installed (pip install playwright)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()
