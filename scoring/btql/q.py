"""AST -> a Django `Q` over `projects.Span`: the database side of BTQL.

`to_q(text)` gives the same answer as `predicate(text)` on `span_event(span)` (docs/btql.md), as
`Span.objects.filter(project=p).filter(to_q(text))`, on SQLite and on PostgreSQL.

The Q holds one expression, `BTQLFilter`, that is turned into SQL when the query is compiled,
for the connection it runs on:

- PostgreSQL: native SQL. Dynamic values are `jsonb` (SQL NULL for null or missing), with
  `timestamptz` for timestamps and SQL booleans for comparisons; every operator is spelled out
  with jsonb operators, `jsonb_typeof` guards, `COLLATE "C"`, `LIKE`/`ILIKE`/`~`/`~*`.
- SQLite: comparisons of a field with a literal (=, !=, <, IS NULL, IN, INCLUDES, created
  ranges, ...) are native SQL over the JSON columns (`json_type`, `->>`, `json_each`); LIKE,
  MATCH and ~ call registered Python functions (`scoring.btql.values`); anything else is
  evaluated by a registered function that runs the Python predicate on that sub-expression
  (`btql_eval`), so that both sides share one implementation.

User values only ever reach SQL as query parameters.
"""

import contextlib
import functools
import hashlib
import json
import re
import threading
from datetime import datetime, timezone

from django.db import OperationalError
from django.db.models import BooleanField, Expression, F, Q

from scoring.btql import ast
from scoring.btql import values as v
from scoring.btql.errors import BTQLError
from scoring.btql.fields import TIMESTAMP_FIELDS
from scoring.btql.parser import parse
from scoring.btql.regex import PatternTooSlow

# BTQL field -> column, for the fields that are not JSON documents.
TEXT_COLUMNS = {"id": "row_id", "span_id": "span_id", "root_span_id": "root_span_id"}
JSON_COLUMNS = ("span_parents", "span_attributes", "input", "output", "expected", "error", "tags",
                "metadata", "metrics", "scores")  # fmt: skip
# Every column the SQLite fallback passes to `btql_eval`, in order.
EVAL_COLUMNS = ("row_id", "span_id", "root_span_id", "is_root", "created", *JSON_COLUMNS)


@functools.lru_cache(maxsize=2048)
def to_q(text: str) -> Q:
    """The filter as a Q over Span. Cached by text (the expression is parsed once)."""
    return Q(BTQLFilter(parse(text)))


class BTQLFilter(Expression):
    """A boolean expression holding a BTQL AST, compiled to SQL for the connection it runs on."""

    output_field = BooleanField()
    conditional = True

    def __init__(self, node: ast.Node):
        super().__init__(output_field=BooleanField())
        self.node = node
        self.columns: dict = {}

    def __repr__(self):
        return f"BTQLFilter({self.node!r})"

    def get_source_expressions(self):
        return list(self.columns.values())

    def set_source_expressions(self, exprs):
        self.columns = dict(zip(self.columns, exprs, strict=True))

    def resolve_expression(self, query=None, allow_joins=True, reuse=None, summarize=False, for_save=False):
        clone = self.copy()
        names = ("row_id", "span_id", "root_span_id", "is_root", "created", *JSON_COLUMNS)
        clone.columns = {
            n: F(n).resolve_expression(query, allow_joins, reuse, summarize, for_save) for n in names
        }
        return clone

    def as_sql(self, compiler, connection):
        columns = {name: compiler.compile(col)[0] for name, col in self.columns.items()}
        if connection.vendor == "postgresql":
            try:
                out = _PG(columns).condition(self.node)
            except Unsupported as exc:
                raise BTQLError(f"Not supported in this database: {exc}.", text="", start=0) from None
        elif connection.vendor == "sqlite":
            out = _SQLite(columns, connection).condition(self.node)
        else:  # pragma: no cover
            raise NotImplementedError(f"BTQL filters do not support {connection.vendor}.")
        return f"COALESCE({out.sql}, false)", out.params


# -- SQL fragments --------------------------------------------------------------------------


class S:
    """A piece of SQL with its parameters, and what kind of value it yields: "json" (jsonb on
    PostgreSQL, SQL NULL for null), "bool" (an SQL boolean, never NULL), "ts" (a timestamp or
    NULL) or "interval" (a constant: `const`)."""

    __slots__ = ("sql", "params", "kind", "const", "literal", "text_column")

    def __init__(self, sql, params=(), kind="json", *, const=None, literal=None, text_column=None):
        self.sql, self.params, self.kind = sql, list(params), kind
        self.const, self.literal, self.text_column = const, literal, text_column

    @property
    def is_null(self):
        return self.literal is _NULL


_NULL = object()  # S.literal of the null literal
_SLOT = re.compile(r"\{(\d+)\}")


def t(template: str, *parts: S, kind="bool") -> S:
    """Fill `{0}`, `{1}`... with the parts' SQL; parameters follow in order of appearance."""
    params = []

    def fill(m):
        part = parts[int(m.group(1))]
        params.extend(part.params)
        return part.sql

    return S(_SLOT.sub(fill, template), params, kind)


def p(value, cast="") -> S:
    return S(f"%s{cast}", [value])


TRUE, FALSE = S("true", kind="bool"), S("false", kind="bool")


class Unsupported(Exception):
    pass


# -- PostgreSQL ---------------------------------------------------------------------------------

_ISO_TS = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}:\d{2})?$"
_INT_TEXT = r"^\s*[+-]?\d+\s*$"
_FLOAT_TEXT = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d{1,3})?\s*$"


class _PG:
    def __init__(self, columns: dict[str, str]):
        self.columns = columns
        self.aliases = 0

    def alias(self) -> str:
        self.aliases += 1
        return f"_btql{self.aliases}"

    # Conversions

    def condition(self, node: ast.Node) -> S:
        return self.cond(self.value(node))

    def cond(self, x: S) -> S:
        if x.kind == "bool":
            return x
        if x.kind == "json":
            if x.literal is not None:
                return TRUE if x.literal is True else FALSE
            return t("COALESCE({0} = 'true'::jsonb, false)", x)
        return FALSE

    def json(self, x: S) -> S:
        if x.kind == "json":
            return x
        if x.kind == "bool":
            return t("to_jsonb({0})", x, kind="json")
        if x.kind == "ts":
            return t("to_jsonb({0})", self.text(x), kind="json")
        raise Unsupported("an interval is not a JSON value")

    def text(self, x: S) -> S:
        """text_of: a string as it is, anything else as its JSON text; NULL for null."""
        if x.kind == "json":
            if isinstance(x.literal, str):
                return p(x.literal, "::text")
            return t("({0} #>> '{}')", x, kind="text")
        if x.kind == "bool":
            return t("(CASE WHEN {0} THEN 'true' ELSE 'false' END)", x, kind="text")
        if x.kind == "ts":  # datetime.isoformat() in UTC
            return t(
                "(to_char({0} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE WHEN "
                "extract(microseconds FROM {0})::int %% 1000000 <> 0 THEN to_char({0} AT TIME ZONE 'UTC', '.US') "
                "ELSE '' END || '+00:00')",
                x,
                kind="text",
            )
        return S("NULL::text", kind="text")  # an interval has no text

    def notnull(self, x: S) -> S:
        if x.kind in ("bool", "interval"):
            return TRUE
        if x.is_null:
            return FALSE
        if x.literal is not None:
            return TRUE
        return t("({0} IS NOT NULL)", x)

    def unify(self, xs: list[S]) -> list[S]:
        """Values of one kind, for CASE and COALESCE."""
        kinds = {x.kind for x in xs if not x.is_null}
        if not kinds:
            return xs
        if len(kinds) == 1:
            (kind,) = kinds
            if kind == "interval":
                raise Unsupported("interval branches")
            if kind == "bool":
                return [S("NULL::boolean", kind="bool") if x.is_null else x for x in xs]
            if kind == "ts":
                return [S("NULL::timestamptz", kind="ts") if x.is_null else x for x in xs]
            return xs
        return [self.json(x) for x in xs]  # lossy for timestamps: they become their text

    # Nodes

    def value(self, node: ast.Node) -> S:
        return getattr(self, "v_" + type(node).__name__.lower())(node)

    def v_literal(self, node: ast.Literal) -> S:
        if node.value is None:
            return S("NULL::jsonb", literal=_NULL)
        return S("%s::jsonb", [json.dumps(node.value)], literal=node.value)

    def v_array(self, node: ast.Array) -> S:
        items = [self.json(self.value(i)) for i in node.items]
        if all(i.literal is not None for i in items):
            value = [None if i.is_null else i.literal for i in items]
            return S("%s::jsonb", [json.dumps(value)], literal=value)
        return t(
            "jsonb_build_array(" + ", ".join(f"{{{i}}}" for i in range(len(items))) + ")", *items, kind="json"
        )

    def v_field(self, node: ast.Field) -> S:
        root, *rest = node.path
        if root in TEXT_COLUMNS:
            column = self.columns[TEXT_COLUMNS[root]]
            return S(f"to_jsonb({column})", text_column=column)
        if root == "is_root":
            return S(self.columns["is_root"], kind="bool")
        if root in TIMESTAMP_FIELDS:
            return S(self.columns[root], kind="ts")
        return self.path(S(self.columns[root]), rest)

    def path(self, x: S, keys) -> S:
        """x at the path, NULL when missing. An index reads arrays only: PostgreSQL would read a
        scalar as an array of one item ('3'::jsonb -> 0 is 3)."""
        for key in keys:
            if isinstance(key, int) and not _indexable(key):
                x = S("NULL::jsonb", kind="json")  # no array is that long
            elif isinstance(key, int):
                x = t(
                    "(CASE WHEN jsonb_typeof({0}) = 'array' THEN {0} -> {1}::int END)", x, p(key), kind="json"
                )
            else:
                x = t("({0} -> {1}::text)", x, p(key), kind="json")
        return t("NULLIF({0}, 'null'::jsonb)", x, kind="json")

    def v_interval(self, node: ast.Interval) -> S:
        return S("NULL", kind="interval", const=v.interval(node.amount, node.unit))

    def v_not(self, node: ast.Not) -> S:
        return t("(NOT {0})", self.condition(node.operand))

    def v_logic(self, node: ast.Logic) -> S:
        op = " AND " if node.op == "and" else " OR "
        return t("({0}" + op + "{1})", self.condition(node.left), self.condition(node.right))

    def v_ternary(self, node: ast.Ternary) -> S:
        cond = self.condition(node.cond)
        then, otherwise = self.unify([self.value(node.then), self.value(node.otherwise)])
        kind = then.kind if not then.is_null else otherwise.kind
        return t("(CASE WHEN {0} THEN {1} ELSE {2} END)", cond, then, otherwise, kind=kind)

    def v_neg(self, node: ast.Neg) -> S:
        x = self.value(node.operand)
        if x.kind != "json":
            return S("NULL::jsonb")
        if isinstance(x.literal, int | float) and not isinstance(x.literal, bool):
            return S("%s::jsonb", [json.dumps(-x.literal)], literal=-x.literal)
        return t(
            "(CASE WHEN jsonb_typeof({0}) = 'number' THEN to_jsonb(-(({0})::numeric)) END)", x, kind="json"
        )

    def v_arith(self, node: ast.Arith) -> S:
        a, b, op = self.value(node.left), self.value(node.right), node.op
        if a.kind == "ts" and b.kind == "interval" and op in "+-":
            return _in_python_years(
                t("({0} " + op + " {1}::interval)", a, p(_pg_interval(b.const)), kind="ts")
            )
        if a.kind == "interval" and b.kind == "ts" and op == "+":
            return _in_python_years(t("({0} + {1}::interval)", b, p(_pg_interval(a.const)), kind="ts"))
        if a.kind != "json" or b.kind != "json" or a.is_null or b.is_null:
            return S("NULL::jsonb")
        numbers = "jsonb_typeof({0}) = 'number' AND jsonb_typeof({1}) = 'number'"
        ints = "scale(({0})::numeric) = 0 AND scale(({1})::numeric) = 0"
        fa, fb = "({0})::float8", "({1})::float8"
        na, nb = "({0})::numeric", "({1})::numeric"
        # beyond a double the result is null (and float8 arithmetic would raise)
        if op in "+-*":
            int_result = f"to_jsonb({na} {op} {nb})"
            float_result = _float_json(f"({fa} {op} {fb})")
            body = (
                f"CASE WHEN abs({na} {op} {nb}) > {_MAX_FLOAT} THEN NULL "
                f"WHEN {ints} THEN {int_result} ELSE {float_result} END"
            )
        elif op == "/":
            body = (
                f"CASE WHEN {nb} = 0 THEN NULL WHEN abs({na} / {nb}) > {_MAX_FLOAT} THEN NULL "
                f"ELSE {_float_json(f'({fa} / {fb})')} END"
            )
        else:  # %: the sign of the dividend, an int for two ints
            body = (
                f"CASE WHEN {nb} = 0 THEN NULL WHEN {ints} THEN to_jsonb(mod({na}, {nb})) "
                f"ELSE {_float_json(f'mod({na}, {nb})::float8')} END"
            )
        return t(f"(CASE WHEN {numbers} THEN {body} END)", a, b, kind="json")

    def v_call(self, node: ast.Call) -> S:
        name = node.name
        if name in ("now", "current_timestamp"):
            return S("CURRENT_TIMESTAMP", kind="ts")
        if name in ("includes", "contains"):
            return t(
                "COALESCE({0}, false)", self.includes(self.value(node.args[0]), self.value(node.args[1]))
            )
        args = [self.value(a) for a in node.args]
        return getattr(self, "f_" + name)(node, *args)

    def f_lower(self, node, x, fn="lower"):
        if x.kind != "json":
            return S("NULL::jsonb")
        return t(
            f"(CASE WHEN jsonb_typeof({{0}}) = 'string' THEN to_jsonb({fn}({{0}} #>> '{{}}')) END)",
            x,
            kind="json",
        )

    def f_upper(self, node, x):
        return self.f_lower(node, x, "upper")

    def f_concat(self, node, *xs):
        texts = [self.text(x) for x in xs if not x.is_null]
        if not texts:
            return S("to_jsonb(''::text)")
        return t(
            "to_jsonb(concat(" + ", ".join(f"{{{i}}}" for i in range(len(texts))) + "))", *texts, kind="json"
        )

    def f_len(self, node, x):
        if x.kind != "json":
            return S("NULL::jsonb")
        return t(
            "(CASE jsonb_typeof({0}) WHEN 'string' THEN to_jsonb(char_length({0} #>> '{}')) "
            "WHEN 'array' THEN to_jsonb(jsonb_array_length({0})) "
            "WHEN 'object' THEN to_jsonb((SELECT count(*) FROM jsonb_object_keys({0}))) END)",
            x,
            kind="json",
        )

    def f_coalesce(self, node, *xs):
        xs = self.unify(list(xs))
        kind = next((x.kind for x in xs if not x.is_null), "json")
        return t("COALESCE(" + ", ".join(f"{{{i}}}" for i in range(len(xs))) + ")", *xs, kind=kind)

    def f_nullif(self, node, a, b):
        if a.kind == "interval":
            raise Unsupported("nullif of an interval")
        if a.kind == "bool":  # an SQL boolean here would never be null: carry it as jsonb
            a = t("to_jsonb({0})", a, kind="json")
        null = {"json": "NULL::jsonb", "ts": "NULL::timestamptz", "bool": "NULL::boolean"}[a.kind]
        return t(
            f"(CASE WHEN COALESCE({{0}}, false) THEN {null} ELSE {{1}} END)", self.equal(a, b), a, kind=a.kind
        )

    def f_least(self, node, *xs, descending=False):
        present = [x for x in xs if not x.is_null]
        kinds = {x.kind for x in present}
        if not present:
            return S("NULL::jsonb")
        if kinds == {"ts"}:
            fn = "GREATEST" if descending else "LEAST"
            return t(f"{fn}(" + ", ".join(f"{{{i}}}" for i in range(len(present))) + ")", *present, kind="ts")
        if kinds != {"json"}:
            if kinds == {"ts", "json"}:  # the timestamps' least, if every other value is null
                ts = [x for x in present if x.kind == "ts"]
                others = [x for x in present if x.kind == "json"]
                fn = "GREATEST" if descending else "LEAST"
                n = len(others)
                return t(
                    "(CASE WHEN "
                    + " AND ".join(f"{{{i}}} IS NULL" for i in range(n))
                    + f" THEN {fn}("
                    + ", ".join(f"{{{n + i}}}" for i in range(len(ts)))
                    + ") END)",
                    *others,
                    *ts,
                    kind="ts",
                )
            # a boolean or an interval is never null, and never of an ordered kind
            return S("NULL::jsonb")
        alias = self.alias()
        x = f"{alias}.x"
        direction = "DESC" if descending else "ASC"
        array = "ARRAY[" + ", ".join(f"{{{i}}}" for i in range(len(present))) + "]::jsonb[]"
        return t(
            f"(SELECT CASE WHEN count(*) = 0 THEN NULL "
            f"WHEN bool_and(jsonb_typeof({x}) = 'number') THEN "
            f"(array_agg({x} ORDER BY CASE WHEN jsonb_typeof({x}) = 'number' THEN ({x})::numeric END {direction}, {alias}.i))[1] "
            f"WHEN bool_and(jsonb_typeof({x}) = 'string') THEN "
            f"(array_agg({x} ORDER BY ({x} #>> '{{}}') COLLATE \"C\" {direction}, {alias}.i))[1] END "
            f"FROM unnest({array}) WITH ORDINALITY AS {alias}(x, i) WHERE {x} IS NOT NULL)",
            *present,
            kind="json",
        )

    def f_greatest(self, node, *xs):
        return self.f_least(node, *xs, descending=True)

    def f_round(self, node, x, places=None):
        if x.kind != "json" or (places is not None and places.kind != "json"):
            return S("NULL::jsonb")
        if places is None:
            places = S("'0'::jsonb")
        return t(
            "(CASE WHEN jsonb_typeof({0}) = 'number' AND jsonb_typeof({1}) = 'number' "
            "AND scale(({1})::numeric) = 0 THEN "
            f"CASE WHEN {_PLACES} <= 0 AND (scale(({{0}})::numeric) = 0 OR abs(round(({{0}})::numeric, {_PLACES})) < 2^53) "
            f"THEN to_jsonb(round(({{0}})::numeric, {_PLACES})) "
            f"ELSE {_float_json(f'round(({{0}})::numeric, {_PLACES})::float8')} END END)",
            x,
            places,
            kind="json",
        )

    def f_to_string(self, node, x):
        return t("to_jsonb({0})", self.text(x), kind="json")

    def f_to_number(self, node, x, integer=False):
        if x.kind != "json":
            return S("NULL::jsonb")
        s = "({0} #>> '{}')"
        if integer:
            number = "to_jsonb(trunc(({0})::numeric))"
            from_int = f"to_jsonb(trunc(pg_temp.btql_numeric({s})))"
            from_float = f"to_jsonb(trunc(pg_temp.btql_float8({s})::numeric))"
        else:
            number = "{0}"
            from_int = f"to_jsonb(pg_temp.btql_numeric({s}))"
            from_float = _float_json(f"pg_temp.btql_float8({s})")
        return t(
            f"(CASE jsonb_typeof({{0}}) WHEN 'number' THEN {number} WHEN 'string' THEN "
            f"CASE WHEN {s} ~ {{1}} THEN {from_int} WHEN {s} ~ {{2}} THEN {from_float} END END)",
            x,
            p(_INT_TEXT),
            p(_FLOAT_TEXT),
            kind="json",
        )

    def f_to_integer(self, node, x):
        return self.f_to_number(node, x, integer=True)

    def f_to_boolean(self, node, x):
        if x.kind == "bool":
            return x
        if x.kind != "json":
            return S("NULL::jsonb")
        return t(
            "(CASE jsonb_typeof({0}) WHEN 'boolean' THEN {0} WHEN 'number' THEN to_jsonb(({0})::numeric <> 0) "
            "WHEN 'string' THEN CASE WHEN lower({0} #>> '{}') IN ('true', 'false') "
            "THEN to_jsonb(lower({0} #>> '{}') = 'true') END END)",
            x,
            kind="json",
        )

    def f_to_datetime(self, node, x):
        return self.timestamp(x)

    def f_json_extract(self, node, document, path):
        if document.kind != "json" or not isinstance(path.literal, str):
            if document.kind != "json" or path.kind != "json" or path.literal is not None:
                return S("NULL::jsonb")
            raise Unsupported("json_extract with a computed path")
        keys = [int(part[1:-1]) if part.startswith("[") else part
                for part in re.findall(r"[^.\[\]]+|\[-?\d+\]", path.literal)]  # fmt: skip
        # pg_temp.btql_jsonb: the text as jsonb, NULL if it is not JSON (see register_pg_functions)
        extracted = self.path(t("pg_temp.btql_jsonb({0} #>> '{}')", document, kind="json"), keys)
        return t("(CASE WHEN jsonb_typeof({0}) = 'string' THEN {1} END)", document, extracted, kind="json")

    # Comparisons

    def v_compare(self, node: ast.Compare) -> S:
        a = self.value(node.left)
        if node.op == "in" and isinstance(node.right, ast.Array):
            items = [self.value(i) for i in node.right.items]
            base = self.in_list(a, items)
            b_notnull = TRUE
        else:
            b = self.value(node.right)
            base = self.base(node.op, a, b)
            b_notnull = self.notnull(b)
        if not node.negated:
            return t("COALESCE({0}, false)", base)
        return t("({0} AND {1} AND NOT COALESCE({2}, false))", self.notnull(a), b_notnull, base)

    def base(self, op: str, a: S, b: S) -> S:
        if op == "eq":
            return self.equal(a, b)
        if op == "ne":
            return t(
                "({0} AND {1} AND NOT COALESCE({2}, false))",
                self.notnull(a),
                self.notnull(b),
                self.equal(a, b),
            )
        if op in ("lt", "le", "gt", "ge"):
            return self.order(op, a, b)
        if op == "is":
            if b.is_null:
                return t("NOT {0}", self.notnull(a))
            if a.is_null:
                return t("NOT {0}", self.notnull(b))
            return t(
                "((NOT {0} AND NOT {1}) OR COALESCE({2}, false))",
                self.notnull(a),
                self.notnull(b),
                self.equal(a, b),
            )
        if op == "in":
            if b.kind != "json":
                return self.equal(a, b)
            alias = self.alias()
            element = S(f"NULLIF({alias}.v, 'null'::jsonb)")
            return t(
                f"(CASE WHEN jsonb_typeof({{0}}) = 'array' THEN EXISTS (SELECT 1 FROM jsonb_array_elements({{0}}) "
                f"AS {alias}(v) WHERE {{1}}) ELSE {{2}} END)",
                b,
                self.equal(a, element),
                self.equal(a, b),
            )
        if op == "includes":
            return self.includes(a, b)
        return self.text_op(op, a, b)

    def in_list(self, a: S, items: list[S]) -> S:
        tests = [self.equal(a, i) for i in items if not i.is_null]
        if not tests:
            return FALSE
        return t("(" + " OR ".join(f"COALESCE({{{i}}}, false)" for i in range(len(tests))) + ")", *tests)

    def timestamp(self, x: S) -> S:
        """to_timestamp: a timestamp, or a string read as one; NULL otherwise."""
        if x.kind == "ts":
            return x
        if x.kind != "json":
            return S("NULL::timestamptz", kind="ts")
        if x.literal is not None:
            parsed = v.to_timestamp(x.literal)
            return (
                S("NULL::timestamptz", kind="ts") if parsed is None else S("%s::timestamptz", [parsed], "ts")
            )
        return t(
            "(CASE WHEN jsonb_typeof({0}) = 'string' AND ({0} #>> '{}') ~ {1} "
            "THEN pg_temp.btql_timestamptz({0} #>> '{}') END)",
            x,
            p(_ISO_TS),
            kind="ts",
        )

    def equal(self, a: S, b: S) -> S:
        """equal(a, b) is True, as an SQL boolean that may be NULL (read as false)."""
        if a.is_null or b.is_null:
            return S("NULL::boolean", kind="bool")
        kinds = {a.kind, b.kind}
        if "interval" in kinds:
            if kinds == {"interval"}:
                return TRUE if a.const == b.const else FALSE
            return FALSE
        if "ts" in kinds:
            if kinds == {"ts"}:
                return t("({0} = {1})", a, b)
            ts, other = (a, b) if a.kind == "ts" else (b, a)
            if other.kind != "json":
                return FALSE
            return t(
                "(jsonb_typeof({0}) = 'string' AND COALESCE({1} = {2}, false))",
                other,
                ts,
                self.timestamp(other),
            )
        if kinds == {"bool"}:
            return t("({0} = {1})", a, b)
        a, b = self.json(a), self.json(b)
        if a.text_column and isinstance(b.literal, str):
            return t("({0} = {1})", S(a.text_column), p(b.literal))
        if b.text_column and isinstance(a.literal, str):
            return t("({0} = {1})", S(b.text_column), p(a.literal))
        if a.literal is not None and b.literal is not None:
            return TRUE if v.equal(a.literal, b.literal) is True else FALSE
        # jsonb equality is BTQL's: type-aware, 1 = 1.0, deep, and a null part equals a null part
        return t("({0} = {1})", a, b)

    def order(self, op: str, a: S, b: S) -> S:
        sym = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}[op]
        if a.is_null or b.is_null:
            return FALSE
        kinds = {a.kind, b.kind}
        if "ts" in kinds:
            if not kinds <= {"ts", "json"}:
                return FALSE
            return t(f"({{0}} {sym} {{1}})", self.timestamp(a), self.timestamp(b))
        if kinds != {"json"}:
            return FALSE
        if a.text_column and isinstance(b.literal, str):
            return t(f'({{0}} COLLATE "C" {sym} {{1}})', S(a.text_column), p(b.literal))
        if b.text_column and isinstance(a.literal, str):
            return t(f'({{0}} {sym} {{1}} COLLATE "C")', p(a.literal, "::text"), S(b.text_column))
        numbers = f"jsonb_typeof({{0}}) = 'number' AND jsonb_typeof({{1}}) = 'number' AND ({{0}})::numeric {sym} ({{1}})::numeric"
        strings = (
            f"jsonb_typeof({{0}}) = 'string' AND jsonb_typeof({{1}}) = 'string' AND "
            f"({{0}} #>> '{{}}') COLLATE \"C\" {sym} ({{1}} #>> '{{}}') COLLATE \"C\""
        )
        literal = a.literal if a.literal is not None else b.literal
        if isinstance(literal, bool) or isinstance(literal, list | dict):
            return FALSE
        if isinstance(literal, int | float):
            return t(f"({numbers})", a, b)
        if isinstance(literal, str):
            return t(f"({strings})", a, b)
        return t(f"(({numbers}) OR ({strings}))", a, b)

    def includes(self, a: S, b: S) -> S:
        if a.kind != "json" or a.is_null or b.is_null or b.kind == "interval":
            return FALSE
        if b.kind == "json" and b.literal is not None and not isinstance(b.literal, list | dict):
            array = t("(jsonb_typeof({0}) = 'array' AND {0} @> {1}::jsonb)", a, p(json.dumps([b.literal])))
            if isinstance(b.literal, str):
                return t(
                    "({0} OR (jsonb_typeof({1}) = 'string' AND strpos({1} #>> '{}', {2}) > 0))",
                    array,
                    a,
                    p(b.literal),
                )
            return array
        alias = self.alias()
        element = S(f"NULLIF({alias}.v, 'null'::jsonb)")
        substring = FALSE
        if b.kind == "json":
            substring = t(
                "(jsonb_typeof({0}) = 'string' AND jsonb_typeof({1}) = 'string' AND strpos({0} #>> '{}', {1} #>> '{}') > 0)",
                a,
                b,
            )
        return t(
            f"(CASE WHEN jsonb_typeof({{0}}) = 'array' THEN EXISTS (SELECT 1 FROM jsonb_array_elements({{0}}) "
            f"AS {alias}(v) WHERE COALESCE({{1}}, false)) ELSE {{2}} END)",
            a,
            self.equal(element, b),
            substring,
        )

    def text_op(self, op: str, a: S, b: S) -> S:
        if a.is_null or b.is_null or b.kind != "json" or a.kind == "interval":
            return FALSE
        text = self.text(a)
        if b.literal is not None and not isinstance(b.literal, str):
            return FALSE
        if op in ("like", "ilike"):
            operator = "LIKE" if op == "like" else "ILIKE"
            if isinstance(b.literal, str):
                return t(f"({{0}} {operator} {{1}})", text, p(_like_pattern(b.literal)))
            pattern = t(
                "(CASE WHEN ({0} #>> '{}') ~ '(^|[^\\\\])(\\\\\\\\)*\\\\$' THEN ({0} #>> '{}') || '\\' "
                "ELSE ({0} #>> '{}') END)",
                b,
            )
            return t(f"(jsonb_typeof({{0}}) = 'string' AND {{1}} {operator} {{2}})", b, text, pattern)
        if op == "regex":
            return t("({0} ~ {1})", text, p(b.literal))
        # match
        if isinstance(b.literal, str):
            words = sorted(set(re.findall(r"\w+", b.literal.lower())))
            if not words:
                return FALSE
            tests = [t("({0} ~* {1})", text, p(f"(^|\\W){w}(\\W|$)")) for w in words]
            return t("(" + " AND ".join(f"{{{i}}}" for i in range(len(tests))) + ")", *tests)
        alias = self.alias()
        return t(
            f"(jsonb_typeof({{0}}) = 'string' AND {{1}} IS NOT NULL AND "
            f"EXISTS (SELECT 1 FROM regexp_matches(lower({{0}} #>> '{{}}'), '\\w+', 'g') AS {alias}(w)) AND "
            f"NOT EXISTS (SELECT 1 FROM regexp_matches(lower({{0}} #>> '{{}}'), '\\w+', 'g') AS {alias}(w) "
            f"WHERE NOT lower({{1}}) ~ ('(^|\\W)' || {alias}.w[1] || '(\\W|$)')))",
            b,
            text,
        )


_MAX_FLOAT = "1.7976931348623157e308"


def _indexable(index: int) -> bool:
    """An array index both databases read as written: 32-bit (PostgreSQL's -> takes an int,
    and SQLite's JSON paths wrap larger ones)."""
    return -(2**31) <= index < 2**31


def order_expression(path: tuple, *, descending: bool = False):
    """An ORDER BY term for a field path (`sort:` of a BTQL query): the column, or the JSON value
    at the path. Nulls last either way."""
    from django.db.models.fields.json import KeyTransform

    root, *rest = path
    if root in TEXT_COLUMNS:
        expr = F(TEXT_COLUMNS[root])
    else:
        expr = F(root)
        for key in rest:
            expr = KeyTransform(str(key), expr)
    return expr.desc(nulls_last=True) if descending else expr.asc(nulls_last=True)


def _float_json(expr: str) -> str:
    """A float8 as jsonb, rendered as Python renders the float (4.0 stays 4.0)."""
    return (
        f"(CASE WHEN {expr} = trunc({expr}) AND abs({expr}) < 1e16 "
        f"THEN (trunc({expr})::numeric::text || '.0')::jsonb ELSE ({expr})::text::jsonb END)"
    )


# round()'s places, clamped as values.round_half_up clamps them.
_PLACES = "greatest(-400, least(400, ({1})::numeric))::int"


def _in_python_years(timestamp: S) -> S:
    """A timestamp outside years 1 to 9999 is null, as it is in Python."""
    return t(
        "(CASE WHEN {0} >= '0001-01-01T00:00:00+00:00'::timestamptz "
        "AND {0} < '10000-01-01T00:00:00+00:00'::timestamptz THEN {0} END)",
        timestamp,
        kind="ts",
    )


def _pg_interval(value: v.IntervalValue) -> str:
    return f"{value.months} months {value.seconds} seconds"


def _like_pattern(pattern: str) -> str:
    """The pattern for PostgreSQL's LIKE: a final lone backslash is a literal backslash."""
    trailing = len(pattern) - len(pattern.rstrip("\\"))
    return pattern + "\\" if trailing % 2 else pattern


def _has_null(value) -> bool:
    if value is None:
        return True
    if isinstance(value, list):
        return any(_has_null(x) for x in value)
    if isinstance(value, dict):
        return any(_has_null(x) for x in value.values())
    return False


# -- SQLite -------------------------------------------------------------------------------------

_EVALUATORS: dict[str, object] = {}


def _evaluator_key(node: ast.Node) -> str:
    from scoring.btql.predicate import compile_node

    key = hashlib.sha1(repr(node).encode()).hexdigest()
    if key not in _EVALUATORS:
        if len(_EVALUATORS) > 8192:
            _EVALUATORS.clear()
        _EVALUATORS[key] = (node, compile_node(node))
    return key


class _SQLite:
    """Native SQL for a field compared with a literal; registered Python functions otherwise."""

    def __init__(self, columns: dict[str, str], connection):
        self.columns = columns
        self.connection = connection

    def condition(self, node: ast.Node) -> S:
        if isinstance(node, ast.Logic):
            op = " AND " if node.op == "and" else " OR "
            return t("({0}" + op + "{1})", self.condition(node.left), self.condition(node.right))
        if isinstance(node, ast.Not):
            return t("(NOT {0})", self.condition(node.operand))
        if isinstance(node, ast.Compare):
            try:
                native = self.compare(node)
            except Unsupported:
                native = None
            if native is not None:
                return t("COALESCE({0}, false)", native)
        return self.fallback(node)

    def fallback(self, node: ast.Node) -> S:
        key = _evaluator_key(node)
        columns = ", ".join(self.columns[c] for c in EVAL_COLUMNS)
        return S(f"btql_eval(%s, {columns})", [key])

    # A field: (column, JSON path) or a scalar column.

    def field(self, node: ast.Node):
        if not isinstance(node, ast.Field):
            return None
        root, *rest = node.path
        if root in TEXT_COLUMNS:
            return ("text", self.columns[TEXT_COLUMNS[root]], None)
        if root == "is_root":
            return ("bool", self.columns["is_root"], None)
        if root in TIMESTAMP_FIELDS:
            return ("ts", self.columns["created"], None)
        path = "$"
        for key in rest:
            if isinstance(key, int) and not _indexable(key):
                raise Unsupported("an index beyond 32 bits")  # SQLite's JSON paths would wrap it
            if isinstance(key, int):
                path += f"[{key}]" if key >= 0 else f"[#{key}]"
            elif re.fullmatch(r"[A-Za-z0-9_]+", key):
                path += f'."{key}"'
            else:
                raise Unsupported("an unusual key")
        return ("json", self.columns[root], path)

    def compare(self, node: ast.Compare) -> S | None:
        field = self.field(node.left)
        if field is None:
            return None
        kind, column, path = field
        op, right = node.op, node.right
        if (
            op == "in"
            and isinstance(right, ast.Array)
            and all(isinstance(i, ast.Literal) for i in right.items)
        ):
            tests = [self.equal(field, i.value) for i in right.items if i.value is not None]
            base = (
                t("(" + " OR ".join(f"COALESCE({{{i}}}, false)" for i in range(len(tests))) + ")", *tests)
                if tests
                else FALSE
            )
            return self.negate(node, field, base, True)
        if not isinstance(right, ast.Literal):
            return None
        value = right.value
        if op == "is" and value is None:
            return t("(NOT {0})", self.notnull(field))
        if value is None:
            return FALSE
        if op in ("eq", "is", "in"):
            return self.negate(node, field, self.equal(field, value), True)
        if op == "ne":
            return t("({0} AND NOT COALESCE({1}, false))", self.notnull(field), self.equal(field, value))
        if op in ("lt", "le", "gt", "ge"):
            return self.order(field, op, value)
        if kind != "json":
            return None
        if op == "includes":
            return self.negate(node, field, self.includes(column, path, value), True)
        if op in ("like", "ilike", "match", "regex") and isinstance(value, str):
            return S(f"btql_text_op(%s, {column} -> %s, %s, %s)", [op, path, value, node.negated])
        return None

    def negate(self, node, field, base: S, right_notnull: bool) -> S:
        if not node.negated:
            return base
        return t("({0} AND NOT COALESCE({1}, false))", self.notnull(field), base)

    def notnull(self, field) -> S:
        kind, column, path = field
        if kind != "json":
            return TRUE
        return S(f"(COALESCE(json_type({column}, %s), 'null') <> 'null')", [path])

    def equal(self, field, value) -> S:
        kind, column, path = field
        if isinstance(value, list | dict):
            raise Unsupported("a literal array or object")
        if kind == "text":
            return S(f"({column} = %s)", [value]) if isinstance(value, str) else FALSE
        if kind == "bool":
            return S(f"({column} = %s)", [value]) if isinstance(value, bool) else FALSE
        if kind == "ts":
            if not isinstance(value, str):
                return FALSE
            parsed = v.to_timestamp(value)
            if parsed is None:
                return FALSE
            return S(f"({column} = %s)", [self.connection.ops.adapt_datetimefield_value(parsed)])
        if isinstance(value, bool):
            return S(f"(json_type({column}, %s) = %s)", [path, "true" if value else "false"])
        if isinstance(value, int | float):
            if isinstance(value, int) and not -(2**53) < value < 2**53:
                raise Unsupported("a large integer")
            return S(
                f"(json_type({column}, %s) IN ('integer', 'real') AND {column} ->> %s = %s)",
                [path, path, value],
            )
        return S(f"(json_type({column}, %s) = 'text' AND {column} ->> %s = %s)", [path, path, value])

    def order(self, field, op: str, value) -> S:
        kind, column, path = field
        sym = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}[op]
        if isinstance(value, bool) or isinstance(value, list | dict):
            return FALSE
        if kind == "bool":
            return FALSE
        if kind == "ts":
            parsed = v.to_timestamp(value) if isinstance(value, str) else None
            if parsed is None:
                return FALSE
            return S(f"({column} {sym} %s)", [self.connection.ops.adapt_datetimefield_value(parsed)])
        if kind == "text":
            return S(f"({column} {sym} %s)", [value]) if isinstance(value, str) else FALSE
        if isinstance(value, int | float):
            if isinstance(value, int) and not -(2**53) < value < 2**53:
                raise Unsupported("a large integer")
            return S(
                f"(json_type({column}, %s) IN ('integer', 'real') AND {column} ->> %s {sym} %s)",
                [path, path, value],
            )
        return S(f"(json_type({column}, %s) = 'text' AND {column} ->> %s {sym} %s)", [path, path, value])

    def includes(self, column, path, value) -> S:
        if isinstance(value, list | dict):
            raise Unsupported("a literal array or object")
        if isinstance(value, bool):
            test, args = "type = %s", ["true" if value else "false"]
        elif isinstance(value, int | float):
            if isinstance(value, int) and not -(2**53) < value < 2**53:
                raise Unsupported("a large integer")
            test, args = "type IN ('integer', 'real') AND value = %s", [value]
        else:
            test, args = "type = 'text' AND value = %s", [value]
        array = S(
            f"(json_type({column}, %s) = 'array' AND EXISTS (SELECT 1 FROM json_each({column}, %s) WHERE {test}))",
            [path, path, *args],
        )
        if not isinstance(value, str):
            return array
        return t(
            "({0} OR (json_type({1}, {2}) = 'text' AND instr({1} ->> {2}, {3}) > 0))",
            array,
            S(column),
            p(path),
            p(value),
        )


# -- SQLite functions ---------------------------------------------------------------------------


def _sqlite_eval(key, row_id, span_id, root_span_id, is_root, created, *documents):
    node_evaluator = _EVALUATORS.get(key)
    if node_evaluator is None:  # pragma: no cover: to_q() registers it before the query runs
        raise ValueError("Unknown BTQL expression.")
    row = {"id": row_id, "span_id": span_id, "root_span_id": root_span_id, "is_root": bool(is_root)}
    if created is not None:
        when = datetime.fromisoformat(created)
        row["created"] = (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).isoformat()
    for name, document in zip(JSON_COLUMNS, documents, strict=True):
        row[name] = None if document is None else json.loads(document)
    try:
        return node_evaluator[1](row) is True
    except PatternTooSlow as exc:
        _sqlite_failure.message = str(exc)
        raise


def _sqlite_text_op(op, document, pattern, negated):
    value = None if document is None else json.loads(document)
    text = v.text_of(value)
    if text is None:
        return False
    try:
        result = v.text_matches(op, text, pattern)
    except PatternTooSlow as exc:
        _sqlite_failure.message = str(exc)  # SQLite only says that a function raised: see `evaluated`
        raise
    return (not result) if negated else result


_sqlite_failure = threading.local()


@contextlib.contextmanager
def evaluated(text: str, *, field: str):
    """Around the compiling and running of a query filtered by BTQL `text`, which the request
    gave as `field`: its errors name that field. A regular expression that ran out of time
    inside SQLite (the one way evaluation can fail) is the BTQLError it is, not a 500."""
    _sqlite_failure.message = None
    try:
        yield
    except OperationalError:
        message = getattr(_sqlite_failure, "message", None)
        if message is None:
            raise
        raise BTQLError(f"The filter could not run: {message}.", text=text, start=0, field=field) from None
    except BTQLError as exc:
        exc.details["field"] = field
        raise
    finally:
        _sqlite_failure.message = None


# Casts that give NULL instead of an error, as the Python side does: a stored string that looks
# like a date or a number but is out of range must not fail the whole query.
_PG_FUNCTIONS = "\n".join(
    f"""
CREATE OR REPLACE FUNCTION pg_temp.btql_{name}(text) RETURNS {sql_type} LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN $1::{sql_type};
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;"""
    for name, sql_type in (
        ("jsonb", "jsonb"),
        ("timestamptz", "timestamptz"),
        ("numeric", "numeric"),
        ("float8", "float8"),
    )
)


def register_sqlite_functions(sender=None, connection=None, **kwargs):
    """`connection_created` receiver: the functions BTQL filters call. On SQLite, Python
    functions; on PostgreSQL, a session-local (pg_temp) function reading text as jsonb safely."""
    if connection is None:
        return
    if connection.vendor == "postgresql":
        with connection.connection.cursor() as cursor:
            cursor.execute(_PG_FUNCTIONS)
        return
    if connection.vendor != "sqlite":
        return
    raw = connection.connection
    raw.create_function("btql_eval", 1 + len(EVAL_COLUMNS), _sqlite_eval)  # now() is not deterministic
    raw.create_function("btql_text_op", 4, _sqlite_text_op, deterministic=True)
