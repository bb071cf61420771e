"""Acceptance 11: the workflow page draws the graph, nodes coloured by status, each a link to
its task page; the task page links back to its workflow."""

from __future__ import annotations

from typing import Any

from selenium.webdriver.common.by import By

from pgqueue import Envelope, KindOptions, Queue, Task, Workflow
from pgqueue.testing import drain
from tests.dashboard.conftest import Site

FILL = {  # the stylesheet's status colours, as computed styles report them
    "succeeded": "rgb(22, 163, 74)",
    "no_attempts_left": "rgb(220, 38, 38)",
    "cancelled": "rgb(107, 114, 128)",
    "new": "rgb(59, 130, 246)",
    "blocked": "rgb(148, 163, 184)",
}


def run_some(site: Site) -> dict[str, int]:
    """A workflow with nodes in five statuses, ended by real attempts."""

    def mail(envelope: Envelope) -> Any:
        if envelope.payload == "fail":
            raise RuntimeError("card declined")
        return {"sent": envelope.node}

    wf = Workflow()
    charge = wf.add("charge", Task("send-email", "fail"))
    refund = wf.add("refund-check", Task("send-email"), after=[charge])
    wf.add("notify", Task("send-email"), after=[refund])
    stock = wf.add("stock", Task("send-email"))
    pack = wf.add("pack", Task("resize-image"), after=[stock])
    wf.add("report", Task("resize-image"), after=[charge, pack], when="all_ended")
    with Queue(site.db.dsn, schema=site.db.schema) as worker:
        worker.register_kind("send-email", mail, KindOptions(attempt_timeout=5, max_attempts=1))
        worker.declare_kind("resize-image", KindOptions(attempt_timeout=5, max_attempts=1))
        ids = worker.push_workflow(wf)
        drain(worker, "send-email")
    return ids


def fills(site: Site) -> dict[int, tuple[str, str]]:
    rows = site.driver.execute_script(
        "return Array.from(document.querySelectorAll('#workflow-graph a.wf-node'), (a) =>"
        " [Number(a.dataset.taskId), a.dataset.status,"
        "  getComputedStyle(a.querySelector('rect')).fill]);"
    )
    return {int(r[0]): (str(r[1]), str(r[2])) for r in rows}


def test_the_workflow_graph_colours_nodes_by_status_and_links_to_tasks(site: Site) -> None:
    ids = run_some(site)
    site.open(f"/ui/workflows/{ids.workflow_id}")
    drawn = fills(site)
    expected = {
        "charge": "no_attempts_left", "refund-check": "cancelled", "notify": "cancelled",
        "stock": "succeeded", "pack": "new", "report": "blocked",
    }  # fmt: skip
    assert {tid: status for tid, (status, _) in drawn.items()} == {
        ids[name]: status for name, status in expected.items()
    }
    for _, (status, fill) in drawn.items():
        assert fill == FILL[status], (status, fill)
    edges = site.driver.find_elements(By.CSS_SELECTOR, "#workflow-graph path.wf-edge")
    assert len(edges) == 5
    # Columns by depth: a child is drawn right of each of its parents.
    x = site.driver.execute_script(
        "return Object.fromEntries(Array.from(document.querySelectorAll("
        "'#workflow-graph a.wf-node'), (a) => [a.dataset.taskId,"
        " Number(a.querySelector('rect').getAttribute('x'))]));"
    )
    assert x[str(ids["charge"])] < x[str(ids["refund-check"])] < x[str(ids["notify"])]
    assert x[str(ids["pack"])] < x[str(ids["report"])]
    site.click_to_new_page(f'#workflow-graph a.wf-node[data-task-id="{ids["pack"]}"]')
    assert site.driver.current_url.endswith(f"/ui/tasks/{ids['pack']}")
    assert site.text_of("#task-node") == "pack"
    assert "stock" in site.text_of("#task-parents")
    assert "report" in site.text_of("#task-children")
    site.click_to_new_page("#workflow-link")
    assert site.driver.current_url.endswith(f"/ui/workflows/{ids.workflow_id}")
    assert site.text_of("#workflow-id") == ids.workflow_id
