"""Scorers: what a reference in a rule names, and running one on a span under the contract.

A reference is `{"type": "global", "name": ...}` (a built-in, see `builtin.py`) or
`{"type": "function", "id": ..., "version"?: ...}` (a project's custom scorer). Whatever the
kind, `run` calls it with the span's input, output, expected and metadata, and turns what it
returns into named scores in [0, 1] (or None: skipped), or into an error that says what went
wrong. Live rules, manual scoring and Test rule all score through `run`.
"""

import concurrent.futures
import contextlib
import math
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from onlinescore.exceptions import ValidationError
from projects.ingest.rows import document_problem
from projects.ingest.wire import unstorable, without_unstorable_characters


class ScorerError(Exception):
    """A scorer could not run or returned something unusable. The message is shown to users."""


class TransientScorerError(ScorerError):
    """A failure worth retrying: network, a 5xx or 429 answer, a timeout."""


@dataclass(frozen=True)
class Scorer:
    """Something that scores. `fn(input=, output=, expected=, metadata=)` returns any of the
    contract's shapes. A `blocking` scorer (I/O, user code) runs on a pool thread under the
    scorer timeout; the others are pure local computations and run inline, under the same limit
    in CPU seconds where it can be enforced (see `_call_with_cpu_limit`)."""

    name: str
    fn: Callable[..., Any]
    blocking: bool = False
    requires: tuple[str, ...] = ()  # the span fields it needs (shown in the catalogue)
    needs_llm: bool = False


@dataclass
class Outcome:
    """What one scorer made of one span."""

    scorer: str
    input: dict
    scores: dict[str, float | None] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)  # of the scorer's own work (LLM tokens, cost)
    error: str | None = None
    transient: bool = False
    start: float = 0.0
    end: float = 0.0

    @property
    def output(self) -> dict:
        """`{"score": x}` for one score named after the scorer, else one entry per name."""
        if list(self.scores) == [self.scorer]:
            return {"score": self.scores[self.scorer]}
        return {name: {"score": value} for name, value in self.scores.items()}


def reference_key(ref: dict) -> str:
    """The canonical text of a reference: what makes two references the same scorer."""
    if ref["type"] == "global":
        return f"global:{ref['name']}"
    version = ref.get("version")
    return f"function:{ref['id']}" + (f"@{version}" if version else "")


def reference_name(ref: dict) -> str:
    return ref["name"] if ref["type"] == "global" else str(ref["id"])


def references_clean(refs: Any, *, field: str, organization=None, principal=None) -> list[dict]:
    """Check a list of scorer references: each must name a scorer that exists and can run for
    `principal` (a custom scorer of another project needs read on that project; an LLM scorer,
    an endpoint)."""
    if not isinstance(refs, list) or not refs:
        raise ValidationError("Give at least one scorer.", field=field)
    cleaned, seen = [], set()
    for i, ref in enumerate(refs):
        where = f"{field}[{i}]"
        if not isinstance(ref, dict) or ref.get("type") not in ("global", "function"):
            raise ValidationError(
                'A scorer is {"type": "global", "name": ...} or {"type": "function", "id": ...}.', field=where
            )
        allowed = {"type", "name", "function_type"} if ref["type"] == "global" else {"type", "id", "version"}
        unknown = sorted(set(ref) - allowed)
        if unknown:
            raise ValidationError(f"Unknown field {unknown[0]!r} in a scorer reference.", field=where)
        if ref["type"] == "global":
            if ref.get("function_type", "scorer") != "scorer":
                raise ValidationError("Only scorers can score spans.", field=f"{where}.function_type")
            ref = {"type": "global", "name": ref.get("name")}
        else:
            version = ref.get("version")
            if version is not None and (
                isinstance(version, bool) or not isinstance(version, int) or version < 1
            ):
                raise ValidationError(
                    "version is a positive integer; omit it for the latest.", field=f"{where}.version"
                )
            ref = {k: ref[k] for k in ("type", "id", "version") if ref.get(k) is not None}
            # One spelling per function ("{ABC...}" and "abc..." name the same): so that "listed
            # twice" and the runs' unique (span, rule, scorer) see it as one.
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                ref["id"] = str(uuid.UUID(ref["id"]))
        try:
            resolve(ref, organization=organization, principal=principal)
        except ScorerError as exc:
            raise ValidationError(str(exc), field=where) from None
        if reference_key(ref) in seen:
            raise ValidationError(f"Scorer {reference_name(ref)!r} is listed twice.", field=where)
        seen.add(reference_key(ref))
        cleaned.append(ref)
    return cleaned


def resolve(ref: dict, *, organization=None, principal=None, project=None) -> Scorer:
    """The scorer a reference names, for a run in `organization` acting as `principal` (whose
    right to read a custom scorer's project is checked when given), scoring spans of `project`."""
    if ref.get("type") == "global":
        from scoring.scorers import builtin

        name = ref.get("name")
        if not isinstance(name, str):
            raise ScorerError(f"Unknown scorer {name!r}; GET /v1/scorers lists them.")
        return builtin.resolve(name, organization)
    from scoring.scorers import custom

    return custom.resolve(ref, organization=organization, principal=principal, project=project)


ARGUMENTS = ("input", "output", "expected", "metadata")  # what a scorer is called with


def run(scorer: Scorer, span: dict, *, timeout: float | None = None) -> Outcome:
    """Score one span (`span` holds input, output, expected, metadata). Never raises: a failure
    is the outcome's `error`, `transient` when retrying may help. The outcome's `input` is
    `span` itself when it holds just those: read it, do not change it."""
    arguments = span if span.keys() == _ARGUMENT_KEYS else {name: span.get(name) for name in ARGUMENTS}
    outcome = Outcome(scorer=scorer.name, input=arguments, start=time.time())
    try:
        if scorer.blocking:
            raw = _call_with_timeout(scorer, arguments, timeout or settings.SCORING_SCORER_TIMEOUT)
        else:
            raw = _call_with_cpu_limit(scorer, arguments, timeout or settings.SCORING_SCORER_TIMEOUT)
        outcome.scores, outcome.metadata = normalize(raw, scorer.name)
        outcome.metrics = dict(getattr(raw, "metrics", None) or {})
        result = {"scores": outcome.scores, "metadata": outcome.metadata, "metrics": outcome.metrics}
        # Checked as its scoring span will be: a result that cannot be stored fails this run
        # alone, not the write of the whole batch.
        problem = unstorable(result) or document_problem(result)
        if problem:
            raise ScorerError(f"The scorer returned a value that cannot be stored: {problem}")
    except (Exception, _OutOfTime) as exc:  # noqa: BLE001 -- any scorer failure is the user's to see, not ours to raise
        outcome.scores, outcome.metadata, outcome.metrics = {}, {}, {}
        outcome.error = without_unstorable_characters(_describe(exc))
        outcome.transient = is_transient(exc)
    outcome.end = time.time()
    return outcome


_ARGUMENT_KEYS = set(ARGUMENTS)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (TransientScorerError, ConnectionError, TimeoutError)):
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and (status >= 500 or status == 429)


def normalize(raw: Any, default_name: str) -> tuple[dict[str, float | None], dict]:
    """The contract: a number, a bool, `{score, name?, metadata?}` (or an object with those
    attributes, such as autoevals' Score), or a non-empty list of those. Scores lie in [0, 1] or
    are None (skipped). Returns ({name: score}, metadata); several scores need distinct names."""
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise ScorerError("The scorer returned an empty list.")
    scores: dict[str, float | None] = {}
    metadata: dict = {}
    for item in items:
        name, value, meta = _one_score(item, default_name if len(items) == 1 else None)
        if name in scores:
            raise ScorerError(f"The scorer returned two scores named {name!r}.")
        scores[name] = value
        if meta:
            metadata.update(meta if len(items) == 1 else {name: meta})
    return scores, metadata


def _one_score(item: Any, default_name: str | None) -> tuple[str, float | None, dict]:
    if isinstance(item, dict):
        unknown = sorted(set(item) - {"score", "name", "metadata"})
        if "score" not in item or unknown:
            raise ScorerError(
                f"The scorer returned {_preview(item)}: a score object has 'score', 'name', 'metadata'."
            )
        value, name, meta = item["score"], item.get("name"), item.get("metadata")
    elif hasattr(item, "score") and not isinstance(item, (int, float, str)):
        value, name, meta = item.score, getattr(item, "name", None), getattr(item, "metadata", None)
    else:
        value, name, meta = item, None, None
    name = name or default_name
    if not isinstance(name, str) or not name:
        raise ScorerError("Each of several scores needs a 'name'.")
    if meta is not None and not isinstance(meta, dict):
        raise ScorerError(f"Score metadata must be an object, not {_preview(meta)}.")
    return name, _score_value(value), meta or {}


def _score_value(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1:
        return value
    if isinstance(value, (int, float)):
        raise ScorerError(f"The scorer returned {value!r}; a score lies between 0 and 1.")
    raise ScorerError(f"The scorer returned {_preview(value)}; expected a number between 0 and 1.")


def _preview(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (ScorerError, _OutOfTime)):
        return str(exc)
    message = str(exc) or "(no message)"
    return f"{type(exc).__name__}: {message}"


_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _call_with_timeout(scorer: Scorer, arguments: dict, timeout: float) -> Any:
    """Run on a pool thread and stop waiting after `timeout` seconds. A thread cannot be killed:
    one that overruns finishes in the background, which is why only scorers bounded by their own
    I/O timeouts (HTTP clients, sandboxes) are `blocking`."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=settings.SCORING_POOL_SIZE, thread_name_prefix="scorer"
            )
    future = _pool.submit(scorer.fn, **arguments)
    try:
        return future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise TransientScorerError(f"The scorer timed out after {timeout:g} s.") from None


class _OutOfTime(BaseException):
    """Raised in a local scorer at its CPU limit. Not an Exception: scorer code that catches
    those (autoevals does, in places) must not swallow it and compute on."""


_cpu_seconds = 0.0  # the limit of the local scorer running now (in the main thread)
_cpu_handler_installed = False


def _out_of_time(signum, frame):
    raise _OutOfTime(f"The scorer computed for more than {_cpu_seconds:g} s of CPU time and was stopped.")


def _call_with_cpu_limit(scorer: Scorer, arguments: dict, seconds: float) -> Any:
    """Stop a local scorer that computes for more than `seconds` of CPU time: one slow scorer
    must not hold a worker, and with it every project's scoring. A CPU timer, not a clock, so as
    not to touch SIGALRM, which RQ uses for its job timeout. Signals reach only the main thread
    (the worker's); elsewhere (a Test rule in a web thread) the scorer runs unbounded, as C code
    does everywhere: builtin.py bounds the C work of the built-ins before it starts."""
    global _cpu_seconds, _cpu_handler_installed
    if threading.current_thread() is not threading.main_thread():
        return scorer.fn(**arguments)
    if not _cpu_handler_installed:  # once, and left: the timer is only armed around a call
        signal.signal(signal.SIGVTALRM, _out_of_time)
        _cpu_handler_installed = True
    _cpu_seconds = seconds
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    try:
        return scorer.fn(**arguments)
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
