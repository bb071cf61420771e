"""Acceptance 3: cancel from the detail page; bulk retry of 1,000 exhausted tasks with the count
shown before confirming. Plus the pause/resume and enqueue forms."""

from __future__ import annotations

from selenium.webdriver.common.by import By

from pgqueue import Task
from tests.dashboard.conftest import Site
from tests.dashboard.seed import seed


def click(site: Site, element_id: str) -> None:
    site.click_to_new_page(f"#{element_id}")


def test_cancel_from_the_detail_page(site: Site) -> None:
    task_id = site.queue.push_task(Task("send-email", {"to": "grace@example.com"}))
    site.open(f"/ui/tasks/{task_id}")
    assert site.text_of("#task-status") == "new"
    click(site, "cancel-task")
    assert site.text_of("#task-status") == "cancelled"
    assert site.db.scalar("SELECT status::text FROM {schema}.tasks WHERE id = %s", [task_id]) == (
        "cancelled"
    )
    assert site.driver.find_elements(By.ID, "cancel-task") == []  # nothing left to cancel


def test_retry_from_the_detail_page(site: Site) -> None:
    [task_id] = seed(site.db.dsn, site.db.schema, "send-email", "no_attempts_left", 1)
    site.open(f"/ui/tasks/{task_id}")
    assert site.text_of("#task-status") == "no_attempts_left"
    click(site, "retry-task")
    assert site.text_of("#task-status") == "must_retry"
    row = site.db.fetch(
        "SELECT status::text, attempts_left, finished_at IS NULL FROM {schema}.tasks WHERE id = %s",
        [task_id],
    )
    max_attempts = site.queue.registry.get("send-email").options.max_attempts
    assert row == [("must_retry", max_attempts, True)]  # the kind's full allowance again
    assert site.driver.find_elements(By.ID, "retry-task") == []  # waiting: nothing to retry


def test_bulk_retry_of_a_thousand_exhausted_tasks_shows_the_count_first(site: Site) -> None:
    dsn, schema = site.db.dsn, site.db.schema
    exhausted = seed(dsn, schema, "send-email", "no_attempts_left", 1000)
    seed(dsn, schema, "resize-image", "no_attempts_left", 5)  # another kind: untouched
    site.open("/ui/tasks?kind=send-email&status=no_attempts_left")
    click(site, "bulk-retry")
    assert site.text_of("#bulk-count") == "1000"
    assert "1000" in site.text_of("#bulk-confirm")
    # Nothing changed before the confirmation.
    assert (
        site.db.scalar("SELECT count(*) FROM {schema}.tasks WHERE status = 'no_attempts_left'")
        == 1005
    )
    click(site, "bulk-confirm")
    assert "1000" in site.text_of("#bulk-done")
    rows = site.db.fetch(
        "SELECT status::text, count(*) FROM {schema}.tasks WHERE id = ANY(%s) GROUP BY 1",
        [exhausted],
    )
    assert rows == [("must_retry", 1000)]
    assert (
        site.db.scalar(
            "SELECT count(*) FROM {schema}.tasks WHERE kind = 'resize-image'"
            " AND status = 'no_attempts_left'"
        )
        == 5
    )


def test_bulk_cancel_of_pending_tasks_on_a_key_filter(site: Site) -> None:
    dsn, schema = site.db.dsn, site.db.schema
    doomed = seed(dsn, schema, "send-email", "new", 30, key="promo:")
    doomed += seed(dsn, schema, "send-email", "must_retry", 12, key="promo:r")
    kept = seed(dsn, schema, "send-email", "new", 8, key="welcome:")
    site.open("/ui/tasks?kind=send-email&key_prefix=promo%3A")
    click(site, "bulk-cancel")
    assert site.text_of("#bulk-count") == "42"
    click(site, "bulk-confirm")
    statuses = dict(site.db.fetch("SELECT id, status::text FROM {schema}.tasks"))
    assert {statuses[i] for i in doomed} == {"cancelled"}
    assert {statuses[i] for i in kept} == {"new"}


def test_pause_and_resume_a_kind(site: Site) -> None:
    seed(site.db.dsn, site.db.schema, "send-email", "new", 1)
    site.open("/ui/kinds")
    row = 'tr[data-kind="send-email"]'
    site.click_to_new_page(f"{row} .kind-toggle")
    assert "paused" in site.text_of(row)
    assert site.db.scalar(
        "SELECT paused_at IS NOT NULL FROM {schema}.kinds WHERE kind = 'send-email'"
    )
    site.click_to_new_page(f"{row} .kind-toggle")
    assert "running" in site.text_of(row)
    assert site.db.scalar("SELECT paused_at IS NULL FROM {schema}.kinds WHERE kind = 'send-email'")


def test_limit_a_kind_and_clear_it(site: Site) -> None:
    seed(site.db.dsn, site.db.schema, "send-email", "new", 1)
    site.open("/ui/kinds")
    row = 'tr[data-kind="send-email"]'
    site.driver.find_element(By.CSS_SELECTOR, f'{row} input[name="rate"]').send_keys("10/s")
    site.driver.find_element(By.CSS_SELECTOR, f'{row} input[name="concurrency"]').send_keys("3")
    site.click_to_new_page(f'{row} button[value="set"]')
    assert "rate 10/s*, max 3*" in site.text_of(f"{row} .limits")
    assert site.db.fetch(
        "SELECT rate, global_concurrency FROM {schema}.kind_limits WHERE kind = 'send-email'"
    ) == [(10.0, 3)]
    site.click_to_new_page(f'{row} button[value="clear"]')
    assert "none" in site.text_of(f"{row} .limits")
    actors = site.db.fetch("SELECT actor FROM {schema}.limit_changes ORDER BY id")
    assert actors == [("dashboard",), ("dashboard",)]


def test_enqueue_form(site: Site) -> None:
    site.open("/ui/enqueue")
    site.driver.find_element(By.ID, "enqueue-kind").send_keys("send-email")
    site.driver.find_element(By.ID, "enqueue-payload").send_keys('{"to": "linus@example.com"}')
    site.driver.find_element(By.ID, "enqueue-key").send_keys("welcome:linus")
    click(site, "enqueue-submit")
    assert site.text_of("#task-key") == "welcome:linus"
    assert site.db.fetch("SELECT kind, payload->>'to' FROM {schema}.tasks") == [
        ("send-email", "linus@example.com")
    ]
    # The same key again: refused with a message, nothing written.
    site.open("/ui/enqueue")
    site.driver.find_element(By.ID, "enqueue-kind").send_keys("send-email")
    site.driver.find_element(By.ID, "enqueue-key").send_keys("welcome:linus")
    click(site, "enqueue-submit")
    assert "already exists" in site.text_of("#enqueue-error")
    assert site.db.scalar("SELECT count(*) FROM {schema}.tasks") == 1
