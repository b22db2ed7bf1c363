"""Helpers shared by the ledger tests: run the CLI on a ledger, and snapshot a ledger."""

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
