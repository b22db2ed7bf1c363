"""The auditor's commands: audit ORDER (table, --json, --html), policy check, --fail-on, demo."""

from __future__ import annotations

import time
from decimal import Decimal as D
from html.parser import HTMLParser
from pathlib import Path

import orjson
import pytest
from backflush.cli.main import cli
from click.testing import CliRunner

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
T_EX = EXAMPLES / "001-terminals-and-scanner"


def invoke(db: str, *args: str):
    return CliRunner().invoke(cli, ["--db", db, *args])


@pytest.fixture
def db(tmp_path) -> str:
    path = str(tmp_path / "ledger.db")
    files = [str(p) for p in sorted(EXAMPLES.glob("*/events.jsonl"))]
    r = invoke(path, "import", *files)
    assert r.exit_code == 0, r.output
    return path


def test_audit_table_shows_both_flushes_and_the_finding(db):
    r = invoke(db, "audit", "P001T-2")
    assert r.exit_code == 0, r.output
    out = r.output
    assert "Order P001T-2" in out and "DOUBLE_FLUSH" in out
    assert "flushed line 10 T-BLANK 200 from T-IN-10" in out  # op-10 feedback, 13:00
    assert "flushed line 10 T-BLANK 196 from T-IN-10" in out  # mobile report, 15:30


def test_audit_json_timeline(db):
    r = invoke(db, "audit", "P001T-2", "--json")
    assert r.exit_code == 0, r.output
    a = orjson.loads(r.output)
    assert (a["order"], a["item"], D(a["qty"])) == ("P001T-2", "T-FG", 100)
    assert [ln["line"] for ln in a["lines"]] == [10, 20, 30]
    types = [t["type"] for t in a["timeline"]]
    assert types[0] == "OrderCreated" and types[-1] == "OrderEnded"
    raf = next(t for t in a["timeline"] if t["type"] == "ReportedAsFinished")
    assert raf["device"] == "mobile"
    assert {(f["line"], D(f["qty"])) for f in raf["flushed"]} == {
        (10, D(196)), (20, D("24.5")), (30, D(98))}
    assert {f["code"] for f in raf["findings"]} == {"DOUBLE_FLUSH"}
    run10 = next(x for x in raf["running"] if x["line"] == 10)
    assert (D(run10["expected"]), D(run10["posted"])) == (200, 396)
    # findings arise exactly once, at the mobile report
    arising = [f for t in a["timeline"] for f in t["findings"]]
    assert len(arising) == len(a["findings"]) == 3
    assert all(f["arises_at"] == raf["id"] for f in a["findings"])
    op10 = next(t for t in a["timeline"] if t.get("op") == 10)
    assert op10["findings"] == []


def test_audit_batches_from_the_materialised_postings(db):
    a = orjson.loads(invoke(db, "audit", "P002-2", "--json").output)
    flushed = [f for t in a["timeline"] for f in t["flushed"]]
    assert [(f["batch"], D(f["qty"])) for f in flushed] == [("B2", 4), ("B1", 4)]
    assert a["findings"] == []


def test_audit_under_policy_and_known_at_agree_with_findings(db):
    fix = str(T_EX / "fix-policy.json")
    a = orjson.loads(invoke(db, "audit", "P001T-2", "--policy", fix, "--json").output)
    assert a["findings"] == []
    assert all(D(ln["posted"]) == D(ln["expected"]) for ln in a["lines"])
    a = orjson.loads(invoke(db, "audit", "P001T-1", "--known-at", "2100-01-01",
                            "--json").output)
    assert {f["code"] for f in a["findings"]} == {"SCRAP_SHORTFALL"}


def test_audit_at_a_point_in_time(db):
    a = orjson.loads(invoke(db, "audit", "P001T-2", "--at", "2026-11-03T15:00:00Z",
                            "--json").output)
    assert a["findings"] == [] and a["status"] == "started"
    assert a["timeline"][-1]["type"] == "OperationReported"


def test_audit_unknown_order(db):
    r = invoke(db, "audit", "NOPE")
    assert r.exit_code == 2 and "unknown order" in r.output


def test_audit_of_an_order_not_yet_created_says_so(db, tmp_path):
    """The ledger knows the order, only not by --at (or as recorded by --known-at): that
    is what the error says, not that the ledger never saw it; no page is written."""
    page = tmp_path / "a.html"
    r = invoke(db, "audit", "P001T-2", "--at", "2026-11-03T11:00:00Z", "--html", str(page))
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1] == (
        "Error: order 'P001T-2' had not been created by 2026-11-03T11:00:00+00:00")
    assert not page.exists()
    r = invoke(db, "audit", "P001T-2", "--known-at", "2020-01-01", "--json")
    assert r.exit_code == 2
    assert "had not been created by " in r.output
    assert r.output.rstrip().endswith(", as recorded by 2020-01-01T23:59:59.999999+00:00")


class _Strict(HTMLParser):
    VOID = {"br", "meta", "img", "hr", "input", "link"}

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href", "xlink:href", "action") and v:
                self.urls.append(v)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def test_audit_html_is_self_contained_and_lists_every_finding(db, tmp_path):
    out = tmp_path / "audit.html"
    r = invoke(db, "audit", "P001T-2", "--html", str(out))
    assert r.exit_code == 0, r.output
    html = out.read_text(encoding="utf-8")
    p = _Strict()
    p.feed(html)
    p.close()
    assert p.errors == [] and p.stack == [], p.errors
    assert "http://" not in html and "https://" not in html
    assert all(not u.startswith("//") for u in p.urls) and p.urls == []
    assert "<script" not in html.lower()
    assert "<svg" in html and "<style>" in html
    a = orjson.loads(invoke(db, "audit", "P001T-2", "--json").output)
    text = "".join(p.text)
    for f in a["findings"]:
        assert f["message"] in text


def test_audit_html_escapes_text(tmp_path):
    from backflush.cli.report import audit_html

    a = {"order": "<b>O&1</b>", "item": "<i>", "qty": D(1), "status": "created", "bom": None,
         "route": None, "lines": [], "timeline": [],
         "findings": [{"code": "X", "severity": "error", "order": "<b>", "line": None,
                       "item": None, "qty": D(1), "events": ["<e>"], "message": "<script>",
                       "arises_at": None}]}
    html = audit_html(a)
    assert "<script>" not in html and "&lt;script&gt;" in html and "<b>O&amp;1" not in html


def test_audit_is_fast(db):
    from backflush.ledger.store import Ledger

    from backflush.api import audit_of as compute_audit

    with Ledger(db) as ledger:
        compute_audit(ledger, "P001T-2")  # catch-up
        t = time.perf_counter()
        compute_audit(ledger, "P001T-2")
        assert time.perf_counter() - t < 0.5


# --- policy check --------------------------------------------------------------------------


def test_policy_check_flags_seed_001_setup(db, tmp_path):
    seed = tmp_path / "seed001.json"
    rules_at_1130 = next(
        orjson.loads(raw) for raw in (T_EX / "events.jsonl").read_bytes().splitlines()
        if b'"s001t-0025"' in raw)
    seed.write_bytes(orjson.dumps({k: v for k, v in rules_at_1130.items()
                                   if k not in ("type", "at", "id")}))
    r = invoke(db, "policy", "check", str(seed), "--json")
    assert r.exit_code == 0, r.output
    rows = orjson.loads(r.output)
    assert all(x["code"] == "POLICY_OVERLAP" for x in rows)
    msg = next(x["message"] for x in rows if "finish/mobile" in x["message"])
    assert "operation/job_terminal" in msg and "finish" in msg
    assert invoke(db, "policy", "check", str(seed), "--fail-on", "warning").exit_code == 1


def test_policy_check_recorded_parameters_at_a_time(db):
    r = invoke(db, "policy", "check", "--at", "2026-11-03T12:00:00Z", "--json")
    assert r.exit_code == 0 and any("finish/mobile" in x["message"]
                                    for x in orjson.loads(r.output))
    r = invoke(db, "policy", "check", "--at", "2026-11-03T11:00:00Z", "--json")
    assert orjson.loads(r.output) == []


def test_policy_check_defaults_are_clean(db, tmp_path):
    d = tmp_path / "defaults.json"
    d.write_text('{"default_input_location": "BACKFLUSH"}')
    r = invoke(db, "policy", "check", str(d))
    assert r.exit_code == 0 and "no overlapping rules" in r.output
    assert invoke(db, "policy", "check", str(d), "--fail-on", "info").exit_code == 0


def test_policy_check_robot_fix_is_clean(db):
    r = invoke(db, "policy", "check", str(EXAMPLES / "001-robot-packing" / "fix-policy.json"),
               "--json")
    assert orjson.loads(r.output) == []


def test_policy_check_bad_file(db, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"rules": [{"trigger": "sometimes"}]}')
    assert invoke(db, "policy", "check", str(bad)).exit_code == 2


# --- --fail-on -----------------------------------------------------------------------------


def test_fail_on_error_exits_1_when_an_error_finding_exists(db):
    assert invoke(db, "findings", "--fail-on", "error").exit_code == 1
    assert invoke(db, "findings", "--order", "P002-1", "--fail-on", "error").exit_code == 0
    fix = str(T_EX / "fix-policy.json")
    r = invoke(db, "findings", "--order", "P001T-2", "--policy", fix, "--fail-on", "info")
    assert r.exit_code == 0


def test_fail_on_bad_severity_is_usage_error(db):
    assert invoke(db, "findings", "--fail-on", "fatal").exit_code == 2


# --- demo ----------------------------------------------------------------------------------


def test_demo_runs_from_a_fresh_ledger(tmp_path):
    path = tmp_path / "demo.db"
    r = invoke(str(path), "demo")
    assert r.exit_code == 0, r.output
    assert "DOUBLE_FLUSH" in r.output and "SCRAP_SHORTFALL" in r.output
    assert "audit P001T-2" in r.output and "what if" in r.output
    r = invoke(str(path), "demo")  # again: the old ledger is replaced, not appended to
    assert r.exit_code == 0 and "replaced the previous demo ledger" in r.output
    assert "0 findings as recorded" not in r.output


def test_demo_never_deletes_a_ledger_it_did_not_create(tmp_path, monkeypatch):
    """Issue 9: `BACKFLUSH_DB=prod.db backflush demo` used to wipe prod.db."""
    prod = tmp_path / "prod.db"
    staged = Path(__file__).resolve().parents[1] / "examples/002-staged-backflush/events.jsonl"
    assert invoke(str(prod), "import", str(staged)).exit_code == 0
    before = invoke(str(prod), "export").output
    r = invoke(str(prod), "demo")  # --db given explicitly: refused without --force
    assert r.exit_code == 2 and "--force" in r.output
    assert invoke(str(prod), "export").output == before
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BACKFLUSH_DB", str(prod))
    r = CliRunner().invoke(cli, ["demo"])  # the env var is ignored: the demo's own file
    assert r.exit_code == 0, r.output
    assert (tmp_path / "backflush-demo.db").exists() and "backflush-demo.db" in r.output
    assert invoke(str(prod), "export").output == before
    r = invoke(str(prod), "demo", "--force")
    assert r.exit_code == 0 and "DOUBLE_FLUSH" in r.output


def test_demo_refuses_to_delete_a_non_ledger(tmp_path):
    other = tmp_path / "notes.db"
    other.write_text("my notes")
    r = invoke(str(other), "demo")
    assert r.exit_code == 2 and other.read_text() == "my notes"


def test_audit_findings_equal_findings_command_for_every_order(db):
    everything = orjson.loads(invoke(db, "findings", "--json").output)
    orders = {r["order"] for r in orjson.loads(invoke(db, "events", "--type", "OrderCreated",
                                                      "--json").output)}
    assert len(orders) == 8
    for order in sorted(orders):
        a = orjson.loads(invoke(db, "audit", order, "--json").output)
        got = [{k: f[k] for k in f if k != "arises_at"} for f in a["findings"]]
        assert got == [r for r in everything if r["order"] == order]


def test_audits_of_reversed_reports_equal_a_replay_that_keeps_every_undo(tmp_path):
    """The audit's replay keeps the undo of the events a Reversal names only (one order of
    300 BOM lines and 2,200 reports otherwise held ~400 bytes per line flushed); the orders
    whose reports were reversed audit as a replay that keeps every event's undo does."""
    from backflush.ledger.simulate import simulate
    from backflush.projections import audit as A
    from backflush.projections import materialise as mat

    from backflush.api import Ledger

    events = list(simulate(40, 3, ("reversal:0.6", "scrap")))
    path = tmp_path / "plant.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    by_id = {e["id"]: e for e in events}
    reversed_orders = sorted({by_id[e["reverses"]]["order"] for e in events
                              if e["type"] == "Reversal"})
    assert len(reversed_orders) >= 5
    with Ledger(str(tmp_path / "ledger.db")) as ledger:
        ledger.import_files([str(path)])
        for order in reversed_orders:
            fast = ledger.audit(order)
            full = A.audit_order(mat.events_for_replay(ledger.store()), order, None)
            assert any(t["type"] == "Reversal" for t in fast["timeline"])
            for k in ("timeline", "lines", "findings", "status"):
                assert orjson.dumps(fast[k], default=str) == orjson.dumps(full[k], default=str), k


def test_audit_streams_its_timeline_as_the_replay_makes_it(db):
    """``timeline=`` hands each entry over as it is made (the CLI writes them to disk):
    the same entries, in order, and no list in the result."""
    from backflush.api import Ledger

    with Ledger(db) as ledger:
        whole = ledger.audit("P001T-2")
        got: list = []
        streamed = ledger.audit("P001T-2", timeline=got.append)
    assert streamed["timeline"] is None and got == whole["timeline"]
    assert {k: v for k, v in streamed.items() if k != "timeline"} == {
        k: v for k, v in whole.items() if k != "timeline"}


def test_audit_reads_the_postings_alongside_the_replay(tmp_path, monkeypatch):
    """The fast audit reads the order's materialised postings page by page as the replay
    goes (an order of 300 BOM lines and 2,200 reports has 110,000): every timeline entry
    shows exactly the postings stored under its event, whatever the page size, also as of
    a time in the middle; the findings are those of the whole read."""
    from datetime import datetime

    from backflush.ledger.simulate import simulate
    from backflush.projections import audit as A
    from backflush.projections import materialise as mat

    from backflush.api import Ledger

    events = list(simulate(30, 5, ("reversal:0.3", "split:0.3", "unresolved-batch:0.3",
                                   "late:0.3", "duplicate:0.2", "scrap", "no-stock")))
    path = tmp_path / "plant.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    created = {e["order"]: datetime.fromisoformat(e["at"]) for e in events
               if e["type"] == "OrderCreated"}
    ats = sorted(datetime.fromisoformat(e["at"]) for e in events)
    real = mat.iter_flushes_of
    with Ledger(str(tmp_path / "ledger.db")) as ledger:
        ledger.import_files([str(path)])
        store = ledger.store()
        seen_rows = 0
        for at in (None, ats[len(ats) // 2]):
            for order in sorted(o for o, c in created.items() if at is None or c <= at):
                monkeypatch.setattr(mat, "iter_flushes_of", real)
                whole = ledger.audit(order, at=at)
                monkeypatch.setattr(mat, "iter_flushes_of",
                                    lambda *a, **k: real(*a, **k, page=2))
                paged = ledger.audit(order, at=at)
                assert orjson.dumps(paged, default=str) == orjson.dumps(whole, default=str)
                rows = mat.flushes_of(store, order, None if at is None else
                                      int(at.timestamp() * 1_000_000))
                by_event: dict = {}
                for r in rows:
                    by_event.setdefault(r["event_id"], []).append(A._flush_dict(r))
                got = {t["id"]: t["flushed"] for t in whole["timeline"] if t["flushed"]}
                assert got == by_event
                seen_rows += len(rows)
    assert seen_rows > 100


def test_audit_html_streamed_is_the_page_of_the_whole_audit(tmp_path):
    """``audit --html`` writes the page from the timeline kept on disk: the same page as
    ``audit_html`` of the whole audit, a late-synced report marked "(late)" included, and
    ``--json`` beside it prints the same document as alone."""
    from backflush.cli.report import audit_html, enrich

    from backflush.api import Ledger

    lines = T_EX.joinpath("events.jsonl").read_bytes().splitlines()
    late = next(i for i, x in enumerate(lines)
                if b'"OperationReported"' in x and b'"P001T-2"' in x)
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(b"\n".join(x for i, x in enumerate(lines) if i != late) + b"\n")
    second.write_bytes(lines[late] + b"\n")
    db = str(tmp_path / "ledger.db")
    assert invoke(db, "import", str(first)).exit_code == 0
    time.sleep(0.01)  # recorded strictly later than everything else
    assert invoke(db, "import", str(second)).exit_code == 0
    out = tmp_path / "audit.html"
    r = invoke(db, "audit", "P001T-2", "--html", str(out), "--json")
    assert r.exit_code == 0, r.output
    alone = invoke(db, "audit", "P001T-2", "--json").output

    doc = orjson.loads(r.output)
    assert {**doc, "meta": None} == {**orjson.loads(alone), "meta": None}
    page = out.read_text(encoding="utf-8")
    assert "(late)" in page
    with Ledger(db) as ledger:
        whole = audit_html(enrich(ledger.audit("P001T-2"), ledger.store()), doc["meta"])
    assert page == whole
