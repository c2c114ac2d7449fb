"""``benchmarks/results/``: docs/results.md names every committed file, and every cited result exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
INDEX = ROOT / "docs" / "results.md"

# A result path as docs and comments write it: a device folder, then a file name with an
# extension; `*` and `{a,b}` stand for several files, as in `h100/suite_repeat_{1,2}.json`.
_CITED = re.compile(r"\b((?:h100|h200|cpu)/[A-Za-z0-9_*{},.-]*[A-Za-z0-9_*}]\.(?:json|png|txt|csv))")


def _committed() -> set[str]:
    return {p.relative_to(RESULTS).as_posix() for p in RESULTS.rglob("*") if p.is_file()}


def _indexed() -> set[str]:
    """Files named in docs/results.md: backticked names in the table rows under each '## `dir/`'."""
    names, folder = set(), None
    for line in INDEX.read_text().splitlines():
        m = re.match(r"## `(\w+)/`", line)
        if m:
            folder = m.group(1)
        elif folder and line.startswith("| `"):
            first_cell = line.split("|")[1]
            names |= {f"{folder}/{n}" for n in re.findall(r"`([^`/ ]+\.\w+)`", first_cell)}
    return names


def _expand(pattern: str) -> list[str]:
    m = re.search(r"\{([^}]*)\}", pattern)
    if m:
        return [x for alt in m.group(1).split(",") for x in _expand(pattern[:m.start()] + alt + pattern[m.end():])]
    return [pattern]


def test_every_committed_result_is_indexed_and_every_indexed_one_exists():
    committed, indexed = _committed(), _indexed()
    assert committed, "no committed results"
    assert not committed - indexed, f"in benchmarks/results/ but not named in docs/results.md: {sorted(committed - indexed)}"
    assert not indexed - committed, f"named in docs/results.md but not committed: {sorted(indexed - committed)}"


def test_every_cited_result_path_exists():
    files = subprocess.run(["git", "ls-files", "*.md", "*.py", "*.sh"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    missing = []
    for rel in files:
        if rel.startswith("benchmarks/results/") or rel == "tests/benchmarks/test_results.py":
            continue  # the data itself, and this file's own examples
        for cited in _CITED.findall((ROOT / rel).read_text(errors="replace")):
            for one in _expand(cited):
                if not list(RESULTS.glob(one)):
                    missing.append(f"{rel}: {cited}")
    assert not missing, "cited result files that are not in benchmarks/results/:\n" + "\n".join(missing)


def test_the_checks_themselves_notice_a_gap(tmp_path):
    # The pattern and the expansion must see what docs write, or the test above passes vacuously.
    assert _CITED.findall("see `h100/suite_repeat_{1,2}.json` and results/h200/suite.png.") == [
        "h100/suite_repeat_{1,2}.json", "h200/suite.png"]
    assert _expand("h100/suite_repeat_{1,2}.json") == ["h100/suite_repeat_1.json", "h100/suite_repeat_2.json"]
    assert not list(RESULTS.glob("h100/no_such_result.json"))
