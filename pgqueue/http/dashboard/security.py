"""Browser-side security of the dashboard: the token cookie, CSRF tokens and response headers.

Browsers authenticate with the same tokens as the API. The login form (or a ``?token=`` link,
used once) stores the token in an ``HttpOnly``, ``SameSite=Strict`` cookie; the dashboard then
resolves the role from it exactly as the API resolves a bearer token.

CSRF: every dashboard form carries a hidden ``csrf`` field, an HMAC of the viewer's token under
a key made when the app starts; a POST is accepted only with the right value (compared in
constant time) and, when the browser sends an ``Origin`` header, only from the dashboard's own
origin. ``SameSite=Strict`` already keeps the cookie off cross-site requests; the two checks
stand on their own for browsers that do not honour it and for deployments without tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from starlette.requests import Request

Role = Literal["read", "operator"]

COOKIE_NAME = "pgqueue_token"

# Inline script and handlers are forbidden: task data rendered into a page can never run.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking: their role and the CSRF token their forms must carry."""

    role: Role
    csrf: str
    via_cookie: bool

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"


class CsrfSigner:
    """Derives a viewer's CSRF token from their API token (empty when none is configured)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def token_for(self, api_token: str | None) -> str:
        digest = hmac.new(self._key, (api_token or "").encode(), hashlib.sha256)
        return digest.hexdigest()

    def valid(self, api_token: str | None, presented: str | None) -> bool:
        if not presented:
            return False
        return hmac.compare_digest(self.token_for(api_token), presented)


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another origin."""
    origin = request.headers.get("origin")
    if origin is None:  # same-origin GET-style navigations and non-browser clients
        return True
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def token_from_request(request: Request) -> tuple[str | None, bool]:
    """The presented token and whether it came from the cookie (else a bearer header)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    cookie = request.cookies.get(COOKIE_NAME)
    return (cookie or None), cookie is not None
