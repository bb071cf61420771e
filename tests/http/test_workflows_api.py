"""``GET /workflows/{id}``, the workflow fields of a task, and the dashboard's workflow page
and task page links (read from the running service)."""

from __future__ import annotations

import re

from pgqueue import KindOptions, Queue, Task, Workflow
from pgqueue.store.operations import WorkflowIds
from tests.conftest import Database
from tests.http.conftest import Server


def push(db: Database) -> WorkflowIds:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("email", KindOptions(attempt_timeout=30))
        wf = Workflow()
        a = wf.add("charge", Task("email", {"n": 1}))
        b = wf.add("ship", Task("email"), after=[a])
        c = wf.add("mail", Task("email"), after=[a])
        wf.add("report", Task("email"), after=[b, c], when="all_ended")
        return queue.push_workflow(wf)


def test_get_workflow(server: Server, module_db: Database) -> None:
    ids = push(module_db)
    body = server.client.get(f"/workflows/{ids.workflow_id}").json()
    assert body["id"] == ids.workflow_id
    assert body["counts"] == {"new": 1, "blocked": 3}
    nodes = {n["node"]: n for n in body["nodes"]}
    assert set(nodes) == {"charge", "ship", "mail", "report"}
    assert nodes["charge"]["status"] == "new" and nodes["ship"]["status"] == "blocked"
    assert sorted(nodes["charge"]["children"]) == sorted([ids["ship"], ids["mail"]])
    assert sorted(nodes["report"]["parents"]) == sorted([ids["ship"], ids["mail"]])
    assert nodes["report"]["when"] == "all_ended"
    task = server.client.get(f"/tasks/{ids['ship']}").json()
    assert task["workflow_id"] == ids.workflow_id and task["node"] == "ship"
    assert task["parents"] == [ids["charge"]] and task["children"] == [ids["report"]]


def test_get_workflow_errors(server: Server) -> None:
    response = server.client.get("/workflows/not-a-uuid")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_workflow_id"
    response = server.client.get("/workflows/6a0c2f4e-1d7b-4a77-9f39-3f0a2b1c4d5e")
    assert response.status_code == 404
    assert response.json()["code"] == "workflow_not_found"


def test_the_dashboard_draws_the_workflow_and_the_task_page_links_to_it(
    server: Server, module_db: Database
) -> None:
    ids = push(module_db)
    page = server.client.get(f"/ui/workflows/{ids.workflow_id}")
    assert page.status_code == 200
    html = page.text
    assert '<svg id="workflow-graph"' in html
    drawn = dict(re.findall(r'data-task-id="(\d+)"\s+data-status="(\w+)"', html))
    assert drawn == {
        str(ids["charge"]): "new", str(ids["ship"]): "blocked",
        str(ids["mail"]): "blocked", str(ids["report"]): "blocked",
    }  # fmt: skip
    for task_id in ids.values():
        assert f'href="/ui/tasks/{task_id}"' in html
    assert html.count('class="wf-edge"') == 4
    task_page = server.client.get(f"/ui/tasks/{ids['ship']}").text
    assert f'href="/ui/workflows/{ids.workflow_id}"' in task_page
    assert "charge" in task_page and "report" in task_page
    assert server.client.get("/ui/workflows/not-a-uuid").status_code == 404
