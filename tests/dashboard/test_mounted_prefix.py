"""The dashboard mounted under ``/pgqueue`` of the FastAPI example app: every link, asset,
live refresh, form and redirect stays under the prefix, in a real browser."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from example.fastapi_app.app import build_app
from pgqueue import Task
from pgqueue.http import HttpSettings
from tests.conftest import Database
from tests.dashboard.conftest import (
    OPERATOR_TOKEN,
    READ_TOKEN,
    Site,
    UvicornThread,
    make_queue,
)

PREFIX = "/pgqueue"


@pytest.fixture
def mounted(db: Database, driver: Any) -> Iterator[Site]:
    """The example app (its own lifespan, workers and endpoints) with the dashboard at
    ``/pgqueue``; ``Site.url`` is the dashboard's root under the prefix."""
    settings = HttpSettings(
        dsn=db.dsn, schema=db.schema, api_token=OPERATOR_TOKEN, read_token=READ_TOKEN
    )
    queue = make_queue(db)
    try:
        with UvicornThread(
            lambda: build_app(db.dsn, schema=db.schema, app_schema=db.schema, settings=settings)
        ) as server:
            driver.get_log("browser")  # one browser for every test: drop what earlier ones logged
            yield Site(server.url + PREFIX, queue, db, driver)
    finally:
        driver.delete_all_cookies()
        queue.close()


def under_prefix(site: Site) -> bool:
    return str(site.driver.current_url).startswith(site.url + "/")


def styled_and_scripted(site: Site) -> bool:
    """The page's stylesheet applied and htmx loaded (both are served from the prefix)."""
    return bool(
        site.driver.execute_script(
            "return document.styleSheets.length > 0"
            " && document.styleSheets[0].cssRules.length > 0"
            " && typeof window.htmx === 'object'"
        )
    )


def console_errors(site: Site) -> list[str]:
    """Errors the pages logged: a resource that did not load, a script that failed. The
    browser's own request for the host's ``/favicon.ico`` is the host app's business."""
    return [
        e["message"]
        for e in site.driver.get_log("browser")
        if e["level"] == "SEVERE" and "/favicon.ico " not in e["message"]
    ]


def count_on_page(site: Site, kind: str, status: str) -> str:
    return site.text_of(f'text.state-count[data-kind="{kind}"][data-status="{status}"]')


def test_the_dashboard_works_under_the_prefix(mounted: Site) -> None:
    site = mounted
    site.queue.push_task(Task("send-email", {"to": "ada@example.com"}))
    site.open("/")  # the one-time token link, then the overview
    assert site.driver.current_url == site.url + "/"
    assert styled_and_scripted(site)
    assert count_on_page(site, "send-email", "new") == "1"
    # The live refresh (htmx, every second) goes through the prefix too.
    site.driver.execute_script("window.__sameDocument = 'yes';")
    task_id = site.queue.push_task(Task("send-email", {"to": "grace@example.com"}))
    site.wait(lambda _: count_on_page(site, "send-email", "new") == "2", timeout=5.0)
    assert site.driver.execute_script("return window.__sameDocument") == "yes"

    site.click_to_new_page('nav a[href$="/ui/tasks"]')
    assert site.driver.current_url == site.url + "/ui/tasks"
    assert styled_and_scripted(site)
    site.click_to_new_page(f'a[href$="/ui/tasks/{task_id}"]')
    assert site.driver.current_url == f"{site.url}/ui/tasks/{task_id}"
    site.click_to_new_page("#cancel-task")  # a form post, then its redirect
    assert site.driver.current_url == f"{site.url}/ui/tasks/{task_id}"
    assert site.text_of("#task-status") == "cancelled"

    site.click_to_new_page('nav a[href$="/ui/throughput"]')
    assert under_prefix(site)
    # The charts' data is fetched from the URL the page names: drawn only if it answered.
    site.wait(lambda d: d.execute_script("return document.getElementById('charts').dataset.drawn"))
    assert console_errors(site) == []


def test_logging_in_under_the_prefix_returns_to_the_page_asked_for(mounted: Site) -> None:
    site = mounted
    site.open("/ui/kinds", token=None)
    assert site.driver.current_url.startswith(site.url + "/ui/login")
    site.driver.find_element(By.ID, "login-token").send_keys(READ_TOKEN)
    site.click_to_new_page("#login-submit")
    assert site.driver.current_url == site.url + "/ui/kinds"
    assert site.text_of("#role") == "read"
    assert styled_and_scripted(site)
    site.click_to_new_page("form[action$='/ui/logout'] button")
    assert site.driver.current_url.startswith(site.url + "/ui/login")
    assert console_errors(site) == []
