"""AST -> a Python callable over a span, built from closures once per expression.

This is what the online path runs on a span that just ended: `predicate(text)(row)` is True
when the span matches. The row is a span in the API's event shape (a dict).
"""

import functools
import operator
import re
from collections.abc import Callable
from typing import Any

from scoring.btql import ast
from scoring.btql import values as v
from scoring.btql.fields import TIMESTAMP_FIELDS
from scoring.btql.parser import parse

Evaluator = Callable[[dict], Any]


@functools.lru_cache(maxsize=2048)
def predicate(text: str) -> Callable[[dict], bool]:
    """The compiled filter: a function of a span row, True when it matches. Cached by text."""
    return _condition(parse(text))


def compile_node(node: ast.Node) -> Evaluator:
    return _COMPILERS[type(node)](node)


def _literal(node: ast.Literal) -> Evaluator:
    value = node.value
    return lambda row: value


def _array(node: ast.Array) -> Evaluator:
    items = [compile_node(item) for item in node.items]
    return lambda row: [item(row) for item in items]


def _field(node: ast.Field) -> Evaluator:
    root, *rest = node.path
    if root in TIMESTAMP_FIELDS:
        return lambda row: v.to_timestamp(row.get(root))
    # The common paths get a reader of their own: this is the inner loop of every filter.
    if not rest:
        return lambda row: row.get(root)
    if len(rest) == 1 and isinstance(rest[0], str):
        (key,) = rest

        def read_one(row: dict) -> Any:
            value = row.get(root)
            return value.get(key) if type(value) is dict else None

        return read_one

    def read(row: dict) -> Any:
        value = row.get(root)
        for key in rest:
            if isinstance(key, int):
                if not isinstance(value, list) or not -len(value) <= key < len(value):
                    return None
                value = value[key]
            elif isinstance(value, dict):
                value = value.get(key)
            else:
                return None
        return value

    return read


def _interval(node: ast.Interval) -> Evaluator:
    value = v.interval(node.amount, node.unit)
    return lambda row: value


_BOOLEAN_NODES = (ast.Compare, ast.Logic, ast.Not)  # their evaluators give True or False


def _condition(node: ast.Node) -> Evaluator:
    """An evaluator giving True or False: the node's own when it already does."""
    evaluate = compile_node(node)
    return evaluate if isinstance(node, _BOOLEAN_NODES) else (lambda row: evaluate(row) is True)


def _not(node: ast.Not) -> Evaluator:
    operand = _condition(node.operand)
    return lambda row: not operand(row)


def _neg(node: ast.Neg) -> Evaluator:
    operand = compile_node(node.operand)
    return lambda row: v.negate(operand(row))


def _logic(node: ast.Logic) -> Evaluator:
    left, right = _condition(node.left), _condition(node.right)
    if node.op == "and":
        return lambda row: left(row) and right(row)
    return lambda row: left(row) or right(row)


def _arith(node: ast.Arith) -> Evaluator:
    left, right, op = compile_node(node.left), compile_node(node.right), node.op
    return lambda row: v.arith(op, left(row), right(row))


def _ternary(node: ast.Ternary) -> Evaluator:
    cond, then, otherwise = compile_node(node.cond), compile_node(node.then), compile_node(node.otherwise)
    return lambda row: then(row) if cond(row) is True else otherwise(row)


def _compare_in(a, b):
    return any(v.equal(a, item) is True for item in b) if isinstance(b, list) else v.equal(a, b) is True


def _text_op(op: str):
    def run(a, b):
        text = v.text_of(a)
        return isinstance(b, str) and text is not None and v.text_matches(op, text, b)

    return run


_BASE = {
    "eq": lambda a, b: v.equal(a, b) is True,
    "ne": lambda a, b: v.equal(a, b) is False,
    "lt": lambda a, b: (o := v.order(a, b)) is not None and o < 0,
    "le": lambda a, b: (o := v.order(a, b)) is not None and o <= 0,
    "gt": lambda a, b: (o := v.order(a, b)) is not None and o > 0,
    "ge": lambda a, b: (o := v.order(a, b)) is not None and o >= 0,
    "is": lambda a, b: (a is None and b is None) or v.equal(a, b) is True,
    "in": _compare_in,
    "like": _text_op("like"),
    "ilike": _text_op("ilike"),
    "match": _text_op("match"),
    "includes": v.includes,
    "regex": _text_op("regex"),
}


def _compare(node: ast.Compare) -> Evaluator:
    fast = _compare_with_literal(node)
    if fast is not None:
        return fast
    left, right, base = compile_node(node.left), compile_node(node.right), _BASE[node.op]
    if not node.negated:
        return lambda row: base(left(row), right(row))

    def negated(row):
        a, b = left(row), right(row)
        return a is not None and b is not None and not base(a, b)

    return negated


_NUMBER_TYPES = (int, float)
_ORDER = {"lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge}
_SIMPLE_LIKE = re.compile(r"%?[^%_\\]*%?")


def _compare_with_literal(node: ast.Compare) -> Evaluator | None:
    """A closure for `<json field> <op> <literal>`, the shape of most filters, that gives what
    `_BASE` gives without its general type dispatch. None for any other shape."""
    literal = node.right
    if not (isinstance(node.left, ast.Field) and isinstance(literal, ast.Literal)):
        return None
    if (
        node.left.path[0] in TIMESTAMP_FIELDS
        or node.negated
        and node.op not in ("eq", "includes", "like", "ilike")
    ):
        return None
    read, value = compile_node(node.left), literal.value
    if value is None:
        return (lambda row: read(row) is None) if node.op == "is" else None
    if isinstance(value, bool):
        same = lambda x: x is value  # noqa: E731
    elif isinstance(value, str):
        same = lambda x: type(x) is str and x == value  # noqa: E731
    else:
        same = lambda x: type(x) in _NUMBER_TYPES and x == value  # noqa: E731
    test = None
    if node.op in ("eq", "is"):
        test = same
    elif node.op == "ne":
        return lambda row: (x := read(row)) is not None and not same(x)
    elif node.op in _ORDER and not isinstance(value, bool):
        kind = str if isinstance(value, str) else _NUMBER_TYPES
        compare = _ORDER[node.op]
        test = lambda x: isinstance(x, kind) and type(x) is not bool and compare(x, value)  # noqa: E731
    elif node.op == "includes" and isinstance(value, str):
        test = lambda x: type(x) in (list, str) and value in x  # noqa: E731
    elif (
        node.op in ("like", "ilike")
        and isinstance(value, str)
        and value.isascii()
        and _SIMPLE_LIKE.fullmatch(value)
    ):
        test = _simple_like(value, insensitive=node.op == "ilike")
    if test is None:
        return None
    if node.negated:
        return lambda row: (x := read(row)) is not None and not test(x)
    return lambda row: test(read(row))


def _simple_like(pattern: str, *, insensitive: bool) -> Callable[[Any], bool]:
    """LIKE 'abc', 'abc%', '%abc' or '%abc%' as string methods."""
    starts, ends = pattern.startswith("%"), pattern.endswith("%") and len(pattern) > 1
    core = pattern[1 if starts else 0 : -1 if ends else None]
    if insensitive:
        core = core.lower()
    if starts and ends:
        match = lambda text: core in text  # noqa: E731
    elif starts:
        match = lambda text: text.endswith(core)  # noqa: E731
    elif ends:
        match = lambda text: text.startswith(core)  # noqa: E731
    else:
        match = lambda text: text == core  # noqa: E731

    def test(x):
        if x is None:
            return False
        text = x if type(x) is str else v.text_of(x)
        if text is None:
            return False
        return match(text.lower() if insensitive else text)

    return test


def _call(node: ast.Call) -> Evaluator:
    args = [compile_node(arg) for arg in node.args]
    function = _FUNCTIONS[node.name]
    return lambda row: function(*[arg(row) for arg in args])


def _string_fn(method):
    return lambda s: method(s) if isinstance(s, str) else None


def _len(value):
    return len(value) if isinstance(value, str | list | dict) else None


_FUNCTIONS: dict[str, Callable] = {
    "lower": _string_fn(str.lower),
    "upper": _string_fn(str.upper),
    "concat": lambda *a: "".join(t for x in a if (t := v.to_string(x)) is not None),
    "len": _len,
    "coalesce": lambda *a: next((x for x in a if x is not None), None),
    "nullif": lambda a, b: None if v.equal(a, b) is True else a,
    "least": lambda *a: v.least_greatest(list(a), min),
    "greatest": lambda *a: v.least_greatest(list(a), max),
    "round": v.round_half_up,
    "to_string": v.to_string,
    "to_number": v.to_number,
    "to_integer": v.to_integer,
    "to_boolean": v.to_boolean,
    "to_datetime": v.to_timestamp,
    "json_extract": v.json_extract,
    "includes": v.includes,
    "contains": v.includes,
    "now": v.now,
    "current_timestamp": v.now,
}

_COMPILERS = {
    ast.Literal: _literal,
    ast.Array: _array,
    ast.Field: _field,
    ast.Interval: _interval,
    ast.Not: _not,
    ast.Neg: _neg,
    ast.Logic: _logic,
    ast.Arith: _arith,
    ast.Ternary: _ternary,
    ast.Compare: _compare,
    ast.Call: _call,
}
