"""Code-scorer sandbox overhead: what `Pool.run` adds to a trivial scorer, in Python and in
TypeScript, against calling the same trivial Python function in this process.

    .venv/bin/python bench/sandbox.py [--calls 2000] [--warmup 200] [--cold 5]

1. Warm calls: one Pool, one tenant; after --warmup calls (the process is started and the code
   loaded), the wall time of each of --calls sequential `pool.run(runtime, code, args, ...)`
   calls of a trivial exact-match scorer, with a small span as arguments. Printed: median and
   p99 in ms, beside the in-process baseline (the same Python function called directly, timed
   the same way) and the ratio of the medians. Target: median and p99 at most 10 ms per runtime.
2. Cold start: the first call on a fresh Pool (start the process, confine it, load the code,
   answer), the median of --cold fresh pools per runtime. Paid once per (runtime, tenant)
   process, not per span.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PYTHON = """\
def handler(output, expected):
    return 1 if output == expected else 0
"""
TYPESCRIPT = """\
export function handler({ output, expected }: { output: string; expected: string }): number {
  return output === expected ? 1 : 0;
}
"""
ARGS = {
    "input": "What is the capital of France?",
    "output": "Paris",
    "expected": "Paris",
    "metadata": {"model": "gpt-4o", "user": "u42"},
}
TARGET_MS = 10


def handler(output, expected):
    return 1 if output == expected else 0


def timings(func, calls: int) -> list[float]:
    """The wall time of each call, in seconds."""
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return times


def p99(times: list[float]) -> float:
    return statistics.quantiles(times, n=100, method="inclusive")[98]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--cold", type=int, default=5)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "onlinescore.settings.base")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from scoring.scorers.sandbox import Pool

    def baseline():
        return handler(output=ARGS["output"], expected=ARGS["expected"])

    print(f"machine: nproc={os.cpu_count()}")
    base = timings(baseline, args.calls)
    base_median = statistics.median(base)
    print(f"\n1. warm calls: {args.calls:,} after {args.warmup} warm-up calls (ms)")
    print(f"{'scorer':24} {'median':>9} {'p99':>9} {'in-process':>11} {'ratio':>9}")
    print(f"{'in-process Python':24} {base_median * 1e3:9.4f} {p99(base) * 1e3:9.4f}")

    figures = {}
    scorers = (("python", "Python, sandboxed", PYTHON), ("node", "TypeScript, sandboxed", TYPESCRIPT))
    for runtime, label, code in scorers:
        pool = Pool()
        try:
            assert pool.run(runtime, code, ARGS, tenant="bench") == 1

            def call(runtime=runtime, code=code, pool=pool):
                return pool.run(runtime, code, ARGS, tenant="bench")

            timings(call, args.warmup)
            times = timings(call, args.calls)
        finally:
            pool.close()
        median, tail = statistics.median(times), p99(times)
        figures[runtime] = (median, tail)
        ms = (median * 1e3, tail * 1e3, base_median * 1e3)
        print(f"{label:24} {ms[0]:9.3f} {ms[1]:9.3f} {ms[2]:11.4f} {median / base_median:8.0f}x")

    print(f"\n2. cold start: the first call on a fresh pool, median of {args.cold} (ms)")
    cold = {}
    for runtime, code in (("python", PYTHON), ("node", TYPESCRIPT)):
        starts = []
        for _ in range(args.cold):
            pool = Pool()
            try:
                t0 = time.perf_counter()
                pool.run(runtime, code, ARGS, tenant="bench")
                starts.append(time.perf_counter() - t0)
            finally:
                pool.close()
        cold[runtime] = statistics.median(starts)
        spread = f"(min {min(starts) * 1e3:.1f}, max {max(starts) * 1e3:.1f})"
        print(f"{runtime:24} {cold[runtime] * 1e3:9.1f}   {spread}")

    ok = all(median * 1e3 <= TARGET_MS and tail * 1e3 <= TARGET_MS for median, tail in figures.values())
    (py_median, py_tail), (ts_median, ts_tail) = figures["python"], figures["node"]
    print(
        f"\nSUMMARY sandbox: per call Python {py_median * 1e3:.2f} ms (p99 {py_tail * 1e3:.2f}), "
        f"TypeScript {ts_median * 1e3:.2f} ms (p99 {ts_tail * 1e3:.2f}) (target <= {TARGET_MS} ms); "
        f"in-process {base_median * 1e6:.2f} us; cold start Python {cold['python'] * 1e3:.0f} ms, "
        f"node {cold['node'] * 1e3:.0f} ms {'OK' if ok else 'BELOW TARGET'} | nproc={os.cpu_count()}"
    )
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
