"""Text -> AST. `parse` is cached by text: each expression is parsed and checked once."""

import functools
import re
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from scoring.btql import ast
from scoring.btql.errors import BTQLError
from scoring.btql.fields import FIELDS
from scoring.btql.regex import check_pattern

MAX_LENGTH = 10_000
MAX_DEPTH = 64
# Values in one array literal (`x IN [...]`): SQLite's expression trees stop at a depth of 1000.
MAX_ARRAY_ITEMS = 500

_PARSER = Lark(
    Path(__file__).with_name("grammar.lark").read_text(),
    parser="lalr",
    lexer="basic",
    propagate_positions=True,
    maybe_placeholders=False,
)

# name -> (fewest, most) arguments; None: any number.
FUNCTIONS: dict[str, tuple[int, int | None]] = {
    "lower": (1, 1),
    "upper": (1, 1),
    "concat": (1, None),
    "len": (1, 1),
    "coalesce": (1, None),
    "nullif": (2, 2),
    "least": (1, None),
    "greatest": (1, None),
    "round": (1, 2),
    "to_string": (1, 1),
    "to_number": (1, 1),
    "to_integer": (1, 1),
    "to_boolean": (1, 1),
    "to_datetime": (1, 1),
    "json_extract": (2, 2),
    "includes": (2, 2),
    "contains": (2, 2),
    "now": (0, 0),
    "current_timestamp": (0, 0),
}
UNITS = ("year", "month", "week", "day", "hour", "minute", "second")
# Longer intervals leave the years timestamps can hold (1 to 9999) whatever they are added to.
_MAX_INTERVAL = {"year": 10_000, "month": 120_000, "week": 521_775, "day": 3_652_425,
                 "hour": 87_658_200, "minute": 5_259_492_000, "second": 315_569_520_000}  # fmt: skip

_TOKEN_NAMES = {
    "NAME": "a field or function name",
    "SQSTRING": "a string",
    "DQSTRING": "a string",
    "NUMBER": "a number",
    "INT": "an integer",
    "COMPARE": "a comparison (= != <> < <= > >=)",
    "REGEX": "~ or !~",
    "LPAR": "(",
    "RPAR": ")",
    "LSQB": "[",
    "RSQB": "]",
    "COMMA": ",",
    "DOT": ".",
    "QMARK": "?",
    "COLON": ":",
    "PLUS": "+",
    "MINUS": "-",
    "MUL": "* / %",
    "$END": "the end of the expression",
}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "'": "'", '"': '"', "\\": "\\"}
_ESCAPE = re.compile(r"\\(.)", re.S)


def parse(text: str) -> ast.Node:
    """The AST of a filter expression, or BTQLError. Cached: the same text is parsed once."""
    if not isinstance(text, str):
        raise BTQLError("A BTQL expression must be a string.", text="", start=0)
    return _parse(text)


@functools.lru_cache(maxsize=2048)
def _parse(text: str) -> ast.Node:
    if len(text) > MAX_LENGTH:
        raise BTQLError(
            f"The expression is longer than {MAX_LENGTH} characters.", text=text, start=MAX_LENGTH
        )
    if not text.strip():
        raise BTQLError("The expression is empty.", text=text, start=0)
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text) from None
    except RecursionError:
        raise BTQLError("The expression is nested too deeply.", text=text, start=0) from None
    try:
        node = _ToAST(text).transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, BTQLError):
            raise exc.orig_exc from None
        raise
    except RecursionError:
        raise BTQLError("The expression is nested too deeply.", text=text, start=0) from None
    _check_tree(node, text)
    return node


def _syntax_error(exc: UnexpectedInput, text: str) -> BTQLError:
    start = max(getattr(exc, "pos_in_stream", None) or 0, 0)
    if isinstance(exc, UnexpectedCharacters):
        return BTQLError(
            f"Unexpected character {text[start]!r}.", text=text, start=start, expected=_friendly(exc.allowed)
        )
    if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
        return BTQLError(
            "The expression ends too early.", text=text, start=len(text), expected=_friendly(exc.expected)
        )
    token = exc.token
    start = token.start_pos
    return BTQLError(
        f"Unexpected {str(token)!r}.",
        text=text,
        start=start,
        end=token.end_pos,
        expected=_friendly(exc.expected),
    )


def _friendly(names) -> set[str]:
    return {_TOKEN_NAMES.get(name, name.lower()) for name in names or ()}


def _check_tree(node: ast.Node, text: str) -> None:
    """What the grammar cannot say: nesting depth, array sizes, where intervals may stand,
    json_extract's path."""
    stack: list[tuple[ast.Node, int, ast.Node | None]] = [(node, 0, None)]
    while stack:
        current, depth, parent = stack.pop()
        if depth > MAX_DEPTH:
            raise BTQLError(
                f"The expression is nested deeper than {MAX_DEPTH} levels.",
                text=text,
                start=current.pos.start,
            )
        if isinstance(current, ast.Array) and len(current.items) > MAX_ARRAY_ITEMS:
            raise BTQLError(
                f"An array holds at most {MAX_ARRAY_ITEMS} values; this one has {len(current.items)}.",
                text=text,
                start=current.pos.start,
            )
        if isinstance(current, ast.Interval) and not (isinstance(parent, ast.Arith) and parent.op in "+-"):
            raise BTQLError(
                "An interval can only be added to or subtracted from a timestamp.",
                text=text,
                start=current.pos.start,
            )
        if isinstance(current, ast.Call) and current.name == "json_extract":
            path = current.args[1]
            if not (isinstance(path, ast.Literal) and isinstance(path.value, str)):
                raise BTQLError(
                    "json_extract's path must be a string literal.", text=text, start=path.pos.start
                )
        for value in vars(current).values():
            children = value if isinstance(value, tuple) else (value,)
            stack.extend((child, depth + 1, current) for child in children if isinstance(child, ast.Node))


def unquote(token: str) -> str:
    """A quoted string's value. \\', \\", \\\\, \\n, \\t and \\r are escapes; any other backslash
    is kept with its character, so that LIKE (\\%) and regex (\\d) escapes reach the operator."""
    return _ESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(0)), token[1:-1])


@v_args(meta=True)
class _ToAST(Transformer):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def _pos(self, meta) -> ast.Pos:
        if getattr(meta, "empty", True):
            return ast.NOWHERE
        return ast.Pos(meta.start_pos, meta.end_pos, meta.line, meta.column)

    def _error(self, message: str, where, **kw) -> BTQLError:
        start = where.start_pos if isinstance(where, Token) else where.start
        end = where.end_pos if isinstance(where, Token) else where.end
        return BTQLError(message, text=self.text, start=start, end=end, **kw)

    def literal(self, meta, children):
        (token,) = children
        kind = token.type
        if kind in ("SQSTRING", "DQSTRING"):
            value = unquote(str(token))
        elif kind == "INT":
            value = self._int(token)
        elif kind == "NUMBER":
            value = float(token)
            if value in (float("inf"), float("-inf")):
                raise self._error("The number is too large.", token)
        else:
            value = {"TRUE": True, "FALSE": False, "NULL": None}[kind]
        return ast.Literal(value, pos=self._pos(meta))

    def _int(self, token: Token) -> int:
        # Checked on the digits first: int() refuses more than 4300 of them (ValueError).
        digits = str(token).lstrip("0") or "0"
        if len(digits) > 19 or int(digits) >= 2**63:
            raise self._error("Integers must fit in 64 bits.", token)
        return int(digits)

    def array(self, meta, children):
        return ast.Array(tuple(c for c in children if c is not None), pos=self._pos(meta))

    def field(self, meta, children):
        (name,) = children
        if str(name) not in FIELDS:
            raise self._error(f"Unknown field {str(name)!r}.", name, expected=set(FIELDS))
        return ast.Field((str(name),), pos=self._pos(meta))

    def attr(self, meta, children):
        base, name = children
        key = unquote(str(name)) if name.type == "DQSTRING" else str(name)
        return ast.Field(self._path(base, name) + (key,), pos=self._pos(meta))

    def index(self, meta, children):
        base, *sign, number = children
        value = self._int(number)
        return ast.Field(self._path(base, number) + (-value if sign else value,), pos=self._pos(meta))

    def _path(self, base, token) -> tuple:
        if not isinstance(base, ast.Field):
            raise self._error("Only fields have fields and elements.", token)
        rule = FIELDS[base.path[0]]
        if rule is None or (len(base.path) == 1 and isinstance(rule, frozenset) and token.type != "NAME"):
            raise self._error(f"{base.path[0]} has no fields or elements.", token)
        if isinstance(rule, frozenset):
            key = str(token)
            if len(base.path) > 1 or key not in rule:
                raise self._error(
                    f"Unknown field {base.path[0]}.{key}.",
                    token,
                    expected={f"{base.path[0]}.{k}" for k in rule},
                )
        return base.path

    def call(self, meta, children):
        name, *args = children
        lowered = str(name).lower()
        if lowered not in FUNCTIONS:
            raise self._error(f"Unknown function {str(name)!r}.", name, expected=set(FUNCTIONS))
        args = tuple(a for a in args if a is not None)
        fewest, most = FUNCTIONS[lowered]
        if len(args) < fewest or (most is not None and len(args) > most):
            wanted = (
                f"{fewest}"
                if fewest == most
                else f"{fewest} or more"
                if most is None
                else f"{fewest} to {most}"
            )
            raise self._error(f"{lowered}() takes {wanted} argument(s), not {len(args)}.", name)
        return ast.Call(lowered, args, pos=self._pos(meta))

    def interval(self, meta, children):
        _, amount, unit = children
        name = str(unit).lower().rstrip("s")
        if name not in UNITS:
            raise self._error(f"Unknown interval unit {str(unit)!r}.", unit, expected=set(UNITS))
        value = self._int(amount)
        if value > _MAX_INTERVAL[name]:
            raise self._error(f"An interval is at most {_MAX_INTERVAL[name]} {name}s (10,000 years).", amount)
        return ast.Interval(value, name, pos=self._pos(meta))

    def not_(self, meta, children):
        return ast.Not(children[-1], pos=self._pos(meta))

    def neg(self, meta, children):
        return ast.Neg(children[-1], pos=self._pos(meta))

    def and_(self, meta, children):
        return ast.Logic("and", children[0], children[-1], pos=self._pos(meta))

    def or_(self, meta, children):
        return ast.Logic("or", children[0], children[-1], pos=self._pos(meta))

    def arith(self, meta, children):
        left, op, right = children
        return ast.Arith(str(op), left, right, pos=self._pos(meta))

    def ternary(self, meta, children):
        cond, then, otherwise = children
        return ast.Ternary(cond, then, otherwise, pos=self._pos(meta))

    _COMPARE = {"=": "eq", "!=": "ne", "<>": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}

    def compare(self, meta, children):
        left, op, right = children
        return ast.Compare(self._COMPARE[str(op)], left, right, pos=self._pos(meta))

    def is_(self, meta, children):
        return ast.Compare("is", children[0], children[-1], pos=self._pos(meta))

    def is_not(self, meta, children):
        pos = self._pos(meta)
        return ast.Not(ast.Compare("is", children[0], children[-1], pos=pos), pos=pos)

    def in_(self, meta, children):
        return ast.Compare("in", children[0], children[-1], pos=self._pos(meta))

    def not_in(self, meta, children):
        return ast.Compare("in", children[0], children[-1], negated=True, pos=self._pos(meta))

    def text_op(self, meta, children):
        op = str(children[0]).lower()
        return "includes" if op == "contains" else op

    def text_match(self, meta, children):
        left, op, right = children
        return self._text(meta, op, left, right, negated=False)

    def not_text_match(self, meta, children):
        left, _, op, right = children
        return self._text(meta, op, left, right, negated=True)

    def _text(self, meta, op, left, right, *, negated):
        if op in ("like", "ilike", "match") and not _is_text_operand(right):
            raise self._error(f"{op.upper()} needs a string on its right.", right.pos)
        return ast.Compare(op, left, right, negated=negated, pos=self._pos(meta))

    def regex(self, meta, children):
        left, op, right = children
        if not (isinstance(right, ast.Literal) and isinstance(right.value, str)):
            raise self._error("A regular expression must be a string literal.", right.pos)
        problem = check_pattern(right.value)
        if problem:
            raise self._error(problem, right.pos)
        return ast.Compare("regex", left, right, negated=str(op) == "!~", pos=self._pos(meta))


def _is_text_operand(node: ast.Node) -> bool:
    return not isinstance(node, ast.Literal) or isinstance(node.value, str)
