"""Provenance on every report (issue 9 item 2): tables, JSON (--meta, audit's meta), HTML."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from backflush.cli.main import cli
from backflush.cli.provenance import redact_url
from backflush.cli.report import late_events
from backflush.ledger.anchor import GENESIS, link_of
from backflush.ledger.store import Ledger
from click.testing import CliRunner
from hypothesis import example, given, settings
from hypothesis import strategies as st

from backflush import __version__

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TERMINALS = EXAMPLES / "001-terminals-and-scanner"
STAGED = EXAMPLES / "002-staged-backflush" / "events.jsonl"
FIX = TERMINALS / "fix-policy.json"


def run(db: str, *args: str, code: int = 0) -> str:
    r = CliRunner().invoke(cli, ["--db", db, *args], env={"COLUMNS": "400"})
    assert r.exit_code == code, (r.output, r.exception)
    return r.stdout


@pytest.fixture
def db(db_url: str) -> str:
    run(db_url, "import", str(TERMINALS / "events.jsonl"))
    return db_url


def link_by_hand(db: str) -> tuple[str, int, int]:
    """(link, last seq, events): the ledger-wide chain recomputed from the event rows
    themselves, not read from bf_chain."""
    with Ledger(db) as ledger, ledger.transaction(commit=False) as cur:
        rows = cur.execute(
            "SELECT seq, stream, version, hash, rec_us FROM bf_events ORDER BY seq").fetchall()
    link = GENESIS
    for r in rows:
        link = link_of(link, r["seq"], r["stream"], r["version"], r["hash"], r["rec_us"])
    return link, rows[-1]["seq"], len(rows)


def test_table_footer(db: str) -> None:
    out = run(db, "onhand", "--at", "2026-11-03")
    link, last, n = link_by_hand(db)
    foot = out[out.rindex("\n--\n"):]
    assert f"backflush {__version__}" in foot
    assert f"ledger {redact_url(db)}" in foot
    assert "at 2026-11-03T23:59:59.999999+00:00" in foot and "known-at now" in foot
    assert "policy as recorded" in foot and "not verified" in foot
    assert f"chain link {link} at seq {last} ({n} events)" in foot
    m = re.search(r"generated (\S+)", foot)
    gen = datetime.fromisoformat(m.group(1))
    assert abs((datetime.now(UTC) - gen).total_seconds()) < 120
    assert "WHAT-IF" not in out


def test_digest_follows_the_history(db: str) -> None:
    before = json.loads(run(db, "wip", "--json", "--meta"))["meta"]["link"]
    run(db, "import", str(STAGED))
    after = json.loads(run(db, "wip", "--json", "--meta"))["meta"]
    assert after["link"] != before
    assert (after["link"], after["last_seq"], after["events"]) == link_by_hand(db)


def test_what_if_is_loud(db: str) -> None:
    sha = hashlib.sha256(FIX.read_bytes()).hexdigest()
    out = run(db, "findings", "--policy", str(FIX))
    first, last = out.splitlines()[0], out.rstrip("\n").splitlines()[-1]
    for line in (first, last):
        assert line.startswith("!!! WHAT-IF") and sha in line and str(FIX) in line
    meta = json.loads(run(db, "findings", "--policy", str(FIX), "--json", "--meta"))["meta"]
    assert meta["policy"] == {"mode": "what-if", "file": str(FIX), "sha256": sha}
    # Without --meta a list output keeps its shape (DESIGN's keys).
    plain = json.loads(run(db, "findings", "--policy", str(FIX), "--json"))
    assert isinstance(plain, list)


def test_audit_json_and_text_carry_meta(db: str) -> None:
    a = json.loads(run(db, "audit", "P001T-2", "--json", "--known-at", "2030-01-01"))
    assert a["order"] == "P001T-2"
    assert a["meta"]["known_at"] == "2030-01-01T23:59:59.999999+00:00"
    assert a["meta"]["policy"] == {"mode": "as recorded"}
    assert a["meta"]["link"] == link_by_hand(db)[0]
    w = json.loads(run(db, "audit", "P001T-2", "--json", "--policy", str(FIX)))
    assert w["meta"]["policy"]["mode"] == "what-if"
    text = run(db, "audit", "P001T-2", "--policy", str(FIX))
    assert text.startswith("!!! WHAT-IF") and "chain link" in text


def test_html_provenance_banner_recorded_and_units(db: str, tmp_path: Path) -> None:
    page = tmp_path / "a.html"
    run(db, "audit", "P001T-2", "--html", str(page))
    html = page.read_text()
    assert 'class="whatif"' not in html and "WHAT-IF" not in html
    assert f"backflush {__version__}" in html and link_by_hand(db)[0] in html
    assert "policy as recorded" in html and "not verified" in html
    assert "<th>recorded</th>" in html
    with Ledger(db) as ledger, ledger.transaction(commit=False) as cur:
        rec = cur.execute("SELECT MAX(rec_us) AS r FROM bf_events").fetchone()["r"]
    day = datetime.fromtimestamp(rec / 1e6, tz=UTC).date().isoformat()
    assert html.count(f'<span class="nw">{day}</span>') >= 8  # every event's recorded time
    # units of measure from ItemDefined: T-PAINT is in kg, T-BLANK in ea
    assert '25<span class="unit">kg</span>' in html
    assert '200<span class="unit">ea</span>' in html

    what_if = tmp_path / "w.html"
    run(db, "audit", "P001T-2", "--policy", str(FIX), "--html", str(what_if))
    html = what_if.read_text()
    sha = hashlib.sha256(FIX.read_bytes()).hexdigest()
    banner = html.index('class="whatif"')
    assert banner < html.index("<h1>") and sha in html[banner:banner + 600]
    assert "<title>WHAT-IF" in html
    assert 'class="ok"' not in html  # no reassuring green box under a what-if


def test_verify_status_is_read_from_bf_verify(db: str) -> None:
    with Ledger(db) as ledger, ledger.transaction(commit=True) as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS bf_verify (verified_at TEXT, events BIGINT,"
                    " ok INTEGER, heads TEXT)")
        cur.execute("INSERT INTO bf_verify VALUES (?, ?, ?, ?)",
                    ("2026-12-01T10:00:00+00:00", 33, 1, "x"))
        cur.execute("INSERT INTO bf_verify VALUES (?, ?, ?, ?)",
                    ("2026-12-01T09:00:00+00:00", 33, 0, "y"))
    meta = json.loads(run(db, "onhand", "--json", "--meta"))["meta"]
    assert meta["verify"]["status"] == "ok" and meta["verify"]["events"] == 33
    assert "verify ok at 2026-12-01T10:00:00+00:00 (33 events)" in run(db, "onhand")
    run(db, "import", str(STAGED))
    meta = json.loads(run(db, "onhand", "--json", "--meta"))["meta"]
    assert meta["verify"]["status"] == "ok, but the ledger changed since"


def test_a_ledger_without_bf_verify_still_names_its_history(db: str) -> None:
    # Ledgers older than `verify`'s table: the one-statement read fails, the footer is read
    # one part at a time (and the query's answer is never lost to its provenance).
    with Ledger(db) as ledger, ledger.transaction(commit=True) as cur:
        cur.execute("DROP TABLE bf_verify")
    link, last, n = link_by_hand(db)
    out = run(db, "onhand")
    foot = out[out.rindex("\n--\n"):]
    assert "not verified" in foot and f"chain link {link} at seq {last} ({n} events)" in foot
    meta = json.loads(run(db, "onhand", "--json", "--meta"))["meta"]
    assert meta["verify"] == {"status": "not verified"} and meta["link"] == link


def test_nl_meta_first(db: str) -> None:
    lines = run(db, "findings", "--nl", "--meta").splitlines()
    assert set(orjson.loads(lines[0])) == {"meta"}
    assert all("code" in orjson.loads(x) for x in lines[1:])


def test_redact_url() -> None:
    url = "postgresql://bf:s3cret@db.example:5432/ledger?sslmode=require&password=other"
    out = redact_url(url)
    assert "s3cret" not in out and "other" not in out
    assert out == "postgresql://bf@db.example:5432/ledger?sslmode=require"
    assert redact_url("./backflush.db") == "./backflush.db"
    assert redact_url("postgresql://:pw@h/db") == "postgresql://h/db"


URL_PIECE = st.sampled_from(["postgresql://", "postgres://", "POSTGRESQL://", "sqlite://", "u",
                             "bf", "@", ":", "pw", "/", "//", "h", "db.example", "5432", "?",
                             "password=x", "&", "#", "%40", "[::1]", "-", ".", "_", "~", ""])


@given(st.lists(URL_PIECE, max_size=10).map("".join))
@settings(max_examples=2000)
@example("postgresql://postgres@127.0.0.1:52191/small")
@example("postgresql://@h/db")
@example("postgresql://u@:5432/db")
@example("postgresql:///db")
@example("postgresql://h//db")
def test_a_plain_url_is_given_back_without_urllib_as_urllib_would(url: str) -> None:
    # The short path (no urllib.parse in a query process) answers only what the general
    # path would answer the same.
    from backflush.cli.provenance import _redacted

    if "://" in url:
        assert redact_url(url) == _redacted(url)


def test_late_events() -> None:
    def t(i: str, at: int, rec: int) -> dict:
        return {"id": i, "at": datetime(2026, 1, 1, at, tzinfo=UTC),
                "recorded": datetime(2026, 1, 2, rec, tzinfo=UTC)}

    # b happened at 9 but reached the ledger after c (at 10) had: a late sync
    tl = [t("a", 8, 1), t("b", 9, 5), t("c", 10, 2), t("d", 11, 6)]
    assert late_events(tl) == {"b"}
    # one batch import: nothing is late
    assert late_events([t("a", 8, 1), t("b", 9, 1), t("c", 10, 1)]) == set()
    # same instant, recorded apart: not late
    assert late_events([t("a", 8, 3), t("b", 8, 1)]) == set()


def test_policy_check_names_the_file_it_checked(db: str) -> None:
    sha = hashlib.sha256(FIX.read_bytes()).hexdigest()
    meta = json.loads(run(db, "policy", "check", str(FIX), "--json", "--meta"))["meta"]
    assert meta["policy"] == {"mode": "file checked", "file": str(FIX), "sha256": sha}
    meta = json.loads(run(db, "policy", "check", "--json", "--meta"))["meta"]
    assert meta["policy"] == {"mode": "as recorded"}


def test_html_shows_bidi_and_controls_as_escapes() -> None:
    from backflush.cli.report import audit_html

    a = {"order": "P\u202eX", "item": "I\x1b[2J", "qty": 1, "status": "ended", "bom": None,
         "route": None, "findings": [], "lines": [], "timeline": [], "units": {}}
    meta = {"backflush": "t", "generated_at": "g", "ledger": "l", "policy": {"mode": "as recorded"}}
    html = audit_html(a, meta)
    assert "\u202e" not in html and "\x1b" not in html
    assert "P\\u202eX" in html and "I\\x1b[2J" in html


def test_report_and_anchor_name_the_same_link(db: str) -> None:
    """The footer/meta link and seq are the anchor's: an auditor matches a report to an
    anchor."""
    meta = json.loads(run(db, "onhand", "--json", "--meta"))["meta"]
    anchor = json.loads(run(db, "anchor").strip().splitlines()[-1])
    assert (meta["link"], meta["last_seq"], meta["events"]) == (
        anchor["link"], anchor["last_seq"], anchor["events"])


def test_a_streamed_table_reads_the_chain_head_after_its_rows(db: str, monkeypatch) -> None:
    # A streamed table (events, findings, hours) prints its rows first and names the
    # recorded history in its footer after them.
    import sys

    from backflush.cli import provenance

    seen: list[str] = []
    real = provenance.ledger_status

    def spy(ledger):
        sys.stdout.flush()
        seen.append(sys.stdout.buffer.getvalue().decode())
        return real(ledger)

    monkeypatch.setattr(provenance, "ledger_status", spy)
    out = run(db, "events")
    assert len(seen) == 1 and seen[0].count("\n") > 3  # rows were out before the head
    assert seen[0] in out and "chain link" in out.split("\n--\n")[1]
