"""Acceptance 1: the overview shows the seeded counts on the status model and follows a push
live, without reloading the page."""

from __future__ import annotations

from pgqueue import Task
from tests.dashboard.conftest import Site
from tests.dashboard.seed import seed

SEEDED = {
    "send-email": {
        "new": 3,
        "must_retry": 2,
        "processing": 1,
        "no_attempts_left": 4,
        "cancelled": 6,
        "succeeded": 5,
        "blocked": 2,
    },
    "resize-image": {"new": 7, "succeeded": 2},
}


def count_on_page(site: Site, kind: str, status: str) -> str:
    return site.text_of(f'text.state-count[data-kind="{kind}"][data-status="{status}"]')


def test_overview_shows_seeded_counts_on_the_status_model(site: Site) -> None:
    for kind, counts in SEEDED.items():
        for status, count in counts.items():
            seed(site.db.dsn, site.db.schema, kind, status, count)
    site.open("/")
    for kind, counts in SEEDED.items():
        for status in ("new", "must_retry", "processing", "no_attempts_left", "cancelled",
                       "succeeded", "blocked"):  # fmt: skip
            assert count_on_page(site, kind, status) == str(counts.get(status, 0)), (kind, status)


def test_a_push_from_outside_shows_up_within_three_seconds_without_a_reload(site: Site) -> None:
    seed(site.db.dsn, site.db.schema, "send-email", "new", 3)
    site.open("/")
    assert count_on_page(site, "send-email", "new") == "3"
    # A full reload would drop this flag; the live update must keep it.
    site.driver.execute_script("window.__sameDocument = 'yes';")
    site.queue.push_task(Task("send-email", {"to": "ada@example.com"}))
    site.wait(lambda _: count_on_page(site, "send-email", "new") == "4", timeout=3.0)
    assert site.driver.execute_script("return window.__sameDocument") == "yes"
