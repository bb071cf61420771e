"""A worker process of a sharded queue, for the cluster suite.

``python -m tests.cluster.shard_worker OUT`` with ``PGQUEUE_SHARDS`` (DSNs, space-separated)
and ``PGQUEUE_SCHEMA``: runs kind ``job`` on every shard, appending each payload's key to OUT,
until SIGTERM (then drains and exits 0).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from pgqueue import KindOptions, LoopOptions
from pgqueue.adapters.shards import AsyncShardedQueue


async def main(out_path: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    with open(out_path, "a", buffering=1) as out:

        async def job(envelope: Any) -> None:
            out.write(f"{envelope.external_key}\n")

        queue = AsyncShardedQueue(
            os.environ["PGQUEUE_SHARDS"].split(), schema=os.environ["PGQUEUE_SCHEMA"]
        )
        queue.register_kind(
            "job",
            job,
            KindOptions(
                worker_count=20,
                attempt_timeout=10.0,
                loop=LoopOptions(poll_period=0.5, claim_batch_size=100),
            ),
        )
        await queue.start()
        await queue.wait_listening()
        print("listening", flush=True)
        await stop.wait()
        await queue.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
