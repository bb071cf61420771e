"""The dashboard's pages, fragments and form actions (server-rendered, Jinja2 autoescaped)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from pgqueue.audit import SOURCES
from pgqueue.errors import PgQueueError
from pgqueue.http.dashboard.bulk import bulk_count, bulk_ids, bulk_plan
from pgqueue.http.dashboard.data import (
    PAGE_SIZE,
    FilterError,
    QueueAccess,
    TaskFilter,
)
from pgqueue.http.dashboard.graph import MAX_DRAWN_NODES, render_svg
from pgqueue.http.dashboard.login import add_login_routes
from pgqueue.http.dashboard.security import (
    SECURITY_HEADERS,
    Viewer,
)
from pgqueue.http.dashboard.state import Dashboard, redirect
from pgqueue.limits import RateLimit
from pgqueue.store.operations import Action, check_workflow_id
from pgqueue.task import Task

OUTCOMES = ("succeeded", "failed", "exhausted", "cancelled")
"""The throughput chart's series, one per outcome column of the rollup."""
AUDIT_PAGE_SIZE = 50


def build_router(dashboard: Dashboard) -> APIRouter:
    """Routes: ``/`` (overview) and everything under ``/ui/``."""
    router = APIRouter(include_in_schema=False)
    access = dashboard.access

    async def viewer(request: Request) -> Viewer:  # a coroutine: no thread-pool hop per request
        return dashboard.viewer(request)

    @router.get("/", response_class=HTMLResponse)
    async def overview(request: Request, viewer: Viewer = Depends(viewer)) -> Response:
        kinds = await access.kinds()
        health = await access.table_health()
        return dashboard.render(
            request, "overview.html", viewer, kinds=kinds, health=health, page="overview"
        )

    @router.get("/ui/overview", response_class=HTMLResponse)
    async def overview_fragment(request: Request, viewer: Viewer = Depends(viewer)) -> Response:
        kinds = await access.kinds()
        return dashboard.render(request, "_overview_kinds.html", viewer, kinds=kinds)

    @router.get("/ui/throughput", response_class=HTMLResponse)
    async def throughput(request: Request, viewer: Viewer = Depends(viewer)) -> Response:
        kinds = await access.kind_names()
        return dashboard.render(request, "throughput.html", viewer, kinds=kinds, page="throughput")

    @router.get("/ui/throughput.json")
    async def throughput_data(minutes: int = 60, viewer: Viewer = Depends(viewer)) -> JSONResponse:
        minutes = max(1, min(minutes, 1440))
        points = await access.call("throughput", kind=None, minutes=minutes)
        series: dict[str, dict[str, dict[int, int]]] = {}
        for point in points:
            stamp = int(point.minute.timestamp())
            per_kind = series.setdefault(point.kind, {})
            for name in OUTCOMES:
                per_kind.setdefault(name, {})[stamp] = int(getattr(point, name))
        now = int(datetime.now(UTC).timestamp()) // 60 * 60
        axis = [now - 60 * i for i in range(minutes - 1, -1, -1)]
        body = {
            "minutes": axis,
            "kinds": {
                kind: {name: [values.get(name, {}).get(t, 0) for t in axis] for name in OUTCOMES}
                for kind, values in sorted(series.items())
            },
        }  # fmt: skip
        return JSONResponse(body, headers=SECURITY_HEADERS)

    @router.get("/ui/tasks", response_class=HTMLResponse)
    async def task_list(request: Request, viewer: Viewer = Depends(viewer)) -> Response:
        task_filter = TaskFilter.from_query(request.query_params)
        before = request.query_params.get("before")
        error = None
        rows: list[Any] = []
        next_cursor = None
        try:
            task_filter.validate()
            before_id = int(before) if before else None
            rows, next_cursor = await access.page(task_filter, before_id)
        except (FilterError, ValueError) as exc:
            error = str(exc)
        kinds = await access.kind_names()
        next_url = None
        if next_cursor is not None:
            next_url = "/ui/tasks?" + urlencode({**task_filter.query(), "before": next_cursor})
        return dashboard.render(
            request,
            "tasks.html",
            viewer,
            page="tasks",
            rows=rows,
            task_filter=task_filter,
            filter_query=urlencode(task_filter.query()),
            kinds=kinds,
            next_url=next_url,
            first_page=not before,
            error=error,
            page_size=PAGE_SIZE,
        )

    @router.get("/ui/tasks/{task_id}", response_class=HTMLResponse)
    async def task_detail(
        request: Request, task_id: int, viewer: Viewer = Depends(viewer)
    ) -> Response:
        task = await access.call("get_task", task_id)
        if task is None:
            return dashboard.render(
                request, "not_found.html", viewer, status_code=404, page="tasks", task_id=task_id
            )
        related: dict[int, tuple[str, str, str]] = {}
        if task.workflow_id is not None and access.can("get_nodes"):
            related = await access.call("get_nodes", [*task.parents, *task.children])
        return dashboard.render(
            request,
            "task.html",
            viewer,
            page="tasks",
            task=task,
            related=related,
            can_cancel=access.can("cancel_task"),
            can_retry=access.can("retry_task"),
        )

    @router.get("/ui/workflows/{workflow_id}", response_class=HTMLResponse)
    async def workflow_page(
        request: Request, workflow_id: str, viewer: Viewer = Depends(viewer)
    ) -> Response:
        try:
            canonical = check_workflow_id(workflow_id)
        except ValueError:
            canonical = None
        # A custom queue may have no workflows.
        known = canonical is not None and access.can("get_workflow")
        nodes = await access.call("get_workflow", canonical) if known else []
        if not nodes:
            return dashboard.render(
                request,
                "not_found.html",
                viewer,
                status_code=404,
                page="tasks",
                what=f"Workflow {workflow_id}",
            )
        counts: dict[str, int] = {}
        for n in nodes:
            counts[n.status] = counts.get(n.status, 0) + 1
        drawn = len(nodes) <= MAX_DRAWN_NODES
        return dashboard.render(
            request,
            "workflow.html",
            viewer,
            page="tasks",
            workflow_id=canonical,
            nodes=nodes,
            counts=sorted(counts.items()),
            graph=render_svg(nodes, request.scope.get("root_path", "")) if drawn else None,
            max_drawn=MAX_DRAWN_NODES,
        )

    @router.post("/ui/tasks/{task_id}/cancel")
    async def cancel_task(request: Request, task_id: int, csrf: str = Form("")) -> Response:
        viewer = dashboard.operator(request, csrf)
        with dashboard.acting(request, viewer):
            await _act(access, "cancel_task", task_id)
        return redirect(f"/ui/tasks/{task_id}")

    @router.post("/ui/tasks/{task_id}/retry")
    async def retry_task(request: Request, task_id: int, csrf: str = Form("")) -> Response:
        viewer = dashboard.operator(request, csrf)
        task = await access.call("get_task", task_id)
        attempts = 1
        if task is not None:
            known = {row.kind: row for row in await access.kinds()}.get(task.kind)
            if known is not None and known.max_attempts:
                attempts = known.max_attempts  # the kind's full allowance, as the bulk retry
        with dashboard.acting(request, viewer):
            await _act(access, "retry_task", task_id, attempts)
        access.invalidate()
        return redirect(f"/ui/tasks/{task_id}")

    @router.get("/ui/bulk", response_class=HTMLResponse)
    async def bulk_confirm(request: Request, viewer: Viewer = Depends(viewer)) -> Response:
        if not viewer.is_operator:
            raise HTTPException(403, "bulk actions need an operator token")
        action = request.query_params.get("action", "")
        bulk = bulk_plan(request.query_params, action, access)
        access.invalidate()  # the count shown before confirming is read now, not cached
        kinds = {row.kind: row for row in await access.kinds()}
        count = 0 if bulk.error else await bulk_count(access, bulk, kinds)
        attempts = 1
        known = kinds.get(bulk.task_filter.kind)
        if action == "retry" and known is not None and known.max_attempts:
            attempts = known.max_attempts
        return dashboard.render(
            request,
            "bulk.html",
            viewer,
            page="tasks",
            action=action,
            bulk=bulk,
            task_filter=bulk.task_filter,
            filter_query=urlencode(bulk.task_filter.query()),
            count=count,
            attempts=attempts,
            error=bulk.error,
        )

    @router.post("/ui/bulk")
    async def bulk_apply(
        request: Request,
        action: str = Form(""),
        csrf: str = Form(""),
        expected: int = Form(0),
        attempts: int = Form(1),
    ) -> Response:
        viewer = dashboard.operator(request, csrf)
        bulk = bulk_plan(await request.form(), action, access)
        if bulk.error:
            raise HTTPException(400, bulk.error)
        if attempts < 1:
            raise HTTPException(400, "attempts must be at least 1")
        limit = max(expected, 0)  # never more than the count the operator confirmed
        done = 0
        with dashboard.acting(request, viewer, each=False):
            try:
                if bulk.by_kind:
                    done = await access.call("retry_tasks", bulk.task_filter.kind, attempts, limit)
                else:
                    for task_id in (await bulk_ids(access, bulk))[:limit]:
                        if action == "retry":
                            changed = await access.call("retry_task", task_id, attempts)
                        else:
                            changed = await access.call("cancel_task", task_id)
                        done += bool(changed)
            finally:  # one entry for the whole action, also when it stopped half-way
                detail = {**bulk.task_filter.query(), "confirmed": limit}
                if action == "retry":
                    detail["attempts"] = attempts
                summary = Action(f"bulk_{action}", bulk.task_filter.kind or None, detail=detail)
                await access.record(summary, done)
        query = urlencode({**bulk.task_filter.query(), "done": done, "action": action})
        return redirect(f"/ui/tasks?{query}")

    @router.get("/ui/kinds", response_class=HTMLResponse)
    async def kinds_page(request: Request, viewer: Viewer = Depends(viewer)) -> Response:
        kinds = await access.kinds()
        return dashboard.render(request, "kinds.html", viewer, page="kinds", kinds=kinds)

    @router.get("/ui/audit", response_class=HTMLResponse)
    async def audit_page(request: Request, viewer: Viewer = Depends(viewer)) -> Response:
        params = request.query_params
        filters = {
            name: (params.get(name) or "").strip() or None for name in ("source", "kind", "action")
        }
        before = params.get("before")
        entries: list[Any] = []
        error = None
        try:
            before_id = int(before) if before else None
            if filters["source"] is not None and filters["source"] not in SOURCES:
                raise ValueError(f"unknown source {filters['source']!r}")
            entries = await access.call(
                "audit_log", limit=AUDIT_PAGE_SIZE, before_id=before_id, **filters
            )
        except (ValueError, PgQueueError) as exc:
            error = str(exc)
        next_query = None
        if len(entries) == AUDIT_PAGE_SIZE:
            kept = {name: value for name, value in filters.items() if value}
            next_query = urlencode({**kept, "before": entries[-1].id})
        return dashboard.render(
            request,
            "audit.html",
            viewer,
            status_code=400 if error else 200,
            page="audit",
            entries=entries,
            filters=filters,
            sources=SOURCES,
            next_query=next_query,
            error=error,
        )

    @router.post("/ui/kinds/pause")
    async def pause_kind(request: Request, kind: str = Form(""), csrf: str = Form("")) -> Response:
        viewer = dashboard.operator(request, csrf)
        with dashboard.acting(request, viewer):
            await _act(access, "pause_kind", kind)
        return redirect("/ui/kinds")

    @router.post("/ui/kinds/resume")
    async def resume_kind(request: Request, kind: str = Form(""), csrf: str = Form("")) -> Response:
        viewer = dashboard.operator(request, csrf)
        with dashboard.acting(request, viewer):
            await _act(access, "resume_kind", kind)
        return redirect("/ui/kinds")

    @router.post("/ui/kinds/limits")
    async def limit_kind(
        request: Request,
        kind: str = Form(""),
        rate: str = Form(""),
        concurrency: str = Form(""),
        group_concurrency: str = Form(""),
        group_rate: str = Form(""),
        action: str = Form("set"),
        csrf: str = Form(""),
    ) -> Response:
        """Override a kind's limits (the fields given) or clear every override."""
        viewer = dashboard.operator(request, csrf)
        changes: dict[str, Any] = {"actor": "dashboard"}
        if action == "clear":
            with dashboard.acting(request, viewer):
                await _act_with(access, "clear_limits", kind, actor="dashboard")
            return redirect("/ui/kinds")
        try:
            if rate.strip():
                changes["rate_limit"] = RateLimit.parse(rate)
            if group_rate.strip():
                changes["group_rate_limit"] = RateLimit.parse(group_rate)
            for name, text in (
                ("global_concurrency", concurrency),
                ("group_concurrency", group_concurrency),
            ):
                if text.strip():
                    changes[name] = int(text)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        with dashboard.acting(request, viewer):
            await _act_with(access, "set_limits", kind, **changes)
        return redirect("/ui/kinds")

    @router.get("/ui/enqueue", response_class=HTMLResponse)
    async def enqueue_form(request: Request, viewer: Viewer = Depends(viewer)) -> Response:
        if not viewer.is_operator:
            raise HTTPException(403, "enqueueing needs an operator token")
        kinds = await access.kind_names()
        return dashboard.render(
            request, "enqueue.html", viewer, page="enqueue", kinds=kinds, form={}, error=None
        )

    @router.post("/ui/enqueue", response_class=HTMLResponse)
    async def enqueue(
        request: Request,
        kind: str = Form(""),
        payload: str = Form(""),
        external_key: str = Form(""),
        delay: float = Form(0.0),
        csrf: str = Form(""),
    ) -> Response:
        viewer = dashboard.operator(request, csrf)
        form = {"kind": kind, "payload": payload, "external_key": external_key, "delay": delay}
        try:
            value = json.loads(payload) if payload.strip() else None
            task_id = await access.call(
                "push_task", Task(kind, value, external_key=external_key or None), delay=delay
            )
        except (ValueError, TypeError, PgQueueError) as exc:  # bad JSON or task, cap reached
            error: str | None = str(exc)
        else:
            if task_id is not None:
                with dashboard.acting(request, viewer):
                    detail = {"external_key": external_key} if external_key else {}
                    await access.record(Action("enqueue", kind, task_id, detail), 1)
                return redirect(f"/ui/tasks/{task_id}")
            error = f"a task of kind {kind!r} with key {external_key!r} already exists"
        kinds = await access.kind_names()
        return dashboard.render(
            request,
            "enqueue.html",
            viewer,
            status_code=400,
            page="enqueue",
            kinds=kinds,
            form=form,
            error=error,
        )

    add_login_routes(router, dashboard)
    return router


async def _act_with(access: QueueAccess, method: str, *args: Any, **kwargs: Any) -> Any:
    """:func:`_act` with keyword arguments."""
    try:
        return await access.call(method, *args, **kwargs)
    except (ValueError, PgQueueError) as exc:
        raise HTTPException(400, str(exc)) from None


async def _act(access: QueueAccess, method: str, *args: Any) -> Any:
    """Run an action; a refusal of the queue (bad value, unknown kind) is a 400, not a 500."""
    try:
        return await access.call(method, *args)
    except (ValueError, PgQueueError) as exc:
        raise HTTPException(400, str(exc)) from None
