"""Every ```python block of docs/*.md runs, so the documentation cannot rot.

The blocks of one page run in order in one namespace (a tutorial builds on its earlier
steps), in an empty working directory. A block right after a ``<!-- no-run -->`` line is
skipped (fixtures, files the reader has and the page does not).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
NO_RUN = "<!-- no-run -->"


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
    """(line number, code, runs) of each ```python block of a Markdown text."""
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").splitlines()
        skipped = bool(before) and before[-1].strip() == NO_RUN
        out.append((text.count("\n", 0, m.start()) + 2, m.group(1), not skipped))
    return out


PAGES = sorted(p for p in DOCS.glob("*.md") if python_blocks(p.read_text(encoding="utf-8")))


def test_the_block_finder_sees_blocks_and_markers():
    text = "a\n```python\nx = 1\n```\n<!-- no-run -->\n```python\nboom()\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n", True), (7, "boom()\n", False)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BACKFLUSH_DB", raising=False)
    namespace: dict = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    ran = 0
    for line, code, runs in python_blocks(page.read_text(encoding="utf-8")):
        if not runs:
            continue
        try:
            exec(compile(code, f"{page}:{line}", "exec"), namespace)  # noqa: S102
        except BaseException as exc:
            raise AssertionError(f"{page.name}:{line}: the block fails: {exc!r}") from exc
        ran += 1
    assert ran, f"{page.name}: every python block is marked no-run"
