"""Rewrite one marked section of a results document, so benchmark scripts can refresh their own tables."""

from __future__ import annotations

import re
from pathlib import Path


def write_doc_section(doc: Path, marker: str, text: str, title: str = "# Benchmarks\n") -> None:
    """Replace the block between ``<!-- marker:begin -->`` and ``<!-- marker:end -->`` of ``doc`` (or append
    it); the rest of the document, which holds the hand-written reading of the numbers, is kept."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    current = doc.read_text() if doc.exists() else title
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    block = f"{begin}\n{text}{end}"
    if begin in current and end in current:
        current = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _m: block, current, flags=re.S)
    else:
        current = current.rstrip() + "\n\n" + block + "\n"
    doc.write_text(current)


def doc_command(script: str, argv: list[str], placeholders: dict[str, str]) -> str:
    """The command line as a document shows it: the values of path options (``--out``...) as placeholders,
    so a results page names no folder of the machine that produced it."""
    shown: list[str] = []
    for i, arg in enumerate(argv):
        option, eq, _ = arg.partition("=")
        if eq and option in placeholders:
            shown.append(f"{option}={placeholders[option]}")
        elif i > 0 and argv[i - 1] in placeholders:
            shown.append(placeholders[argv[i - 1]])
        else:
            shown.append(arg)
    return " ".join([script, *shown])
