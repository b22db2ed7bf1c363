"""What SQLite alone costs for the ledger's stored rows, and for leaner layouts of them.

``bench/plant.py`` reports the storage floors of the layout as it is: the very rows an import
stores (``bf_events``, ``bf_chain``) and a rebuild writes (the projections' tables), written
from memory into empty tables as those commands write them. This script takes them apart,
on a ledger already imported and caught up (a file copy is read, never written):

- ``events``: the event rows under the current layout and under leaner variants (the chain
  link as a column instead of a table of its own, hashes as 32-byte blobs instead of hex,
  states without the two chain hashes, one index fewer), each against a raw ``executemany``
  of the events' payloads into one table, as the plant bench's baseline;
- ``projections``: the projections' rows, all of them, then leaving out one table or one
  secondary index at a time, and with the secondary indexes built after the rows.

Run: ``.venv/bin/python bench/floors.py events|projections --db LEDGER.db [--reps 3]``.
Rows are read before the clock starts; times are the best of ``--reps``; memory holds every
row (a 1M-event ledger: a few GB), so use a copy of a ledger of the size you care about.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable

import orjson

INDEXES = {
    "sv": "CREATE UNIQUE INDEX bf_events_sv ON bf_events (stream, version)",
    "at": "CREATE INDEX bf_events_at ON bf_events (at_us)",
    "ord": "CREATE INDEX bf_events_ord ON bf_events (ord, at_us)",
    "rec": "CREATE INDEX bf_events_rec ON bf_events (rec_us, at_us)",
    "created": "CREATE INDEX bf_events_created ON bf_events (ord) WHERE type = 'OrderCreated'",
}
BASE = ("seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, stream TEXT NOT NULL,"
        " version INTEGER NOT NULL, type TEXT NOT NULL, at_us BIGINT NOT NULL,"
        " rec_us BIGINT NOT NULL, ord TEXT")
CHAIN = "seq INTEGER PRIMARY KEY, link TEXT NOT NULL, stream TEXT, version INTEGER, id TEXT"


def _fresh(path: str, journal: str) -> sqlite3.Connection:
    for suffix in ("", "-journal", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute(f"PRAGMA journal_mode={journal}")
    return con


def _best(reps: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(reps))


def events(db: str, work: str, reps: int) -> None:
    src = sqlite3.connect(db)
    ev = src.execute("SELECT seq, id, stream, version, type, at_us, rec_us, ord, hash, state"
                     " FROM bf_events ORDER BY seq").fetchall()
    chain = src.execute("SELECT seq, link, stream, version, id FROM bf_chain"
                        " ORDER BY seq").fetchall()
    link = {r[0]: r[1] for r in chain}
    h = bytes.fromhex

    def lean_state(state: bytes) -> bytes:
        d = orjson.loads(state)
        return orjson.dumps({"e": d["e"], "rec": d["rec"]})

    payloads = [(orjson.dumps(orjson.loads(r[9])["e"]) + b"\n",) for r in ev]
    merged = [(*r, link[r[0]]) for r in ev]
    binary = [(*r[:8], h(r[8]), r[9], h(link[r[0]])) for r in ev]
    lean = [(*r[:8], h(r[8]), lean_state(r[9]), h(link[r[0]])) for r in ev]
    every = list(INDEXES)
    variants = [
        ("current: bf_events + bf_chain, hex hashes", ev,
         "hash TEXT NOT NULL, state BLOB NOT NULL", True, every),
        ("the link a column, no bf_chain", merged,
         "hash TEXT NOT NULL, state BLOB NOT NULL, link TEXT", False, every),
        ("... hash and link as 32-byte blobs", binary,
         "hash BLOB NOT NULL, state BLOB NOT NULL, link BLOB", False, every),
        ("... states without prev/hash", lean,
         "hash BLOB NOT NULL, state BLOB NOT NULL, link BLOB", False, every),
        ("... no (rec_us, at_us) index", lean,
         "hash BLOB NOT NULL, state BLOB NOT NULL, link BLOB", False,
         [k for k in every if k != "rec"]),
    ]
    path = os.path.join(work, "floor.db")

    def raw() -> float:
        con = _fresh(path, "WAL")
        t = time.perf_counter()
        con.execute("BEGIN")
        con.execute("CREATE TABLE raw_events (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        con.executemany("INSERT INTO raw_events (payload) VALUES (?)", payloads)
        con.execute("COMMIT")
        dt = time.perf_counter() - t
        con.close()
        return dt

    def layout(rows: list, cols: str, with_chain: bool, indexes: list[str]) -> Callable:
        def run() -> float:
            con = _fresh(path, "DELETE")  # as a first bulk import (``Ledger.bulk_load``)
            con.execute(f"CREATE TABLE bf_events ({BASE}, {cols})")
            con.execute(f"CREATE TABLE bf_chain ({CHAIN})")
            marks = ",".join("?" * len(rows[0]))
            t = time.perf_counter()
            con.execute("BEGIN")
            con.executemany(f"INSERT INTO bf_events VALUES ({marks})", rows)
            if with_chain:
                con.executemany("INSERT INTO bf_chain VALUES (?,?,?,?,?)", chain)
            for k in indexes:  # after the rows, as ``Ledger.indexes_deferred``
                con.execute(INDEXES[k])
            con.execute("COMMIT")
            dt = time.perf_counter() - t
            con.close()
            return dt
        return run

    base = _best(reps, raw)
    print(f"{len(ev):,} events; raw executemany of the payloads, one table: {base:.3f} s")
    print(f"{'layout':46s} {'seconds':>8s} {'raw/this':>9s} {'bytes/event':>12s}")
    for name, rows, cols, with_chain, indexes in variants:
        dt = _best(reps, layout(rows, cols, with_chain, indexes))
        size = os.path.getsize(path) / len(ev)
        print(f"{name:46s} {dt:8.3f} {base / dt:8.3f}x {size:12.0f}")


def projections(db: str, work: str, reps: int) -> None:
    src = sqlite3.connect(db)
    tables = [t for (t,) in src.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'bf%'"
        " ORDER BY rowid") if t not in ("bf_events", "bf_chain", "bf_lock", "bf_verify")]
    marks = ",".join("?" * len(tables))
    schema = src.execute(
        "SELECT type, tbl_name, name, sql FROM sqlite_master WHERE sql IS NOT NULL"
        f" AND tbl_name IN ({marks}) ORDER BY rowid", tables).fetchall()
    data = {t: src.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables}
    n = src.execute("SELECT COUNT(*) FROM bf_events").fetchone()[0]
    path = os.path.join(work, "floor.db")

    def run(skip_table: str | None = None, skip_index: str | None = None,
            after: bool = False) -> Callable:
        def one() -> float:
            con = _fresh(path, "WAL")  # as a rebuild: WAL, the indexes in place
            for kind, _t, name, sql in schema:
                if kind == "table" or (kind == "index" and not after and name != skip_index):
                    con.execute(sql)
            t = time.perf_counter()
            con.execute("BEGIN")
            for table in tables:
                rows = data[table]
                if rows and table != skip_table:
                    marks = ",".join("?" * len(rows[0]))
                    con.executemany(f'INSERT INTO "{table}" VALUES ({marks})', rows)
            for kind, _t, _name, sql in schema:
                if kind == "index" and after:
                    con.execute(sql)
            con.execute("COMMIT")
            dt = time.perf_counter() - t
            con.close()
            return dt
        return one

    print(f"{n:,} events; rows per table: "
          + ", ".join(f"{t} {len(v):,}" for t, v in data.items() if v))
    whole = _best(reps, run())
    print(f"every projection row, indexes in place (as a rebuild on SQLite): {whole:.3f} s")
    print(f"... secondary indexes built after the rows: {_best(reps, run(after=True)):.3f} s")
    for table in sorted(tables, key=lambda t: -len(data[t])):
        if data[table]:
            dt = _best(reps, run(skip_table=table))
            print(f"without table {table:20s} {dt:8.3f} s  ({(whole - dt) / whole:+.0%} of it)")
    for kind, _t, name, _sql in schema:
        if kind == "index":
            dt = _best(reps, run(skip_index=name))
            print(f"without index {name:20s} {dt:8.3f} s  ({(whole - dt) / whole:+.0%} of it)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["events", "projections"])
    ap.add_argument("--db", required=True, help="a ledger (SQLite), imported and caught up")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        (events if args.what == "events" else projections)(args.db, work, args.reps)


if __name__ == "__main__":
    main()
