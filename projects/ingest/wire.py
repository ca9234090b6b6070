"""Request bodies of the ingestion endpoints: size cap, gzip, strict JSON with positions.

The Braintrust Python SDK posts /logs3 with no Content-Type, so bodies are read raw here
instead of through DRF's content negotiation.
"""

import json
import zlib
from typing import Any

from django.conf import settings

from onlinescore.exceptions import PayloadTooLarge, ValidationError


def read_json_body(request) -> Any:
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


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError("The body is not UTF-8.", code="invalid_json", position=exc.start) from exc
    if not text.strip():
        raise ValidationError("The body is empty; expected a JSON object.", code="invalid_json")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"Invalid JSON: {exc.msg}.",
            code="invalid_json",
            line=exc.lineno,
            column=exc.colno,
            position=exc.pos,
        ) from exc
    except ValueError as exc:  # NaN / Infinity: no database stores them as JSON
        raise ValidationError(f"Invalid JSON: {exc}.", code="invalid_json") from exc


def contains_nul(value: Any) -> bool:
    """True if a string anywhere in `value` holds U+0000, which PostgreSQL cannot store."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(contains_nul(v) for v in value)
    return False
