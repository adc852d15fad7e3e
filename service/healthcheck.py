"""Container health checks: ``python -m service.healthcheck worker`` exits 0 while a worker of
this host (its container) beats its heartbeat in Redis, 1 otherwise.

A worker has no port to probe, and arq's own health key is one per queue, shared by every
worker: only the heartbeat says that *this* container's worker is alive and has its models loaded.
"""
from __future__ import annotations

import asyncio
import socket
import sys

from service import queue


async def worker_alive(redis_url: str, host: str, queue_name: str) -> bool:
    pool = await queue.connect(redis_url)
    try:
        return any(str(w.get("name", "")).startswith(f"{host}:") for w in await queue.live_workers(pool, queue_name))
    finally:
        await pool.aclose()


def main(argv: list[str] | None = None) -> int:
    from service.settings import get_settings

    args = sys.argv[1:] if argv is None else argv
    if args != ["worker"]:
        print("usage: python -m service.healthcheck worker", file=sys.stderr)
        return 2
    try:
        settings = get_settings()
        alive = asyncio.run(worker_alive(settings.redis_url, socket.gethostname(), settings.queue_name))
    except queue.QueueUnavailable as exc:
        print(exc, file=sys.stderr)
        return 1
    if not alive:
        print(f"no heartbeat from a worker on {socket.gethostname()}", file=sys.stderr)
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
