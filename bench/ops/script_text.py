"""Text helpers the ops use to write their reproduction-script lines (bench/report/repro drives them)."""

from __future__ import annotations

import re


class ReproUnsupported(Exception):
    """Why no script can be written for a case (the report shows the reason instead)."""


def ident(key: str) -> str:
    return re.sub(r"\W", "_", key)


def doc_line(text: str, *, opening: bool = False) -> str:
    """Text from a results file as a line of the script's docstring, escaped so that the docstring decodes
    back to the same text: backslashes, double quotes and unprintable characters (NUL, surrogates, line
    separators) become escapes, so no reason (a Windows path, three quotes, a NUL) ends the string early or
    makes the script a SyntaxError."""
    head = '"""' if opening and text.startswith('"""') else ""
    return head + "".join(_doc_char(ch) for ch in text[len(head) :])


def _doc_char(ch: str) -> str:
    if ch in '\\"':
        return "\\" + ch
    if ch.isprintable():
        return ch
    return ch.encode("unicode_escape").decode("ascii")
