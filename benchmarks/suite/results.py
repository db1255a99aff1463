"""Write one section of ``benchmarks/RESULTS.md``, leaving the others as they are.

Each script owns one ``## heading``; re-running it replaces that section only,
so the compression table and the suite's tables can be refreshed separately.
"""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "RESULTS.md"
TITLE = "# Benchmark results\n"


def write_section(heading: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or append) the section ``## heading`` of ``path`` with ``body``."""
    text = path.read_text(encoding="utf-8") if path.exists() else TITLE
    marker = f"## {heading}\n"
    section = f"{marker}\n{body.strip()}\n"
    start = text.find(marker)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(marker))
        rest = "" if end < 0 else text[end:]
        text = text[:start] + section + rest
    path.write_text(text, encoding="utf-8")
