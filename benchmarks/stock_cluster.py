"""A PostgreSQL cluster with stock settings, started by the benchmarks that need a server of
their own: initdb with the ``pgserver`` wheel's binaries (autovacuum on, fsync on, default
memory), listening on a free loopback port; only where it listens is configured."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def stock_server(root: Path, name: str) -> Any:
    """Start a stock cluster in ``root / name``; the caller calls ``ensure_stopped()``."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.cluster.servers import PostgresServer

    class StockServer(PostgresServer):
        def _configure(self, *lines: str) -> None:
            settings = [
                "listen_addresses = '127.0.0.1'",
                f"port = {self.port}",
                f"unix_socket_directories = '{self.data}'",
                *lines,
            ]
            with (self.data / "postgresql.conf").open("a") as conf:
                conf.write("\n" + "\n".join(settings) + "\n")

    server = StockServer(root, name)
    server.init_primary()
    server.start()
    return server
