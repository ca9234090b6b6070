"""The sandbox process:
`python runner.py <runtime> <answers fd> <scratch dir> <CPU seconds> <memory MB> <read-only path>...`.

It confines itself (confine.py), then either serves Python scorers itself or, for `node`,
executes the Node.js runner (runner.mjs) under the same confinement. The protocol is one JSON
line per call: requests on stdin `{"key", "code"?, "args"}` (the code is sent the first time a
process sees a key), answers on file descriptor 3 `{"ok": true, "value": ...}` or
`{"ok": false, "error": "..."}`. What user code prints goes nowhere.

It imports nothing from the project but confine.py, which sits beside it: the project's
settings, database and secrets are never in this process.
"""

import asyncio
import inspect
import json
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import confine  # noqa: E402 -- the file beside this one, found through the line above

ARGUMENTS = ("input", "output", "expected", "metadata")


def main() -> None:
    runtime, answers_fd, scratch, cpu_seconds, memory_mb, *read_only = sys.argv[1:]
    limits = {"memory_bytes": int(memory_mb) * 1024 * 1024, "cpu_seconds": int(cpu_seconds)}
    os.chdir(scratch)
    if int(answers_fd) != 3:
        os.dup2(int(answers_fd), 3)
        os.close(int(answers_fd))
    answers = os.fdopen(3, "w", encoding="utf-8")
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    if runtime == "node":
        node, script = read_only[0], read_only[1]
        confine.limit_resources(**limits)
        confine.drop_capabilities()
        confine.landlock(read_only=read_only, read_write=[scratch])
        confine.seccomp_no_sockets_no_processes()
        heap = max(64, int(memory_mb) // 4)
        os.execve(node, [node, "--no-warnings", f"--max-old-space-size={heap}", script], os.environ)
    confine.limit_resources(**limits)
    confine.drop_capabilities()
    confine.landlock(read_only=read_only, read_write=[scratch])
    confine.seccomp_no_sockets_no_processes()
    os.dup2(null, 2)
    serve(sys.stdin, answers, memory_mb)


def serve(requests, answers, memory_mb) -> None:
    handlers: dict[str, object] = {}
    for line in requests:
        turn = None
        try:
            request = json.loads(line)
            turn = request["n"]
            key = request["key"]
            if key not in handlers:
                handlers[key] = load(request["code"])
            answer = {"ok": True, "value": call(handlers[key], request["args"]), "n": turn}
            text = json.dumps(answer, allow_nan=False)
        except MemoryError:
            text = json.dumps(
                {"ok": False, "error": f"The scorer ran out of memory (limit {memory_mb} MB).", "n": turn}
            )
        except BaseException as exc:  # noqa: BLE001 -- user code: every failure is an answer
            text = json.dumps({"ok": False, "error": describe(exc), "n": turn})
        answers.write(text + "\n")
        answers.flush()


def load(code: str):
    namespace: dict = {"__name__": "scorer"}
    exec(compile(code, "<scorer>", "exec"), namespace)
    handler = namespace.get("handler")
    if not callable(handler):
        raise LookupError("The code defines no function named handler.")
    return handler


def call(handler, args: dict):
    parameters = inspect.signature(handler).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    kwargs = {name: args.get(name) for name in ARGUMENTS if takes_any or name in parameters}
    result = handler(**kwargs)
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    return plain(result)


async def _await(awaitable):
    return await awaitable


def plain(value):
    """JSON-ready: objects with score/name/metadata attributes (autoevals' Score) become dicts."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "score") and not isinstance(value, (dict, int, float, str)):
        return {
            "score": value.score,
            "name": getattr(value, "name", None),
            "metadata": getattr(value, "metadata", None),
        }
    return value


def describe(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<scorer>"]
    where = f" (line {frames[-1].lineno})" if frames else ""
    message = f": {exc}" if str(exc) else ""
    return f"{type(exc).__name__}{message}{where}"


if __name__ == "__main__":
    main()
