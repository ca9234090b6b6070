"""BTQL's value semantics, shared by the Python predicate and (later) the SQL side's helpers.

Values are JSON values plus timestamps (aware datetimes) and intervals. See docs/btql.md.
"""

import functools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from typing import Any

from dateutil.relativedelta import relativedelta

from scoring.btql.regex import search as regex_search


@dataclass(frozen=True)
class IntervalValue:
    months: int = 0
    seconds: int = 0

    def delta(self) -> relativedelta:
        return relativedelta(months=self.months, seconds=self.seconds)


UNIT_SIZES = {
    "year": (12, 0),
    "month": (1, 0),
    "week": (0, 7 * 86400),
    "day": (0, 86400),
    "hour": (0, 3600),
    "minute": (0, 60),
    "second": (0, 1),
}


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, datetime):
        return "timestamp"
    return "interval"


def to_timestamp(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
            parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
            parsed.astimezone(timezone.utc)  # a time that is not in years 1 to 9999 in UTC
        except (ValueError, OverflowError):
            return None
        return parsed
    return None


def _coerce_pair(a: Any, b: Any) -> tuple[Any, Any]:
    """A timestamp compared with a string compares as two timestamps."""
    if isinstance(a, datetime) and isinstance(b, str):
        return a, to_timestamp(b)
    if isinstance(b, datetime) and isinstance(a, str):
        return to_timestamp(a), b
    return a, b


def equal(a: Any, b: Any) -> bool | None:
    """None if either side is null; False for values of different kinds."""
    if a is None or b is None:
        return None
    a, b = _coerce_pair(a, b)
    if a is None or b is None:
        return False
    ka, kb = kind(a), kind(b)
    if ka != kb:
        return False
    if ka == "array":
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if ka == "object":
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _same(a: Any, b: Any) -> bool:
    """Equality of the parts of an array or object: a null part equals a null part."""
    return (a is None and b is None) or equal(a, b) is True


def order(a: Any, b: Any) -> int | None:
    """-1, 0 or 1 for two numbers, two strings or two timestamps; None otherwise."""
    if a is None or b is None:
        return None
    a, b = _coerce_pair(a, b)
    if a is None or b is None or kind(a) != kind(b) or kind(a) not in ("number", "string", "timestamp"):
        return None
    return (a > b) - (a < b)


def text_of(value: Any) -> str | None:
    """What LIKE, MATCH and ~ read: a string as it is, anything else as its JSON text."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, IntervalValue):  # not a JSON value: it has no text
        return None
    return json_text(value)


def json_text(value: Any) -> str:
    """JSON text as PostgreSQL renders jsonb, so that both databases see the same text: ", " and
    ": " separators, object keys ordered by length then bytes, numbers without exponents."""
    if type(value) is str:
        return _quote(value)
    # Rendered into one list and joined once: a text filter renders the input or output of
    # every span that ends, and nested joins cost a third more.
    parts: list[str] = []
    _render(value, parts.append)
    return "".join(parts)


def _render(value: Any, out: Callable[[str], None]) -> None:
    if isinstance(value, str):
        out(_quote(value))
    elif isinstance(value, dict):
        if not value:
            out("{}")
            return
        for key, prefix in _object_keys(tuple(value)):
            out(prefix)
            _render(value[key], out)
        out("}")
    elif isinstance(value, list):
        separator = "["
        for item in value:
            out(separator)
            _render(item, out)
            separator = ", "
        out("]" if value else "[]")
    elif isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        out(repr(value + 0.0))  # + 0.0: PostgreSQL's numeric has no -0
    elif isinstance(value, float):
        text = repr(value)  # the shortest exact text, as PostgreSQL's unless it has an exponent
        out(format(Decimal(text), "f") if "e" in text or "n" in text else text)  # (or is inf, nan)
    else:
        out(_SCALARS.get(value) if value is None or isinstance(value, bool) else json.dumps(value))


def _object_keys(keys: tuple[str, ...]) -> list[tuple[str, str]]:
    """An object's keys in PostgreSQL's order, each with the text before its value. Objects of a
    kind share their keys (messages, metadata): the order is worked out once per set of keys."""
    if (known := _KEY_ORDERS.get(keys)) is not None:
        return known
    ordered = [
        (key, ("{" if i == 0 else ", ") + _quote(key) + ": ")
        for i, key in enumerate(sorted(keys, key=_key_order))
    ]
    # Bounded (a few MB at most): keys come from user data.
    if len(keys) <= 32 and sum(map(len, keys)) <= 512:
        if len(_KEY_ORDERS) >= 1024:
            _KEY_ORDERS.clear()
        _KEY_ORDERS[keys] = ordered
    return ordered


_KEY_ORDERS: dict[tuple[str, ...], list[tuple[str, str]]] = {}
# What json.dumps(ensure_ascii=False) does with a string, without building an encoder per call
# (which cost more than the quoting: a filter reads every span that ends).
_quote = json.encoder.encode_basestring
_SCALARS = {None: "null", True: "true", False: "false"}


def _key_order(key: str) -> tuple[int, bytes]:
    encoded = key.encode()
    return len(encoded), encoded


_WORDS = re.compile(r"\w+")


def like(text: str, pattern: str, *, insensitive: bool) -> bool:
    # ILIKE compares lower-cased text with a lower-cased pattern, as PostgreSQL does (a
    # case-insensitive regex would also fold characters such as "ſ" to "s").
    if insensitive:
        text, pattern = text.lower(), pattern.lower()
    pieces = _like_pieces(pattern)
    if len(pieces) == 1:  # no %: the whole text, piece for piece
        return len(text) == pieces[0].size and pieces[0].regex.match(text) is not None
    first, *middle, last = pieces
    # Without backtracking: as a regex, '%a%a%a%b' on a long text takes time that multiplies by
    # the text's length with every %. The first piece goes at the start, the last at the end,
    # and each one between at its leftmost place, which leaves the most room to those after it.
    end = len(text) - last.size
    if end < first.size or not first.regex.match(text) or not last.regex.match(text, end):
        return False
    at = first.size
    for piece in middle:
        found = piece.regex.search(text, at, end)
        if found is None:
            return False
        at = found.end()
    return True


@dataclass(frozen=True)
class _LikePiece:
    """A run of a LIKE pattern between two %: literal characters and _, so a fixed length."""

    regex: re.Pattern
    size: int


@functools.lru_cache(maxsize=4096)
def _like_pieces(pattern: str) -> list[_LikePiece]:
    pieces, current, size, i = [], [], 0, 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            current.append(re.escape(pattern[i + 1]))
            size, i = size + 1, i + 2
            continue
        if char == "%":
            pieces.append(_LikePiece(re.compile("".join(current), re.DOTALL), size))
            current, size = [], 0
        else:
            current.append("." if char == "_" else re.escape(char))
            size += 1
        i += 1
    pieces.append(_LikePiece(re.compile("".join(current), re.DOTALL), size))
    return pieces


def text_matches(op: str, text: str, pattern: str) -> bool:
    """`text <op> pattern` for the operators that read text: like, ilike, match, regex."""
    if op in ("like", "ilike"):
        return like(text, pattern, insensitive=op == "ilike")
    if op == "match":
        return match(text, pattern)
    return regex_search(pattern, text)


def match(text: str, query: str) -> bool:
    """Every word of `query` is a word of `text`, case-insensitively."""
    words = _query_words(query)
    if not words:
        return False
    text = text.lower()
    # Each word of the text is a substring of it: the substring test turns most texts away
    # before the text is split into words (a rule's filter runs on every span that ends).
    return all(word in text for word in words) and words <= set(_WORDS.findall(text))


@functools.lru_cache(maxsize=1024)
def _query_words(query: str) -> frozenset[str]:
    return frozenset(_WORDS.findall(query.lower()))


def includes(haystack: Any, needle: Any) -> bool:
    if needle is None:
        return False
    if isinstance(haystack, list):
        return any(equal(item, needle) is True for item in haystack)
    if isinstance(haystack, str) and isinstance(needle, str):
        return needle in haystack
    return False


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def arith(op: str, a: Any, b: Any) -> Any:
    """Null for anything but numbers (or a timestamp and an interval), a division by zero, or a
    result out of range (beyond a double, or a timestamp outside years 1-9999)."""
    try:
        result = _arith(op, a, b)
    except (OverflowError, ValueError):
        return None
    return result if result is None or isinstance(result, datetime) or _finite(result) else None


def _finite(value: Any) -> bool:
    return not (isinstance(value, float) and math.isnan(value)) and abs(value) <= _MAX_FLOAT


_MAX_FLOAT = 1.7976931348623157e308


def _arith(op: str, a: Any, b: Any) -> Any:
    if isinstance(a, datetime) and isinstance(b, IntervalValue) and op in "+-":
        return a + b.delta() if op == "+" else a - b.delta()
    if isinstance(a, IntervalValue) and isinstance(b, datetime) and op == "+":
        return b + a.delta()
    if not (_number(a) and _number(b)):
        return None
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        return None
    if op == "/":
        return a / b
    result = math.fmod(a, b)  # SQL's %: the sign of the dividend
    return int(result) if isinstance(a, int) and isinstance(b, int) else result


def negate(value: Any) -> Any:
    return -value if _number(value) else None


def round_half_up(value: Any, places: Any = 0) -> Any:
    if not _number(value) or not _finite(value) or not isinstance(places, int) or isinstance(places, bool):
        return None
    # Beyond 400 places either way a double is unchanged, or 0; the precision holds every digit.
    places = max(-400, min(400, places))
    with localcontext(prec=1200, Emax=2000, Emin=-2000):
        try:
            rounded = Decimal(repr(value)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
        except InvalidOperation:
            return None
    # A double past 2**53 stays a double: as an int it would not equal the double it came from.
    return (
        int(rounded) if places <= 0 and (isinstance(value, int) or abs(rounded) < 2**53) else float(rounded)
    )


def to_string(value: Any) -> str | None:
    return text_of(value)


_NUMBER_TEXT = re.compile(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*")


def to_number(value: Any) -> Any:
    if _number(value):
        return value
    # Only decimal numbers in ASCII: Python's int() and float() also read "1_000", "١", "nan".
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value):
        try:
            return int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                return None
            return number if math.isfinite(number) else None
    return None


def to_integer(value: Any) -> int | None:
    number = to_number(value)
    return None if number is None or not _finite(number) else int(number)


def to_boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if _number(value):
        return value != 0
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def json_extract(document: Any, path: Any) -> Any:
    if not isinstance(document, str) or not isinstance(path, str):
        return None
    try:
        value = json.loads(document, parse_constant=_not_json, parse_float=_finite_float)
    except (ValueError, RecursionError):
        return None
    for part in re.findall(r"[^.\[\]]+|\[-?\d+\]", path):
        if part.startswith("["):
            index = int(part[1:-1])
            value = value[index] if isinstance(value, list) and -len(value) <= index < len(value) else None
        else:
            value = value.get(part) if isinstance(value, dict) else None
    return value


def _not_json(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is out of range")
    return number


def least_greatest(values: list, pick) -> Any:
    present = [v for v in values if v is not None]
    if (
        not present
        or len({kind(v) for v in present}) != 1
        or kind(present[0]) not in ("number", "string", "timestamp")
    ):
        return None
    return pick(present)


def now() -> datetime:
    return datetime.now(timezone.utc)


def interval(amount: int, unit: str) -> IntervalValue:
    months, seconds = UNIT_SIZES[unit]
    return IntervalValue(months * amount, seconds * amount)
