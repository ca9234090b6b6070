"""Request bodies of the ingestion endpoints: size cap, gzip, strict JSON with positions.

The Braintrust Python SDK posts /logs3 with no Content-Type, so bodies are read raw here
instead of through DRF's content negotiation. Every value a body holds is checked once, here,
for what no database stores (NUL characters, lone surrogates, infinities, integers past 64
bits, absurd nesting), so nothing later can fail on it.
"""

import json
import math
import zlib
from typing import Any

from django.conf import settings

from onlinescore.exceptions import PayloadTooLarge, ValidationError

MAX_DEPTH = 100
_INT_LIMIT = 2**63
# Batch bodies: an error inside one of their rows names the row (`index`) and the field in it.
_BATCH_KEYS = ("rows", "events")


def read_json_body(request, *, allow_empty: bool = False) -> Any:
    cap = settings.INGEST_MAX_BODY_BYTES
    too_large = PayloadTooLarge(f"The request body is larger than the limit of {cap} bytes.", limit=cap)
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > cap:
        raise too_large
    raw = request.body
    if request.headers.get("Content-Encoding", "").lower() == "gzip" or raw[:2] == b"\x1f\x8b":
        raw = _gunzip(raw, cap, too_large)
    if len(raw) > cap:
        raise too_large
    if allow_empty and not raw.strip():
        return {}
    return parse_json(raw)


def _gunzip(raw: bytes, cap: int, too_large: Exception) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(raw, cap + 1)
    except zlib.error as exc:
        raise ValidationError(f"The body is not valid gzip: {exc}.", code="invalid_body") from exc
    if len(out) > cap or inflater.unconsumed_tail:
        raise too_large
    return out


def parse_json(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError("The body is not UTF-8.", code="invalid_json", position=exc.start) from exc
    if not text.strip():
        raise ValidationError("The body is empty; expected a JSON object.", code="invalid_json")
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"Invalid JSON: {exc.msg}.",
            code="invalid_json",
            line=exc.lineno,
            column=exc.colno,
            position=exc.pos,
        ) from exc
    except ValueError as exc:  # NaN / Infinity
        raise ValidationError(f"Invalid JSON: {exc}.", code="invalid_json") from exc
    except RecursionError:
        raise ValidationError(
            f"The JSON is nested deeper than {MAX_DEPTH} levels.", code="invalid_json"
        ) from None
    _check_values(value)
    return value


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _check_values(root: Any) -> None:
    """Raise ValidationError at the first value no database can store, naming its path."""
    stack: list[tuple[Any, tuple]] = [(root, ())]
    while stack:
        value, path = stack.pop()
        problem = None
        if len(path) > MAX_DEPTH:
            problem = f"Values may be nested {MAX_DEPTH} levels deep at most."
        elif isinstance(value, str):
            problem = _string_problem(value)
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int):
            if not -_INT_LIMIT <= value < _INT_LIMIT:
                problem = "Integers must fit in 64 bits."
        elif isinstance(value, float):
            if not math.isfinite(value):
                problem = "Numbers must be finite."
        elif isinstance(value, dict):
            for key, item in value.items():
                key_problem = _string_problem(key)
                if key_problem:
                    _raise(f"Key: {key_problem}", path)
                stack.append((item, (*path, key)))
        elif isinstance(value, list):
            stack.extend((item, (*path, i)) for i, item in enumerate(value))
        if problem:
            _raise(problem, path)


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "Strings cannot contain the NUL character (\\u0000)."
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "Strings cannot contain unpaired surrogates (\\ud800-\\udfff)."
    return None


def _raise(message: str, path: tuple) -> None:
    details = {}
    if len(path) >= 2 and path[0] in _BATCH_KEYS and isinstance(path[1], int):
        details["index"], path = path[1], path[2:]
    raise ValidationError(message, field=_dotted(path) or None, **details)


def _dotted(path: tuple) -> str:
    """("input", "a", 2) -> "input.a[2]"; keys that are not plain names are quoted."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if part.isidentifier() else json.dumps(part)
            out += f".{name}" if out else name
    return out
