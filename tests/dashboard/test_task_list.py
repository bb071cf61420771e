"""Acceptance 2: filters return the right rows; the cursor pagination reaches every row exactly
once while new tasks keep arriving."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from pgqueue import Task
from tests.dashboard.conftest import Site
from tests.dashboard.seed import seed


def ids_on_page(site: Site) -> list[int]:
    ids = site.driver.execute_script(
        "return Array.from(document.querySelectorAll('#task-table tbody tr[data-task-id]'),"
        " (row) => Number(row.dataset.taskId));"
    )
    return [int(i) for i in ids]


def test_filter_by_kind_status_and_payload_containment(site: Site) -> None:
    dsn, schema = site.db.dsn, site.db.schema
    wanted = seed(dsn, schema, "send-email", "new", 4, payload={"user": 42, "lang": "en"})
    seed(dsn, schema, "send-email", "new", 3, payload={"user": 7, "lang": "en"})
    seed(dsn, schema, "send-email", "must_retry", 2, payload={"user": 42, "lang": "en"})
    seed(dsn, schema, "resize-image", "new", 2, payload={"user": 42, "lang": "en"})
    wanted += seed(dsn, schema, "send-email", "new", 1, payload={"user": 42, "x": [1]})

    site.open("/ui/tasks")
    Select(site.driver.find_element(By.ID, "filter-kind")).select_by_value("send-email")
    Select(site.driver.find_element(By.ID, "filter-status")).select_by_value("new")
    site.driver.find_element(By.ID, "filter-payload").send_keys('{"user": 42}')
    site.click_to_new_page("#filter-apply")
    assert "payload=" in site.driver.current_url

    assert sorted(ids_on_page(site)) == sorted(wanted)
    assert set(site.text_of("#task-table tbody").split()) >= {"send-email", "new"}
    assert "resize-image" not in site.text_of("#task-table tbody")


def test_filter_by_key_prefix(site: Site) -> None:
    dsn, schema = site.db.dsn, site.db.schema
    wanted = seed(dsn, schema, "send-email", "new", 3, key="welcome:")
    seed(dsn, schema, "send-email", "new", 3, key="reset:")
    site.open("/ui/tasks?key_prefix=welcome%3A")
    assert sorted(ids_on_page(site)) == sorted(wanted)


def test_pagination_reaches_every_row_once_while_tasks_are_inserted(site: Site) -> None:
    dsn, schema = site.db.dsn, site.db.schema
    existing = seed(dsn, schema, "send-email", "new", 175)
    seed(dsn, schema, "resize-image", "new", 20)  # filtered out
    site.open("/ui/tasks?kind=send-email&status=new")
    seen: list[int] = []
    pages = 0
    while True:
        seen += ids_on_page(site)
        pages += 1
        # Newer tasks arrive between every two pages.
        site.queue.push_tasks([Task("send-email", {"late": pages}) for _ in range(7)])
        older = site.driver.find_elements(By.ID, "next-page")
        if not older:
            break
        site.click_to_new_page("#next-page")
    assert pages == 4  # 50 per page
    assert len(seen) == len(set(seen)), "a row was shown twice"
    assert set(seen) == set(existing)
    assert seen == sorted(seen, reverse=True)  # newest first, in one order across pages
