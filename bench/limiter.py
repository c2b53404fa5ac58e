"""Benchmark of the rate limiter's decisions (prints figures, asserts nothing).

Decisions per second and p50/p99 latency of one ``acquire`` with 1, 4 and 16 concurrent clients (each a
process running one asyncio client, as stages do), side by side with:

- the ``limits`` library's moving-window limiter (``hit``) on the same Redis, through redis-py;
- a bare EVALSHA of a no-op script from the same kind of client: the ceiling of any one-script decision;
- the same no-op EVALSHA sent pre-encoded on a pooled connection, as ``acquire`` sends its script (it skips
  redis-py's per-argument encoding and per-call hooks): how far the client side could still go.

The bucket is made too large to ever refuse, so every call is a full decision that grants. It starts its
own redis-server (``ordersync.dev.devinfra.EmbeddedRedis``) unless ``ORDERSYNC_REDIS__URL`` is set.

    .venv/bin/python bench/limiter.py [--seconds 3] [--clients 1,4,16]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import time
import uuid
from contextlib import ExitStack
from typing import Any

RUNS = ("ordersync acquire", "limits moving window", "no-op EVALSHA (ceiling)", "no-op EVALSHA, pre-encoded")


async def _client_loop(kind: str, url: str, prefix: str, seconds: float) -> list[float]:
    import redis.asyncio  # noqa: PLC0415 - imported in the spawned process

    latencies: list[float] = []
    client = redis.asyncio.Redis.from_url(url)
    try:
        if kind == RUNS[0]:
            from ordersync.ratelimit import PlanBook, RedisRateLimiter  # noqa: PLC0415

            limiter = RedisRateLimiter(
                client,
                plans=PlanBook({"bench": (1_000_000.0, 1_000_000)}),
                application_id="bench",
                key_prefix=prefix,
                send_deadline_s=0.000001,
            )
            # A pair whose state began long ago: the bucket is full.
            await client.set(f"{prefix}:rl-epoch:{{SELLER:bench}}", 1)

            async def decide() -> None:
                await limiter.acquire("bench", "SELLER", timeout=0)

        elif kind == RUNS[1]:
            from limits import parse  # noqa: PLC0415
            from limits.aio.storage import RedisStorage  # noqa: PLC0415
            from limits.aio.strategies import MovingWindowRateLimiter  # noqa: PLC0415

            storage = RedisStorage(url.replace("redis://", "async+redis://", 1), implementation="redispy")
            moving = MovingWindowRateLimiter(storage)
            item = parse("1000000/second")

            async def decide() -> None:
                await moving.hit(item, prefix, "SELLER")

        elif kind == RUNS[2]:
            script = client.register_script("return 1")

            async def decide() -> None:
                await script(keys=[f"{prefix}:noop"], args=[])

        else:
            sha = await client.script_load("return 1")
            key = f"{prefix}:noop".encode()
            packed = b"*4\r\n$7\r\nEVALSHA\r\n$40\r\n%b\r\n$1\r\n1\r\n$%d\r\n%b\r\n" % (
                sha.encode(),
                len(key),
                key,
            )
            pool: Any = client.connection_pool

            async def decide() -> None:
                connection = await pool.get_connection()
                try:
                    await connection.send_packed_command(packed, check_health=False)
                    await connection.read_response()
                finally:
                    await pool.release(connection)

        for _ in range(50):  # warm up: connection, script cache
            await decide()
        stop_at = time.perf_counter() + seconds
        while (started := time.perf_counter()) < stop_at:
            await decide()
            latencies.append(time.perf_counter() - started)
    finally:
        await client.aclose()
    return latencies


def _client_process(kind: str, url: str, prefix: str, seconds: float, *, start: Any, results: Any) -> None:
    start.wait()
    results.put(asyncio.run(_client_loop(kind, url, prefix, seconds)))


def measure(kind: str, url: str, clients: int, seconds: float) -> tuple[float, float, float]:
    """(decisions per second, p50 µs, p99 µs) of ``clients`` processes for ``seconds``."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(clients)
    results = context.Queue()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    processes = [
        context.Process(
            target=_client_process,
            args=(kind, url, prefix, seconds),
            kwargs={"start": start, "results": results},
        )
        for _ in range(clients)
    ]
    for process in processes:
        process.start()
    latencies = [value for _ in processes for value in results.get(timeout=120 + seconds)]
    for process in processes:
        process.join(30)
    latencies.sort()
    rate = len(latencies) / seconds
    p50 = statistics.median(latencies) * 1e6
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1e6
    return rate, p50, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="Measured seconds per run.")
    parser.add_argument("--clients", default="1,4,16", help="Comma-separated client counts.")
    parser.add_argument(
        "--repeat", type=int, default=3, help="Runs per figure, interleaved; the median is printed."
    )
    options = parser.parse_args()
    counts = [int(part) for part in options.clients.split(",")]
    with ExitStack() as stack:
        url = os.environ.get("ORDERSYNC_REDIS__URL")
        if not url:
            from ordersync.dev.devinfra import EmbeddedRedis  # noqa: PLC0415

            url = stack.enter_context(EmbeddedRedis()).url
        import redis  # noqa: PLC0415

        info = redis.Redis.from_url(url).info("server")
        version = info["redis_version"]
        print(
            f"redis-server {version} at {url}; {os.cpu_count()} CPUs; medians of {options.repeat} runs of "
            f"{options.seconds:g} s"
        )
        header = ("client", "clients", "decisions/s", "p50 µs", "p99 µs", "of ceiling")
        print("{:<26} {:>7} {:>12} {:>8} {:>8} {:>10}".format(*header))
        for clients in counts:
            # Interleaved, so a slow spell of the machine touches every kind alike; medians per figure.
            runs = [
                [measure(kind, url, clients, options.seconds) for kind in RUNS] for _ in range(options.repeat)
            ]
            figures = {
                kind: tuple(statistics.median(run[index][figure] for run in runs) for figure in range(3))
                for index, kind in enumerate(RUNS)
            }
            ceiling = figures[RUNS[2]][0]
            for kind in RUNS:
                rate, p50, p99 = figures[kind]
                share = rate / ceiling
                print(f"{kind:<26} {clients:>7} {rate:>12,.0f} {p50:>8.0f} {p99:>8.0f} {share:>10.2f}")


if __name__ == "__main__":
    main()
