"""Request bodies of the ingestion endpoints: size cap, gzip, strict JSON with positions.

The Braintrust Python SDK posts /logs3 with no Content-Type, so bodies are read raw here
instead of through DRF's content negotiation. Every value a body holds is checked once, here,
for what no database stores (NUL characters, lone surrogates, infinities, integers past 64
bits, absurd nesting), so nothing later can fail on it.
"""

import json
import math
import re
import zlib
from decimal import Decimal
from typing import Any

from django.conf import settings

from onlinescore.exceptions import LengthRequired, PayloadTooLarge, ValidationError

MAX_DEPTH = 100
_INT_LIMIT = 2**63
# json.loads joins escaped surrogate pairs into one character, so any surrogate left is unpaired.
_UNSTORABLE_CHARS = re.compile("[\x00\ud800-\udfff]")
_RISKY_ESCAPES = re.compile(r"\\u0000|\\u[dD][89a-fA-F]")
_BIG_NUMBERS = re.compile(r"\d{19}|[eE]\+?\d{2}")
_STRINGS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKETS_ONLY = {c: None for c in range(128) if chr(c) not in "[]{}"}
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
    if not declared and "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        raise LengthRequired("Send the body with a Content-Length (chunked bodies are not read).")
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
    if not inflater.eof or inflater.unused_data:
        raise ValidationError(
            "The body is truncated gzip, or more than one gzip member.", code="invalid_body"
        )
    return out


def parse_json(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError("The body is not UTF-8.", code="invalid_json", position=exc.start) from exc
    if not text.strip():
        raise ValidationError("The body is empty; expected a JSON object.", code="invalid_json")
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_parse_float)
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
    if _may_hold_unstorable(text):
        _check_values(value)
    return value


def _may_hold_unstorable(text: str) -> bool:
    """False when the JSON text certainly holds nothing `_check_values` would reject, which
    spares nearly every body a walk over all its values. NUL and lone surrogates can only be
    written as escapes; outside strings, a number past 64 bits needs 19 digits or an exponent
    of 10 or more; nesting is counted on the brackets outside strings."""
    if _RISKY_ESCAPES.search(text):
        return True
    structure = _STRINGS.sub('""', text)
    if _BIG_NUMBERS.search(structure):
        return True
    depth = 0
    for char in structure.translate(_BRACKETS_ONLY):
        depth += 1 if char in "[{" else -1
        if depth > MAX_DEPTH:
            return True
    return False


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _parse_float(literal: str) -> float | int:
    """Numbers of 1e16 and more become integers, as PostgreSQL's jsonb gives them back, so that
    both databases store the same value and a replayed row compares equal to the stored one.
    Overflowing literals (1e400) become integers too, and fail the 64-bit check."""
    value = float(literal)
    if abs(value) < 1e16:
        return value
    return int(Decimal(literal))


def _check_values(root: Any) -> None:
    """Raise ValidationError at the first value no database can store, naming its path.

    The walk that finds a problem keeps no paths, because it runs on every body; only a bad
    body pays for a second walk that finds where the problem is."""
    stack = [(root, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            if depth >= MAX_DEPTH or any(_string_problem(key) for key in value):
                break
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            if depth >= MAX_DEPTH:
                break
            stack.extend((item, depth + 1) for item in value)
        elif _value_problem(value):
            break
    else:
        return
    path, message = _locate_problem(root, ())
    details = {}
    if len(path) >= 2 and path[0] in _BATCH_KEYS and isinstance(path[1], int):
        details["index"], path = path[1], path[2:]
    raise ValidationError(message, field=_dotted(path) or None, **details)


def unstorable(value: Any) -> str | None:
    """Why `value` (built in Python, not parsed from a body) cannot be stored, naming where; or
    None. For values the server makes itself from foreign input, such as a scorer's result."""
    found = _locate_problem(value, ())
    return None if found is None else (f"{_dotted(found[0])}: {found[1]}" if found[0] else found[1])


def without_unstorable_characters(text: str) -> str:
    return _UNSTORABLE_CHARS.sub("\ufffd", text)


def _locate_problem(value: Any, path: tuple) -> tuple[tuple, str] | None:
    """(path, message) of the first problem under `value`, depth first."""
    if isinstance(value, dict | list):
        if len(path) >= MAX_DEPTH:
            return path, f"Values may be nested {MAX_DEPTH} levels deep at most."
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str) and (problem := _string_problem(key)):
                return path, f"Key: {problem}"
            if found := _locate_problem(item, (*path, key)):
                return found
        return None
    problem = _value_problem(value)
    return (path, problem) if problem else None


def _value_problem(value: Any) -> str | None:
    if isinstance(value, str):
        return _string_problem(value)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int) and not -_INT_LIMIT <= value < _INT_LIMIT:
        return "Numbers must be within the range of 64-bit integers."
    if isinstance(value, float) and not math.isfinite(value):
        return "Numbers must be finite (no NaN or Infinity)."
    return None


def _string_problem(text: str) -> str | None:
    bad = _UNSTORABLE_CHARS.search(text)
    if bad is None:
        return None
    if bad.group() == "\x00":
        return "Strings cannot contain the NUL character (\\u0000)."
    return "Strings cannot contain unpaired surrogates (\\ud800-\\udfff)."


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
