"""A fake OpenAI-compatible server for tests of LLM-backed scorers: real HTTP on 127.0.0.1, so that
the real `openai` client and autoevals (in this process, or in a worker process of an e2e stack)
talk to it exactly as they would to a real endpoint.

    with FakeOpenAI() as fake:            # or the `fake_openai` fixture
        fake.script(Fail(429), Answer("B"))   # the next chat answers, in order; then `fake.default`
        ... point the scorer at fake.url (".../v1") ...
        (request,) = fake.chat_requests()
        assert request.authorization == "Bearer sk-..." and request.choices == ["A", "B", "C"]

It serves:
- POST /v1/chat/completions and POST /v1/responses (autoevals sends gpt-5* models there): a
  forced `select_choice` tool call, shaped by a behaviour: `Answer` (a choice, reasons, token
  usage, optionally no tool call at all, optionally after a delay) or `Fail` (an HTTP error such
  as 500 or 429, optionally after a delay). The behaviour of a request is the next one `script`ed,
  else the one `by_model` gives for its model, else `default`;
- POST /v1/embeddings: `embeddings[text]` if set, else a vector derived from the text (equal texts,
  equal vectors);
- POST /v1/moderations: flagged when the text is in `flagged`.

Every request is recorded (`requests`): method, path, headers (lower-case names, so the
authorization too) and JSON body. The handler disables Nagle's algorithm: without it each call
stalls some 40 ms on the delayed ACK.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass(frozen=True)
class Answer:
    """A `select_choice` answer. `choice`: the choice to send; None for the first choice the
    request offers; a tuple for the first of these that it offers (else the first of the tuple,
    which the client will then refuse). `tool_call=False` answers in plain text instead.
    `arguments`: call the tool the request forces (the first one offered, if none is forced) with
    these arguments instead, for scorers with tools of their own (autoevals' RAG scorers)."""

    choice: str | tuple[str, ...] | None = None
    reasons: str | None = "The fake judge compared the answers."
    prompt_tokens: int = 11
    completion_tokens: int = 7
    tool_call: bool = True
    delay: float = 0.0
    arguments: dict | None = None

    @property
    def total_tokens(self):
        """Their sum; the counts may be odd values, sent as they are, to test a client with."""
        counts = (self.prompt_tokens, self.completion_tokens)
        return sum(counts) if all(type(n) is int for n in counts) else None


@dataclass(frozen=True)
class Fail:
    """An HTTP error answer, after `delay` seconds."""

    status: int = 500
    message: str = "The fake server failed on purpose."
    delay: float = 0.0


Behaviour = Answer | Fail


def failures(count: int, status: int = 500) -> list[Fail]:
    """`count` failures in a row, to script before a success."""
    return [Fail(status)] * count


@dataclass
class Request:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    received: float

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None

    @property
    def messages(self) -> list[dict]:
        """The chat messages (`input` for the Responses API)."""
        if not isinstance(self.body, dict):
            return []
        return self.body.get("messages") or self.body.get("input") or []

    @property
    def tools(self) -> list[dict]:
        """The tools, each as {"name", "description", "parameters"} whichever API was called."""
        tools = self.body.get("tools") if isinstance(self.body, dict) else None
        return [tool.get("function", tool) for tool in tools or []]

    @property
    def parameters(self) -> dict:
        """The JSON schema of the `select_choice` tool's arguments ({} if there is none)."""
        tool = next((t for t in self.tools if t.get("name") == "select_choice"), None)
        return (tool or {}).get("parameters") or {}

    @property
    def forced_tool(self) -> str | None:
        """The name of the tool the request forces, else of the first tool offered."""
        choice = self.body.get("tool_choice") if isinstance(self.body, dict) else None
        if isinstance(choice, dict):
            return (choice.get("function") or choice).get("name")
        return self.tools[0].get("name") if self.tools else None

    @property
    def choices(self) -> list[str]:
        """The choices `select_choice` offers."""
        return list(self.parameters.get("properties", {}).get("choice", {}).get("enum") or [])


class FakeOpenAI:
    """See the module docstring. Start it with `start()` or as a context manager."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.default: Behaviour = Answer()
        self.by_model: dict[str, Behaviour] = {}
        self.embeddings: dict[str, list[float]] = {}
        self.flagged: set[str] = set()
        self._script: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- Life cycle ------------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        fake = self

        class Handler(_Handler):
            server_of = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # ends the delays of answers still being held back
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "the fake server is not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The base URL to configure, as for OpenAI: "http://127.0.0.1:<port>/v1"."""
        return f"http://127.0.0.1:{self.port}/v1"

    # --- Behaviour -------------------------------------------------------------------------

    def script(self, *behaviours: Behaviour | list[Behaviour]) -> None:
        """Answer the next chat or responses requests with these, in order (lists are spread)."""
        with self._lock:
            for behaviour in behaviours:
                self._script.extend(behaviour if isinstance(behaviour, list) else [behaviour])

    def reset(self) -> None:
        """Forget the requests, the script and every setting."""
        with self._lock:
            self.requests.clear()
            self._script.clear()
        self.default, self.by_model, self.embeddings, self.flagged = Answer(), {}, {}, set()

    def _behaviour_for(self, request: Request) -> Behaviour:
        with self._lock:
            if self._script:
                return self._script.popleft()
        return self.by_model.get(request.model, self.default)

    # --- What was received -----------------------------------------------------------------

    def requests_to(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def chat_requests(self) -> list[Request]:
        """The judge calls, through either API."""
        with self._lock:
            return [r for r in self.requests if r.path in ("/v1/chat/completions", "/v1/responses")]

    # --- Answers ---------------------------------------------------------------------------

    def answer(self, request: Request) -> tuple[int, dict]:
        if request.path in ("/v1/chat/completions", "/v1/responses"):
            behaviour = self._behaviour_for(request)
            if behaviour.delay:
                self._stopping.wait(behaviour.delay)
            if isinstance(behaviour, Fail):
                kind = "rate_limit_exceeded" if behaviour.status == 429 else "server_error"
                return behaviour.status, {"error": {"message": behaviour.message, "type": kind, "code": kind}}
            if request.path == "/v1/responses":
                return 200, self._response(request, behaviour)
            return 200, self._chat_completion(request, behaviour)
        if request.path == "/v1/embeddings":
            return 200, self._embedding(request)
        if request.path == "/v1/moderations":
            return 200, self._moderation(request)
        return 404, {"error": {"message": f"No route {request.path}", "type": "invalid_request_error"}}

    @staticmethod
    def _call(request: Request, answer: Answer) -> tuple[str, str]:
        """The (name, JSON arguments) of the tool call that answers."""
        if answer.arguments is not None:
            return request.forced_tool or "select_choice", json.dumps(answer.arguments)
        return "select_choice", FakeOpenAI._arguments(request, answer)

    @staticmethod
    def _arguments(request: Request, answer: Answer) -> str:
        offered = request.choices
        if answer.choice is None:
            choice = offered[0] if offered else "A"
        elif isinstance(answer.choice, tuple):
            choice = next((c for c in answer.choice if c in offered), answer.choice[0])
        else:
            choice = answer.choice
        arguments = {"choice": choice}
        if answer.reasons is not None:
            arguments = {"reasons": answer.reasons, **arguments}
        return json.dumps(arguments)

    def _chat_completion(self, request: Request, answer: Answer) -> dict:
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        if answer.tool_call:
            name, arguments = self._call(request, answer)
            message["tool_calls"] = [
                {"id": "call_fake_1", "type": "function", "function": {"name": name, "arguments": arguments}}
            ]
        else:
            message["content"] = "I would rather not call any tool."
        return {
            "id": "chatcmpl-fake-1",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls" if answer.tool_call else "stop",
                    "logprobs": None,
                    "message": message,
                }
            ],
            "usage": {
                "prompt_tokens": answer.prompt_tokens,
                "completion_tokens": answer.completion_tokens,
                "total_tokens": answer.total_tokens,
            },
        }

    def _response(self, request: Request, answer: Answer) -> dict:
        if answer.tool_call:
            name, arguments = self._call(request, answer)
            output = [
                {
                    "type": "function_call",
                    "id": "fc_fake_1",
                    "call_id": "call_fake_1",
                    "name": name,
                    "arguments": arguments,
                    "status": "completed",
                }
            ]
        else:
            output = [
                {
                    "type": "message",
                    "id": "msg_fake_1",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "No tool.", "annotations": []}],
                }
            ]
        return {
            "id": "resp_fake_1",
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": request.model,
            "output": output,
            "parallel_tool_calls": False,
            "tool_choice": "required",
            "tools": [],
            "usage": {
                "input_tokens": answer.prompt_tokens,
                "output_tokens": answer.completion_tokens,
                "total_tokens": answer.total_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        }

    def _embedding(self, request: Request) -> dict:
        texts = request.body.get("input")
        texts = texts if isinstance(texts, list) else [texts]
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": self.embeddings.get(text) or derived_vector(text),
            }
            for i, text in enumerate(texts)
        ]
        return {
            "object": "list",
            "data": data,
            "model": request.model,
            "usage": {"prompt_tokens": 3, "total_tokens": 3},
        }

    def _moderation(self, request: Request) -> dict:
        texts = request.body.get("input")
        texts = texts if isinstance(texts, list) else [texts]
        results = []
        for text in texts:
            flagged = text in self.flagged
            results.append(
                {
                    "flagged": flagged,
                    "categories": {"harassment": flagged, "violence": False},
                    "category_scores": {"harassment": 0.97 if flagged else 0.01, "violence": 0.02},
                }
            )
        return {
            "id": "modr-fake-1",
            "model": request.body.get("model") or "omni-moderation-latest",
            "results": results,
        }


def derived_vector(text: Any, dimensions: int = 8) -> list[float]:
    """A vector that depends only on the text."""
    digest = hashlib.sha256(str(text).encode()).digest()
    return [byte / 255 for byte in digest[:dimensions]]


class _Handler(BaseHTTPRequestHandler):
    server_of: FakeOpenAI
    protocol_version = "HTTP/1.1"  # keep-alive, as the openai client expects
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        request = Request(
            method="POST",
            path=self.path.split("?", 1)[0],
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            received=time.time(),
        )
        fake = self.server_of
        with fake._lock:
            fake.requests.append(request)
        status, payload = fake.answer(request)
        self._send(status, payload)

    def do_GET(self) -> None:
        self._send(404, {"error": {"message": f"No route {self.path}", "type": "invalid_request_error"}})

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up waiting (a timeout test)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 -- the base class's name
        pass


@pytest.fixture
def fake_openai():
    """A started FakeOpenAI, stopped after the test. Import it into a test module to use it:
    `from tests.support.fake_openai import fake_openai  # noqa: F401`."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def no_endpoint_in_the_environment(monkeypatch):
    """No OPENAI_* endpoint unless a test sets one, and nothing cached by an earlier test: a
    cached client keeps the timeout it was made with, and autoevals keys its embeddings cache by
    the client's id(), which a new client may reuse."""
    import autoevals

    from scoring.scorers import builtin

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    builtin._llm_scorer.cache_clear()
    autoevals.EmbeddingSimilarity._CACHE.clear()
    yield
    builtin._llm_scorer.cache_clear()
    autoevals.EmbeddingSimilarity._CACHE.clear()
