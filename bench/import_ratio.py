"""Import speed against a raw bulk insert of the same lines (issue 7 item 3).

    .venv/bin/python bench/import_ratio.py [FILE] [--db URL] [--runs N]

FILE defaults to a fresh ``backflush simulate --orders 3000 --seed 1`` history (~112k
lines). Both sides run in this process, interleaved, ``--runs`` times each; the median wall
time of each side counts, as in ``bench/plant.py`` (whose baselines these are, line for line).

- SQLite: raw = ``sqlite3``: connect, WAL, ``CREATE TABLE raw_events (id INTEGER PRIMARY
  KEY, payload BLOB NOT NULL)``, one ``executemany`` of the file's lines, commit; ledger =
  ``run_import`` (every line validated, hash-chained) into a new ledger.
- PostgreSQL (``--db postgresql://...``): raw = ``COPY raw_events (payload) FROM STDIN`` of
  the lines into a new one-column table, commit.

Prints both times, events/s and the ratio raw/ledger (1.0 = as fast as the raw insert).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median

from backflush.ledger.importer import run_import
from backflush.ledger.store import Ledger


def _unlink(db: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.unlink(db + suffix)


def raw_sqlite(path: str, db: str) -> float:
    _unlink(db)
    t = time.perf_counter()
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE raw_events (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
    with open(path, "rb") as fh:
        con.executemany("INSERT INTO raw_events (payload) VALUES (?)", ((x,) for x in fh))
    con.commit()
    con.close()
    dt = time.perf_counter() - t
    _unlink(db)
    return dt


def raw_copy(path: str, url: str) -> float:
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        con.execute("DROP TABLE IF EXISTS raw_events")
    t = time.perf_counter()
    with psycopg.connect(url) as con, con.cursor() as cur:
        cur.execute("CREATE TABLE raw_events (payload BYTEA NOT NULL)")
        with cur.copy("COPY raw_events (payload) FROM STDIN") as copy, open(path, "rb") as fh:
            for line in fh:
                copy.write_row((line,))
        con.commit()
    dt = time.perf_counter() - t
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("DROP TABLE IF EXISTS raw_events")
    return dt


def ledger_import(path: str, url: str, fresh) -> float:
    fresh()
    ledger = Ledger(url)
    t = time.perf_counter()
    result = run_import(ledger, [path])
    dt = time.perf_counter() - t
    ledger.close()
    assert not result.errors, [str(e) for e in result.errors[:3]]
    return dt


def cpu_and_wall(fn: Callable[[], float]) -> tuple[float, float]:
    """(wall seconds the function reports, cpu seconds of this process meanwhile)."""
    c = time.process_time()
    wall = fn()
    return wall, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", nargs="?")
    ap.add_argument("--db", default=None, help="postgresql:// URL (default: SQLite files)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="import-ratio-")
    path = args.file
    if path is None:
        path = str(Path(tmp) / "history.jsonl")
        subprocess.run(
            [sys.executable, "-m", "backflush", "simulate", "--orders", "3000", "--seed", "1",
             "-o", path],
            check=True,
        )
    lines = sum(1 for line in open(path, "rb") if line.strip())
    if args.db and args.db.startswith("postgres"):
        import psycopg

        def fresh() -> None:
            with psycopg.connect(args.db, autocommit=True) as con:
                for t in ("bf_events", "bf_lock", "bf_chain"):
                    con.execute(f"DROP TABLE IF EXISTS {t} CASCADE")

        raw, url, label = (lambda: raw_copy(path, args.db)), args.db, "PostgreSQL COPY"
    else:
        db = str(Path(tmp) / "ledger.db")
        raw, url, label = (lambda: raw_sqlite(path, str(Path(tmp) / "raw.db"))), db, "sqlite3"

        def fresh() -> None:
            _unlink(db)

    raws, mine = [], []
    for _ in range(args.runs):
        raws.append(cpu_and_wall(raw))
        mine.append(cpu_and_wall(lambda: ledger_import(path, url, fresh)))
    r, m = median(w for w, _ in raws), median(w for w, _ in mine)
    rc, mc = median(c for _, c in raws), median(c for _, c in mine)
    print(f"lines            {lines}")
    print(f"raw {label:<13}{r:8.3f} s  {lines / r:>9,.0f} lines/s   (cpu {rc:.3f} s)")
    print(f"run_import       {m:8.3f} s  {lines / m:>9,.0f} events/s  (cpu {mc:.3f} s)")
    each = " ".join(f"{a / b:.3f}" for (a, _), (b, _) in zip(raws, mine, strict=True))
    print(f"ratio raw/import {r / m:8.3f}  (wall, median of {args.runs}; by this process's cpu"
          f" time: {rc / mc:.3f}; per run: {each})")


if __name__ == "__main__":
    main()
