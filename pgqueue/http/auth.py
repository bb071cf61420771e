"""Bearer tokens and the two roles: ``read`` and ``operator``.

With no token configured the service is open (it binds loopback by default). With tokens
configured every route but ``/healthz`` needs one: the read token may read, the operator token
may also enqueue, cancel, retry and pause. Tokens are compared in constant time.

Routes declare their role with ``Depends(require_role("read"))``. Extensions (the dashboard)
may add token sources, e.g. a cookie, with :func:`add_token_source`.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request

from pgqueue.http.errors import ApiError
from pgqueue.http.settings import HttpSettings

TokenSource = Callable[[Request], str | None]


class Role(enum.IntEnum):
    """Roles by privilege: a higher role may do all a lower one may."""

    READ = 1
    OPERATOR = 2


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def add_token_source(app: FastAPI, source: TokenSource) -> None:
    """Let ``source(request)`` supply a token when no ``Authorization`` header does."""
    app.state.pgqueue_token_sources.append(source)


def _equal(given: str, expected: str | None) -> bool:
    if expected is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def role_of_token(settings: HttpSettings, token: str | None) -> Role | None:
    """The role a token grants, ``None`` for no or a wrong token; everything when auth is off."""
    if not settings.auth_enabled:
        return Role.OPERATOR
    if token is None:
        return None
    # Compare against both, always, so timing does not tell which one matched.
    is_operator = _equal(token, settings.api_token)
    is_reader = _equal(token, settings.read_token)
    if is_operator:
        return Role.OPERATOR
    if is_reader:
        return Role.READ
    return None


def request_role(request: Request) -> Role | None:
    """The role of the request's token (header first, then the app's extra sources)."""
    settings: HttpSettings = request.app.state.pgqueue_settings
    token = bearer_token(request)
    if token is None:
        for source in request.app.state.pgqueue_token_sources:
            token = source(request)
            if token is not None:
                break
    return role_of_token(settings, token)


def require_role(role: str | Role) -> Callable[[Request], Awaitable[Role]]:
    """A FastAPI dependency admitting requests whose token grants at least ``role``.

    No or a wrong token → 401 (with ``WWW-Authenticate: Bearer``); a read token on an operator
    route → 403.
    """
    needed = role if isinstance(role, Role) else Role[role.upper()]

    async def dependency(request: Request) -> Role:
        granted = request_role(request)
        if granted is None:
            raise ApiError(
                401,
                "unauthorized",
                "a valid token is required (Authorization: Bearer <token>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if granted < needed:
            raise ApiError(403, "forbidden", f"this token may not {needed.name.lower()}")
        return granted

    dependency.__name__ = f"require_{needed.name.lower()}"
    return dependency
