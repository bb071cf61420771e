"""The dashboard's shared state (the queue, the role resolver, the CSRF signer, the templates)
and the exception that sends a browser to the login form."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from pgqueue.audit import Actor, acting_as
from pgqueue.http.dashboard.data import (
    QueueAccess,
)
from pgqueue.http.dashboard.security import (
    SECURITY_HEADERS,
    CsrfSigner,
    Role,
    Viewer,
    same_origin,
    token_from_request,
)
from pgqueue.http.dashboard.templating import environment
from pgqueue.http.dashboard.throttle import LoginThrottle

OUTCOMES = ("succeeded", "failed", "exhausted", "cancelled")
"""The throughput chart's series, one per outcome column of the rollup."""
AUDIT_PAGE_SIZE = 50

RoleResolver = Callable[[str | None], Role | None]
"""Maps a presented token (``None`` when there is none) to a role, or ``None`` to refuse it."""


class LoginRequired(Exception):
    """No valid token: pages send the browser to the login form."""


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
        login_throttle: LoginThrottle | None = None,
    ) -> None:
        self.access = QueueAccess(
            queue, snapshot_seconds=snapshot_seconds, worker_queue=worker_queue
        )
        self.resolve_role = resolve_role
        self.auth_required = auth_required
        self.login_throttle = login_throttle if login_throttle is not None else LoginThrottle()
        self.signer = CsrfSigner()
        self.env = environment()

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

    def acting(self, request: Request, viewer: Viewer, *, each: bool = True) -> Any:
        """Record the block's actions under this viewer (source ``dashboard``); with
        ``each=False`` the calls write no entry of their own (a bulk action's summary does)."""
        address = request.client.host if request.client is not None else None
        name = viewer.role if self.auth_required else "anonymous"
        detail = {"address": address} if address else {}
        return acting_as(Actor("dashboard", name, record=each, detail=detail))

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


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)
