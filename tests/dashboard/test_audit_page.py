"""The audit page in Chromium: an action taken in the dashboard appears with its source and
actor, and task content in an entry's detail is shown as text and never runs."""

from __future__ import annotations

from selenium.webdriver.common.by import By

from pgqueue import Task
from tests.dashboard.conftest import KINDS, Site
from tests.dashboard.test_xss import IMG, SCRIPT, assert_inert


def test_a_dashboard_action_shows_on_the_audit_page_and_task_content_stays_inert(
    site: Site,
) -> None:
    kind = KINDS[0]
    key = SCRIPT + IMG
    site.queue.push_tasks([Task(kind, external_key=key)])
    assert site.queue.cancel_task_by_key(kind, key)  # from Python: the key lands in the detail

    site.open("/ui/kinds")
    site.click_to_new_page(f'tr[data-kind="{kind}"] button.kind-toggle')
    site.click_to_new_page('nav a[href="/ui/audit"]')
    rows = site.driver.find_elements(By.CSS_SELECTOR, "#audit-table tbody tr")
    newest, older = rows[0], rows[1]
    assert newest.find_element(By.CSS_SELECTOR, ".action").text == "pause_kind"
    assert newest.find_element(By.CSS_SELECTOR, ".source").text == "dashboard"
    assert newest.find_element(By.CSS_SELECTOR, ".actor").text == "operator"
    assert older.find_element(By.CSS_SELECTOR, ".action").text == "cancel_task"
    assert older.find_element(By.CSS_SELECTOR, ".source").text == "python"
    assert_inert(site, SCRIPT)  # the key is shown in the entry's detail, as text
    assert SCRIPT in older.find_element(By.CSS_SELECTOR, ".detail").text

    site.open("/ui/audit?source=dashboard")
    assert len(site.driver.find_elements(By.CSS_SELECTOR, "#audit-table tbody tr")) == 1
