"""Order download with many channels (issue #19, "a thousand sellers"): one round of every channel on a
small Redis pool, at most ``download.max_concurrent_channels`` rounds at once; the round's wall time,
CPU and memory per channel.

Prints figures; asserts nothing. The stage (its runtime, the real rate limiter, a recording Kafka
producer) and the simulator run in this process, on an embedded Redis:

    .venv/bin/python bench/channels.py [--channels 200,1000] [--pool 8] [--turns 16]

CPU is the stage's thread only (the simulator answers from a thread of its own). ``--memory``: also the
growth of Python's allocations over the round (tracemalloc's peak: the simulator's included, an upper
bound); tracing slows the round several times over, so wall and CPU are for a run without it.
Amazon's plans run 10,000 times faster, so no round waits for an empty bucket's first token.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import tracemalloc

from ordersync.clock import EpochClock
from ordersync.dev.devinfra import EmbeddedRedis
from ordersync.dev.testing import RecordingRuntime, channels_of
from ordersync.kafka.faust_app import make_app
from ordersync.producers import order_download
from ordersync.schemas.topics import DOWNLOAD_CURSORS
from ordersync.settings import AmazonSettings, DownloadSettings, RedisSettings, Settings
from ordersync.simulator.runner import RunningSimulator
from ordersync.simulator.testing import many_sellers


async def one_round(redis_url: str, channels: int, pool: int, turns: int, *, memory: bool) -> None:
    scenario = many_sellers(channels)
    sim = RunningSimulator(scenario)
    sim.start()
    sim.state.advance_clock(300)
    settings = Settings(
        redis=RedisSettings(url=redis_url, key_prefix=f"bench-{channels}", max_connections=pool),
        amazon=AmazonSettings(endpoint=sim.base_url, lwa_endpoint=sim.lwa_url, time_scale=10_000),
        download=DownloadSettings(max_concurrent_channels=turns),
    )
    runtime = RecordingRuntime(
        "order-download",
        settings,
        make_app("order-download", settings),
        channels_of(scenario),
        clock=EpochClock(sim.state.now),
    )
    await runtime.start()
    names = {channel.name for channel in runtime.channels.active()}
    if memory:
        tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    cpu, wall = time.thread_time(), time.monotonic()
    polling = asyncio.create_task(order_download.poll_channels(runtime))
    try:
        while {saved.channel for saved in runtime.payloads(DOWNLOAD_CURSORS.name)} < names:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        wall, cpu = time.monotonic() - wall, time.thread_time() - cpu
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        polling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await polling
        await runtime.close()
        sim.stop()
    print(
        f"{channels:>8}{pool:>6}{turns:>7}{wall:>9.1f}{1000 * cpu / channels:>13.2f}"
        + (f"{(peak - base) / 1024 / channels:>13.1f}" if memory else f"{'-':>13}")
        + f"{len(runtime.stalls):>8}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", default="200,1000", help="comma-separated channel counts, one run each")
    parser.add_argument("--pool", type=int, default=8, help="redis.max_connections")
    parser.add_argument("--turns", type=int, default=16, help="download.max_concurrent_channels")
    parser.add_argument("--memory", action="store_true", help="trace allocations (slow)")
    args = parser.parse_args()
    print("one download round of every channel (repolls of early channels overlap the end)")
    columns = ("channels", 8), ("pool", 6), ("turns", 7), ("wall s", 9), ("CPU ms/ch", 13), ("peak KB/ch", 13)
    print("".join(f"{name:>{width}}" for name, width in columns) + f"{'stalls':>8}")
    with EmbeddedRedis() as redis:
        for count in (int(c) for c in args.channels.split(",")):
            asyncio.run(one_round(redis.url, count, args.pool, args.turns, memory=args.memory))
    return 0


if __name__ == "__main__":
    sys.exit(main())
