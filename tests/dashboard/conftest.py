"""Browser tests of the dashboard: a real uvicorn on a free loopback port, a real headless
Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by Selenium.

Every test here carries the ``browser`` marker: the plain suite runs skip them and
``make test-browser`` runs them once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from pgqueue import AsyncQueue, KindOptions, Queue
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


def start_chromium(profile: str, width: int = 1280, height: int = 900) -> Any:
    """Debian's Chromium, headless, through its chromedriver; ``profile`` is a scratch dir."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

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
        "--hide-scrollbars",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(30)
    return browser


@pytest.fixture(scope="session")
def driver() -> Iterator[Any]:
    """One headless Chromium for the whole test run; each test starts with no cookies."""
    _require_browser()
    profile = tempfile.mkdtemp(prefix="pgqueue-chromium-")
    browser = start_chromium(profile)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


class UvicornThread:
    """A real uvicorn serving the app on a free loopback port, on its own loop and thread.

    ``build`` makes the app inside that loop (the AsyncQueue's pool belongs to it); the queue
    is closed there after the server stops.
    """

    def __init__(
        self, build: Callable[[], tuple[Any, AsyncQueue]], *, start_workers: bool = False
    ) -> None:
        self.build = build
        self.start_workers = start_workers
        self.port = 0  # uvicorn binds a free port itself; read back once it listens
        self.server: Any = None
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    async def _serve(self) -> None:
        import uvicorn

        app, queue = self.build()
        if self.start_workers:
            await queue.start()
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        serving = asyncio.create_task(self.server.serve())
        while not self.server.started and not serving.done():
            await asyncio.sleep(0.01)  # uvicorn exposes its readiness as a flag only
        if self.server.started:
            self.port = int(self.server.servers[0].sockets[0].getsockname()[1])
        self.ready.set()
        try:
            await serving
        finally:
            await queue.close()

    def __enter__(self) -> UvicornThread:
        self.thread.start()
        assert self.ready.wait(30), "uvicorn did not start"
        if self.error is not None:
            raise self.error
        assert self.server.started, "uvicorn did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


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

    def click_to_new_page(self, css: str) -> None:
        """Click what ``css`` finds and wait until the next document has loaded.

        A flag set on the current window disappears with it, so the wait cannot be satisfied
        by the old page (a changed URL alone can be seen before the new document is there).
        """
        from selenium.webdriver.common.by import By

        self.driver.execute_script("window.__previousPage = true;")
        self.driver.find_element(By.CSS_SELECTOR, css).click()
        self.wait(
            lambda d: d.execute_script(
                "return window.__previousPage === undefined && document.readyState === 'complete'"
            )
        )

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


def build_app(
    dsn: str, schema: str, setup: Callable[[AsyncQueue], None] | None = None
) -> tuple[Any, AsyncQueue]:
    """The service's own app (REST API and dashboard) with a read and an operator token.

    Without ``setup`` the queue declares the test kinds; ``setup`` may register handlers.
    """
    from pgqueue.http import create_app
    from pgqueue.http.settings import HttpSettings

    queue = AsyncQueue(dsn, schema=schema)
    if setup is None:
        for kind in KINDS:
            queue.declare_kind(kind, KindOptions(attempt_timeout=30.0, max_attempts=3))
    else:
        setup(queue)
    settings = HttpSettings(dsn=dsn, schema=schema, api_token=OPERATOR_TOKEN, read_token=READ_TOKEN)
    return create_app(queue, settings), queue


@pytest.fixture
def site(db: Database, driver: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    """The service app (API and dashboard) over a fresh schema, served by uvicorn; the test
    pushes and reads through its own blocking queue, as another process would."""
    queue = make_queue(db)
    try:
        with UvicornThread(lambda: build_app(db.dsn, db.schema)) as server:
            yield Site(server.url, queue, db, driver)
    finally:
        driver.delete_all_cookies()
        queue.close()
