"""BTQL parsing: the documented examples, the AST they give, and precise errors."""

import pytest

from scoring.btql import ast
from scoring.btql.errors import BTQLError
from scoring.btql.fields import FIELDS
from scoring.btql.parser import FUNCTIONS, MAX_DEPTH, MAX_LENGTH, UNITS, parse

# /work/shared/reference/braintrust.md §2.7 (and the other filter examples of §2.3), minus the
# ones that use syntax BTQL filters here do not support (below).
REFERENCE_EXAMPLES = [
    "scores.Factuality > 0.5",
    'tags includes "triage" and NOT tags includes "triaged"',
    "input ILIKE '%hello%'",
    "input NOT ILIKE '%hello%'",
    'metadata.model = "gpt-4-turbo"',
    'metrics.tokens > (metadata.model = "gpt-4-turbo" ? 1000 : 500)',
    "span_attributes.type = 'llm' and metrics.time_to_first_token > 0.1",
    "root_span_id = 'trace-id' and error IS NOT NULL",
    "created > now() - interval 1 day",
    'metadata.model IN ["gpt-4", "gpt-4-turbo", "claude-3-opus"] and scores.Factuality IS NOT NULL',
    'error IS NOT NULL and error.type NOT IN ["rate_limit", "timeout", "network_error"]',
    "input MATCH 'explain the concept of recursion' and scores.Factuality > 0.8",
    "metadata.turn_number is not null",
    "error IS NOT NULL AND scores.your_scorer_name IS NOT NULL",
    # §2.3
    'metadata."field name" = 1',
    'metadata."field-name" = 1',
    'metadata."field.name" = 1',
    "tags[0] = 'a'",
    "tags[-1] = 'a'",
    "metadata.models[0].name = 'a'",
    r"metadata.description LIKE '%50\% off%'",
    "input LIKE 'How%'",
    "metadata.email ILIKE '%@braintrust.com'",
    "created > '2024-01-01'",
    "created < '2024-01-15T10:30:00Z'",
    "created > now() - interval 1 hour",
    "created > now() - interval 7 day",
    "created > now() - interval 1 month",
    "json_extract(metadata.config, 'api.endpoint') = 'x'",
    "json_extract(metadata.config, 'results[0].score') > 0.5",
    "span_attributes.purpose IS NULL OR span_attributes.purpose != 'scorer'",
    "contains(tags, 'x')",
    "includes(tags, 'x')",
    "current_timestamp() > created",
    "(metadata.a ? (metadata.b ? 1 : 2) : 3) = 1",
    # docs/btql.md, top
    'metadata.model = "gpt-4" and scores.Factuality < 0.5',
    'tags includes "triage" and not tags includes "triaged"',
    "input ILIKE '%refund%' or output MATCH 'sorry apologize'",
    'metrics.tokens > (metadata.model = "gpt-4-turbo" ? 1000 : 500)',
    'error IS NOT NULL and error.type NOT IN ["rate_limit", "timeout"]',
    "metadata.env IS NOT 'prod'",
    r"output ~ '^\d{3}-\d{4}$'",
]

# Supported nowhere here: trace-level filters, SQL's WHERE, and fields that are not span fields.
UNSUPPORTED_EXAMPLES = [
    (
        'any_span(tags includes "production") and any_span(error IS NOT NULL)',
        "Unknown function 'any_span'.",
        1,
    ),
    ('WHERE tags INCLUDES "production" AND metadata.user_id = "user-123"', "Unexpected 'tags'.", 7),
    ('WHERE created >= "2024-01-01" AND duration < 2.0', "Unexpected 'created'.", 7),
    ('created >= "2024-01-01" AND duration < 2.0', "Unknown field 'duration'.", 29),
    ("responses[-1].tokens > 1", "Unknown field 'responses'.", 1),
    ("spans[0].children[-1].id = 'x'", "Unknown field 'spans'.", 1),
    ("origin.experiment_id = 'x'", "Unknown field 'origin'.", 1),
]


@pytest.mark.parametrize("text", REFERENCE_EXAMPLES)
def test_reference_examples_parse(text):
    assert isinstance(parse(text), ast.Node)


@pytest.mark.parametrize(("text", "message", "column"), UNSUPPORTED_EXAMPLES)
def test_unsupported_reference_examples_are_btql_errors(text, message, column):
    with pytest.raises(BTQLError) as info:
        parse(text)
    assert info.value.message == f"{message} (line 1, column {column})"
    assert info.value.details["column"] == column


# --- the AST ----------------------------------------------------------------------------------


def F(*path):
    return ast.Field(path)


def L(value):
    return ast.Literal(value)


AST_CASES = [
    ("metadata.model = 'x'", ast.Compare("eq", F("metadata", "model"), L("x"))),
    ("metadata.model <> 'x'", ast.Compare("ne", F("metadata", "model"), L("x"))),
    ('metadata."match"[-2].a', F("metadata", "match", -2, "a")),
    ('metadata."a b"', F("metadata", "a b")),
    ("error IS NOT NULL", ast.Not(ast.Compare("is", F("error"), L(None)))),
    ("error NOT IN (1, 2)", ast.Compare("in", F("error"), ast.Array((L(1), L(2))), negated=True)),
    ("error IN []", ast.Compare("in", F("error"), ast.Array(()))),
    ("error IN (1)", ast.Compare("in", F("error"), L(1))),  # a parenthesised value, not a list
    ("error IN (1,)", ast.Compare("in", F("error"), ast.Array((L(1),)))),
    ("tags CONTAINS 'a'", ast.Compare("includes", F("tags"), L("a"))),
    ("tags NOT INCLUDES 'a'", ast.Compare("includes", F("tags"), L("a"), negated=True)),
    ("input !~ 'a'", ast.Compare("regex", F("input"), L("a"), negated=True)),
    ("input NOT ILIKE 'a'", ast.Compare("ilike", F("input"), L("a"), negated=True)),
    ("CONTAINS(tags, 'a')", ast.Call("contains", (F("tags"), L("a")))),
    ("NOW()", ast.Call("now", ())),
    ("created + interval 2 DAYS", ast.Arith("+", F("created"), ast.Interval(2, "day"))),
    ("1.5e3", L(1500.0)),
    (".5", L(0.5)),
    ("-1", ast.Neg(L(1))),
    # precedence, loosest first: ? :, OR, AND, NOT, comparisons, + -, * / %, unary -
    (
        "true or false and null",
        ast.Logic("or", L(True), ast.Logic("and", L(False), L(None))),
    ),
    ("not 1 = 2", ast.Not(ast.Compare("eq", L(1), L(2)))),
    ("not true and false", ast.Logic("and", ast.Not(L(True)), L(False))),
    ("1 + 2 * 3", ast.Arith("+", L(1), ast.Arith("*", L(2), L(3)))),
    ("1 - 2 - 3", ast.Arith("-", ast.Arith("-", L(1), L(2)), L(3))),
    ("-1 * 2", ast.Arith("*", ast.Neg(L(1)), L(2))),
    ("1 + 2 < 4", ast.Compare("lt", ast.Arith("+", L(1), L(2)), L(4))),
    (
        "true or false ? 1 : 2",
        ast.Ternary(ast.Logic("or", L(True), L(False)), L(1), L(2)),
    ),
    (
        "true ? 1 : false ? 2 : 3",
        ast.Ternary(L(True), L(1), ast.Ternary(L(False), L(2), L(3))),
    ),
]


@pytest.mark.parametrize(("text", "expected"), AST_CASES, ids=[c[0] for c in AST_CASES])
def test_ast(text, expected):
    assert parse(text) == expected


def test_positions_are_recorded():
    node = parse("metadata.a = 1 and\n  tags includes 'x'")
    assert node.pos == ast.Pos(0, 38, 1, 1)
    assert node.right.pos == ast.Pos(21, 38, 2, 3)


# --- keywords ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("upper", "lower"),
    [
        (
            "metadata.a IS NOT NULL AND NOT tags INCLUDES 'x' OR TRUE",
            "metadata.a is not null and not tags includes 'x' or true",
        ),
        (
            "input LIKE 'a' And input ILIKE 'b' aNd input MATCH 'c'",
            "input like 'a' and input ilike 'b' and input match 'c'",
        ),
        (
            "error NOT IN [FALSE, NULL] oR tags CONTAINS 'x'",
            "error not in [false, null] or tags contains 'x'",
        ),
        ("created > NOW() - INTERVAL 1 DAY", "created > now() - interval 1 day"),
        ("metadata.a Is metadata.b", "metadata.a is metadata.b"),
    ],
)
def test_keywords_are_case_insensitive(upper, lower):
    assert parse(upper) == parse(lower)


def test_a_keyword_field_name_is_quoted():
    assert parse('metadata."match" = 1') == ast.Compare("eq", F("metadata", "match"), L(1))
    with pytest.raises(BTQLError) as info:
        parse("metadata.match = 1")
    assert info.value.message == "Unexpected 'match'. (line 1, column 10)"
    assert info.value.details["expected"] == ["a field or function name", "a string"]


def test_field_names_are_case_sensitive():
    with pytest.raises(BTQLError, match="Unknown field 'Metadata'"):
        parse("Metadata.model = 'x'")


# --- strings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "value"),
    [
        (r"'it\'s'", "it's"),
        (r'"say \"hi\""', 'say "hi"'),
        (r"'a\\b'", "a\\b"),
        (r"'a\nb'", "a\nb"),
        (r"'a\tb'", "a\tb"),
        (r"'a\rb'", "a\rb"),
        (r"'50\%'", "50\\%"),  # LIKE escapes reach LIKE
        (r"'a\_b'", "a\\_b"),
        (r"'\d+'", "\\d+"),  # regex escapes reach the regex
        (r"'\x'", "\\x"),
        (r"'a\\\\b'", "a\\\\b"),
        ("'\"'", '"'),
        ('"\'"', "'"),
        ("'multi\nline'", "multi\nline"),
        ("'café 🙂'", "café 🙂"),
        ("''", ""),
    ],
)
def test_string_escapes(source, value):
    assert parse(source) == L(value)


# --- the cache --------------------------------------------------------------------------------


def test_the_parse_cache_returns_the_same_object():
    text = "metadata.cache_test = 'the same object'"
    assert parse(text) is parse(text)
    assert parse(text) is parse("".join(list(text)))  # equal text, another str object


def test_errors_are_raised_again_from_the_cache():
    for _ in range(2):
        with pytest.raises(BTQLError, match="Unknown field 'nope'"):
            parse("nope = 1")


def test_a_non_string_is_a_btql_error():
    with pytest.raises(BTQLError, match="must be a string"):
        parse(None)


# --- errors, with where they are -------------------------------------------------------------

ALL_FIELDS = sorted(FIELDS)
VALUE_START = sorted(
    ["(", "-", "[", "a field or function name", "a number", "a string", "an integer", "contains", "false",
     "includes", "interval", "null", "true"]
)  # fmt: skip

ERRORS = [
    # (text, message without position, line, column, start, end, snippet, expected or None)
    ("metdata.model = 'x'", "Unknown field 'metdata'.", 1, 1, 0, 7, "metdata.model = 'x'\n^", ALL_FIELDS),
    (
        "span_attributes.x = 1",
        "Unknown field span_attributes.x.",
        1,
        17,
        16,
        17,
        "span_attributes.x = 1\n                ^",
        ["span_attributes.name", "span_attributes.purpose", "span_attributes.type"],
    ),
    (
        "span_attributes.name.first = 1",
        "Unknown field span_attributes.first.",
        1,
        22,
        21,
        26,
        "span_attributes.name.first = 1\n" + " " * 21 + "^",
        ["span_attributes.name", "span_attributes.purpose", "span_attributes.type"],
    ),
    (
        "span_attributes[0] = 1",
        "span_attributes has no fields or elements.",
        1,
        17,
        16,
        17,
        "span_attributes[0] = 1\n" + " " * 16 + "^",
        None,
    ),
    (
        "created.day = 1",
        "created has no fields or elements.",
        1,
        9,
        8,
        11,
        "created.day = 1\n        ^",
        None,
    ),
    ("id[0] = 'x'", "id has no fields or elements.", 1, 4, 3, 4, "id[0] = 'x'\n   ^", None),
    ("is_root.x", "is_root has no fields or elements.", 1, 9, 8, 9, "is_root.x\n        ^", None),
    (
        "lower(metadata.a).x = 1",
        "Only fields have fields and elements.",
        1,
        19,
        18,
        19,
        "lower(metadata.a).x = 1\n" + " " * 18 + "^",
        None,
    ),
    ("foo(1) = 1", "Unknown function 'foo'.", 1, 1, 0, 3, "foo(1) = 1\n^", sorted(FUNCTIONS)),
    ("lower(1, 2) = 1", "lower() takes 1 argument(s), not 2.", 1, 1, 0, 5, "lower(1, 2) = 1\n^", None),
    ("nullif(1)", "nullif() takes 2 argument(s), not 1.", 1, 1, 0, 6, "nullif(1)\n^", None),
    ("round(1, 2, 3)", "round() takes 1 to 2 argument(s), not 3.", 1, 1, 0, 5, "round(1, 2, 3)\n^", None),
    ("concat()", "concat() takes 1 or more argument(s), not 0.", 1, 1, 0, 6, "concat()\n^", None),
    ("now(1)", "now() takes 0 argument(s), not 1.", 1, 1, 0, 3, "now(1)\n^", None),
    ("includes(tags)", "includes() takes 2 argument(s), not 1.", 1, 1, 0, 8, "includes(tags)\n^", None),
    (
        "created > now() - interval 1 fortnight",
        "Unknown interval unit 'fortnight'.",
        1,
        30,
        29,
        38,
        "created > now() - interval 1 fortnight\n" + " " * 29 + "^",
        sorted(UNITS),
    ),
    (
        "metadata.a = = 'x'",
        "Unexpected '='.",
        1,
        14,
        13,
        14,
        "metadata.a = = 'x'\n             ^",
        VALUE_START,
    ),
    (
        "metadata.a and or 1",
        "Unexpected 'or'.",
        1,
        16,
        15,
        17,
        "metadata.a and or 1\n" + " " * 15 + "^",
        sorted(set(VALUE_START) | {"not"}),
    ),
    ("interval 1.5 day", "Unexpected '1.5'.", 1, 10, 9, 12, "interval 1.5 day\n         ^", ["an integer"]),
    (
        "metadata.a = 'x' @",
        "Unexpected character '@'.",
        1,
        18,
        17,
        18,
        "metadata.a = 'x' @\n" + " " * 17 + "^",
        ...,
    ),
    (
        "metadata.a = 'x",
        'Unexpected character "\'".',
        1,
        14,
        13,
        14,
        "metadata.a = 'x\n" + " " * 13 + "^",
        ...,
    ),
    (
        "metadata.a =",
        "The expression ends too early.",
        1,
        13,
        12,
        13,
        "metadata.a =\n" + " " * 12 + "^",
        VALUE_START,
    ),
    (
        "(metadata.a = 1",
        "The expression ends too early.",
        1,
        16,
        15,
        16,
        "(metadata.a = 1\n" + " " * 15 + "^",
        ...,
    ),
    (
        "metadata.a = 'x' and\n  tags includes",
        "The expression ends too early.",
        2,
        16,
        36,
        37,
        "  tags includes\n" + " " * 15 + "^",
        VALUE_START,
    ),
    (
        "scores.x > 0.5 and\nmetadata.y ==  1\nand true",
        "Unexpected '='.",
        2,
        13,
        31,
        32,
        "metadata.y ==  1\n" + " " * 12 + "^",
        VALUE_START,
    ),
    (
        "scores.x > 0.5\n  and nope.y = 1",
        "Unknown field 'nope'.",
        2,
        7,
        21,
        25,
        "  and nope.y = 1\n      ^",
        ALL_FIELDS,
    ),
    (
        "input LIKE 1",
        "LIKE needs a string on its right.",
        1,
        12,
        11,
        12,
        "input LIKE 1\n" + " " * 11 + "^",
        None,
    ),
    (
        "input MATCH null",
        "MATCH needs a string on its right.",
        1,
        13,
        12,
        16,
        "input MATCH null\n" + " " * 12 + "^",
        None,
    ),
    (
        "input ~ metadata.x",
        "A regular expression must be a string literal.",
        1,
        9,
        8,
        18,
        "input ~ metadata.x\n        ^",
        None,
    ),
    (
        "9223372036854775808 > 1",
        "Integers must fit in 64 bits.",
        1,
        1,
        0,
        19,
        "9223372036854775808 > 1\n^",
        None,
    ),
    ("1e999 > 1", "The number is too large.", 1, 1, 0, 5, "1e999 > 1\n^", None),
    ("", "The expression is empty.", 1, 1, 0, 1, "\n^", None),
    (" \n\t ", "The expression is empty.", 1, 1, 0, 1, " \n^", None),
]


def _check(text, message, line, column, start, end, snippet, expected):
    with pytest.raises(BTQLError) as info:
        parse(text)
    error = info.value
    assert error.code == "btql_error"
    assert error.message == f"{message} (line {line}, column {column})"
    details = dict(error.details)
    got_expected = details.pop("expected", None)
    assert details == {"line": line, "column": column, "start": start, "end": end, "snippet": snippet}
    if expected is not ...:
        assert got_expected == expected


@pytest.mark.parametrize(
    ("text", "message", "line", "column", "start", "end", "snippet", "expected"),
    ERRORS,
    ids=[e[0] for e in ERRORS],
)
def test_errors(text, message, line, column, start, end, snippet, expected):
    _check(text, message, line, column, start, end, snippet, expected)


REGEX_ERRORS = [
    (r"(a)\1", "back-references (\\1) are not supported"),
    ("(?=a)", "(? groups other than (?: ) are not supported"),
    ("(?!a)", "(? groups other than (?: ) are not supported"),
    ("(?<=a)b", "(? groups other than (?: ) are not supported"),
    ("(?i)a", "(? groups other than (?: ) are not supported"),
    ("(?P<n>a)", "(? groups other than (?: ) are not supported"),
    (r"\bword", "\\b, \\A, \\Z, \\p and similar escapes are not supported"),
    (r"\Aa", "\\b, \\A, \\Z, \\p and similar escapes are not supported"),
    (r"a\Z", "\\b, \\A, \\Z, \\p and similar escapes are not supported"),
    (r"\p{L}", "\\b, \\A, \\Z, \\p and similar escapes are not supported"),
    ("[[:alpha:]]", "POSIX classes such as [[:alpha:]] are not supported"),
]


@pytest.mark.parametrize(("pattern", "why"), REGEX_ERRORS)
def test_unsupported_regular_expressions(pattern, why):
    text = f"output ~ '{pattern}'"
    end = len(text)
    _check(text, f"Unsupported regular expression: {why}.", 1, 10, 9, end, text + "\n" + " " * 9 + "^", None)


def test_an_invalid_regular_expression():
    with pytest.raises(BTQLError, match=r"Invalid regular expression: .*\(line 1, column 10\)"):
        parse("output ~ '(a'")


@pytest.mark.parametrize(
    "pattern",
    [
        r"^\d{3}-\d{4}$",
        "a.b",
        "[a-z]+",
        "[^x]*?",
        r"\D\W\S\s\w",
        "(?:ab|cd){2,}",
        "a{1,3}?",
        r"\.\*\(",
        "[]$]",
        "[^]]",
    ],
)
def test_supported_regular_expressions(pattern):
    assert parse(f"output ~ '{pattern}'").op == "regex"


def test_too_long():
    text = "1" + " " * MAX_LENGTH
    with pytest.raises(BTQLError) as info:
        parse(text)
    assert (
        info.value.message
        == f"The expression is longer than {MAX_LENGTH} characters. (line 1, column {MAX_LENGTH + 1})"
    )
    assert info.value.details["start"] == MAX_LENGTH
    assert isinstance(parse("1" + " " * (MAX_LENGTH - 1)), ast.Node)  # exactly the limit is fine


def test_too_deep():
    with pytest.raises(BTQLError) as info:
        parse("not " * (MAX_DEPTH + 5) + "true")
    assert info.value.message.startswith(f"The expression is nested deeper than {MAX_DEPTH} levels.")
    assert info.value.details["line"] == 1
    parse("not " * (MAX_DEPTH - 1) + "true")
    with pytest.raises(BTQLError, match="nested deeper"):
        parse(" + ".join(["1"] * (MAX_DEPTH + 5)))
    # far deeper than Python's recursion limit: still a BTQLError
    with pytest.raises(BTQLError, match="nested"):
        parse("-" * 5000 + "1")
    with pytest.raises(BTQLError, match="nested"):
        parse("[" * 3000 + "]" * 3000)


def test_redundant_parentheses_do_not_nest():
    assert parse("(" * 500 + "1" + ")" * 500) == L(1)


@pytest.mark.parametrize(
    "text",
    [
        "1" * 5000 + " > 1",
        "interval " + "1" * 5000 + " day",
        "tags[" + "1" * 5000 + "] = 1",
        "tags[-99999999999999999999]",
    ],
)
def test_huge_integers_are_btql_errors(text):
    with pytest.raises(BTQLError, match="Integers must fit in 64 bits"):
        parse(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("interval 1 day IS NULL", "An interval can only be added to or subtracted from a timestamp."),
        (
            "coalesce(interval 1 day, 1) IS NULL",
            "An interval can only be added to or subtracted from a timestamp.",
        ),
        ("json_extract(input, metadata.path) = 1", "json_extract's path must be a string literal."),
        ("created + interval 10001 year > now()", "An interval is at most 10000 years (10,000 years)."),
        ("input ~ 'x{256}'", "Unsupported regular expression: repetition counts go up to 255."),
        ("input ~ 'a{,3}'", "Unsupported regular expression: {,n} is not supported: write {0,n}."),
        (
            "input ~ '[[.a.]]'",
            "Unsupported regular expression: collating elements [. .] and equivalence classes [= =] are not supported.",
        ),
    ],
)
def test_constructs_that_would_mean_different_things_in_python_and_postgresql_are_errors(text, message):
    with pytest.raises(BTQLError) as caught:
        parse(text)
    assert caught.value.reason == message


def test_an_array_holds_at_most_500_values():
    assert parse("metadata.x in [" + ", ".join(["1"] * 500) + "]")
    with pytest.raises(BTQLError, match="An array holds at most 500 values; this one has 501") as caught:
        parse("metadata.x not in [" + ", ".join(["1"] * 501) + "]")
    assert caught.value.details["column"] == 19
