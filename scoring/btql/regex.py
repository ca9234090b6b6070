"""The regular expressions `~` accepts: a subset that means the same in Python's `re` (the
predicate, and SQLite through a registered function) and in PostgreSQL's `~`.

Allowed: literal characters and escaped metacharacters, `.`, classes `[a-z]` `[^...]`, `\\d \\D
\\w \\W \\s \\S`, anchors `^ $`, quantifiers `* + ? {m} {m,} {m,n}` (and their lazy forms),
groups `( )` and `(?: )`, alternation `|`. Matching searches anywhere in the text, `.` matches
newlines, and `$` only matches at the very end.
"""

import functools
import re

import regex

# How long one `~` may search one text. Python's `re` backtracks, and a pattern such as
# (x+)+y can take exponential time; a rule's filter runs inside ingest, so every search is
# bounded (the `regex` module, in `re`'s own semantics, VERSION0, has the timeout).
SEARCH_SECONDS = 0.1


class PatternTooSlow(Exception):
    """A search that ran out of SEARCH_SECONDS."""


_FORBIDDEN = [
    (re.compile(r"\\[1-9]"), "back-references (\\1) are not supported"),
    (re.compile(r"\(\?(?!:)"), "(? groups other than (?: ) are not supported"),
    (re.compile(r"\\[bBAZzGpPkKQE]"), "\\b, \\A, \\Z, \\p and similar escapes are not supported"),
    (re.compile(r"\[\[?:[a-z]+:\]"), "POSIX classes such as [[:alpha:]] are not supported"),
    (
        re.compile(r"\[[^\]]*\[[.=]"),
        "collating elements [. .] and equivalence classes [= =] are not supported",
    ),
    (re.compile(r"(?<!\\)\{,"), "{,n} is not supported: write {0,n}"),
]
_REPETITION = re.compile(r"(?<!\\)\{(\d+)(?:,(\d*))?\}")
MAX_REPETITION = 255  # PostgreSQL's limit


def check_pattern(pattern: str) -> str | None:
    """Why `pattern` is outside the supported subset, or None."""
    for forbidden, why in _FORBIDDEN:
        if forbidden.search(pattern):
            return f"Unsupported regular expression: {why}."
    for bounds in _REPETITION.finditer(pattern):
        if any(b and int(b) > MAX_REPETITION for b in bounds.groups()):
            return f"Unsupported regular expression: repetition counts go up to {MAX_REPETITION}."
    try:
        re.compile(pattern)  # the error messages users know
        compile_pattern(pattern)
    except (re.error, regex.error) as exc:
        return f"Invalid regular expression: {exc}."
    return None


def search(pattern: str, text: str) -> bool:
    """Whether `pattern` is found in `text`, within SEARCH_SECONDS (else PatternTooSlow)."""
    try:
        return compile_pattern(pattern).search(text, timeout=SEARCH_SECONDS) is not None
    except TimeoutError:
        raise PatternTooSlow(
            f"the regular expression {pattern!r} took longer than {SEARCH_SECONDS:g} s on a text of "
            f"{len(text)} characters; nested repetitions such as (x+)+ are slow"
        ) from None


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> regex.Pattern:
    return regex.compile(_end_anchor(pattern), regex.DOTALL | regex.VERSION0)


def _end_anchor(pattern: str) -> str:
    """Python's `$` also matches before a final newline; PostgreSQL's only at the end."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
            # A "]" first in a class (after an optional "^") is a literal, not its end.
            start = i + 2 if pattern[i + 1 : i + 2] == "^" else i + 1
            if pattern[start : start + 1] == "]":
                out.append(pattern[i : start + 1])
                i = start + 1
                continue
        elif char == "]" and in_class:
            in_class = False
        out.append(r"\Z" if char == "$" and not in_class else char)
        i += 1
    return "".join(out)
