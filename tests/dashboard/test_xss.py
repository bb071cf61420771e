"""Acceptance 4: untrusted task content is shown as text and never runs."""

from __future__ import annotations

import httpx
from selenium.webdriver.common.by import By

from tests.dashboard.conftest import OPERATOR_TOKEN, Site
from tests.dashboard.seed import seed

SCRIPT = "<script>window.__pwned=1</script>"
IMG = '<img src=x onerror="window.__pwned=1">'
JS_URL = "javascript:window.__pwned=1"
EVIL_KIND = '<img src=x onerror="window.__pwned=1">'


def assert_inert(site: Site, *texts: str) -> None:
    driver = site.driver
    assert driver.execute_script("return typeof window.__pwned") == "undefined"
    page_text = driver.find_element(By.TAG_NAME, "body").text
    for text in texts:
        assert text in page_text, f"{text!r} is not shown as text"
    assert driver.find_elements(By.CSS_SELECTOR, "main img, main script") == []
    hrefs = [a.get_attribute("href") or "" for a in driver.find_elements(By.TAG_NAME, "a")]
    assert not [h for h in hrefs if h.lower().startswith("javascript:")]


def test_payload_key_error_and_kind_render_as_text_and_no_script_runs(site: Site) -> None:
    dsn, schema = site.db.dsn, site.db.schema
    evil_payload = {"html": SCRIPT, "img": IMG, "link": JS_URL}
    (task_id,) = seed(
        dsn, schema, "send-email", "no_attempts_left", 1,
        payload=evil_payload, key=SCRIPT + IMG, messages=[f"ValueError: {SCRIPT}", IMG, JS_URL],
    )  # fmt: skip
    seed(dsn, schema, EVIL_KIND, "new", 2, key=JS_URL)

    site.open(f"/ui/tasks/{task_id}")
    assert_inert(site, SCRIPT, IMG, JS_URL)
    assert site.text_of("#task-key") == SCRIPT + IMG
    assert SCRIPT in site.text_of("#task-errors")

    for path in ("/", "/ui/tasks", "/ui/kinds", "/ui/throughput"):
        site.open(path)
        assert_inert(site, EVIL_KIND)
    site.open("/ui/enqueue")  # the kind is only an <option> of the kind field there
    assert_inert(site)
    site.open("/ui/tasks?key_prefix=" + httpx.QueryParams({"k": SCRIPT}).get("k", ""))
    assert_inert(site)
    # The overview's live refresh swaps in the same escaped content: still nothing runs.
    site.open("/")
    stamp = site.text_of(".updated")
    site.wait(lambda _: site.text_of(".updated") != stamp, timeout=5)
    assert_inert(site, EVIL_KIND)
    # And no Content-Security-Policy violation was even attempted.
    logs = site.driver.get_log("browser")
    assert not [entry for entry in logs if "Content Security Policy" in entry["message"]], logs


def test_every_page_forbids_inline_script(site: Site) -> None:
    headers = {"authorization": f"Bearer {OPERATOR_TOKEN}"}
    for path in ("/", "/ui/overview", "/ui/tasks", "/ui/kinds", "/ui/throughput", "/ui/login"):
        response = httpx.get(site.url + path, headers=headers)
        assert response.status_code == 200, path
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy, path
        assert "<script>" not in response.text  # only <script src=...> of our own files


def test_workflow_node_names_render_as_text(site: Site) -> None:
    from pgqueue import Task, Workflow

    wf = Workflow()
    first = wf.add(SCRIPT, Task("send-email", {"html": SCRIPT}))
    wf.add(IMG, Task("send-email"), after=[first])
    ids = site.queue.push_workflow(wf)
    site.open(f"/ui/workflows/{ids.workflow_id}")
    assert_inert(site, SCRIPT, IMG)
    titles = site.driver.execute_script(
        "return Array.from(document.querySelectorAll('#workflow-graph title'),"
        " (t) => t.textContent);"
    )
    assert any(SCRIPT in t for t in titles) and any(IMG in t for t in titles)
    site.open(f"/ui/tasks/{ids[IMG]}")
    assert_inert(site, SCRIPT, IMG)
