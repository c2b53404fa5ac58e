"""Run the unit and stage tests with the process clock moved, to prove no test depends on today's date.

Each offset runs ``pytest -m "unit or stage"`` under Debian's ``faketime`` (libfaketime), so the wall
clock every test and stage reads is a year ahead or behind. Redis and moto's AWS server are started
here, outside faketime, because neither's own clock is what is being tested and neither runs under
libfaketime's interposition: redis-server's allocator fails, and moto's SQS long poll (a condition
wait with a timeout) never returns. Usage: ``python tests/shifted_clock.py [OFFSET ...]`` (default
``+400d -400d``; any offset faketime accepts). Exits non-zero when a run fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from ordersync.dev.devinfra import EmbeddedAws, EmbeddedRedis

DEFAULT_OFFSETS = ("+400d", "-400d")
ROOT = Path(__file__).resolve().parent.parent


def main(offsets: list[str]) -> int:
    faketime = shutil.which("faketime")
    if faketime is None:
        print("faketime is not installed (Debian package faketime)", file=sys.stderr)
        return 2
    failed = []
    with EmbeddedRedis() as redis, EmbeddedAws() as aws:
        env = {
            **os.environ,
            "ORDERSYNC_REDIS__URL": redis.url,
            "ORDERSYNC_AWS__ENDPOINT_URL": aws.endpoint_url,
        }
        for offset in offsets or DEFAULT_OFFSETS:
            print(f"== unit and stage tests with the clock at {offset}", flush=True)
            command = [faketime, "-f", offset, sys.executable, "-m", "pytest", "-q", "-m", "unit or stage"]
            if subprocess.run(command, cwd=ROOT, env=env, check=False).returncode != 0:
                failed.append(offset)
    if failed:
        print(f"failed with the clock at {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
