"""The documents point at files that exist.

SECURITY.md, the README and the specification cite the tests that back each
claim; a test moved or renamed without its citation leaves a claim unbacked.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    "README.md",
    "SECURITY.md",
    "benchmarks/README.md",
    *sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("spec/*.md")),
]
CITED = re.compile(
    r"(?<![\w/.-])((?:tests|benchmarks|bundle|scripts|examples)/[\w/.-]*\.(?:py|sh|md))"
)


@pytest.mark.parametrize("doc", DOCS)
def test_every_cited_file_exists(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    cited = sorted(set(CITED.findall(text)))
    missing = [c for c in cited if not (ROOT / c).exists()]
    assert not missing, f"{doc} cites files that do not exist: {missing}"


def test_the_check_sees_citations() -> None:
    """The pattern finds what the documents cite (else the test above proves nothing)."""
    text = (ROOT / "SECURITY.md").read_text(encoding="utf-8")
    assert "tests/export/test_streaming.py" in CITED.findall(text)
