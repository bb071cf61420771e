"""The dashboard's Jinja2 environment: autoescaped templates and the filters they use."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from pgqueue.http.dashboard import diagram
from pgqueue.http.dashboard.data import (
    STATUSES,
)

TEMPLATES = Path(__file__).with_name("templates")


def format_time(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def compact_json(value: Any, width: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


@jinja2.pass_context
def root_path(context: Any) -> str:
    """``{{ root() }}`` in a template: the prefix the dashboard is served under ("" at /), the
    request's ``root_path`` when a host app mounts it or a proxy serves it below a path."""
    root: str = context["request"].scope.get("root_path", "")
    return root


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every task field is untrusted: always escaped, never |safe
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["time"] = format_time
    env.filters["seconds"] = format_seconds
    env.filters["compact_json"] = compact_json
    env.filters["pretty_json"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False)
    env.globals["diagram"] = diagram
    env.globals["STATUSES"] = STATUSES
    env.globals["root"] = root_path
    return env
