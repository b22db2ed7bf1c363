"""Helpers shared by the ledger tests: a small plant, run the CLI on a ledger, snapshot it."""

from __future__ import annotations

from backflush.cli.main import cli
from backflush.ledger.store import Ledger
from click.testing import CliRunner


def run(db: str, *args: str):
    """Invoke ``backflush --db DB ARGS...`` through click's CliRunner."""
    return CliRunner().invoke(cli, ["--db", db, *args], catch_exceptions=False)


def snapshot(db: str) -> tuple[int, bytes]:
    """(event count, full export): what "the ledger is unchanged" compares."""
    with Ledger(db) as ledger:
        n = ledger.count()
    r = run(db, "export")
    assert r.exit_code == 0, r.output
    return n, r.stdout_bytes


# A small plant (master data, one order, stock) that bad-input and attack tests build on.
PLANT = [
    {"type": "ItemDefined", "at": "2026-05-01T06:00:00Z", "id": "s-1", "item": "FG"},
    {"type": "ItemDefined", "at": "2026-05-01T06:00:00Z", "id": "s-2", "item": "RAW"},
    {"type": "ResourceDefined", "at": "2026-05-01T06:00:00Z", "id": "s-3", "resource": "M1",
     "input_location": "M1-IN", "output_location": "M1-OUT"},
    {"type": "BomDefined", "at": "2026-05-01T06:01:00Z", "id": "s-4", "bom": "B", "item": "FG",
     "lines": [{"line": 10, "item": "RAW", "qty": 2}]},
    {"type": "RouteDefined", "at": "2026-05-01T06:01:00Z", "id": "s-5", "route": "R",
     "operations": [{"op": 10, "resource": "M1"}, {"op": 20, "resource": "M1"}]},
    {"type": "OrderCreated", "at": "2026-05-01T07:00:00Z", "id": "s-6", "order": "P1",
     "item": "FG", "qty": 5, "bom": "B", "route": "R"},
    {"type": "InventoryReceived", "at": "2026-05-01T07:00:00Z", "id": "s-7", "item": "RAW",
     "qty": 100, "location": "BULK"},
]
