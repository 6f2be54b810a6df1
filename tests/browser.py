"""A real browser for tests: Debian's headless Chromium, driven by Playwright.

`make test` installs the `chromium` package (``make browser``); Playwright's own browser
downloads are not used (no network), only its driver.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def chromium(playwright: Any) -> Iterator[Any]:
    """Headless Chromium from the system's package; fails, saying how to install it, if absent."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "no chromium on PATH: `make browser` installs Debian's package"
    browser = playwright.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox"])
    try:
        yield browser
    finally:
        browser.close()
