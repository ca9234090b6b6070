"""Whole BTQL queries, as POST /btql takes them:

    select: *
    from: project_logs('<project id>') traces
    filter: metadata.model = 'gpt-4'
    sort: created desc
    limit: 50
    cursor: '<cursor>'

Clauses are separated by newlines or by ` | `, outside quotes. Only what the logs view needs
is supported; anything else is a BTQLError at its position.
"""

import re
from dataclasses import dataclass

from scoring.btql import ast
from scoring.btql.errors import BTQLError
from scoring.btql.parser import parse, unquote

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_SORT_FIELDS = 20
CLAUSES = ("select", "from", "filter", "sort", "limit", "cursor")
_FROM = re.compile(
    r"\s*project_logs\(\s*('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\s*\)\s*(spans|traces)?\s*$", re.I
)
_SORT_ITEM = re.compile(r"\s*(.+?)\s*(?:\s(asc|desc))?\s*$", re.I | re.S)


@dataclass(frozen=True)
class Query:
    project_id: str
    shape: str = "spans"
    filter: str | None = None
    sort: tuple[tuple[tuple[str | int, ...], bool], ...] = ()  # ((field path, descending), ...)
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


def parse_query(text: str) -> Query:
    if not isinstance(text, str) or not text.strip():
        raise BTQLError("The query is empty.", text=text if isinstance(text, str) else "", start=0)
    clauses: dict[str, tuple[str, int]] = {}
    for start, clause in _split(text):
        name, colon, body = clause.partition(":")
        key = name.strip().lower()
        if not colon or key not in CLAUSES:
            raise BTQLError(
                f"Unknown clause {name.strip()!r}.", text=text, start=start, expected=set(CLAUSES)
            )
        if key in clauses:
            raise BTQLError(f"The {key} clause is given twice.", text=text, start=start)
        clauses[key] = (body, start + len(name) + 1)
    if "from" not in clauses:
        raise BTQLError(
            "A query needs a from clause: from: project_logs('<project id>').", text=text, start=0
        )

    def where(key):
        body, offset = clauses[key]
        return body, offset + len(body) - len(body.lstrip())

    fields = {}
    body, offset = where("from")
    found = _FROM.match(body)
    if not found:
        raise BTQLError(
            "Expected project_logs('<project id>'), optionally followed by spans or traces.",
            text=text,
            start=offset,
        )
    fields["project_id"], fields["shape"] = unquote(found.group(1)), (found.group(2) or "spans").lower()
    if "select" in clauses:
        body, offset = where("select")
        if body.strip() != "*":
            raise BTQLError("Only select: * is supported.", text=text, start=offset)
    if "filter" in clauses:
        body, offset = where("filter")
        _parse_at(body.strip(), text, offset)
        fields["filter"] = body.strip()
    if "sort" in clauses:
        fields["sort"] = _sort(*where("sort"), text)
    if "limit" in clauses:
        body, offset = where("limit")
        if not re.fullmatch(r"[0-9]{1,5}", body.strip()) or not 1 <= int(body.strip()) <= MAX_LIMIT:
            raise BTQLError(f"limit must be an integer from 1 to {MAX_LIMIT}.", text=text, start=offset)
        fields["limit"] = int(body.strip())
    if "cursor" in clauses:
        body, offset = where("cursor")
        value = body.strip()
        fields["cursor"] = unquote(value) if value[:1] in ("'", '"') and value[-1:] == value[:1] else value
    return Query(**fields)


def _parse_at(expression: str, text: str, offset: int) -> ast.Node:
    try:
        return parse(expression)
    except BTQLError as exc:
        raise exc.shifted(text, offset) from None


def _sort(body: str, offset: int, text: str) -> tuple:
    items, position = [], offset
    parts = body.split(",")
    if len(parts) > MAX_SORT_FIELDS:
        raise BTQLError(f"Sort by at most {MAX_SORT_FIELDS} fields.", text=text, start=offset)
    for part in parts:
        found = _SORT_ITEM.match(part) if part.strip() else None
        if found is None:
            raise BTQLError("Sort by a field, optionally followed by asc or desc.", text=text, start=position)
        node = _parse_at(found.group(1), text, position + part.find(found.group(1)))
        if not isinstance(node, ast.Field):
            raise BTQLError("Sort by a field, optionally followed by asc or desc.", text=text, start=position)
        if any(isinstance(key, int) or key.isdigit() for key in node.path[1:]):
            raise BTQLError(
                "Sort by object fields: array elements and numeric keys are not supported.",
                text=text,
                start=position,
            )
        items.append((node.path, (found.group(2) or "asc").lower() == "desc"))
        position += len(part) + 1
    return tuple(items)


def _split(text: str):
    """(offset, clause text) for each clause: split on newlines and ` | ` outside quotes."""
    start, i, quote = 0, 0, None
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 2
                continue
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "\n" or text.startswith(" | ", i):
            if text[start:i].strip():
                yield start, text[start:i]
            start = i + (1 if char == "\n" else 3)
            i = start
            continue
        i += 1
    if text[start:].strip():
        yield start, text[start:]
