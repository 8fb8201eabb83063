"""Bounded text for messages and reports: a long list or a long reason is cut, saying how much was left out.

The full text stays in results.json; what a terminal line or a report shows is bounded, so that a run of
20,000 cases or a reason of 200 MB cannot make a message or a report of that size.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

LIST_ITEMS = 10  # items a message lists before it says how many more there are
TEXT_CHARS = 500  # characters of one reason a report or message shows


def listing(items: Sequence[str], limit: int = LIST_ITEMS, *, noun: str = "") -> str:
    """'a, b, c' for a short list; '2000 cases, first 10: a, b, ...' for a long one."""
    items = list(items)
    if len(items) <= limit:
        return ", ".join(items)
    what = f"{len(items)} {noun}" if noun else f"{len(items)}"
    return f"{what}, first {limit}: " + ", ".join(items[:limit]) + ", ..."


def clipped(text: str, limit: int = TEXT_CHARS, *, where: str = "results.json") -> str:
    """`text` if it is at most `limit` characters; else its start and how much more `where` holds."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters in {where}]"


def md_text(text: str) -> str:
    """Text from a results file as Markdown prose or a table cell: on one line (a newline would end a list
    item or a table row), and a `<` that could open an HTML tag, comment or autolink (followed by a letter,
    `/`, `!` or `?`) as `&lt;`, so that a reason holding `<class 'torch.Tensor'>` or a tag shows as written
    instead of vanishing or becoming markup where the Markdown is rendered (a GitHub step summary, a README).
    A `<` before a space or a digit opens nothing, and stays as it is ("saving < 5%"). `|` is the table
    writer's to escape."""
    return _TAG_START.sub("&lt;", " ".join(text.splitlines()))


_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


def code_span(text: str) -> str:
    """`text` as one Markdown code span, shown literally whatever backticks it holds (its fence is one
    backtick longer than its longest run of them); on one line."""
    text = " ".join(text.splitlines())
    run = longest = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if longest else ""  # a span that starts or ends with a backtick needs the space
    return f"{fence}{pad}{text}{pad}{fence}"
