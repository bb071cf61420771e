"""An embedded PostgreSQL (from the ``pgserver`` wheel) for demos and tests without a server."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from pgqueue.errors import MissingExtra

# pgserver logs every initdb/pg_ctl command line and its whole output at INFO (about sixty
# lines on a first start); an application that logs at INFO would show them all.
_SERVER_LOGGER = logging.getLogger("pgserver")


def start_embedded(data_dir: str | os.PathLike[str], *, cleanup: bool = False) -> tuple[Any, str]:
    """Start (or reuse) a PostgreSQL in ``data_dir``; return the server handle and its DSN.

    Needs ``pip install "pgqueue-tasks[embedded]"``. With ``cleanup`` the data directory is
    deleted when the server stops; otherwise it is kept and reused next time. The server's own
    logging is kept to warnings unless the ``pgserver`` logger has a level set already.
    """
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtra("the embedded PostgreSQL (used when no DSN is set)", "embedded") from exc
    if _SERVER_LOGGER.level == logging.NOTSET:
        _SERVER_LOGGER.setLevel(logging.WARNING)
    path = Path(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(  # type: ignore[attr-defined,unused-ignore]
            path, cleanup_mode="delete" if cleanup else "stop"
        )
    return server, server.get_uri()
