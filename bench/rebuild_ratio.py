"""Rebuild speed against reading the same events: the ratio issue 7 asks for (target >= 0.2).

Run: ``.venv/bin/python bench/rebuild_ratio.py --orders 3000`` (SQLite in a temp dir), or
``--db postgresql://...`` for a fresh PostgreSQL database. It simulates ``--orders`` orders
(faults scrap and late), imports them, then times, interleaved ``--runs`` times (medians):

- read: ``SELECT state FROM stored_events`` and ``orjson.loads`` of every row;
- rebuild: ``materialise.rebuild`` (drop and rebuild every projection);
- late: one late event (an hour before the high-water mark) imported, then catch-up.

It prints events, both rates, the ratio rebuild/read and the late catch-up's cost.

``--ledger URL`` measures an existing ledger instead (a SQLite path or a PostgreSQL URL, for
example one made by ``backflush --db URL import /tmp/p/h.jsonl``) the way ``bench/plant.py``
does: the raw read-back of ``stored_events.state`` (on PostgreSQL through a named cursor) and
``backflush --db URL rebuild`` as a whole process, interleaved ``--runs`` times (medians).
``--baseline PATH`` (another installation's ``backflush`` script, e.g. a worktree of ``main``
with its own ``make venv``) is timed in the same rounds, so both ratios share the load.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from backflush.ledger.importer import run_import
from backflush.ledger.simulate import simulate
from backflush.ledger.store import Ledger, from_us
from backflush.projections import materialise


def read_all(ledger: Ledger) -> int:
    """The baseline: every stored event's state read and decoded."""
    n = 0
    loads = orjson.loads
    with ledger.transaction(commit=False) as cur:
        for row in cur.execute("SELECT state FROM stored_events").fetchall():
            loads(row["state"])
            n += 1
    return n


def late_import(ledger: Ledger, tmp: Path, k: int) -> tuple[float, int]:
    """Import one late receipt an hour before the latest ``at``; time import + catch-up."""
    with ledger.transaction(commit=False) as cur:
        high = cur.execute("SELECT MAX(at_us) AS m FROM bf_events").fetchone()["m"]
    at = from_us(high - 3_600_000_000).isoformat().replace("+00:00", "Z")
    ev = {"type": "InventoryReceived", "at": at, "id": f"late-{k}-{time.time_ns()}", "item": "C001",
          "qty": "1", "location": "BULK"}
    p = tmp / f"late{k}.jsonl"
    p.write_bytes(orjson.dumps(ev) + b"\n")
    t = time.perf_counter()
    res = run_import(ledger, [str(p)])
    assert not res.errors, res.errors
    n = materialise.catch_up(ledger)
    return time.perf_counter() - t, n


def raw_read(url: str) -> int:
    """``bench/plant.py``'s baseline: every stored payload read back and ``orjson.loads``-ed."""
    loads = orjson.loads
    n = 0
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(url) as conn, conn.cursor(name="bench_read") as cur:
            cur.itersize = 10_000
            cur.execute("SELECT state FROM stored_events")
            for (state,) in cur:
                loads(bytes(state) if isinstance(state, memoryview) else state)
                n += 1
        return n
    import sqlite3

    con = sqlite3.connect(url)
    for (state,) in con.execute("SELECT state FROM stored_events"):
        loads(state)
        n += 1
    con.close()
    return n


def whole_process(url: str, runs: int, baseline: str | None) -> None:
    """Raw read-back against ``backflush --db URL rebuild`` as a process, interleaved (and
    ``baseline``'s rebuild in the same rounds, the order of the two alternating)."""
    exes = {"rebuild": str(Path(sys.executable).with_name("backflush"))}
    if baseline:
        exes["baseline"] = baseline
    times: dict[str, list[float]] = {"read": [], **{k: [] for k in exes}}
    events = 0
    for r in range(runs):
        t = time.perf_counter()
        events = raw_read(url)
        times["read"].append(time.perf_counter() - t)
        for name in sorted(exes, reverse=r % 2 == 1):
            t = time.perf_counter()
            subprocess.run([exes[name], "--db", url, "rebuild"], check=True,
                           stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - t)
    read = statistics.median(times["read"])
    print(f"events            {events}")
    for name, ts in times.items():
        med = statistics.median(ts)
        label = {"read": "raw read+decode", "rebuild": "rebuild (process)"}.get(name, name)
        ratio = "" if name == "read" else f"  ratio {read / med:.3f}"
        print(f"{label:18s}{events / med:,.0f} events/s ({med:.2f} s){ratio}"
              f"  runs {' '.join(f'{x:.2f}' for x in ts)}")
    print("ratio = raw read / rebuild (target >= 0.2)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--orders", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--db", default=None, help="ledger URL (default: SQLite in a temp dir)")
    ap.add_argument("--ledger", default=None,
                    help="an existing ledger: raw read-back against whole-process rebuilds")
    ap.add_argument("--baseline", default=None,
                    help="with --ledger: another installation's backflush, timed alongside")
    args = ap.parse_args()
    if args.ledger:
        whole_process(args.ledger, args.runs, args.baseline)
        return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        src = tmp / "h.jsonl"
        with open(src, "wb") as fh:
            for ev in simulate(args.orders, args.seed, ("scrap", "late")):
                fh.write(orjson.dumps(ev) + b"\n")
        ledger = Ledger(args.db or str(tmp / "l.db"))
        res = run_import(ledger, [str(src)])
        assert not res.errors, res.errors[:3]
        materialise.catch_up(ledger)
        reads, rebuilds, lates = [], [], []
        events = 0
        for k in range(args.runs):
            t = time.perf_counter()
            events = read_all(ledger)
            reads.append(time.perf_counter() - t)
            t = time.perf_counter()
            materialise.rebuild(ledger)
            rebuilds.append(time.perf_counter() - t)
            lates.append(late_import(ledger, tmp, k))
        ledger.close()
    read, rebuild = statistics.median(reads), statistics.median(rebuilds)
    late_s = statistics.median(x[0] for x in lates)
    late_n = statistics.median(x[1] for x in lates)
    print(f"events            {events}")
    print(f"read+decode       {events / read:,.0f} events/s ({read:.2f} s)")
    print(f"rebuild           {events / rebuild:,.0f} events/s ({rebuild:.2f} s)")
    print(f"ratio             {read / rebuild:.3f}  (rebuild rate / read rate; target >= 0.2)")
    print(f"late import+catch {late_s:.3f} s, {late_n:.0f} events re-replayed"
          f" ({late_s / rebuild:.3f} x rebuild)")


if __name__ == "__main__":
    main()
