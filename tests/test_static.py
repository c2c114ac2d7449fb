"""Static checks over the whole tree (package, tests, benchmark scripts) with pyflakes.

Why here: CI runs on a CPU machine, where the GPU tests and the benchmark scripts never execute.
A name lost in a refactor there (a helper moved to ``tests/support/inputs.py`` but no longer
imported by a GPU test) passes CI and fails only on the next GPU run; pyflakes sees it without
running anything. Unused imports fail too, unless the line says ``noqa: F401`` (imports kept
for their side effects).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pyflakes_api = pytest.importorskip("pyflakes.api")
from pyflakes import messages  # noqa: E402
from pyflakes.reporter import Reporter  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TREES = ("hipbmm_inductor", "ops", "lowering", "tests", "benchmarks")
UNDEFINED = (messages.UndefinedName, messages.UndefinedLocal, messages.UndefinedExport)


class _Collect(Reporter):
    def __init__(self):
        super().__init__(None, None)
        self.found = []

    def flake(self, message):
        self.found.append(message)

    def syntaxError(self, filename, msg, lineno, offset, text):  # noqa: N802 (pyflakes' API)
        self.found.append(f"{filename}:{lineno}: syntax error: {msg}")

    def unexpectedError(self, filename, msg):  # noqa: N802
        self.found.append(f"{filename}: {msg}")


def _files():
    for tree in TREES:
        yield from sorted(p for p in (ROOT / tree).rglob("*.py") if ".ci" not in p.parts)


def test_tree_is_not_empty():
    assert len(list(_files())) > 50  # the checks below looked at the real tree


@pytest.mark.parametrize("path", list(_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_undefined_names_or_stray_imports(path):
    source = path.read_text()
    report = _Collect()
    pyflakes_api.check(source, str(path), report)
    lines = source.splitlines()
    bad = [m for m in report.found if isinstance(m, str) or isinstance(m, UNDEFINED)
           or (isinstance(m, messages.UnusedImport) and "noqa: F401" not in lines[m.lineno - 1])]
    assert not bad, "\n".join(str(m) for m in bad)
