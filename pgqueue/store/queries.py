"""Named SQL statements, parsed once from the package's ``.sql`` files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from pgqueue.errors import InvalidOptions

DEFAULT_SCHEMA = "pgqueue"
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_NAME_RE = re.compile(r"^-- name: ([a-z_]+)\s*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class NamedQuery:
    name: str
    description: str
    sql: str


def validate_schema_name(schema: str) -> str:
    """Return ``schema`` if it is a plain lower-case identifier (it is spliced into SQL)."""
    if not isinstance(schema, str) or not _SCHEMA_RE.match(schema):
        raise InvalidOptions(
            f"schema name must match {_SCHEMA_RE.pattern} (a plain lower-case identifier), "
            f"got {schema!r}"
        )
    return schema


def _read(filename: str) -> str:
    return resources.files("pgqueue.store").joinpath("sql", filename).read_text(encoding="utf-8")


def parse_queries(text: str) -> dict[str, NamedQuery]:
    """Split a queries file into statements headed ``-- name: X`` and a description line."""
    queries: dict[str, NamedQuery] = {}
    matches = list(_NAME_RE.finditer(text))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip("\n")
        lines = body.splitlines()
        description = []
        while lines and lines[0].startswith("--"):
            description.append(lines.pop(0).lstrip("- ").strip())
        sql = "\n".join(lines).strip().rstrip(";")
        name = match.group(1)
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        if not description or not sql:
            raise ValueError(f"query {name!r} needs a description line and a statement")
        queries[name] = NamedQuery(name, " ".join(description), sql)
    return queries


@cache
def _raw_queries() -> dict[str, NamedQuery]:
    return parse_queries(_read("queries.sql"))


_SPLICE_RE = re.compile(r"__query:([a-z_]+)__")


def _spliced(sql: str, queries: dict[str, NamedQuery]) -> str:
    """Replace each ``__query:NAME__`` with statement NAME (used as a scalar subquery)."""
    return _SPLICE_RE.sub(lambda m: queries[m.group(1)].sql, sql)


class Queries:
    """The runtime statements bound to one schema."""

    def __init__(self, schema: str = DEFAULT_SCHEMA) -> None:
        self.schema = validate_schema_name(schema)
        self.channel = f"pgqueue_{self.schema}"
        # Ended tasks are announced here, for the processes that wait on them (queue.wait).
        self.finished_channel = f"pgqueue_{self.schema}_finished"
        raw = _raw_queries()
        self._sql = {
            name: _spliced(q.sql, raw).replace("__schema__", self.schema) for name, q in raw.items()
        }

    def __getitem__(self, name: str) -> str:
        return self._sql[name]

    def names(self) -> list[str]:
        return sorted(self._sql)


def schema_ddl(schema: str = DEFAULT_SCHEMA) -> str:
    """The declared schema as plain DDL for ``schema``."""
    return _read("schema.sql").replace("__schema__", validate_schema_name(schema))
