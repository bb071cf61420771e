"""Acceptance 5: a read token sees every page and no action; every action answers 403 to it.
Plus the login form, and the CSRF and origin checks of cookie-authenticated forms."""

from __future__ import annotations

import re

import httpx
from selenium.webdriver.common.by import By

from tests.dashboard.conftest import OPERATOR_TOKEN, READ_TOKEN, Site
from tests.dashboard.seed import seed

ACTION_SELECTORS = (
    "#cancel-task", "#retry-task", "#bulk-actions", "#bulk-retry", "#bulk-cancel",
    ".kind-toggle", ".limits-form", "#enqueue-form", 'a[href="/ui/enqueue"]',
)  # fmt: skip


def actions_on_page(site: Site) -> list[str]:
    return [css for css in ACTION_SELECTORS if site.driver.find_elements(By.CSS_SELECTOR, css)]


def test_read_token_sees_every_page_without_action_buttons(site: Site) -> None:
    dsn, schema = site.db.dsn, site.db.schema
    (pending,) = seed(dsn, schema, "send-email", "new", 1)
    (exhausted,) = seed(dsn, schema, "send-email", "no_attempts_left", 1)
    pages = ("/", "/ui/throughput", "/ui/tasks", f"/ui/tasks/{pending}",
             f"/ui/tasks/{exhausted}", "/ui/kinds")  # fmt: skip
    for path in pages:
        site.open(path, token=READ_TOKEN)
        assert site.text_of("#role") == "read", path
        assert actions_on_page(site) == [], path
    # The same pages show their actions to an operator (so the check above can fail).
    site.open(f"/ui/tasks/{pending}", token=OPERATOR_TOKEN)
    assert "#cancel-task" in actions_on_page(site)
    site.open("/ui/kinds", token=OPERATOR_TOKEN)
    assert ".kind-toggle" in actions_on_page(site)


def csrf_of(client: httpx.Client, path: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', client.get(path).text)
    assert match, f"no csrf field on {path}"
    return match.group(1)


def test_every_action_answers_403_to_the_read_token(site: Site) -> None:
    (task_id,) = seed(site.db.dsn, site.db.schema, "send-email", "new", 1)
    seed(site.db.dsn, site.db.schema, "send-email", "no_attempts_left", 2)
    # Dashboard forms, with the read viewer's own cookie and its valid CSRF token.
    with httpx.Client(base_url=site.url, cookies={"pgqueue_token": READ_TOKEN}) as browser:
        csrf = csrf_of(browser, "/ui/tasks")  # the logout form carries it
        posts = {
            f"/ui/tasks/{task_id}/cancel": {},
            "/ui/bulk": {"action": "retry", "kind": "send-email", "expected": "2"},
            "/ui/kinds/pause": {"kind": "send-email"},
            "/ui/kinds/resume": {"kind": "send-email"},
            "/ui/kinds/limits": {"kind": "send-email", "concurrency": "2"},
            "/ui/enqueue": {"kind": "send-email", "payload": "{}"},
        }
        for path, form in posts.items():
            response = browser.post(path, data={**form, "csrf": csrf})
            assert response.status_code == 403, (path, response.status_code)
        for path in ("/ui/enqueue", "/ui/bulk?action=retry&kind=send-email"):
            assert browser.get(path).status_code == 403, path
    # The JSON API, with the read token as a bearer header.
    with httpx.Client(base_url=site.url, headers={"authorization": f"Bearer {READ_TOKEN}"}) as api:
        for path, body in (
            (f"/tasks/{task_id}/cancel", None),
            ("/kinds/send-email/retry", {}),
            ("/kinds/send-email/pause", None),
            ("/kinds/send-email/resume", None),
            ("/enqueue", {"kind": "send-email", "payload": {}}),
        ):
            response = api.post(path, json=body)
            assert response.status_code == 403, (path, response.status_code, response.text)
    assert site.db.fetch(
        "SELECT status::text, count(*) FROM {schema}.tasks GROUP BY 1 ORDER BY 1"
    ) == [
        ("new", 1),
        ("no_attempts_left", 2),
    ]
    assert site.db.scalar("SELECT count(*) FROM {schema}.kinds WHERE paused_at IS NOT NULL") == 0


def test_operator_forms_need_the_csrf_token_and_the_same_origin(site: Site) -> None:
    (task_id,) = seed(site.db.dsn, site.db.schema, "send-email", "new", 1)
    with httpx.Client(base_url=site.url, cookies={"pgqueue_token": OPERATOR_TOKEN}) as browser:
        csrf = csrf_of(browser, f"/ui/tasks/{task_id}")
        path = f"/ui/tasks/{task_id}/cancel"
        assert browser.post(path, data={}).status_code == 403
        assert browser.post(path, data={"csrf": "0" * 64}).status_code == 403
        evil = {"origin": "http://evil.example"}
        assert browser.post(path, data={"csrf": csrf}, headers=evil).status_code == 403
        assert site.db.scalar("SELECT status::text FROM {schema}.tasks") == "new"
        same = {"origin": site.url}
        assert browser.post(path, data={"csrf": csrf}, headers=same).status_code == 303
    assert site.db.scalar("SELECT status::text FROM {schema}.tasks") == "cancelled"


def test_login_form_sets_an_httponly_cookie_and_rejects_a_bad_token(site: Site) -> None:
    site.open("/ui/kinds", token=None)
    assert "/ui/login" in site.driver.current_url
    site.driver.find_element(By.ID, "login-token").send_keys("not-a-valid-token")
    site.click_to_new_page("#login-submit")
    assert "not valid" in site.text_of("#login-error")
    site.driver.find_element(By.ID, "login-token").send_keys(READ_TOKEN)
    site.click_to_new_page("#login-submit")
    assert site.driver.current_url.endswith("/ui/kinds")
    assert site.text_of("#role") == "read"
    cookie = site.driver.get_cookie("pgqueue_token")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert site.driver.execute_script("return document.cookie") == ""  # not readable by script
    # Without any token nothing is shown.
    assert httpx.get(site.url + "/ui/tasks").status_code == 303
    assert httpx.get(site.url + "/ui/overview", headers={"hx-request": "true"}).status_code == 401
