"""pgqueue's HTTP service: the REST API (``create_app``) that ``pgqueue serve`` runs.

Needs the ``http`` extra: ``pip install 'pgqueue[http]'``. Names are imported on first use,
so ``pgqueue``'s command works without the extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pgqueue.http.app import create_app
    from pgqueue.http.auth import Role, add_token_source, require_role
    from pgqueue.http.errors import ApiError, ErrorBody
    from pgqueue.http.settings import HttpSettings, InvalidSettings

_EXPORTS = {
    "ApiError": "pgqueue.http.errors",
    "ErrorBody": "pgqueue.http.errors",
    "HttpSettings": "pgqueue.http.settings",
    "InvalidSettings": "pgqueue.http.settings",
    "Role": "pgqueue.http.auth",
    "add_token_source": "pgqueue.http.auth",
    "create_app": "pgqueue.http.app",
    "require_role": "pgqueue.http.auth",
}

__all__ = [
    "ApiError",
    "ErrorBody",
    "HttpSettings",
    "InvalidSettings",
    "Role",
    "add_token_source",
    "create_app",
    "require_role",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pgqueue.http' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
