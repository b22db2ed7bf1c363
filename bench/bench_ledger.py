"""Benchmark: import, rebuild and as-of queries on a simulated plant history.

Run: ``.venv/bin/python bench/bench_ledger.py --events 1000000`` (writes bench/out/).
All figures come from one run on one machine, so the ratios are what count:

- import with full validation vs a raw ``sqlite3`` bulk insert of the same payloads, and
  vs eventsourcing's one-aggregate-per-save path (measured on a sample, extrapolated);
- full projection rebuild (events/s);
- median latency of ``onhand --at`` and ``wip --at`` at random times (no catch-up work:
  the projections are current), at two history sizes, to show how flat they stay;
- one order's audit-style replay (consumption of one order as of a time);
- peak RSS of the process.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sqlite3
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from backflush.ledger.importer import run_import
from backflush.ledger.simulate import simulate
from backflush.ledger.store import Ledger
from backflush.projections import asof, materialise

OUT = Path(__file__).resolve().parent / "out"


def write_history(path: Path, events: int, seed: int) -> int:
    """Simulate orders until about ``events`` events are written; returns the count."""
    orders = max(1, events // 24)
    n = 0
    with open(path, "wb") as fh:
        for ev in simulate(orders, seed, ("scrap", "late")):
            fh.write(orjson.dumps(ev) + b"\n")
            n += 1
            if n >= events:
                break
    return n


def raw_sqlite_insert(path: Path, db: Path) -> float:
    """Baseline: read the same lines and bulk-insert the payloads, no validation."""
    if db.exists():
        db.unlink()
    t = time.perf_counter()
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE e (id INTEGER PRIMARY KEY, payload BLOB)")
    with open(path, "rb") as fh:
        batch = []
        for line in fh:
            batch.append((line,))
            if len(batch) >= 1000:
                con.executemany("INSERT INTO e (payload) VALUES (?)", batch)
                batch.clear()
        con.executemany("INSERT INTO e (payload) VALUES (?)", batch)
    con.commit()
    con.close()
    return time.perf_counter() - t


def eventsourcing_per_save(path: Path, db: Path, sample: int) -> float:
    """eventsourcing's Application path: one aggregate saved per event (sample; s/event)."""
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class Fact(Aggregate):
        @event("Recorded")
        def __init__(self, payload: dict) -> None:
            self.payload = payload

    if db.exists():
        db.unlink()
    os.environ.update({"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(db)})
    app = Application()
    t = time.perf_counter()
    with open(path, "rb") as fh:
        for i, line in enumerate(fh):
            if i >= sample:
                break
            app.save(Fact(orjson.loads(line)))
    dt = time.perf_counter() - t
    app.close()
    return dt / sample


def timed(fn, *a, **k):
    t = time.perf_counter()
    r = fn(*a, **k)
    return time.perf_counter() - t, r


def query_latencies(ledger: Ledger, lo: datetime, hi: datetime, n: int = 50) -> dict:
    rnd = random.Random(7)
    span = (hi - lo).total_seconds()
    out = {}
    for name, fn in (
        ("onhand", lambda at: asof.onhand(ledger, at)),
        ("onhand_item", lambda at: asof.onhand(ledger, at, item="C004")),
        ("wip", lambda at: asof.wip(ledger, at)),
        ("wip_resource", lambda at: asof.wip(ledger, at, resource="R20")),
    ):
        times = []
        for _ in range(n):
            at = lo + timedelta(seconds=rnd.random() * span)
            times.append(timed(fn, at)[0])
        out[name] = statistics.median(times) * 1000
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    report: dict = {"events": args.events, "cpu_count": os.cpu_count()}

    for size in (args.small, args.events):
        hist = OUT / f"history-{size}.jsonl"
        n = write_history(hist, size, args.seed)
        db = OUT / f"ledger-{size}.db"
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(db) + suffix)
            if p.exists():
                p.unlink()
        ledger = Ledger(str(db))
        t_import, res = timed(run_import, ledger, [str(hist)])
        assert not res.errors, res.errors[:3]
        t_rebuild, applied = timed(materialise.rebuild, ledger)
        with ledger.transaction(commit=False) as cur:
            row = cur.execute(
                "SELECT MIN(at_us) AS lo, MAX(at_us) AS hi FROM bf_events"
                " WHERE type = 'OrderCreated'"
            ).fetchone()
            order = cur.execute(
                "SELECT ord FROM bf_events WHERE type='OrderCreated' ORDER BY seq"
                " LIMIT 1 OFFSET ?", (max(0, res.appended // 48),)
            ).fetchone()["ord"]
        lo = datetime.fromtimestamp(row["lo"] / 1e6, tz=UTC)
        hi = datetime.fromtimestamp(row["hi"] / 1e6, tz=UTC)
        lat = query_latencies(ledger, lo, hi)
        audit_times = [timed(asof.consumption, ledger, order)[0] for _ in range(20)]
        from backflush.cli.audit import compute_audit

        compute_audit(ledger, order)
        full_audit = [timed(compute_audit, ledger, order)[0] for _ in range(20)]
        entry = {
            "events": n,
            "import_s": round(t_import, 3),
            "import_events_per_s": round(n / t_import),
            "rebuild_s": round(t_rebuild, 3),
            "rebuild_events_per_s": round(applied / t_rebuild),
            "median_ms": {k: round(v, 2) for k, v in lat.items()},
            "order_consumption_median_ms": round(statistics.median(audit_times) * 1000, 2),
            "order_audit_median_ms": round(statistics.median(full_audit) * 1000, 2),
        }
        if size == args.events:
            t_raw = raw_sqlite_insert(hist, OUT / "raw.db")
            per_save = eventsourcing_per_save(hist, OUT / "es.db", 5000)
            entry["raw_sqlite_insert_s"] = round(t_raw, 3)
            entry["import_vs_raw_speed"] = round(t_raw / t_import, 3)
            entry["eventsourcing_per_save_events_per_s"] = round(1 / per_save)
            entry["import_vs_eventsourcing_speed"] = round((n / t_import) * per_save, 2)
        report[str(size)] = entry
        ledger.close()
        print(orjson.dumps(entry, option=orjson.OPT_INDENT_2).decode(), flush=True)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    (OUT / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print("peak RSS MB:", report["peak_rss_mb"])


if __name__ == "__main__":
    main()
