"""Import -> export -> import: the interchange format survives the ledger unchanged.

DESIGN §2: ``export`` of an imported file gives the same events back (same ids, same
values), quantities are exact decimals (``0.1`` is exactly 0.1) and the ``events`` command
is the auditor's raw view (when it happened, when it was recorded, where in its stream).
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest
from backflush.ledger.store import Ledger
from ledger_cli import run

# A small plant history touching every event type, with the value shapes a plant sends:
# JSON numbers and decimal strings, integers, 0.1-style fractions, several UTC offsets,
# optional fields present and absent, nested BOM lines / route operations / rules.
SAMPLE = [
    {"type": "ProductionParametersSet", "at": "2026-03-01T06:00:00Z", "id": "rt-01",
     "default_input_location": "BACKFLUSH", "tolerance_pct": "2.5",
     "rules": [{"trigger": "finish", "device": "*", "flush": ["finish"], "basis": "good"}]},
    {"type": "ItemDefined", "at": "2026-03-01T06:01:00Z", "id": "rt-02", "item": "FG",
     "decimals": 0},
    {"type": "ItemDefined", "at": "2026-03-01T06:01:00+01:00", "id": "rt-03", "item": "RAW",
     "unit": "kg", "decimals": 3, "tracking": "batch", "flushing": "operation_finish"},
    {"type": "ResourceDefined", "at": "2026-03-01T06:02:00Z", "id": "rt-04", "resource": "M1",
     "input_location": "M1-IN", "output_location": "M1-OUT"},
    {"type": "BomDefined", "at": "2026-03-01T06:03:00Z", "id": "rt-05", "bom": "B-FG",
     "item": "FG", "lines": [{"line": 10, "item": "RAW", "qty": 0.1, "per": "1",
                              "scrap_pct": "1.5", "operation": 10}]},
    {"type": "RouteDefined", "at": "2026-03-01T06:03:00Z", "id": "rt-06", "route": "R-FG",
     "operations": [{"op": 10, "resource": "M1", "setup_hours": "0.25", "run_hours": 0.1},
                    {"op": 20, "resource": "M1"}]},
    {"type": "InventoryReceived", "at": "2026-03-01T07:00:00-05:00", "id": "rt-07",
     "item": "RAW", "qty": 12.345, "location": "BULK", "batch": "B1"},
    {"type": "InventoryTransferred", "at": "2026-03-01T12:10:00Z", "id": "rt-08",
     "item": "RAW", "qty": "0.1", "from_location": "BULK", "to_location": "M1-IN",
     "batch": "B1"},
    {"type": "OrderCreated", "at": "2026-03-01T13:00:00Z", "id": "rt-09", "order": "P1",
     "item": "FG", "qty": 10, "bom": "B-FG", "route": "R-FG"},
    {"type": "OrderReleased", "at": "2026-03-01T13:01:00Z", "id": "rt-10", "order": "P1"},
    {"type": "Picked", "at": "2026-03-01T13:02:00Z", "id": "rt-11", "item": "RAW",
     "qty": 0.7, "location": "BULK", "order": "P1", "line": 10, "work": "W1", "batch": "B1"},
    {"type": "Put", "at": "2026-03-01T13:03:00Z", "id": "rt-12", "item": "RAW", "qty": 0.7,
     "location": "M1-IN", "order": "P1", "line": 10, "work": "W1", "batch": "B1"},
    {"type": "OrderStarted", "at": "2026-03-01T13:04:00.250000Z", "id": "rt-13",
     "order": "P1", "device": "client"},
    {"type": "OperationReported", "at": "2026-03-01T14:00:00Z", "id": "rt-14", "order": "P1",
     "op": 10, "good": 3, "error": 0.1, "hours": "123456789.123456789012"},
    {"type": "MaterialConsumed", "at": "2026-03-01T14:30:00Z", "id": "rt-15", "order": "P1",
     "item": "RAW", "qty": -0.1, "location": "M1-IN", "batch": "B1", "line": 10},
    {"type": "ReportedAsFinished", "at": "2026-03-01T15:00:00Z", "id": "rt-16",
     "order": "P1", "good": "9.9", "error": "0.1", "device": "mobile", "location": "M1-OUT"},
    {"type": "Reversal", "at": "2026-03-01T15:05:00Z", "id": "rt-17", "reverses": "rt-16",
     "reason": "wrong qty"},
    {"type": "OrderEnded", "at": "2026-03-01T16:00:00Z", "id": "rt-18", "order": "P1"},
    {"type": "InventoryCounted", "at": "2026-03-01T17:00:00Z", "id": "rt-19", "item": "RAW",
     "location": "BULK", "qty": 0, "batch": "B1"},
]

NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")


def write_lines(path: Path, lines: list[dict]) -> str:
    # Written with the stdlib so JSON numbers stay as the sender typed them (0.1, not a
    # float's shortest repr of something else).
    path.write_text("".join(json.dumps(e) + "\n" for e in lines), encoding="utf-8")
    return str(path)


def export_bytes(db: str, tmp_path: Path) -> bytes:
    out = tmp_path / f"export-{uuid.uuid4().hex[:8]}.jsonl"
    r = run(db, "export", "-o", str(out))
    assert r.exit_code == 0, r.output
    return out.read_bytes()


def exact(raw: bytes | str) -> list[dict]:
    """Parse JSONL keeping every number exact (Decimal), never a float."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    return [json.loads(line, parse_float=Decimal) for line in text.splitlines() if line]


def same_value(key: str, sent, got) -> bool:
    """Equal as the ledger means it: decimals by value, timestamps by instant."""
    if key == "at":
        return datetime.fromisoformat(sent) == datetime.fromisoformat(got)
    if isinstance(sent, dict):
        return isinstance(got, dict) and all(
            k in got and same_value(k, v, got[k]) for k, v in sent.items()
        )
    if isinstance(sent, list):
        return isinstance(got, list) and len(sent) == len(got) and all(
            same_value(key, a, b) for a, b in zip(sent, got, strict=True)
        )
    if isinstance(sent, bool) or sent is None:
        return sent == got
    if isinstance(sent, int | Decimal) or (isinstance(sent, str) and NUMBER.fullmatch(sent)):
        return isinstance(got, int | Decimal | str) and Decimal(str(got)) == Decimal(str(sent))
    return sent == got


@pytest.fixture
def fresh_db_url(request: pytest.FixtureRequest, tmp_path: Path):
    """A second empty ledger on the same backend as ``db_url``."""
    if request.node.callspec.params["db_url"] == "sqlite":
        yield str(tmp_path / "second.db")
        return
    import psycopg

    base = request.getfixturevalue("pg_url")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(base)._replace(path="/" + name))
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_import_export_import_gives_identical_export(db_url, fresh_db_url, tmp_path):
    src = write_lines(tmp_path / "plant.jsonl", SAMPLE)
    r = run(db_url, "import", src)
    assert r.exit_code == 0, r.output
    assert f"{len(SAMPLE)} appended" in r.output
    first = export_bytes(db_url, tmp_path)

    exported = tmp_path / "exported.jsonl"
    exported.write_bytes(first)
    r = run(fresh_db_url, "import", str(exported))
    assert r.exit_code == 0, r.output
    assert f"{len(SAMPLE)} appended, 0 duplicates" in r.output
    second = export_bytes(fresh_db_url, tmp_path)

    assert second == first
    assert len(first.splitlines()) == len(SAMPLE)
    # ... and the second ledger is a sound ledger of its own.
    assert run(fresh_db_url, "verify").exit_code == 0


def test_export_gives_back_the_same_ids_and_values(db_url, tmp_path):
    src = write_lines(tmp_path / "plant.jsonl", SAMPLE)
    assert run(db_url, "import", src).exit_code == 0
    got = exact(export_bytes(db_url, tmp_path))
    sent = exact(Path(src).read_text())

    assert [e["id"] for e in got] == [e["id"] for e in sent]
    for s, g in zip(sent, got, strict=True):
        for key, value in s.items():
            assert key in g, (s["id"], key)
            assert same_value(key, value, g[key]), (s["id"], key, value, g[key])
    # Spot checks of the comparison itself, so a lenient same_value cannot hide a loss.
    by_id = {e["id"]: e for e in got}
    assert Decimal(by_id["rt-07"]["qty"]) == Decimal("12.345")
    assert datetime.fromisoformat(by_id["rt-07"]["at"]) == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert Decimal(by_id["rt-15"]["qty"]) == Decimal("-0.1")
    assert Decimal(by_id["rt-14"]["hours"]) == Decimal("123456789.123456789012")
    assert by_id["rt-17"]["reverses"] == "rt-16"


def test_point_one_stays_exactly_point_one(db_url, tmp_path):
    lines = [
        {"type": "ItemDefined", "at": "2026-03-01T06:00:00Z", "id": "d-1", "item": "X"},
        {"type": "InventoryReceived", "at": "2026-03-01T06:01:00Z", "id": "d-2", "item": "X",
         "qty": 0.1, "location": "L"},
        {"type": "InventoryReceived", "at": "2026-03-01T06:02:00Z", "id": "d-3", "item": "X",
         "qty": 0.2, "location": "L"},
    ]
    path = tmp_path / "tenths.jsonl"
    write_lines(path, lines)
    # Beyond a double's precision too (16 digits): a float would not keep this exactly.
    with path.open("a") as fh:
        fh.write('{"type": "InventoryReceived", "at": "2026-03-01T06:03:00Z", "id": "d-4",'
                 ' "item": "X", "qty": 1000.100000000001, "location": "L"}\n')
    assert run(db_url, "import", str(path)).exit_code == 0

    raw = export_bytes(db_url, tmp_path)
    qty = {e["id"]: e.get("qty") for e in map(orjson.loads, raw.splitlines())}
    # Decimal strings in the export, exactly what was sent.
    assert qty["d-2"] == "0.1"
    assert qty["d-3"] == "0.2"
    assert qty["d-4"] == "1000.100000000001"
    assert Decimal(qty["d-2"]) + Decimal(qty["d-3"]) == Decimal("0.3")
    assert b"0.1000000000000000055" not in raw and b"0.30000000000000004" not in raw
    # The stored state carries the same exact text (no float anywhere in the ledger).
    with Ledger(db_url) as ledger:
        states = [bytes(r["state"]) for r in ledger.iter_rows(by="seq")]
    assert any(b'"qty":"0.1"' in s for s in states)
    assert not any(b"0.1000000000000000055" in s for s in states)


def test_events_lists_at_recorded_and_stream_position(db_url, tmp_path):
    src = write_lines(tmp_path / "plant.jsonl", SAMPLE)
    before = datetime.now(UTC)
    assert run(db_url, "import", src).exit_code == 0
    after = datetime.now(UTC)

    r = run(db_url, "events", "--json")
    assert r.exit_code == 0, r.output
    rows = orjson.loads(r.stdout)
    assert {row["id"] for row in rows} == {e["id"] for e in SAMPLE}
    sent = {e["id"]: e for e in SAMPLE}
    for row in rows:
        assert datetime.fromisoformat(row["at"]) == datetime.fromisoformat(sent[row["id"]]["at"])
        assert before <= datetime.fromisoformat(row["recorded"]) <= after
        assert row["type"] == sent[row["id"]]["type"]
    # In `at` order (the auditor's timeline), not file order: rt-07 happened at 12:00Z.
    ats = [datetime.fromisoformat(row["at"]) for row in rows]
    assert ats == sorted(ats)
    # Stream positions: one stream per order, master data and inventory apart, 1..n each.
    streams: dict[str, list[int]] = {}
    for row in sorted(rows, key=lambda x: x["seq"]):
        streams.setdefault(row["stream"], []).append(row["version"])
    assert set(streams) == {"master", "inventory", "order:P1"}
    for versions in streams.values():
        assert versions == list(range(1, len(versions) + 1))
    assert {row["id"] for row in rows if row["stream"] == "order:P1"} == {
        "rt-09", "rt-10", "rt-13", "rt-14", "rt-15", "rt-16", "rt-17", "rt-18"
    }
    # A reversal of an order's event is chained in that order's stream.
    reversal = next(row for row in rows if row["id"] == "rt-17")
    assert reversal["order"] == "P1"
    assert reversal["stream"] == "order:P1"

    # The readable table names the same columns.
    table = run(db_url, "events")
    assert table.exit_code == 0
    header = table.stdout.splitlines()[0].split()
    for col in ("seq", "stream", "version", "at", "recorded", "type", "id", "order"):
        assert col in header
    assert "order:P1" in table.stdout


def test_events_filters_by_order_and_type(db_url, tmp_path):
    second_order = [
        {"type": "OrderCreated", "at": "2026-03-02T08:00:00Z", "id": "rt-20", "order": "P2",
         "item": "FG", "qty": 1, "bom": "B-FG"},
        {"type": "OrderReleased", "at": "2026-03-02T08:01:00Z", "id": "rt-21", "order": "P2"},
    ]
    src = write_lines(tmp_path / "plant.jsonl", SAMPLE + second_order)
    assert run(db_url, "import", src).exit_code == 0

    r = run(db_url, "events", "--order", "P1", "--json")
    assert r.exit_code == 0, r.output
    p1 = orjson.loads(r.stdout)
    assert p1 and {row["order"] for row in p1} == {"P1"}
    # The order's own stream plus the picks and puts made for it.
    assert {row["id"] for row in p1} == {
        "rt-09", "rt-10", "rt-11", "rt-12", "rt-13", "rt-14", "rt-15", "rt-16", "rt-17", "rt-18"
    }

    r = run(db_url, "events", "--type", "OrderReleased", "--json")
    assert [row["id"] for row in orjson.loads(r.stdout)] == ["rt-10", "rt-21"]

    r = run(db_url, "events", "--order", "P2", "--type", "OrderReleased", "--csv")
    assert r.exit_code == 0
    body = r.stdout.strip().splitlines()
    assert len(body) == 2 and "rt-21" in body[1] and "rt-10" not in r.stdout

    r = run(db_url, "events", "--order", "NOPE", "--json")  # issue 9: unknown is an error
    assert r.exit_code == 2 and "unknown order 'NOPE'" in r.stderr

    r = run(db_url, "events", "--type", "Teleported")
    assert r.exit_code == 2
    assert "--type" in r.stderr


def test_one_read_runs_the_reads_inside_in_one_transaction(db_url):
    """``Ledger.one_read``: the reads inside share one transaction (nested ones too), the
    reads after it have their own again, and a write is never taken into it."""
    with Ledger(db_url) as ledger:
        pg = ledger.dialect == "postgres"
        # On PostgreSQL now() is the transaction's start: the same inside one transaction.
        probe = "SELECT CAST(now() AS TEXT) AS t" if pg else "SELECT 1 AS t"

        def read() -> tuple:
            with ledger.transaction(commit=False) as cur:
                return cur, cur.execute(probe).fetchone()["t"]

        with ledger.one_read():
            (c1, t1), (c2, t2) = read(), read()
            with ledger.one_read():
                c3, t3 = read()
            with ledger.transaction(commit=True) as w:
                assert w is not c1  # a write goes its own way
            assert c1 is c2 is c3 and t1 == t2 == t3
        (c4, t4), (c5, t5) = read(), read()
        assert c4 is not c1 and c5 is not c1
        if pg:
            assert t4 != t1 and t5 != t4
