"""Browser tests of the dashboard: a real uvicorn on a free loopback port, a real headless
Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by Selenium.

Every test here carries the ``browser`` marker: the plain suite runs skip them and
``make test-browser`` runs them once.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from pgqueue import KindOptions, Queue
from tests.conftest import Database

CHROMIUM = os.environ.get("PGQUEUE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PGQUEUE_CHROMEDRIVER", "/usr/bin/chromedriver")
READ_TOKEN = "read-token-for-tests"
OPERATOR_TOKEN = "operator-token-for-tests"
KINDS = ("send-email", "resize-image")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/dashboard/" in item.nodeid.replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)


def _require_browser() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if not missing:
        return
    message = (
        f"{', '.join(missing)} not found: install Debian's chromium and chromium-driver "
        "(.ci/run does so when they are missing)"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message + " (CI is unset, so this run skips)")


@pytest.fixture(scope="session")
def driver() -> Iterator[Any]:
    """One headless Chromium for the session; each test starts from a clean cookie jar."""
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="pgqueue-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(30)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class UvicornThread:
    """A real uvicorn serving ``app`` on a free loopback port, in a thread of this process."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> UvicornThread:
        self.thread.start()
        ready = threading.Event()

        def started() -> bool:
            return bool(self.server.started) or not self.thread.is_alive()

        # uvicorn exposes no event for "listening"; poll its flag on a short condition wait.
        while not started():
            ready.wait(0.02)
        assert self.server.started, "uvicorn did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@dataclass
class Site:
    """A dashboard under test: its URL, the queue behind it and the test database."""

    url: str
    queue: Queue
    db: Database
    driver: Any

    def open(self, path: str, token: str | None = OPERATOR_TOKEN) -> None:
        """Load ``path``; with ``token``, log in through the one-time ``?token=`` link."""
        self.driver.delete_all_cookies()
        if token is not None:
            sep = "&" if "?" in path else "?"
            self.driver.get(f"{self.url}{path}{sep}token={token}")
        else:
            self.driver.get(f"{self.url}{path}")

    def wait(self, condition: Callable[[Any], Any], timeout: float = 10.0) -> Any:
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(condition)

    def text_of(self, css: str) -> str:
        """The element's text, read in one script call (live swaps cannot make it stale)."""
        text = self.driver.execute_script(
            "const el = document.querySelector(arguments[0]);"
            "return el === null ? null : el.textContent;",
            css,
        )
        assert text is not None, f"no element matches {css}"
        return str(text).strip()


def make_queue(db: Database) -> Queue:
    queue = Queue(db.dsn, schema=db.schema)
    for kind in KINDS:
        queue.declare_kind(kind, KindOptions(attempt_timeout=30.0, max_attempts=3))
    return queue


def build_app(queue: Queue, db: Database) -> Any:
    from fastapi import FastAPI

    from pgqueue.http.dashboard import mount

    app = FastAPI()
    roles = {READ_TOKEN: "read", OPERATOR_TOKEN: "operator"}
    mount(app, queue, None, resolve_role=lambda token: roles.get(token or ""))  # type: ignore
    return app


@pytest.fixture
def site(db: Database, driver: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    """The service app (API and dashboard) over a fresh schema, served by uvicorn."""
    queue = make_queue(db)
    app = build_app(queue, db)
    try:
        with UvicornThread(app) as server:
            yield Site(server.url, queue, db, driver)
    finally:
        driver.delete_all_cookies()
        queue.close()
