"""Atomic import (DESIGN §8): an import killed at any moment (SIGKILL, no clean-up) leaves
the ledger with none of the file's events or all of them, never a part; the hash chains
still verify; and importing the file again afterwards completes, giving exactly the
ledger a clean import gives."""

from __future__ import annotations

import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest
from backflush.cli.main import cli
from backflush.ledger.integrity import verify
from backflush.ledger.store import Ledger
from click.testing import CliRunner

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = 20
BASE = [
    {"type": "ItemDefined", "at": "2026-08-01T05:00:00Z", "id": "base-1", "item": "BASE-A"},
    {"type": "InventoryReceived", "at": "2026-08-01T05:01:00Z", "id": "base-2",
     "item": "BASE-A", "qty": "1.5", "location": "DOCK"},
]


def write_plant_file(path: Path, target: int) -> int:
    """A valid history of about ``target`` events: master data, receipts and orders with
    their operation reports; returns the number of lines written."""
    n = 0
    with open(path, "wb") as fh:

        def put(event: dict) -> None:
            nonlocal n
            fh.write(orjson.dumps(event) + b"\n")
            n += 1

        at = "2026-08-01T06:00:00Z"
        put({"type": "ItemDefined", "at": at, "id": "i-FG", "item": "FG"})
        for c in range(COMPONENTS):
            put({"type": "ItemDefined", "at": at, "id": f"i-C{c}", "item": f"C{c}",
                 "unit": "kg", "decimals": 3})
        put({"type": "ResourceDefined", "at": at, "id": "r-M1", "resource": "M1",
             "input_location": "M1-IN", "output_location": "M1-OUT"})
        put({"type": "BomDefined", "at": at, "id": "b-FG", "bom": "B", "item": "FG",
             "lines": [{"line": 10 * (c + 1), "item": f"C{c}", "qty": "0.25"}
                       for c in range(COMPONENTS)]})
        put({"type": "RouteDefined", "at": at, "id": "rt-FG", "route": "R",
             "operations": [{"op": 10, "resource": "M1"}, {"op": 20, "resource": "M1"}]})
        o = 0
        while n < target:
            s = o % 86400
            t = f"2026-08-02T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}Z"
            if o % 5 == 0:
                put({"type": "InventoryReceived", "at": t, "id": f"rc-{o}",
                     "item": f"C{o % COMPONENTS}", "qty": "100.5", "location": "M1-IN"})
            order = f"P{o}"
            put({"type": "OrderCreated", "at": t, "id": f"{order}-c", "order": order,
                 "item": "FG", "qty": 4, "bom": "B", "route": "R"})
            put({"type": "OrderReleased", "at": t, "id": f"{order}-r", "order": order})
            put({"type": "OrderStarted", "at": t, "id": f"{order}-s", "order": order})
            for k in range(4):
                put({"type": "OperationReported", "at": t, "id": f"{order}-o{k}",
                     "order": order, "op": 10 if k < 2 else 20, "good": 1, "error": "0.1"})
            put({"type": "ReportedAsFinished", "at": t, "id": f"{order}-f", "order": order,
                 "good": 4})
            put({"type": "OrderEnded", "at": t, "id": f"{order}-e", "order": order})
            o += 1
    return n


def import_process(db: str, path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", "from backflush.cli.main import main; main()", "--db", db, "import",
         str(path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def timed_import(db: str, path: Path) -> float:
    start = time.monotonic()
    p = import_process(db, path)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()
    return time.monotonic() - start


def count_and_verify(db: str) -> int:
    with Ledger(db) as ledger:
        checked, problems = verify(ledger)
        assert problems == [], [str(p) for p in problems[:5]]
        n = ledger.count()
        assert checked == n
    return n


def export(db: str) -> bytes:
    r = CliRunner().invoke(cli, ["--db", db, "export"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.stdout_bytes


def crash_trials(
    new_ledger: Callable[[], str], big: Path, total: int, trials: int, seed: int, tmp_path: Path
) -> None:
    """Import ``big``, SIGKILL it at random moments, check the ledger after each kill."""
    base = tmp_path / "base.jsonl"
    base.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in BASE))

    # A clean import: the reference ledger, and how long an import takes here.
    reference = new_ledger()
    timed_import(reference, base)
    typical = timed_import(reference, big)
    assert count_and_verify(reference) == len(BASE) + total

    rng = random.Random(seed)
    db = new_ledger()
    timed_import(db, base)
    outcomes = []
    for _ in range(trials):
        p = import_process(db, big)
        try:
            p.wait(timeout=rng.uniform(0.05, typical))
            outcomes.append("finished")
        except subprocess.TimeoutExpired:
            p.kill()  # SIGKILL: no handler, no rollback by the process itself
            p.wait()
            outcomes.append("killed")
        p.stdout.close()
        p.stderr.close()
        n = count_and_verify(db)
        assert n in (len(BASE), len(BASE) + total), (outcomes, n)
        if n != len(BASE):
            # The import made it: go on crashing a fresh ledger.
            db = new_ledger()
            timed_import(db, base)
    print(f"crash trials: {outcomes}")

    out, err = import_process(db, big).communicate(timeout=300)
    assert f"{total} appended, 0 duplicates" in out.decode(), err.decode()
    assert count_and_verify(db) == len(BASE) + total
    # The crashes left no trace: the ledger is the one a clean import gives.
    assert export(db) == export(reference)


def test_killed_import_appends_all_or_nothing_sqlite(tmp_path):
    big = tmp_path / "plant.jsonl"
    total = write_plant_file(big, 60_000)
    ledgers = (str(tmp_path / f"ledger-{i}.db") for i in range(100))
    crash_trials(lambda: next(ledgers), big, total, trials=4, seed=1, tmp_path=tmp_path)


@pytest.fixture
def pg_databases(pg_url) -> Iterator[Callable[[], str]]:
    """A factory of fresh PostgreSQL databases, all dropped afterwards."""
    import psycopg

    made: list[str] = []

    def new() -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return urlunsplit(urlsplit(pg_url)._replace(path="/" + name))

    yield new
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_killed_import_appends_all_or_nothing_postgres(pg_databases, tmp_path):
    # PostgreSQL imports run slower here: a smaller file keeps the test's time in bounds
    # (the kills still land inside one long write transaction).
    big = tmp_path / "plant.jsonl"
    total = write_plant_file(big, 30_000)
    crash_trials(pg_databases, big, total, trials=2, seed=2, tmp_path=tmp_path)
