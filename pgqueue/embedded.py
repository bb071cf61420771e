"""An embedded PostgreSQL (from the ``pgserver`` wheel) for demos and tests without a server."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any


def start_embedded(data_dir: str | os.PathLike[str], *, cleanup: bool = False) -> tuple[Any, str]:
    """Start (or reuse) a PostgreSQL in ``data_dir``; return the server handle and its DSN.

    Needs ``pip install pgqueue[embedded]``. With ``cleanup`` the data directory is deleted
    when the server stops; otherwise it is kept and reused next time.
    """
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "no PGQUEUE_DSN is set and the embedded PostgreSQL is not installed: "
            "pip install 'pgqueue[embedded]' or point PGQUEUE_DSN at a server"
        ) from exc
    path = Path(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(  # type: ignore[attr-defined,unused-ignore]
            path, cleanup_mode="delete" if cleanup else "stop"
        )
    return server, server.get_uri()
