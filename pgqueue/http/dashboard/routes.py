"""The dashboard's pages, fragments and form actions (server-rendered, Jinja2 autoescaped)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from pgqueue.errors import PgQueueError
from pgqueue.http.dashboard import diagram
from pgqueue.http.dashboard.data import (
    PAGE_SIZE,
    STATUSES,
    FilterError,
    KindRow,
    QueueAccess,
    TaskFilter,
)
from pgqueue.http.dashboard.security import (
    COOKIE_NAME,
    SECURITY_HEADERS,
    CsrfSigner,
    Role,
    Viewer,
    same_origin,
    token_from_request,
)
from pgqueue.limits import RateLimit
from pgqueue.task import Task

TEMPLATES = Path(__file__).with_name("templates")

RoleResolver = Callable[[str | None], Role | None]
"""Maps a presented token (``None`` when there is none) to a role, or ``None`` to refuse it."""


class LoginRequired(Exception):
    """No valid token: pages send the browser to the login form."""


def _format_time(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _format_seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def _compact_json(value: Any, width: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every task field is untrusted: always escaped, never |safe
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["time"] = _format_time
    env.filters["seconds"] = _format_seconds
    env.filters["compact_json"] = _compact_json
    env.filters["pretty_json"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False)
    env.globals["diagram"] = diagram
    env.globals["STATUSES"] = STATUSES
    return env


class Dashboard:
    """State shared by the dashboard's routes: the queue, the role resolver, templates."""

    def __init__(
        self,
        queue: Any,
        resolve_role: RoleResolver,
        *,
        auth_required: bool,
        snapshot_seconds: float = 1.0,
        worker_queue: Any = None,
    ) -> None:
        self.access = QueueAccess(
            queue, snapshot_seconds=snapshot_seconds, worker_queue=worker_queue
        )
        self.resolve_role = resolve_role
        self.auth_required = auth_required
        self.signer = CsrfSigner()
        self.env = _environment()

    def viewer(self, request: Request) -> Viewer:
        token, via_cookie = token_from_request(request)
        role = self.resolve_role(token)
        if role is None:
            raise LoginRequired
        return Viewer(role=role, csrf=self.signer.token_for(token), via_cookie=via_cookie)

    def operator(self, request: Request, csrf: str | None) -> Viewer:
        """The viewer of a form action: an operator, from this origin, with the right CSRF."""
        viewer = self.viewer(request)
        if not viewer.is_operator:
            raise HTTPException(403, "this action needs an operator token")
        token, _ = token_from_request(request)
        if not same_origin(request) or not self.signer.valid(token, csrf):
            raise HTTPException(403, "the form's CSRF token or origin is not valid")
        self.access.invalidate()  # pages after an action show its effect
        return viewer

    def render(
        self, request: Request, name: str, viewer: Viewer | None, status_code: int = 200, **ctx: Any
    ) -> HTMLResponse:
        template = self.env.get_template(name)
        html = template.render(
            request=request,
            viewer=viewer,
            auth_required=self.auth_required,
            now=datetime.now(UTC),
            **ctx,
        )
        return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


def build_router(dashboard: Dashboard) -> APIRouter:
    """Routes: ``/`` (overview) and everything under ``/ui/``."""
    router = APIRouter(include_in_schema=False)
    access = dashboard.access

    async def viewer(request: Request) -> Viewer:  # a coroutine: no thread-pool hop per request
        return dashboard.viewer(request)

    @router.get("/", response_class=HTMLResponse)
    async def overview(request: Request, viewer: Viewer = Depends(viewer)) -> Response:
        kinds = await access.kinds()
        return dashboard.render(request, "overview.html", viewer, kinds=kinds, page="overview")

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
            for name in ("succeeded", "failed", "exhausted"):
                per_kind.setdefault(name, {})[stamp] = int(getattr(point, name))
        now = int(datetime.now(UTC).timestamp()) // 60 * 60
        axis = [now - 60 * i for i in range(minutes - 1, -1, -1)]
        body = {
            "minutes": axis,
            "kinds": {
                kind: {name: [values.get(name, {}).get(t, 0) for t in axis] for name in
                       ("succeeded", "failed", "exhausted")}
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
        return dashboard.render(
            request,
            "task.html",
            viewer,
            page="tasks",
            task=task,
            can_cancel=access.can("cancel_task"),
            can_retry=access.can("retry_task"),
        )

    @router.post("/ui/tasks/{task_id}/cancel")
    async def cancel_task(request: Request, task_id: int, csrf: str = Form("")) -> Response:
        dashboard.operator(request, csrf)
        await _act(access, "cancel_task", task_id)
        return _redirect(f"/ui/tasks/{task_id}")

    @router.post("/ui/tasks/{task_id}/retry")
    async def retry_task(request: Request, task_id: int, csrf: str = Form("")) -> Response:
        dashboard.operator(request, csrf)
        task = await access.call("get_task", task_id)
        attempts = 1
        if task is not None:
            known = {row.kind: row for row in await access.kinds()}.get(task.kind)
            if known is not None and known.max_attempts:
                attempts = known.max_attempts  # the kind's full allowance, as the bulk retry
        await _act(access, "retry_task", task_id, attempts)
        access.invalidate()
        return _redirect(f"/ui/tasks/{task_id}")

    @router.get("/ui/bulk", response_class=HTMLResponse)
    async def bulk_confirm(request: Request, viewer: Viewer = Depends(viewer)) -> Response:
        if not viewer.is_operator:
            raise HTTPException(403, "bulk actions need an operator token")
        action = request.query_params.get("action", "")
        bulk = _bulk_plan(request.query_params, action, access)
        access.invalidate()  # the count shown before confirming is read now, not cached
        kinds = {row.kind: row for row in await access.kinds()}
        count = 0 if bulk.error else await _bulk_count(access, bulk, kinds)
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
        dashboard.operator(request, csrf)
        bulk = _bulk_plan(await request.form(), action, access)
        if bulk.error:
            raise HTTPException(400, bulk.error)
        if attempts < 1:
            raise HTTPException(400, "attempts must be at least 1")
        limit = max(expected, 0)  # never more than the count the operator confirmed
        done = 0
        if bulk.by_kind:
            done = await access.call("retry_tasks", bulk.task_filter.kind, attempts, limit)
        else:
            for task_id in (await _bulk_ids(access, bulk))[:limit]:
                if action == "retry":
                    changed = await access.call("retry_task", task_id, attempts)
                else:
                    changed = await access.call("cancel_task", task_id)
                done += bool(changed)
        query = urlencode({**bulk.task_filter.query(), "done": done, "action": action})
        return _redirect(f"/ui/tasks?{query}")

    @router.get("/ui/kinds", response_class=HTMLResponse)
    async def kinds_page(request: Request, viewer: Viewer = Depends(viewer)) -> Response:
        kinds = await access.kinds()
        return dashboard.render(request, "kinds.html", viewer, page="kinds", kinds=kinds)

    @router.post("/ui/kinds/pause")
    async def pause_kind(request: Request, kind: str = Form(""), csrf: str = Form("")) -> Response:
        dashboard.operator(request, csrf)
        await _act(access, "pause_kind", kind)
        return _redirect("/ui/kinds")

    @router.post("/ui/kinds/resume")
    async def resume_kind(request: Request, kind: str = Form(""), csrf: str = Form("")) -> Response:
        dashboard.operator(request, csrf)
        await _act(access, "resume_kind", kind)
        return _redirect("/ui/kinds")

    @router.post("/ui/kinds/limits")
    async def limit_kind(
        request: Request,
        kind: str = Form(""),
        rate: str = Form(""),
        concurrency: str = Form(""),
        group_concurrency: str = Form(""),
        action: str = Form("set"),
        csrf: str = Form(""),
    ) -> Response:
        """Override a kind's limits (the fields given) or clear every override."""
        dashboard.operator(request, csrf)
        changes: dict[str, Any] = {"actor": "dashboard"}
        if action == "clear":
            await _act_with(access, "clear_limits", kind, actor="dashboard")
            return _redirect("/ui/kinds")
        try:
            if rate.strip():
                changes["rate_limit"] = RateLimit.parse(rate)
            for name, text in (
                ("global_concurrency", concurrency),
                ("group_concurrency", group_concurrency),
            ):
                if text.strip():
                    changes[name] = int(text)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        await _act_with(access, "set_limits", kind, **changes)
        return _redirect("/ui/kinds")

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
                return _redirect(f"/ui/tasks/{task_id}")
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

    @router.get("/ui/login", response_class=HTMLResponse)
    async def login_form(request: Request) -> Response:
        return dashboard.render(
            request, "login.html", None, page="login", error=None, next=_next_of(request)
        )

    @router.post("/ui/login", response_class=HTMLResponse)
    async def login(request: Request, token: str = Form(""), next: str = Form("/")) -> Response:
        if not same_origin(request) or dashboard.resolve_role(token or None) is None:
            return dashboard.render(
                request,
                "login.html",
                None,
                status_code=401,
                page="login",
                error="That token is not valid.",
                next=_safe_next(next),
            )
        response = _redirect(_safe_next(next))
        set_token_cookie(request, response, token)
        return response

    @router.post("/ui/logout")
    async def logout(request: Request, csrf: str = Form("")) -> Response:
        token, _ = token_from_request(request)
        if not same_origin(request) or not dashboard.signer.valid(token, csrf):
            raise HTTPException(403, "the form's CSRF token or origin is not valid")
        response = _redirect("/ui/login")
        response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
        return response

    return router


@dataclass(frozen=True, slots=True)
class BulkPlan:
    """What a bulk action runs on: the list's filter narrowed to the statuses it applies to."""

    task_filter: TaskFilter
    statuses: tuple[str, ...]
    by_kind: bool = False  # a retry of a whole kind: one retry_tasks call
    error: str | None = None


def _bulk_plan(params: Any, action: str, access: QueueAccess) -> BulkPlan:
    base = TaskFilter.from_query(params)
    if action not in ("retry", "cancel"):
        return BulkPlan(base, (), error="unknown bulk action")
    allowed = ("no_attempts_left",) if action == "retry" else ("new", "must_retry")
    if base.status and base.status not in allowed:
        wanted = " or ".join(allowed)
        return BulkPlan(base, (), error=f"this action applies to {wanted} tasks only")
    statuses = (base.status,) if base.status else allowed
    shown = replace(base, status=statuses[0]) if len(statuses) == 1 else base
    try:
        shown.validate()
    except FilterError as exc:
        return BulkPlan(shown, statuses, error=str(exc))
    if action == "retry":
        if base.kind and not base.key_prefix and not base.payload:
            return BulkPlan(shown, statuses, by_kind=True)  # one statement, oldest first
        if not access.can("retry_task"):
            return BulkPlan(
                shown,
                statuses,
                error="retrying exhausted tasks works per kind: filter by kind only",
            )
    if action == "cancel" and not access.can("cancel_task"):
        return BulkPlan(shown, statuses, error="this service cannot cancel tasks by id")
    return BulkPlan(shown, statuses)


async def _bulk_count(access: QueueAccess, bulk: BulkPlan, kinds: dict[str, KindRow]) -> int:
    """How many tasks the action would change: from the kind's exact open counts when the
    filter is a kind alone, else by walking the filter."""
    task_filter = bulk.task_filter
    if task_filter.kind and not task_filter.key_prefix and not task_filter.payload:
        row = kinds.get(task_filter.kind)
        return 0 if row is None else sum(int(row.counts.get(s, 0)) for s in bulk.statuses)
    return len(await _bulk_ids(access, bulk))


async def _bulk_ids(access: QueueAccess, bulk: BulkPlan) -> list[int]:
    ids: list[int] = []
    for status in bulk.statuses:
        ids.extend(await access.matching_ids(replace(bulk.task_filter, status=status)))
    return ids


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


def set_token_cookie(request: Request, response: Response, token: str) -> None:
    """The login cookie: HttpOnly, SameSite=Strict, and Secure when served over HTTPS."""
    response.set_cookie(
        COOKIE_NAME,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
        max_age=12 * 3600,
    )


def _safe_next(value: str | None) -> str:
    """Only local paths: a login link must not redirect elsewhere."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _next_of(request: Request) -> str:
    return _safe_next(request.query_params.get("next"))
