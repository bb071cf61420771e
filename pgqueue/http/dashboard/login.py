"""The dashboard's login form, its throttle, logout, and the token cookie."""

from __future__ import annotations

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from pgqueue.http.dashboard.security import (
    COOKIE_NAME,
    same_origin,
    token_from_request,
)
from pgqueue.http.dashboard.state import Dashboard, redirect

OUTCOMES = ("succeeded", "failed", "exhausted", "cancelled")
"""The throughput chart's series, one per outcome column of the rollup."""
AUDIT_PAGE_SIZE = 50


def add_login_routes(router: APIRouter, dashboard: Dashboard) -> None:
    """The login form (throttled per address), its POST and logout."""

    @router.get("/ui/login", response_class=HTMLResponse)
    async def login_form(request: Request) -> Response:
        return dashboard.render(
            request, "login.html", None, page="login", error=None, next=_next_of(request)
        )

    @router.post("/ui/login", response_class=HTMLResponse)
    async def login(request: Request, token: str = Form(""), next: str = Form("/")) -> Response:
        throttle = dashboard.login_throttle
        address = request.client.host if request.client is not None else "unknown"
        wait = throttle.retry_after(address)
        if wait:  # locked out: refused without looking at the token
            return _login_refused(request, next, wait, "Too many wrong tokens from your address.")
        if not same_origin(request):
            return _login_refused(request, next, 0, "That token is not valid.")
        if dashboard.resolve_role(token or None) is None:
            wait = throttle.failed(address)
            return _login_refused(request, next, wait, "That token is not valid.")
        throttle.succeeded(address)
        response = redirect(_safe_next(next))
        set_token_cookie(request, response, token)
        return response

    def _login_refused(request: Request, next: str, wait: int, error: str) -> Response:
        """The login form again: 401, or 429 with ``Retry-After`` while the address waits."""
        if wait:
            error = f"{error} Try again in {wait} s."
        response = dashboard.render(
            request,
            "login.html",
            None,
            status_code=429 if wait else 401,
            page="login",
            error=error,
            next=_safe_next(next),
        )
        if wait:
            response.headers["Retry-After"] = str(wait)
        return response

    @router.post("/ui/logout")
    async def logout(request: Request, csrf: str = Form("")) -> Response:
        token, _ = token_from_request(request)
        if not same_origin(request) or not dashboard.signer.valid(token, csrf):
            raise HTTPException(403, "the form's CSRF token or origin is not valid")
        response = redirect("/ui/login")
        response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
        return response


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
