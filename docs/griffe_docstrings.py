"""A griffe extension for the API reference: our docstrings are prose with doctest examples and a few Sphinx
roles. In Markdown a ``>>>`` line is a triple blockquote, so doctest blocks are fenced as ``pycon`` code, and
``:func:`name``` becomes ```name```."""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc):`~?([^`]+)`")


def fence_doctests(text: str) -> str:
    """Wrap each run of doctest lines (``>>>``, ``...`` and the output lines after them) in a ``pycon`` fence."""
    out: list[str] = []
    in_block = False
    for line in text.splitlines():
        stripped = line.strip()
        starts = stripped.startswith(">>>")
        if starts and not in_block:
            out.append("```pycon")
            in_block = True
        elif in_block and not stripped:
            out.append("```")
            in_block = False
        out.append(line.strip() if in_block else line)
    if in_block:
        out.append("```")
    return "\n".join(out)


class DocstringsAsMarkdown(griffe.Extension):
    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(_ROLE.sub(r"`\1`", obj.docstring.value))
