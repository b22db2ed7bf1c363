"""The HTML audit printed to PDF (A4) by headless Chromium: no table row split across pages.

Every cell of every table row gets a start and an end marker; a row is split when its markers
land on two pages (``pdftotext`` per page). The same page without the print stylesheet's row rule
is printed too and must split some row, so the check is known to see splits.
Skips when ``chromium`` or ``pdftotext`` is absent (``.ci/run`` installs them).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from backflush.cli import report
from backflush.cli.main import cli
from click.testing import CliRunner

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TERMINALS = EXAMPLES / "001-terminals-and-scanner" / "events.jsonl"
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or shutil.which("pdftotext") is None or shutil.which("pdfinfo") is None,
    reason="needs chromium and poppler-utils (apt-get install chromium poppler-utils)",
)


def _audit(tmp_path: Path) -> dict:
    """A real audit, its timeline made long and its rows tall (many flushes per event)."""
    from backflush.cli.audit import compute_audit
    from backflush.ledger.store import Ledger

    db = str(tmp_path / "l.db")
    r = CliRunner().invoke(cli, ["--db", db, "import", str(TERMINALS)])
    assert r.exit_code == 0, r.output
    with Ledger(db) as ledger:
        a = compute_audit(ledger, "P001T-2")
        a = report.enrich(a, ledger)
    base = a["timeline"]
    fl = {"line": 10, "item": "T-BLANK", "qty": Decimal("2.5"), "location": "T-IN-10",
          "batch": None, "trigger": "operation", "device": "job_terminal"}
    timeline = []
    for k in range(8):
        for t in base:
            timeline.append({**t, "seq": len(timeline) + 1, "id": f"{t['id']}-{k}",
                             "flushed": [fl] * (2 + (len(timeline) * 5) % 7)})
    return {**a, "timeline": timeline}


def _mark(html: str) -> tuple[str, int]:
    """Put ``QSnQ``/``QEnQ`` markers at the start and end of every cell of row n."""
    rows = 0

    def row(m: re.Match[str]) -> str:
        nonlocal rows
        rows += 1
        n = rows
        # 1px text: pdftotext still reads it, the layout hardly changes
        body = re.sub(r"(<td[^>]*>)", rf'\1<span style="font-size:1px">QS{n}Q</span>',
                      m.group(0))
        return body.replace("</td>", f'<span style="font-size:1px">QE{n}Q</span></td>')

    return re.sub(r"<tr[^>]*>.*?</tr>", row, html, flags=re.S), rows


def _split_rows(html: str, tmp_path: Path, name: str) -> tuple[int, list[int]]:
    """(pages, rows whose markers are on more than one page) of ``html`` printed to A4."""
    src, pdf = tmp_path / f"{name}.html", tmp_path / f"{name}.pdf"
    src.write_text(html, encoding="utf-8")
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
         f"--print-to-pdf={pdf}", src.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    info = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True, text=True)
    pages = int(re.search(r"Pages:\s+(\d+)", info.stdout).group(1))
    size = re.search(r"Page size:\s+([\d.]+) x ([\d.]+)", info.stdout)
    assert abs(float(size.group(1)) - 595) < 2 and abs(float(size.group(2)) - 842) < 2  # A4
    where: dict[int, set[int]] = {}
    for p in range(1, pages + 1):
        text = subprocess.run(["pdftotext", "-f", str(p), "-l", str(p), str(pdf), "-"],
                              check=True, capture_output=True, text=True).stdout
        for n in re.findall(r"Q[SE](\d+)Q", text):
            where.setdefault(int(n), set()).add(p)
    return pages, sorted(n for n, ps in where.items() if len(ps) > 1)


def test_no_row_split_on_a4(tmp_path: Path) -> None:
    a = _audit(tmp_path)
    meta = {"backflush": "test", "generated_at": "2026-12-01T00:00:00+00:00",
            "ledger": "l.db", "policy": {"mode": "as recorded"}}
    html, rows = _mark(report.audit_html(a, meta))
    assert "@page{size:A4" in html and "break-inside:avoid" in html
    pages, split = _split_rows(html, tmp_path, "styled")
    assert pages >= 3 and rows > 60
    assert split == [], f"rows split across pages: {split}"
    # Control: without the row rule of the print stylesheet Chromium does split rows here,
    # so this check can see a split.
    assert "tr,.finding" in report.PRINT_CSS
    bare = html.replace(report.PRINT_CSS, report.PRINT_CSS.replace("tr,.finding", ".finding"))
    _, split_bare = _split_rows(bare, tmp_path, "bare")
    assert split_bare, "control page split no row: the test data is too small to tell"
