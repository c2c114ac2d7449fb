"""Citations of a doc's section (``docs/contract.md, "Inductor"``) name a heading that exists.

Code comments and docs point at sections by name instead of repeating facts; a renamed or removed
heading would leave those pointers dangling without this check.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# `docs/contract.md, "Inductor"`, `contract.md, "aiter hipb_mm"`, `[triton.md](triton.md), "Accumulation"`.
_CITE = re.compile(r'(?:docs/)?(\w+)\.md\)?, "([^"\s][^"]*)"')


def _headings() -> dict[str, list[str]]:
    docs = {p.stem: p for p in (ROOT / "docs").glob("*.md")}
    docs["README"] = ROOT / "README.md"
    return {name: [line.lstrip("#").strip() for line in p.read_text().splitlines() if line.startswith("#")]
            for name, p in docs.items()}


def _citations(text: str) -> list[tuple[str, str]]:
    # A citation may wrap over comment lines: join them, dropping the comment markers.
    flat = re.sub(r"\s*\n\s*(?:#\s*)?", " ", text)
    return _CITE.findall(flat)


def test_every_cited_section_exists():
    headings = _headings()
    files = subprocess.run(["git", "ls-files", "*.py", "*.md", "*.sh"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    bad, seen = [], 0
    for rel in files:
        if rel == "tests/test_docs.py":
            continue  # this file's own examples
        for doc, section in _citations((ROOT / rel).read_text(errors="replace")):
            if doc not in headings:
                continue
            seen += 1
            # A citation may shorten a heading to its start ("Solution indices" for
            # "Solution indices: only what hipBLASLt listed, at this M").
            if not any(h.startswith(section) for h in headings[doc]):
                bad.append(f"{rel}: {doc}.md has no section {section!r}")
    assert seen >= 20, f"only {seen} section citations found: the pattern no longer matches how they are written"
    assert not bad, "\n".join(bad)


def test_citations_are_found_across_wrapped_comment_lines():
    text = '# the shuffle (docs/contract.md,\n    # "The weight layout") and [triton.md](triton.md), "Accumulation"'
    assert _citations(text) == [("contract", "The weight layout"), ("triton", "Accumulation")]
    # A doc named at the end of a wrapped f-string is not a citation.
    assert _citations('see docs/benchmarks.md "\n    f"(took {s} s)"') == []
