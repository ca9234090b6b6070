"""The code-scorer sandbox: each hostile attempt the issue lists is blocked with a clear message,
for Python and for Node.js (TypeScript) alike, and the pool keeps scoring afterwards; and the
handler contract, warm reuse and tenant separation.

Every test uses its own `Pool` (closed after it), never the module-global one. Paths, ports and
pids go to the handler as its `input`, so that each attack is one fixed piece of code per
runtime. Each attack is first shown to work outside the sandbox (the file is readable, the port
accepts, ...), so that a test fails if the sandbox stops blocking it.
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from scoring.scorers import ScorerError
from scoring.scorers import sandbox as sandbox_module
from scoring.scorers.sandbox import Pool

RUNTIMES = ["python", "node"]
TENANT = "org-a"

# One piece of code per attempt, as the same logic in each runtime.
CODE = {
    "identity": {
        "python": "def handler(output):\n    return output\n",
        "node": "export function handler({ output }) { return output; }\n",
    },
    "read_file": {
        "python": "def handler(input):\n    with open(input) as f:\n        return f.read()\n",
        "node": (
            'import fs from "node:fs";\n'
            'export function handler({ input }) { return fs.readFileSync(input, "utf8"); }\n'
        ),
    },
    "list_directory": {
        "python": "import os\n\ndef handler(input):\n    return os.listdir(input)\n",
        "node": (
            'import fs from "node:fs";\n'
            "export function handler({ input }) { return fs.readdirSync(input); }\n"
        ),
    },
    "write_file": {
        "python": (
            "def handler(input):\n"
            "    with open(input, 'w') as f:\n"
            "        f.write('written')\n"
            "    with open(input) as f:\n"
            "        return f.read()\n"
        ),
        "node": (
            'import fs from "node:fs";\n'
            "export function handler({ input }) {\n"
            '  fs.writeFileSync(input, "written");\n'
            '  return fs.readFileSync(input, "utf8");\n'
            "}\n"
        ),
    },
    "cwd": {
        "python": "import os\n\ndef handler():\n    return os.getcwd()\n",
        "node": "export function handler() { return process.cwd(); }\n",
    },
    "tcp_connect": {
        "python": (
            "import socket\n\n"
            "def handler(input):\n"
            "    socket.create_connection(('127.0.0.1', input), timeout=2).close()\n"
            "    return 'connected'\n"
        ),
        "node": (
            'import net from "node:net";\n'
            "export function handler({ input }) {\n"
            "  return new Promise((resolve, reject) => {\n"
            '    net.connect(input, "127.0.0.1")\n'
            '      .on("connect", () => resolve("connected"))\n'
            '      .on("error", reject);\n'
            "  });\n"
            "}\n"
        ),
    },
    "unix_connect": {
        "python": (
            "import socket\n\n"
            "def handler(input):\n"
            "    s = socket.socket(socket.AF_UNIX)\n"
            "    s.connect(input)\n"
            "    return 'connected'\n"
        ),
        "node": (
            'import net from "node:net";\n'
            "export function handler({ input }) {\n"
            "  return new Promise((resolve, reject) => {\n"
            '    net.connect(input).on("connect", () => resolve("connected")).on("error", reject);\n'
            "  });\n"
            "}\n"
        ),
    },
    "infinite_loop": {
        "python": "def handler():\n    while True:\n        pass\n",
        "node": "export function handler() { while (true) {} }\n",
    },
    "memory_bomb": {
        "python": (
            "def handler():\n    hoard = []\n    while True:\n        hoard.append(bytearray(10_000_000))\n"
        ),
        "node": (
            "export function handler() {\n"
            "  const hoard = [];\n"
            "  while (true) hoard.push(new Array(1e6).fill(1.5));\n"
            "}\n"
        ),
    },
    # Children exit at once, so that if the sandbox ever let one through this stays a loop of
    # 100 short processes, not an exponential bomb on the test machine.
    "fork_bomb": {
        "python": (
            "import os\n\n"
            "def handler():\n"
            "    for _ in range(100):\n"
            "        if os.fork() == 0:\n"
            "            os._exit(0)\n"
            "    return 'forked'\n"
        ),
        "node": (
            'import { execFileSync } from "node:child_process";\n'
            "export function handler() {\n"
            '  for (let i = 0; i < 100; i++) execFileSync("/bin/true");\n'
            '  return "forked";\n'
            "}\n"
        ),
    },
    "spawn": {
        "python": (
            "import subprocess\n\ndef handler():\n    return subprocess.run(['/bin/true']).returncode\n"
        ),
        "node": (
            'import { spawnSync } from "node:child_process";\n'
            "export function handler() {\n"
            '  const child = spawnSync("/bin/true");\n'
            "  if (child.error) throw child.error;\n"
            "  return child.status;\n"
            "}\n"
        ),
    },
    "environment": {
        "python": "import os\n\ndef handler():\n    return dict(os.environ)\n",
        "node": "export function handler() { return { ...process.env }; }\n",
    },
    "parent_environment": {
        "python": (
            "import os\n\n"
            "def handler():\n"
            "    with open(f'/proc/{os.getppid()}/environ', 'rb') as f:\n"
            "        return f.read().decode(errors='replace')\n"
        ),
        "node": (
            'import fs from "node:fs";\n'
            "export function handler() {\n"
            '  return fs.readFileSync(`/proc/${process.ppid}/environ`, "latin1");\n'
            "}\n"
        ),
    },
    "kill": {
        "python": "import os\n\ndef handler(input):\n    os.kill(input, 9)\n    return 'killed'\n",
        "node": 'export function handler({ input }) { process.kill(input, "SIGKILL"); return "killed"; }\n',
    },
    "print_100_mb": {
        "python": (
            "import os, sys\n\n"
            "def handler():\n"
            "    print('x' * 100_000_000)\n"
            "    sys.stderr.write('x' * 100_000_000)\n"
            "    os.write(2, b'x' * 100_000_000)\n"
            "    return 'printed'\n"
        ),
        "node": (
            "export function handler() {\n"
            '  console.log("x".repeat(100_000_000));\n'
            '  console.error("x".repeat(100_000_000));\n'
            '  process.stderr.write("x".repeat(100_000_000));\n'
            '  return "printed";\n'
            "}\n"
        ),
    },
    "return_100_mb": {
        "python": "def handler():\n    return 'x' * 100_000_000\n",
        "node": 'export function handler() { return "x".repeat(100_000_000); }\n',
    },
    "pid": {
        "python": "import os\n\ndef handler():\n    return os.getpid()\n",
        "node": "export function handler() { return process.pid; }\n",
    },
    # 1,100 empty files, or 3 files of 12 MB, in the scratch directory; answers its pid.
    "many_files": {
        "python": (
            "import os\n\ndef handler():\n    for i in range(1100):\n        open(f'f{i}', 'w').close()\n"
            "    return os.getpid()\n"
        ),
        "node": (
            'import { writeFileSync } from "node:fs";\n'
            "export function handler() {\n"
            '  for (let i = 0; i < 1100; i++) writeFileSync(`f${i}`, "");\n'
            "  return process.pid;\n"
            "}\n"
        ),
    },
    # The same 1,100 files, written after the call has answered.
    "files_later": {
        "python": (
            "import os, threading, time\n\n"
            "def spam():\n    time.sleep(0.2)\n    for i in range(1100):\n        open(f'later{i}', 'w').close()\n\n"
            "def handler():\n    threading.Thread(target=spam).start()\n    return os.getpid()\n"
        ),
        "node": (
            'import { writeFileSync } from "node:fs";\n'
            "export function handler() {\n"
            '  setTimeout(() => { for (let i = 0; i < 1100; i++) writeFileSync(`later${i}`, ""); }, 200);\n'
            "  return process.pid;\n"
            "}\n"
        ),
    },
    "big_files": {
        "python": (
            "import os\n\ndef handler():\n    for i in range(3):\n"
            "        with open(f'big{i}', 'wb') as f:\n            f.write(b'x' * 12_000_000)\n"
            "    return os.getpid()\n"
        ),
        "node": (
            'import { writeFileSync } from "node:fs";\n'
            "export function handler() {\n"
            '  for (let i = 0; i < 3; i++) writeFileSync(`big${i}`, "x".repeat(12_000_000));\n'
            "  return process.pid;\n"
            "}\n"
        ),
    },
    "counter": {
        "python": "calls = 0\n\ndef handler():\n    global calls\n    calls += 1\n    return calls\n",
        "node": "let calls = 0;\nexport function handler() { calls += 1; return calls; }\n",
    },
    # Process-wide state, beyond the scorer's own module: builtins in Python, globalThis in Node.
    "remember": {
        "python": (
            "import builtins\n\ndef handler(input):\n    builtins.remembered = input\n    return input\n"
        ),
        "node": "export function handler({ input }) { globalThis.remembered = input; return input; }\n",
    },
    "recall": {
        "python": "import builtins\n\ndef handler():\n    return getattr(builtins, 'remembered', None)\n",
        "node": "export function handler() { return globalThis.remembered ?? null; }\n",
    },
    "all_arguments": {
        "python": (
            "def handler(input, output, expected, metadata):\n"
            "    return {'input': input, 'output': output, 'expected': expected, 'metadata': metadata}\n"
        ),
        "node": (
            "export function handler({ input, output, expected, metadata }) {\n"
            "  return { input, output, expected, metadata };\n"
            "}\n"
        ),
    },
    "async": {
        "python": (
            "import asyncio\n\n"
            "async def handler(output, expected):\n"
            "    await asyncio.sleep(0.01)\n"
            "    return {'score': 1 if output == expected else 0}\n"
        ),
        "node": (
            "export async function handler({ output, expected }) {\n"
            "  await new Promise((resolve) => setTimeout(resolve, 10));\n"
            "  return { score: output === expected ? 1 : 0 };\n"
            "}\n"
        ),
    },
    "raises_on_line_4": {
        "python": (
            "def handler(output):\n"
            "    if output:\n"
            "        pass\n"
            "    raise ValueError(f'cannot score {output}')\n"
        ),
        "node": (
            "export function handler({ output }) {\n"
            "  if (output) {\n"
            "  }\n"
            "  throw new Error(`cannot score ${output}`);\n"
            "}\n"
        ),
    },
    "syntax_error_on_line_3": {
        "python": "def handler(output):\n    total = 1\n    return (total +\n",
        "node": "export function handler({ output }) {\n  const total = 1;\n  return (total +;\n}\n",
    },
    "no_handler": {
        "python": "def score(output):\n    return 1\n",
        "node": "export function score() { return 1; }\n",
    },
}


def code(name: str, runtime: str) -> str:
    return CODE[name][runtime]


@pytest.fixture
def pool():
    pool = Pool()
    yield pool
    pool.close()


def run(pool, runtime, name, *, tenant=TENANT, timeout=None, **args):
    return pool.run(runtime, code(name, runtime), args, tenant=tenant, timeout=timeout)


def refused(pool, runtime, name, **kwargs) -> str:
    """The ScorerError message of a call that must fail."""
    with pytest.raises(ScorerError) as caught:
        run(pool, runtime, name, **kwargs)
    return str(caught.value)


def assert_pool_still_scores(pool, runtime, tenant=TENANT):
    """A normal call right after the attempt gets its answer."""
    marker = uuid.uuid4().hex
    assert run(pool, runtime, "identity", tenant=tenant, output=marker) == marker


# --- files ---------------------------------------------------------------------------------


def _project_file(which: str) -> Path:
    return {
        "/etc/passwd": Path("/etc/passwd"),
        "settings": django_settings.BASE_DIR / "onlinescore/settings/base.py",
        "database": django_settings.SQLITE_PATH,
    }[which]


@pytest.fixture
def database_file():
    """The embedded database's file, made for the test where it does not exist (the tests'
    own SQLite database lives in memory, and a fresh checkout has none)."""
    path = Path(django_settings.SQLITE_PATH)
    made = not path.exists()
    if made:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"SQLite format 3\x00")
    yield path
    if made:
        path.unlink()


@pytest.mark.parametrize("which", ["/etc/passwd", "settings", "database"])
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_scorer_cannot_read_system_or_project_files(pool, runtime, which, database_file):
    path = _project_file(which)
    path.read_bytes()  # readable outside the sandbox

    message = refused(pool, runtime, "read_file", input=str(path))

    assert str(path) in message
    assert "ermission denied" in message or "EACCES" in message
    assert_pool_still_scores(pool, runtime)


@pytest.mark.parametrize("directory", ["VAR_DIR", "BASE_DIR"])
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_scorer_cannot_list_the_project_or_its_data_directory(pool, runtime, directory):
    path = str(getattr(django_settings, directory))
    os.listdir(path)  # readable outside the sandbox

    message = refused(pool, runtime, "list_directory", input=path)

    assert path in message
    assert "ermission denied" in message or "EACCES" in message
    assert_pool_still_scores(pool, runtime)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_scorer_can_write_and_read_back_a_file_in_its_scratch_directory(pool, runtime):
    scratch = run(pool, runtime, "cwd")
    assert Path(scratch).name.startswith("onlinescore-sandbox-")

    assert run(pool, runtime, "write_file", input="notes.txt") == "written"
    assert run(pool, runtime, "write_file", input=os.path.join(scratch, "more.txt")) == "written"


@pytest.mark.parametrize("place", ["tmp", "project"])
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_scorer_cannot_write_outside_its_scratch_directory(pool, runtime, place):
    directory = tempfile.gettempdir() if place == "tmp" else str(django_settings.BASE_DIR)
    target = Path(directory) / f"sandbox-escape-{uuid.uuid4().hex}.txt"
    try:
        message = refused(pool, runtime, "write_file", input=str(target))

        assert str(target) in message
        assert "ermission denied" in message or "EACCES" in message
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)
    assert_pool_still_scores(pool, runtime)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_scratch_directory_is_removed_with_the_pool(runtime):
    pool = Pool()
    try:
        scratch = Path(run(pool, runtime, "cwd"))
        assert scratch.is_dir()
    finally:
        pool.close()
    assert not scratch.exists()


def test_a_pool_removes_the_scratch_directories_its_dead_predecessors_left(pool):
    """A process killed outright removes nothing: the next one to start a sandbox does."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = Path(tempfile.mkdtemp(prefix=f"onlinescore-sandbox-python-{dead.pid}-"))
    (left / "big.bin").write_bytes(b"x" * 1000)
    alive = Path(tempfile.mkdtemp(prefix=f"onlinescore-sandbox-python-{os.getppid()}-"))
    try:
        scratch = Path(run(pool, "python", "cwd"))
        assert f"-{os.getpid()}-" in scratch.name  # its own, named after the process it serves
        assert not left.exists() and alive.is_dir()
    finally:
        shutil.rmtree(left, ignore_errors=True)
        shutil.rmtree(alive, ignore_errors=True)


@pytest.mark.parametrize("spam", ["many_files", "big_files"])
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_process_that_fills_its_scratch_directory_is_replaced_and_the_directory_removed(
    pool, runtime, spam, settings
):
    settings.SCORING_SANDBOX_SCRATCH_MB = 32
    scratch = Path(run(pool, runtime, "cwd"))
    pid = run(pool, runtime, spam)
    assert not scratch.exists()
    assert run(pool, runtime, "pid") != pid
    # Below the bounds, the process and its files stay.
    kept = Path(run(pool, runtime, "cwd"))
    assert run(pool, runtime, "write_file", input="notes.txt") == "written"
    assert Path(run(pool, runtime, "cwd")) == kept and (kept / "notes.txt").exists()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_process_whose_code_fills_its_scratch_directory_after_answering_is_not_used_again(pool, runtime):
    scratch = Path(run(pool, runtime, "cwd"))
    pid = run(pool, runtime, "files_later")
    deadline = time.monotonic() + 10
    while len(os.listdir(scratch)) < 1000 and time.monotonic() < deadline:
        time.sleep(0.05)

    assert run(pool, runtime, "pid") != pid
    assert not scratch.exists()


# --- network -------------------------------------------------------------------------------


@pytest.fixture
def tcp_listener():
    """A real server on 127.0.0.1 that accepts connections, with nothing waiting in its queue."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    # A connection from outside the sandbox succeeds.
    with socket.create_connection(server.getsockname(), timeout=1):
        server.accept()[0].close()
    yield server
    server.close()


@pytest.fixture
def unix_listener():
    # A short path: Unix socket paths are limited to 107 bytes.
    directory = tempfile.mkdtemp(prefix="sbx-")
    path = os.path.join(directory, "s.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    server.settimeout(0.5)
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(path)
        server.accept()[0].close()
    yield server, path
    server.close()
    shutil.rmtree(directory)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_scorer_cannot_open_a_tcp_connection_to_localhost(pool, runtime, tcp_listener):
    port = tcp_listener.getsockname()[1]

    message = refused(pool, runtime, "tcp_connect", input=port)

    assert message.startswith(("PermissionError", "Error: connect EACCES")), message
    with pytest.raises(TimeoutError):
        tcp_listener.accept()  # nothing reached the server
    assert_pool_still_scores(pool, runtime)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_scorer_cannot_connect_to_a_unix_socket(pool, runtime, unix_listener):
    server, path = unix_listener

    message = refused(pool, runtime, "unix_connect", input=path)

    assert message.startswith(("PermissionError", "Error: connect EACCES")), message
    with pytest.raises(TimeoutError):
        server.accept()
    assert_pool_still_scores(pool, runtime)


# --- time, CPU, memory, processes ----------------------------------------------------------


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_an_infinite_loop_is_stopped_at_the_timeout(pool, runtime):
    started = time.monotonic()

    message = refused(pool, runtime, "infinite_loop", timeout=1)

    assert message == "The scorer ran longer than 1 s and was stopped."
    assert 1 <= time.monotonic() - started < 3
    assert_pool_still_scores(pool, runtime)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_busy_loop_is_stopped_at_the_cpu_limit_before_the_timeout(pool, runtime, settings):
    settings.SCORING_SANDBOX_CPU_SECONDS = 1
    started = time.monotonic()

    message = refused(pool, runtime, "infinite_loop", timeout=20)

    assert message == "The scorer used more than 1 s of CPU and was stopped."
    assert time.monotonic() - started < 5
    assert_pool_still_scores(pool, runtime)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_memory_bomb_is_stopped_at_the_memory_limit(pool, runtime, settings):
    # Small, to spare the shared test machine; Node.js gets 600 MB more, which it needs to start.
    settings.SCORING_SANDBOX_MEMORY_MB = 384

    message = refused(pool, runtime, "memory_bomb", timeout=20)

    limit = 384 + (600 if runtime == "node" else 0)
    assert message == f"The scorer ran out of memory (limit {limit} MB)."
    assert_pool_still_scores(pool, runtime)


@pytest.mark.parametrize("attempt", ["fork_bomb", "spawn"])
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_scorer_cannot_start_processes(pool, runtime, attempt):
    message = refused(pool, runtime, attempt)

    assert "Operation not permitted" in message or "EPERM" in message, message
    assert_pool_still_scores(pool, runtime)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_scorer_cannot_signal_a_process_outside_its_sandbox(pool, runtime):
    # The worker itself (the sandbox's parent) would be the natural target; a bystander stands
    # in for it.
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        message = refused(pool, runtime, "kill", input=bystander.pid)

        assert "Operation not permitted" in message or "EPERM" in message, message
        time.sleep(0.1)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
    assert_pool_still_scores(pool, runtime)


CAPABILITIES = """\
import ctypes, struct

def handler():
    libc = ctypes.CDLL(None, use_errno=True)
    header = ctypes.create_string_buffer(struct.pack("Ii", 0x20080522, 0))  # version 3, this process
    data = ctypes.create_string_buffer(24)
    if libc.capget(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    effective_low, permitted_low, _, effective_high, permitted_high, _ = struct.unpack("6I", data.raw)
    bounding = [cap for cap in range(64) if libc.prctl(23, cap, 0, 0, 0) == 1]  # PR_CAPBSET_READ
    return {"effective": effective_low | effective_high << 32,
            "permitted": permitted_low | permitted_high << 32, "bounding": bounding}
"""


def test_a_scorer_has_no_capabilities_even_when_the_worker_runs_as_root(pool):
    """Root's capabilities would let code raise its own limits (CAP_SYS_RESOURCE), signal any
    process (CAP_KILL) or load a kernel module from memory (CAP_SYS_MODULE)."""
    capabilities = pool.run("python", CAPABILITIES, {}, tenant=TENANT)

    assert capabilities == {"effective": 0, "permitted": 0, "bounding": []}


def test_a_scorer_cannot_raise_its_own_memory_limit(pool, settings):
    settings.SCORING_SANDBOX_MEMORY_MB = 256
    escape = (
        "import resource\n\n"
        "def handler():\n"
        "    unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)\n"
        "    resource.setrlimit(resource.RLIMIT_DATA, unlimited)\n"
        "    return len(bytearray(400 * 1024 * 1024))\n"
    )

    with pytest.raises(ScorerError, match=r"ValueError: not allowed to raise maximum limit \(line 5\)"):
        pool.run("python", escape, {}, tenant=TENANT)


# --- environment ---------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_scorer_sees_none_of_the_workers_secrets_in_its_environment(pool, runtime, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-0123456789")
    monkeypatch.setenv("DATABASE_URL", "postgres://admin:hunter2@db.internal:5432/onlinescore")
    monkeypatch.setenv("SECRET_KEY", "django-insecure-s3cr3t")

    environment = run(pool, runtime, "environment")

    assert not {"OPENAI_API_KEY", "DATABASE_URL", "SECRET_KEY", "DJANGO_SETTINGS_MODULE"} & set(environment)
    text = json.dumps(environment)
    for secret in ("sk-secret", "hunter2", "s3cr3t"):
        assert secret not in text
    assert environment["HOME"] == environment["TMPDIR"] == run(pool, runtime, "cwd")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_scorer_cannot_read_the_workers_environment_through_proc(pool, runtime, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-0123456789")

    message = refused(pool, runtime, "parent_environment")

    assert "/environ" in message
    assert "ermission denied" in message or "EACCES" in message
    assert "sk-secret" not in message


# --- output --------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_printing_100_mb_goes_nowhere_and_breaks_nothing(pool, runtime):
    # Twice: what one call printed must not break the process for the next.
    assert run(pool, runtime, "print_100_mb", timeout=20) == "printed"
    assert run(pool, runtime, "print_100_mb", timeout=20) == "printed"
    time.sleep(0.2)  # a process that dies of it after answering does so by now

    assert run(pool, runtime, "pid") == run(pool, runtime, "pid")
    assert_pool_still_scores(pool, runtime)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_returning_100_mb_is_refused_with_the_size_limit(pool, runtime):
    message = refused(pool, runtime, "return_100_mb", timeout=20)

    assert (
        message
        == f"The scorer's result is larger than {django_settings.SCORING_SANDBOX_OUTPUT_BYTES:,} bytes."
    )
    assert_pool_still_scores(pool, runtime)


# --- the handler contract ------------------------------------------------------------------

ARGS = {
    "input": {"question": "2+2?"},
    "output": "4",
    "expected": "4",
    "metadata": {"model": "gpt-4o", "tags": ["a", "b"]},
}


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_sync_handler_receives_input_output_expected_and_metadata(pool, runtime):
    assert pool.run(runtime, code("all_arguments", runtime), ARGS, tenant=TENANT) == ARGS


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_an_async_handler_is_awaited(pool, runtime):
    assert pool.run(runtime, code("async", runtime), ARGS, tenant=TENANT) == {"score": 1}
    assert pool.run(runtime, code("async", runtime), {**ARGS, "output": "5"}, tenant=TENANT) == {"score": 0}


@pytest.mark.parametrize(
    ("runtime", "handler", "expected"),
    [
        ("python", "def handler(expected):\n    return {'expected': expected}\n", {"expected": "4"}),
        (
            "python",
            "def handler(metadata, output):\n    return [output, metadata['model']]\n",
            ["4", "gpt-4o"],
        ),
        ("python", "def handler():\n    return 1\n", 1),
        (
            "python",
            "def handler(output, **rest):\n    return sorted(rest)\n",
            ["expected", "input", "metadata"],
        ),
        ("node", "export function handler({ expected }) { return { expected }; }\n", {"expected": "4"}),
        ("node", "export function handler() { return 1; }\n", 1),
    ],
)
def test_a_handler_is_passed_only_the_parameters_it_declares(pool, runtime, handler, expected):
    assert pool.run(runtime, handler, ARGS, tenant=TENANT) == expected


def test_typescript_with_types_runs(pool):
    typescript = """\
interface Args<T> {
  output: T;
  expected: T;
  metadata: { model: string };
}
type Score = { score: number; name: string };

export async function handler({ output, expected, metadata }: Args<string>): Promise<Score> {
  const exact: boolean = output === expected;
  return { score: exact ? 1 : 0, name: `exact-${metadata.model as string}` } satisfies Score;
}
"""
    assert pool.run("node", typescript, ARGS, tenant=TENANT) == {"score": 1, "name": "exact-gpt-4o"}


@pytest.mark.parametrize(
    "handler",
    [
        "function handler({ output }: { output: string }): string {\n  return output + '!';\n}\n",
        "const handler = ({ output }: { output: string }) => output + '!';\n",
    ],
)
def test_a_typescript_handler_without_export_is_accepted(pool, handler):
    assert pool.run("node", handler, ARGS, tenant=TENANT) == "4!"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_handler_that_raises_reports_its_message_and_line(pool, runtime):
    message = refused(pool, runtime, "raises_on_line_4", output="x")

    assert (
        message
        == {
            "python": "ValueError: cannot score x (line 4)",
            "node": "Error: cannot score x (line 4)",
        }[runtime]
    )
    assert_pool_still_scores(pool, runtime)


def test_a_typescript_error_line_counts_the_lines_of_the_typescript_source(pool):
    typescript = (
        "interface Args {\n"
        "  output: string;\n"
        "}\n"
        "export function handler({ output }: Args): number {\n"
        "  throw new TypeError(`bad ${output}`);\n"
        "}\n"
    )
    with pytest.raises(ScorerError) as caught:
        pool.run("node", typescript, ARGS, tenant=TENANT)

    assert str(caught.value) == "TypeError: bad 4 (line 5)"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_syntax_error_reports_its_line(pool, runtime):
    message = refused(pool, runtime, "syntax_error_on_line_3")

    assert message.startswith("SyntaxError")
    assert "line 3" in message, message
    assert_pool_still_scores(pool, runtime)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_code_without_a_handler_is_refused(pool, runtime):
    message = refused(pool, runtime, "no_handler")

    assert "no function named handler" in message


def test_an_unknown_runtime_is_refused(pool):
    with pytest.raises(ScorerError, match="Unknown runtime 'ruby'"):
        pool.run("ruby", "def handler; end", {}, tenant=TENANT)


# --- pooling and tenants -------------------------------------------------------------------


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_warm_process_serves_successive_calls(pool, runtime):
    first_pid = run(pool, runtime, "pid")

    assert [run(pool, runtime, "counter") for _ in range(3)] == [1, 2, 3]
    assert run(pool, runtime, "pid") == first_pid


class _RecordingStdin:
    """The pipe to a sandbox, recording each request line written to it."""

    def __init__(self, stream, pid, sent):
        self.stream, self.pid, self.sent = stream, pid, sent

    def write(self, data):
        self.sent.append((self.pid, json.loads(data)))
        return self.stream.write(data)

    def flush(self):
        self.stream.flush()

    def close(self):
        self.stream.close()


@pytest.fixture
def requests_sent(monkeypatch):
    """Every request the pool writes to its processes, as (pid, request)."""
    sent = []
    real_popen = subprocess.Popen

    def popen(*args, **kwargs):
        process = real_popen(*args, **kwargs)
        process.stdin = _RecordingStdin(process.stdin, process.pid, sent)
        return process

    monkeypatch.setattr(sandbox_module.subprocess, "Popen", popen)
    return sent


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_code_is_sent_once_per_process(pool, runtime, requests_sent):
    run(pool, runtime, "counter")
    run(pool, runtime, "counter")
    run(pool, runtime, "identity", output=1)
    run(pool, runtime, "counter", tenant="org-b")

    assert [(pid, "code" in request) for pid, request in requests_sent] == [
        (requests_sent[0][0], True),
        (requests_sent[0][0], False),  # the same code again: only its key and arguments
        (requests_sent[0][0], True),  # other code
        (requests_sent[3][0], True),  # another tenant, another process
    ]
    assert requests_sent[3][0] != requests_sent[0][0]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_tenants_do_not_share_processes(pool, runtime):
    secret = uuid.uuid4().hex
    run(pool, runtime, "remember", tenant="org-a", input=secret)

    # The same tenant's next scorer sees the process-wide state: that is what must not cross.
    assert run(pool, runtime, "recall", tenant="org-a") == secret
    assert run(pool, runtime, "recall", tenant="org-b") is None
    assert run(pool, runtime, "pid", tenant="org-a") != run(pool, runtime, "pid", tenant="org-b")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_process_that_died_between_calls_is_not_handed_to_the_next_call(pool, runtime):
    suicide = {
        "python": (
            "import os, threading\n\n"
            "def handler():\n"
            "    threading.Timer(0.05, os._exit, (1,)).start()\n"
            "    return 'answered'\n"
        ),
        "node": 'export function handler() { setTimeout(() => process.exit(1), 50); return "answered"; }\n',
    }[runtime]
    assert pool.run(runtime, suicide, {}, tenant=TENANT) == "answered"
    time.sleep(0.5)

    assert_pool_still_scores(pool, runtime)
