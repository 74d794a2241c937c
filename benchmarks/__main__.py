"""Run every benchmark: ``python -m benchmarks`` (``./dev bench``), or some:
``python -m benchmarks peers wakeup``."""

import sys

from benchmarks import (
    bench_console,
    bench_dispatch,
    bench_memory,
    bench_peers,
    bench_wakeup,
)

ALL = {
    "peers": bench_peers.main,
    "dispatch": bench_dispatch.main,
    "wakeup": bench_wakeup.main,
    "console": bench_console.main,
    "memory": bench_memory.main,
}

chosen = sys.argv[1:] or list(ALL)
unknown = [name for name in chosen if name not in ALL]
if unknown:
    sys.exit(f"benchmarks: unknown {unknown}; choose from {list(ALL)}")
for i, name in enumerate(chosen):
    if i:
        print()
    ALL[name]()
