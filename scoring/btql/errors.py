from onlinescore.exceptions import ValidationError


class BTQLError(ValidationError):
    """Any problem with a BTQL expression: syntax, an unknown field or function, a bad argument.

    Carries where it is (`line`, `column`, `start`, `end`, 1-based line and column), a `snippet`
    of the line with a caret under the fault, and, for syntax errors, the `expected` tokens.
    """

    code = "btql_error"

    def __init__(
        self, message: str, *, text: str, start: int, end: int | None = None, expected=None, field=None
    ):
        line = text.count("\n", 0, start) + 1
        line_start = text.rfind("\n", 0, start) + 1
        line_end = text.find("\n", start)
        source_line = text[line_start : None if line_end < 0 else line_end]
        column = start - line_start + 1
        snippet = f"{source_line}\n{' ' * (column - 1)}^"
        details = {
            "line": line,
            "column": column,
            "start": start,
            "end": end if end is not None else start + 1,
        }
        if expected:
            details["expected"] = sorted(expected)
        if field:
            details["field"] = field
        super().__init__(f"{message} (line {line}, column {column})", snippet=snippet, **details)
        self.reason = message

    def shifted(self, text: str, offset: int) -> "BTQLError":
        """The same error, placed in `text` where its expression starts at `offset`."""
        start, end = self.details["start"] + offset, self.details["end"] + offset
        return BTQLError(self.reason, text=text, start=start, end=end, expected=self.details.get("expected"))
