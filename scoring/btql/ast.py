"""The BTQL syntax tree: small frozen dataclasses, each with its source position.

Nothing outside `scoring.btql` sees lark; everything else works on these nodes.
"""

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Pos:
    """Where a node stands in the source: offsets [start, end) and 1-based line and column."""

    start: int
    end: int
    line: int
    column: int


NOWHERE = Pos(0, 0, 1, 1)


@dataclass(frozen=True)
class Node:
    pos: Pos = field(default=NOWHERE, compare=False, kw_only=True)


@dataclass(frozen=True)
class Literal(Node):
    value: Any  # None, bool, int, float or str


@dataclass(frozen=True)
class Array(Node):
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Field(Node):
    """A path into the span: ("metadata", "model"), ("tags", -1), ("created",)."""

    path: tuple[str | int, ...]


@dataclass(frozen=True)
class Interval(Node):
    amount: int
    unit: str  # year, month, week, day, hour, minute, second


@dataclass(frozen=True)
class Call(Node):
    name: str  # lower-case
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Not(Node):
    operand: Node


@dataclass(frozen=True)
class Neg(Node):
    operand: Node


@dataclass(frozen=True)
class Logic(Node):
    op: str  # and, or
    left: Node
    right: Node


@dataclass(frozen=True)
class Arith(Node):
    op: str  # + - * / %
    left: Node
    right: Node


# Comparison operators: eq ne lt le gt ge (null-unsafe), is (null-safe equality), in, like,
# ilike, match, includes, regex. `negated` is the NOT form (!=, NOT IN, NOT LIKE, !~, ...): like
# every comparison it is false when the left side is null or missing. `IS NOT` is Not(is).
COMPARISONS = ("eq", "ne", "lt", "le", "gt", "ge", "is", "in", "like", "ilike", "match", "includes", "regex")


@dataclass(frozen=True)
class Compare(Node):
    op: str
    left: Node
    right: Node
    negated: bool = False


@dataclass(frozen=True)
class Ternary(Node):
    cond: Node
    then: Node
    otherwise: Node
