"""Run every benchmark: ``python -m benchmarks``."""

from benchmarks import bench_dispatch, bench_wakeup

bench_dispatch.main()
print()
bench_wakeup.main()
