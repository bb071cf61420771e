"""Configuration of the HTTP service, read from ``PGQUEUE_*`` environment variables."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from pgqueue.store.queries import DEFAULT_SCHEMA, validate_schema_name
from pgqueue.task import validate_kind_name

DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_BYTES = 1_048_576
DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 500
DEFAULT_DRAIN_SECONDS = 30.0


class InvalidSettings(ValueError):
    """A setting of the HTTP service is unusable (the service refuses to start)."""


@dataclass(frozen=True)
class HttpSettings:
    """Everything ``pgqueue serve`` and :func:`pgqueue.http.create_app` are configured with.

    Each field has an environment variable (``PGQUEUE_`` + the name in the table of
    ``docs/http.md``); flags of ``pgqueue serve`` override the environment.
    """

    dsn: str | None = None
    """PostgreSQL DSN (``PGQUEUE_DSN``); required by ``pgqueue serve`` unless the app has one."""
    schema: str = DEFAULT_SCHEMA
    """Schema holding pgqueue's tables (``PGQUEUE_SCHEMA``)."""
    host: str = "127.0.0.1"
    """Address to bind (``PGQUEUE_HTTP_HOST``); loopback unless you say otherwise."""
    port: int = DEFAULT_PORT
    """Port to bind (``PGQUEUE_HTTP_PORT``); 0 picks a free one."""
    api_token: str | None = None
    """Operator token (``PGQUEUE_API_TOKEN``): may read, enqueue, cancel, retry, pause."""
    read_token: str | None = None
    """Read-only token (``PGQUEUE_READ_TOKEN``): may only read."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Largest request body accepted (``PGQUEUE_MAX_BODY_BYTES``); larger gets 413 unread."""
    default_kind: str = "default"
    """Kind of an enqueued task whose body names none (``PGQUEUE_HTTP_DEFAULT_KIND``)."""
    kinds: tuple[str, ...] = ()
    """Extra kinds to declare when no app is loaded (``PGQUEUE_HTTP_KINDS``, comma-separated)."""
    app: str | None = None
    """``module:attribute`` of the host's queue, for its kinds (``PGQUEUE_APP``)."""
    run_workers: bool = False
    """Run the app's workers in the server process (``PGQUEUE_HTTP_RUN_WORKERS``)."""
    drain_seconds: float = DEFAULT_DRAIN_SECONDS
    """Bound on finishing in-flight requests at shutdown (``PGQUEUE_HTTP_DRAIN_SECONDS``)."""
    list_limit: int = DEFAULT_LIST_LIMIT
    """Default page size of ``GET /tasks`` (``PGQUEUE_HTTP_LIST_LIMIT``)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form settings for mounted extensions (the dashboard); not read from env."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`InvalidSettings` (one clear line) on an unusable value."""
        try:
            validate_schema_name(self.schema)
        except ValueError as exc:
            raise InvalidSettings(f"PGQUEUE_SCHEMA: {exc}") from None
        if not self.host:
            raise InvalidSettings("PGQUEUE_HTTP_HOST must not be empty")
        if not 0 <= self.port <= 65535:
            raise InvalidSettings(f"PGQUEUE_HTTP_PORT must be 0..65535, got {self.port}")
        for name, token in (
            ("PGQUEUE_API_TOKEN", self.api_token),
            ("PGQUEUE_READ_TOKEN", self.read_token),
        ):
            if token is not None and (len(token) < 8 or token.strip() != token):
                raise InvalidSettings(
                    f"{name} must be at least 8 characters without surrounding spaces"
                )
        if self.api_token is not None and self.api_token == self.read_token:
            raise InvalidSettings("PGQUEUE_API_TOKEN and PGQUEUE_READ_TOKEN must differ")
        if self.max_body_bytes < 1024:
            raise InvalidSettings(
                f"PGQUEUE_MAX_BODY_BYTES must be at least 1024, got {self.max_body_bytes}"
            )
        for kind in (self.default_kind, *self.kinds):
            try:
                validate_kind_name(kind)
            except ValueError as exc:
                raise InvalidSettings(f"PGQUEUE_HTTP_KINDS: {exc}") from None
        if self.drain_seconds <= 0:
            raise InvalidSettings(
                f"PGQUEUE_HTTP_DRAIN_SECONDS must be > 0, got {self.drain_seconds}"
            )
        if not 1 <= self.list_limit <= MAX_LIST_LIMIT:
            raise InvalidSettings(
                f"PGQUEUE_HTTP_LIST_LIMIT must be 1..{MAX_LIST_LIMIT}, got {self.list_limit}"
            )
        if self.run_workers and not self.app:
            raise InvalidSettings("running workers needs the app's queue (--workers MODULE:QUEUE)")

    @property
    def auth_enabled(self) -> bool:
        return self.api_token is not None or self.read_token is not None

    @property
    def binds_loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> HttpSettings:
        """Settings from ``environ`` (default ``os.environ``); ``overrides`` that are not
        ``None`` win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}

        def text(name: str) -> str | None:
            value = env.get(name)
            return value if value not in (None, "") else None

        def number(name: str, convert: Any) -> Any:
            value = text(name)
            if value is None:
                return None
            try:
                return convert(value)
            except ValueError:
                raise InvalidSettings(f"{name} must be a number, got {value!r}") from None

        def flag(name: str) -> bool | None:
            value = text(name)
            if value is None:
                return None
            lowered = value.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise InvalidSettings(f"{name} must be true or false, got {value!r}")

        kinds = text("PGQUEUE_HTTP_KINDS")
        values = {
            "dsn": text("PGQUEUE_DSN"),
            "schema": text("PGQUEUE_SCHEMA"),
            "host": text("PGQUEUE_HTTP_HOST"),
            "port": number("PGQUEUE_HTTP_PORT", int),
            "api_token": text("PGQUEUE_API_TOKEN"),
            "read_token": text("PGQUEUE_READ_TOKEN"),
            "max_body_bytes": number("PGQUEUE_MAX_BODY_BYTES", int),
            "default_kind": text("PGQUEUE_HTTP_DEFAULT_KIND"),
            "kinds": tuple(k.strip() for k in kinds.split(",") if k.strip()) if kinds else None,
            "app": text("PGQUEUE_APP"),
            "run_workers": flag("PGQUEUE_HTTP_RUN_WORKERS"),
            "drain_seconds": number("PGQUEUE_HTTP_DRAIN_SECONDS", float),
            "list_limit": number("PGQUEUE_HTTP_LIST_LIMIT", int),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        return cls(**{name: value for name, value in values.items() if value is not None})

    def with_overrides(self, **overrides: Any) -> HttpSettings:
        """A copy with the given non-``None`` values replaced (validated again)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})
