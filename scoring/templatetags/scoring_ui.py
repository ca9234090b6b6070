"""How the pages show values: scores as percentages, JSON as previews or pretty-printed."""

import json

from django import template

register = template.Library()

PREVIEW_CHARS = 120


@register.filter
def percent(value) -> str:
    """A 0–1 score as a whole percentage, as the pages show every score."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—"
    return f"{value * 100:.0f}%"


@register.filter
def preview(value) -> str:
    """A one-line glimpse of a JSON value: strings as they are, the rest as compact JSON."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


@register.filter
def pretty(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


@register.filter
def seconds(value) -> str:
    if not isinstance(value, (int, float)):
        return "—"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


@register.filter
def decision(code: str) -> str:
    """A rule's decision code (the API's value) in words: "filtered_out" as "Filtered out"."""
    return code.replace("_", " ").capitalize() if code else "Not seen"


@register.filter(name="json")
def as_json(value) -> str:
    """Compact JSON, for data attributes (the template escapes it like any other text)."""
    return json.dumps(value, separators=(",", ":"), default=str)


@register.filter
def timestamp(value: str) -> str:
    """An event's ISO 8601 time as 'YYYY-MM-DD HH:MM:SS' (UTC, as stored)."""
    return value[:19].replace("T", " ") if isinstance(value, str) else ""
