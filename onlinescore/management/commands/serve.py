import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from onlinescore.rq import embedded_redis
from projects.services import instance_bootstrap


def web_command(host: str, port: int) -> list[str]:
    """The web server as `serve` runs it: gunicorn, WEB_CONCURRENCY processes of 4 threads.

    No control socket: its default path is per user, so two instances would contend for it.
    Request lines up to gunicorn's largest, 8190 bytes: `GET /v1/scoring_runs?ids=` lists ids."""
    return [sys.executable, "-m", "gunicorn", "onlinescore.wsgi", "--bind", f"{host}:{port}",
            "--workers", os.environ.get("WEB_CONCURRENCY", "2"), "--threads", "4",
            "--access-logfile", "-", "--no-control-socket", "--limit-request-line", "8190"]  # fmt: skip


def instance_secret_key() -> str:
    """SECRET_KEY, or else this instance's own: made once, at random, in VAR_DIR, readable by its
    owner only (settings read it from there), so that the embedded mode never runs with the
    public development key."""
    if key := os.environ.get("SECRET_KEY"):
        return key
    if not settings.SECRET_KEY_FILE.exists():
        # Written whole, then linked into place: a run stopped halfway leaves no empty key, and of
        # two runs at once the first to link wins.
        descriptor, written = tempfile.mkstemp(dir=settings.VAR_DIR)  # mode 0600
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(50))
        with contextlib.suppress(FileExistsError):
            os.link(written, settings.SECRET_KEY_FILE)
        os.unlink(written)
    return settings.SECRET_KEY_FILE.read_text().strip()


class Command(BaseCommand):
    help = "Migrate, create the first admin and key on first run, then serve the web app and one RQ worker."
    # Checked in `handle`, once this instance's secret key is in place.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))

    def handle(self, *args, port, host, **options):
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        settings.VAR_DIR.chmod(0o700)  # the database, the key, Redis's socket: the owner's alone
        # Before the first run made the key, this process read none: it takes it now, as its
        # children will when they start.
        settings.SECRET_KEY = instance_secret_key()
        self.check()
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        self._announce(f"http://{host}:{port}", instance_bootstrap())
        with embedded_redis():
            self._run_children(host, port)

    def _run_children(self, host: str, port: int) -> None:
        env = {**os.environ, "REDIS_URL": settings.REDIS_URL}
        worker = [sys.executable, str(settings.BASE_DIR / "manage.py"), "worker"]
        # Each child in a session of its own: a terminal's Ctrl-C reaches this process alone,
        # which stops them in order (gunicorn's master stops its workers). A worker signalled by
        # both the terminal and its master at once could hang in its signal handlers.
        children = {
            name: subprocess.Popen(cmd, env=env, cwd=settings.BASE_DIR, start_new_session=True)
            for name, cmd in (
                ("the web server (gunicorn)", web_command(host, port)),
                ("the RQ worker", worker),
            )
        }

        stopping = []
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal closed
            signal.signal(signum, lambda *_: stopping.append(True))
        try:
            while not stopping and all(child.poll() is None for child in children.values()):
                time.sleep(0.3)
        finally:
            exited = {name: child.returncode for name, child in children.items() if child.poll() is not None}
            for child in children.values():
                if child.poll() is None:
                    child.terminate()
            for child in children.values():
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
                # Whatever is left of its process group (a gunicorn worker, a sandboxed scorer)
                # would keep the port or the database.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        if not stopping:
            name, code = next(iter(exited.items()))
            raise CommandError(f"{name.capitalize()} exited on its own (exit code {code}); stopped the rest.")

    def _announce(self, url: str, credentials: dict | None) -> None:
        if credentials:
            self.stdout.write(
                "\nFirst run: created organization {organization!r}, its owner and an API key.\n"
                "  Sign in: {url}/  login {username} / {password}  (the admin too: {url}/admin/)\n"
                "  API key: {api_key}\n"
                "  (shown once; make more with `manage.py create_api_key`)\n".format(url=url, **credentials)
            )
        self.stdout.write(
            f"\nonlinescore is at {url}  (API docs: {url}/api/docs/)\n"
            f"Log to it with BRAINTRUST_APP_URL={url} BRAINTRUST_API_KEY=<key>. Ctrl-C stops it.\n"
        )
        self.stdout.flush()
