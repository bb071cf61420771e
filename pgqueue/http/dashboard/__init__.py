"""The web dashboard served by ``pgqueue serve`` at ``/`` (see docs/dashboard.md).

``mount(app, queue, settings)`` adds its pages (``/`` and ``/ui/...``) and its vendored static
files (``/ui/static/...``) to the service's FastAPI app. Under a prefix (the app mounted in a
host's app, or behind a proxy with a root path), every link, asset and redirect carries the
request's ``root_path``: templates write ``{{ root() }}/ui/...`` and routes redirect to paths
relative to the root, which the middleware below prefixes. Pages are rendered on the server with
Jinja2 (autoescaped); htmx refreshes the overview, uPlot draws throughput. No inline script:
the Content-Security-Policy forbids it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from pgqueue.http.auth import Role as ApiRole
from pgqueue.http.auth import role_of_token
from pgqueue.http.dashboard.login import set_token_cookie
from pgqueue.http.dashboard.routes import build_router
from pgqueue.http.dashboard.security import SECURITY_HEADERS, Role
from pgqueue.http.dashboard.state import Dashboard, LoginRequired, RoleResolver
from pgqueue.http.settings import HttpSettings

STATIC = Path(__file__).with_name("static")

__all__ = ["mount"]


def mount(
    app: FastAPI,
    queue: Any,
    settings: HttpSettings | None,
    *,
    resolve_role: RoleResolver | None = None,
) -> Dashboard:
    """Serve the dashboard from ``app``; roles come from the same tokens as the API.

    ``settings.extra`` may hold ``dashboard_snapshot_seconds`` (how long the per-kind snapshot
    is shared, default 1.0; 0 reads on every request) and ``dashboard_worker_queue`` (the queue
    whose workers run in this process, when it is not ``queue``: the overview then shows their
    busy/total counts) and ``dashboard_login_throttle`` (a
    :class:`~pgqueue.http.dashboard.throttle.LoginThrottle` with other limits than the default
    five free failures, then 1 s doubling up to 5 min).
    """
    resolver, auth_required = resolve_role_from(settings) if resolve_role is None else (
        resolve_role, True
    )  # fmt: skip
    extra = getattr(settings, "extra", None) or {}
    dashboard = Dashboard(
        queue,
        resolver,
        auth_required=auth_required,
        snapshot_seconds=float(extra.get("dashboard_snapshot_seconds", 1.0)),
        worker_queue=extra.get("dashboard_worker_queue"),
        login_throttle=extra.get("dashboard_login_throttle"),
    )
    app.include_router(build_router(dashboard))
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="dashboard-static")

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, exc: LoginRequired) -> Response:
        if request.headers.get("hx-request") or request.method != "GET":
            return Response("login required", status_code=401, headers=SECURITY_HEADERS)
        path = route_path(request)
        target = path + (f"?{request.url.query}" if request.url.query else "")
        # Relative to the root, as every redirect of the routes: token_link prefixes it.
        return RedirectResponse(f"/ui/login?{urlencode({'next': target})}", status_code=303)

    @app.middleware("http")
    async def token_link(request: Request, call_next: Any) -> Response:
        """``?token=`` on a dashboard page, once: store it in the cookie, drop it from the URL."""
        token = request.query_params.get("token")
        path = route_path(request)
        root = request.scope.get("root_path", "")
        on_page = request.method == "GET" and (path == "/" or path.startswith("/ui/"))
        if token and on_page:
            # Throttled like the login form: a link is another way to guess tokens.
            address = request.client.host if request.client is not None else "unknown"
            throttle = dashboard.login_throttle
            wait = throttle.retry_after(address)
            if wait:
                headers = {**SECURITY_HEADERS, "Retry-After": str(wait)}
                return Response("too many wrong tokens", status_code=429, headers=headers)
            if resolver(token) is None:
                throttle.failed(address)
                token = None
            else:
                throttle.succeeded(address)
        if token and on_page:
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = root + path + (f"?{urlencode(rest)}" if rest else "")
            response = RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
            set_token_cookie(request, response, token)
            return response
        response = await call_next(request)
        if path.startswith("/ui/static/"):
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
        location = response.headers.get("location")
        if root and location and location.startswith("/") and not location.startswith("//"):
            response.headers["location"] = root + location
        return response  # type: ignore[no-any-return]

    return dashboard


def resolve_role_from(settings: HttpSettings | None) -> tuple[RoleResolver, bool]:
    """The API's own token check (same tokens, same roles), and whether tokens are on.

    The cookie is a token source of the dashboard only: the JSON API keeps taking bearer
    headers alone, so no API route can be driven by a browser's ambient cookie.
    """
    settings = settings or HttpSettings()

    def resolve(token: str | None) -> Role | None:
        granted = role_of_token(settings, token)
        if granted is None:
            return None
        return "operator" if granted >= ApiRole.OPERATOR else "read"

    return resolve, settings.auth_enabled


def route_path(request: Request) -> str:
    """The request's path below the app's root path (the prefix it is mounted under)."""
    path: str = request.url.path
    root: str = request.scope.get("root_path", "")
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root) :] or "/"
    return path
