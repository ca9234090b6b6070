"""Jobs for tests that run a real worker process."""

from pathlib import Path


def write_file(path: str, text: str) -> str:
    Path(path).write_text(text)
    return text
