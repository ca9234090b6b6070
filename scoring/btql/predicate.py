"""AST -> a Python callable over a span, built from closures once per expression.

This is what the online path runs on a span that just ended: `predicate(text)(row)` is True
when the span matches. The row is a span in the API's event shape (a dict).
"""

import functools
from collections.abc import Callable
from typing import Any

from scoring.btql import ast
from scoring.btql import values as v
from scoring.btql.fields import TIMESTAMP_FIELDS
from scoring.btql.parser import parse
from scoring.btql.regex import compile_pattern

Evaluator = Callable[[dict], Any]


@functools.lru_cache(maxsize=2048)
def predicate(text: str) -> Callable[[dict], bool]:
    """The compiled filter: a function of a span row, True when it matches. Cached by text."""
    evaluate = compile_node(parse(text))
    return lambda row: evaluate(row) is True


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
    timestamp = root in TIMESTAMP_FIELDS

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
        return v.to_timestamp(value) if timestamp else value

    return read


def _interval(node: ast.Interval) -> Evaluator:
    value = v.interval(node.amount, node.unit)
    return lambda row: value


def _not(node: ast.Not) -> Evaluator:
    operand = compile_node(node.operand)
    return lambda row: operand(row) is not True


def _neg(node: ast.Neg) -> Evaluator:
    operand = compile_node(node.operand)
    return lambda row: v.negate(operand(row))


def _logic(node: ast.Logic) -> Evaluator:
    left, right = compile_node(node.left), compile_node(node.right)
    if node.op == "and":
        return lambda row: left(row) is True and right(row) is True
    return lambda row: left(row) is True or right(row) is True


def _arith(node: ast.Arith) -> Evaluator:
    left, right, op = compile_node(node.left), compile_node(node.right), node.op
    return lambda row: v.arith(op, left(row), right(row))


def _ternary(node: ast.Ternary) -> Evaluator:
    cond, then, otherwise = compile_node(node.cond), compile_node(node.then), compile_node(node.otherwise)
    return lambda row: then(row) if cond(row) is True else otherwise(row)


def _compare_in(a, b):
    return any(v.equal(a, item) is True for item in b) if isinstance(b, list) else v.equal(a, b) is True


def _text_op(test):
    def run(a, b):
        text = v.text_of(a)
        return isinstance(b, str) and text is not None and test(text, b)

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
    "like": _text_op(lambda text, p: v.like(text, p, insensitive=False)),
    "ilike": _text_op(lambda text, p: v.like(text, p, insensitive=True)),
    "match": _text_op(v.match),
    "includes": v.includes,
    "regex": _text_op(lambda text, p: compile_pattern(p).search(text) is not None),
}


def _compare(node: ast.Compare) -> Evaluator:
    left, right, base = compile_node(node.left), compile_node(node.right), _BASE[node.op]
    if not node.negated:
        return lambda row: base(left(row), right(row))

    def negated(row):
        a, b = left(row), right(row)
        return a is not None and b is not None and not base(a, b)

    return negated


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
    "concat": lambda *a: "".join(v.to_string(x) for x in a if x is not None),
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
