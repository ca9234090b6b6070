"""`manage.py serve`, what `make run` runs: first-run credentials, web + worker, Ctrl-C stops all."""

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import redis
import requests
from django.conf import settings

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_until(process, pattern: str, timeout: float = 90) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        seen += line
        if re.search(pattern, seen):
            return seen
    raise AssertionError(f"{pattern!r} never appeared in:\n{seen}")


def serve(env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "serve"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip


def test_serve_prints_credentials_serves_the_api_and_stops_everything_on_ctrl_c(tmp_path):
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "DATABASE_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update(ONLINESCORE_VAR_DIR=str(tmp_path), PORT=str(port), PYTHONUNBUFFERED="1", WEB_CONCURRENCY="1")
    process = serve(env)
    try:
        output = read_until(process, r"Ctrl-C stops it")
        key = re.search(r"API key: (\S+)", output).group(1)
        password = re.search(r"login admin / (\S+)", output).group(1)
        assert f"http://127.0.0.1:{port}" in output

        headers = {"Authorization": f"Bearer {key}"}
        for _ in range(100):
            try:
                response = requests.post(
                    f"http://127.0.0.1:{port}/v1/project", json={"name": "demo"}, headers=headers, timeout=5
                )
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        assert response.status_code == 200, response.text
        project_id = response.json()["id"]

        # The printed login signs in to the web app, which lists the project.
        browser = requests.Session()
        form = browser.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert form.url.endswith("/accounts/login/?next=/")
        signed_in = browser.post(
            form.url,
            data={
                "username": "admin",
                "password": password,
                "csrfmiddlewaretoken": browser.cookies["csrftoken"],
            },
            headers={"Referer": form.url},
            timeout=5,
        )
        assert signed_in.url == f"http://127.0.0.1:{port}/" and f"/projects/{project_id}/" in signed_in.text
        # The instance's own secret key, not the public development one, readable by its owner only.
        assert "projects.W001" not in output
        assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
        assert tmp_path.stat().st_mode & 0o777 == 0o700
        database = sqlite3.connect(tmp_path / "onlinescore.sqlite3")
        assert database.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        database.close()
        assert (tmp_path / "redis.sock").exists()

        children = psutil.Process(process.pid).children(recursive=True)
        assert any("gunicorn" in " ".join(c.cmdline()) for c in children)
        assert any("worker" in c.cmdline() for c in children)
        embedded_redis = redis.Redis(unix_socket_path=str(tmp_path / "redis.sock"))
        assert embedded_redis.ping()
    finally:
        # Ctrl-C in a terminal: SIGINT to its whole foreground process group.
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=30)
    time.sleep(0.5)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    with pytest.raises(redis.ConnectionError):
        embedded_redis.ping()

    # A second run keeps the data and does not make new credentials; the key is the same, so
    # the session of the first run is still signed in.
    second = serve(env)
    try:
        output = read_until(second, r"Ctrl-C stops it")
        assert "First run" not in output
        for _ in range(100):
            try:
                page = browser.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        assert page.url == f"http://127.0.0.1:{port}/" and f"/projects/{project_id}/" in page.text
    finally:
        second.send_signal(signal.SIGINT)
        second.wait(timeout=30)


def test_serve_stops_the_rest_and_names_the_child_that_exited_on_its_own(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "DATABASE_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update(
        ONLINESCORE_VAR_DIR=str(tmp_path), PORT=str(free_port()), PYTHONUNBUFFERED="1", WEB_CONCURRENCY="1"
    )
    process = serve(env)
    try:
        read_until(process, r"Ctrl-C stops it")
        base = f"http://127.0.0.1:{env['PORT']}"
        for _ in range(100):  # the web server answers: its master and worker are up
            try:
                requests.get(f"{base}/version", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        children = psutil.Process(process.pid).children(recursive=True)
        [master] = [c for c in psutil.Process(process.pid).children() if "gunicorn" in " ".join(c.cmdline())]
        assert master.children()
        master.kill()  # its worker is left behind, as after a crash
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    assert "The web server (gunicorn) exited on its own (exit code -9); stopped the rest." in output
    time.sleep(0.5)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
