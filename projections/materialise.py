"""Projections materialised beside the events, kept up to date exactly once.

The replay engine (``projections.engine``) is pure; this module is its I/O edge. Catch-up
reads the events recorded since the tracked position, applies them in ``at`` order and
writes, in the same transaction as the new tracked position:

- ``bf_onhand_hist`` / ``bf_wip_hist``: for every on-hand or WIP key, its balance after
  each change, stamped with the ``at`` and seq of the event that changed it. "As of T" is
  then one index probe per key (the last row with ``at`` <= T), whatever the history
  length: never a replay per query;
- ``bf_flushes``: every consumption posting (what the audit shows per event);
- ``bf_proj``: the tracked position, the ``at`` high-water mark and a snapshot of the
  engine, so the next catch-up continues where this one stopped.

An event recorded late with an ``at`` before the high-water mark changes the past; then
the projections are rebuilt from the log (the DESIGN's "same answers whatever the arrival
order" is kept by construction rather than by patching history rows).
"""

from __future__ import annotations

import gc
import pickle
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from backflush.ledger.store import Cursor, Ledger, to_us

if TYPE_CHECKING:  # the engine (and pydantic under it) loads only when a replay runs
    from backflush.projections.engine import Replay

ENGINE_VERSION = "6"  # bump when the engine's rules change: stored projections rebuild

DDL = [
    "CREATE TABLE IF NOT EXISTS bf_proj (k TEXT PRIMARY KEY, v TEXT)",
    "CREATE TABLE IF NOT EXISTS bf_proj_blob (k TEXT PRIMARY KEY, v BYTEA)",
    """CREATE TABLE IF NOT EXISTS bf_onhand_keys (
        key_id INTEGER PRIMARY KEY, item TEXT NOT NULL, location TEXT NOT NULL,
        batch TEXT, lp TEXT)""",
    """CREATE TABLE IF NOT EXISTS bf_onhand_hist (
        key_id INTEGER NOT NULL, at_us BIGINT NOT NULL, seq BIGINT NOT NULL, n INTEGER NOT NULL,
        balance TEXT NOT NULL, PRIMARY KEY (key_id, at_us, seq, n)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS bf_wip_keys (
        key_id INTEGER PRIMARY KEY, resource TEXT, location TEXT, kind TEXT NOT NULL,
        ord TEXT, op INTEGER, item TEXT, batch TEXT)""",
    """CREATE TABLE IF NOT EXISTS bf_wip_hist (
        key_id INTEGER NOT NULL, at_us BIGINT NOT NULL, seq BIGINT NOT NULL, n INTEGER NOT NULL,
        balance TEXT NOT NULL, PRIMARY KEY (key_id, at_us, seq, n)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS bf_flushes (
        event_id TEXT NOT NULL, at_us BIGINT NOT NULL, seq BIGINT NOT NULL, n INTEGER NOT NULL,
        ord TEXT, line INTEGER, item TEXT, trig TEXT, device TEXT, qty TEXT NOT NULL,
        location TEXT, batch TEXT, lp TEXT, PRIMARY KEY (seq, n))""",
    "CREATE INDEX IF NOT EXISTS bf_flushes_ord ON bf_flushes (ord, at_us, seq)",
    # What one event did to on-hand (the audit asks it per event of an order).
    "CREATE INDEX IF NOT EXISTS bf_onhand_hist_seq ON bf_onhand_hist (seq)",
    "CREATE INDEX IF NOT EXISTS bf_onhand_keys_item ON bf_onhand_keys (item, location)",
    # Which keys are non-zero when: a key open now (bf_open, since a day bucket) or non-zero
    # at some moment of a past day (bf_alive). An as-of query probes only those keys, so its
    # cost follows the plant's activity on that day, not the length of the history.
    """CREATE TABLE IF NOT EXISTS bf_open (
        kind TEXT NOT NULL, key_id INTEGER NOT NULL, from_bucket BIGINT NOT NULL,
        PRIMARY KEY (kind, key_id)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS bf_alive (
        kind TEXT NOT NULL, bucket BIGINT NOT NULL, key_id INTEGER NOT NULL,
        PRIMARY KEY (kind, bucket, key_id)) WITHOUT ROWID""",
]
TABLES = [
    "bf_onhand_hist", "bf_onhand_keys", "bf_wip_hist", "bf_wip_keys", "bf_flushes", "bf_open",
    "bf_alive",
]
BUCKET_US = 86_400 * 1_000_000  # one day
PAGE = 5000


def _blob_type(ledger: Ledger, sql: str) -> str:
    if ledger.dialect != "sqlite":
        return sql.replace(" WITHOUT ROWID", "")
    # On SQLite a composite primary key is otherwise a second b-tree beside the rows:
    # WITHOUT ROWID keeps one, halving the writes of the history tables.
    return sql.replace("BYTEA", "BLOB")


def ensure_tables(ledger: Ledger) -> None:
    """Create the projection tables if missing (no DDL at all when they exist)."""
    try:
        with ledger.transaction(commit=False) as cur:
            cur.execute("SELECT 1 AS x FROM bf_alive LIMIT 1").fetchall()
        return
    except Exception:  # missing table: each driver names it differently
        pass
    create_tables(ledger)


def create_tables(ledger: Ledger) -> None:
    """Run the projection DDL (each statement is idempotent)."""
    with ledger.transaction(commit=True) as cur:
        for ddl in DDL:
            cur.execute(_blob_type(ledger, ddl))


def _get(cur: Cursor, k: str) -> str | None:
    row = cur.execute("SELECT v FROM bf_proj WHERE k = ?", (k,)).fetchone()
    return None if row is None else row["v"]


def _put(cur: Cursor, k: str, v: str) -> None:
    cur.execute("DELETE FROM bf_proj WHERE k = ?", (k,))
    cur.execute("INSERT INTO bf_proj (k, v) VALUES (?, ?)", (k, v))


class _Writer:
    """Turns the engine's change log into rows, batched per transaction."""

    def __init__(self, cur: Cursor):
        self.cur = cur
        self.onhand_ids: dict[tuple, int] = {}
        self.wip_ids: dict[tuple, int] = {}
        for table, ids, cols in (
            ("bf_onhand_keys", self.onhand_ids, "item, location, batch, lp"),
            ("bf_wip_keys", self.wip_ids, "resource, location, kind, ord, op, item, batch"),
        ):
            for row in cur.execute(f"SELECT key_id, {cols} FROM {table}").fetchall():
                ids[tuple(row[c.strip()] for c in cols.split(","))] = row["key_id"]
        self.new_keys: dict[tuple[str, int], list[tuple]] = {}
        self.open_from: dict[tuple[str, int], int] = {
            (r["kind"], r["key_id"]): r["from_bucket"]
            for r in cur.execute("SELECT kind, key_id, from_bucket FROM bf_open").fetchall()
        }

    def _key_id(self, ids: dict[tuple, int], table: str, key: tuple, width: int) -> int:
        kid = ids.get(key)
        if kid is None:
            kid = len(ids) + 1
            ids[key] = kid
            self.new_keys.setdefault((table, width), []).append((kid, *key))
        return kid

    def _flush_keys(self) -> None:
        for (table, width), rows in self.new_keys.items():
            marks = ",".join("?" * (width + 1))
            self.cur.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
        self.new_keys.clear()

    def write(self, engine: Replay) -> None:
        onhand, wip = [], []
        onhand_ids, wip_ids = self.onhand_ids, self.wip_ids
        n = 0
        last_seq, last_at, at_us = None, None, 0
        # Changes come grouped by event: number them within an event, and convert each
        # event's time once, not once per change.
        open_from = self.open_from
        touched: set[tuple[str, int]] = set()
        alive: set[tuple[str, int, int]] = set()
        for kind, key, balance, _eid, at, seq in engine.balance_changes:
            if seq != last_seq:
                last_seq, n = seq, 0
                if at is not last_at:
                    last_at, at_us = at, to_us(at)
            else:
                n += 1
            if kind == "onhand":
                kid = onhand_ids.get(key) or self._key_id(onhand_ids, "bf_onhand_keys", key, 4)
                onhand.append((kid, at_us, seq, n, str(balance)))
            else:
                kid = wip_ids.get(key) or self._key_id(wip_ids, "bf_wip_keys", key, 7)
                wip.append((kid, at_us, seq, n, str(balance)))
            ok = (kind, kid)
            bucket = at_us // BUCKET_US
            if balance:
                if ok not in open_from:
                    open_from[ok] = bucket
                    touched.add(ok)
            elif ok in open_from:
                start = open_from.pop(ok)
                touched.add(ok)
                alive.update((kind, b, kid) for b in range(start, bucket + 1))
        engine.balance_changes.clear()
        self._flush_keys()
        self.cur.executemany("INSERT INTO bf_onhand_hist VALUES (?,?,?,?,?)", onhand)
        self.cur.executemany("INSERT INTO bf_wip_hist VALUES (?,?,?,?,?)", wip)
        self.cur.executemany(
            "INSERT INTO bf_alive VALUES (?,?,?) ON CONFLICT DO NOTHING", sorted(alive)
        )
        self.cur.executemany(
            "DELETE FROM bf_open WHERE kind = ? AND key_id = ?", sorted(touched)
        )
        self.cur.executemany(
            "INSERT INTO bf_open VALUES (?,?,?)",
            sorted((k, kid, open_from[(k, kid)]) for k, kid in touched if (k, kid) in open_from),
        )
        flushes = []
        last_seq, n = None, 0
        for f in engine.flushes:
            if f.seq != last_seq:
                last_seq, n = f.seq, 0
            else:
                n += 1
            flushes.append(
                (
                    f.event_id, to_us(f.at), f.seq, n, f.order, f.line, f.item, f.trigger,
                    f.device, str(f.qty), f.location, f.batch, f.lp,
                )
            )
        engine.flushes.clear()
        self.cur.executemany(
            "INSERT INTO bf_flushes VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", flushes
        )
        # The history tables hold what these lists would tell (negative balances are rows
        # with a balance below zero); keeping them would grow memory with the history.
        engine.negative_onhand.clear()
        engine.puts_without_pick.clear()
        engine.anomalies.clear()


def events_for_replay(ledger: Ledger, **filters: Any) -> Iterator[dict[str, Any]]:
    """Stored events as the engine wants them, in (at, seq) order, streamed."""
    from backflush.ledger.codec import replay_dict

    loads = orjson.loads
    for row in ledger.iter_rows(by="at", **filters):
        yield replay_dict(loads(row["state"])["e"], row["seq"])


def _reversal_targets(cur: Cursor) -> set[str]:
    """Ids of the events some Reversal undoes: the only ones whose effects must be kept."""
    rows = cur.execute(
        "SELECT s.state FROM bf_events i JOIN stored_events s ON "
        + ("s.rowid" if cur.dialect == "sqlite" else "s.notification_id")
        + " = i.seq WHERE i.type = 'Reversal'"
    ).fetchall()
    return {orjson.loads(r["state"])["e"]["reverses"] for r in rows}


def last_event_of_orders(ledger: Ledger) -> list[tuple[int, str]]:
    """``_retirement_plan`` in its own read transaction."""
    with ledger.transaction(commit=False) as cur:
        return _retirement_plan(cur)


def reversal_targets(ledger: Ledger) -> set[str]:
    """``_reversal_targets`` in its own read transaction."""
    with ledger.transaction(commit=False) as cur:
        return _reversal_targets(cur)


def _retirement_plan(cur: Cursor) -> list[tuple[int, str]]:
    """(time of its last event, order) for every order, earliest first.

    Once the replay is past that time, nothing more will touch the order, so the engine
    may forget it: the rebuild's memory follows the orders in progress, not the history.
    """
    rows = cur.execute(
        "SELECT ord, MAX(at_us) AS last FROM bf_events WHERE ord IS NOT NULL GROUP BY ord"
    ).fetchall()
    plan = [(r["last"], r["ord"]) for r in rows]
    plan.sort(reverse=True)  # popped from the end: earliest first
    return plan


def _save_engine(cur: Cursor, engine: Replay) -> None:
    blob = zlib.compress(pickle.dumps(engine, protocol=pickle.HIGHEST_PROTOCOL), 1)
    cur.execute("DELETE FROM bf_proj_blob WHERE k = 'engine'")
    cur.execute("INSERT INTO bf_proj_blob (k, v) VALUES ('engine', ?)", (blob,))


def _load_engine(cur: Cursor) -> Replay | None:
    row = cur.execute("SELECT v FROM bf_proj_blob WHERE k = 'engine'").fetchone()
    if row is None:
        return None
    return pickle.loads(zlib.decompress(bytes(row["v"])))


@contextmanager
def no_gc() -> Iterator[None]:
    # Replay allocates millions of small, long-lived objects and frees few: the cyclic
    # collector's passes over them cost more than the replay itself (measured about 2x).
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def rebuild(ledger: Ledger, progress: Callable[[int], None] | None = None) -> int:
    """Drop and rebuild every projection from the log; returns the events applied."""
    with no_gc():
        return _rebuild(ledger, progress)


def _rebuild(ledger: Ledger, progress: Callable[[int], None] | None) -> int:
    # A rebuild also brings the schema up to this version (new tables or indexes).
    create_tables(ledger)
    with ledger.writing() as cur:
        for t in TABLES:
            cur.execute(f"DELETE FROM {t}")
        cur.execute("DELETE FROM bf_proj")
        cur.execute("DELETE FROM bf_proj_blob")
        from backflush.projections.engine import Replay

        engine = Replay(reversible=_reversal_targets(cur))
        writer = _Writer(cur)
        retire = _retirement_plan(cur)
        n, last_seq, high = _apply_rows(ledger, cur, engine, writer, None, progress, retire)
        _finish(cur, engine, last_seq, high)
    return n


def _apply_rows(
    ledger: Ledger,
    cur: Cursor,
    engine: Replay,
    writer: _Writer,
    seq_gt: int | None,
    progress: Callable[[int], None] | None,
    retire: list[tuple[int, str]] | None = None,
) -> tuple[int, int, tuple[int, int]]:
    from backflush.ledger.codec import replay_dict

    n = 0
    last_seq = seq_gt or 0
    high = (0, 0)  # (at_us, seq) of the last event applied: the next one must not be older
    loads = orjson.loads
    apply = engine.apply
    # Reads go through the same transaction's cursor: on SQLite a second connection would
    # not see rows this transaction has not committed yet, and we hold the write lock.
    sql = (
        "SELECT i.seq, i.at_us, s.state FROM bf_events i "
        + ledger._state_join()  # noqa: SLF001
        + " WHERE (i.at_us > ? OR (i.at_us = ? AND i.seq > ?))"
        + (" AND i.seq > ?" if seq_gt is not None else "")
        + f" ORDER BY i.at_us, i.seq LIMIT {PAGE}"
    )
    key = (-(2**62), 0)
    pages = 0
    while True:
        params: list[Any] = [key[0], key[0], key[1]]
        if seq_gt is not None:
            params.append(seq_gt)
        rows = cur.execute(sql, params).fetchall()
        for row in rows:
            seq = row["seq"]
            apply(replay_dict(loads(row["state"])["e"], seq))
            if seq > last_seq:
                last_seq = seq
        n += len(rows)
        if rows:
            high = (rows[-1]["at_us"], rows[-1]["seq"])
        writer.write(engine)
        while retire and retire[-1][0] < high[0]:
            engine.retire(retire.pop()[1])
        pages += 1
        if pages % 40 == 0:
            # The collector is off during replay (see no_gc); retired orders hold
            # reference cycles, so sweep them now and then to keep memory flat.
            gc.collect()
        if progress is not None:
            progress(n)
        if len(rows) < PAGE:
            break
        key = high
    return n, last_seq, high


def _touches_retired(cur: Cursor, engine: Replay, last: int) -> bool:
    """Whether events after ``last`` refer to an order the snapshot has forgotten."""
    rows = cur.execute(
        "SELECT DISTINCT ord FROM bf_events WHERE seq > ? AND ord IS NOT NULL", (last,)
    ).fetchall()
    for r in rows:
        if engine.order_state(r["ord"]) is None:
            known = cur.execute(
                "SELECT 1 AS x FROM bf_events WHERE ord = ? AND type = 'OrderCreated'"
                " AND seq <= ?",
                (r["ord"], last),
            ).fetchone()
            if known is not None:
                return True
    return False


def _finish(cur: Cursor, engine: Replay, last_seq: int, high: tuple[int, int]) -> None:
    _put(cur, "engine_version", ENGINE_VERSION)
    _put(cur, "last_seq", str(last_seq))
    _put(cur, "high_at", str(high[0]))
    _put(cur, "high_seq", str(high[1]))
    _save_engine(cur, engine)


def catch_up(ledger: Ledger) -> int:
    """Bring the projections up to everything recorded; returns the events applied.

    Exactly once: the tracked position moves in the same transaction as the rows.
    """
    ensure_tables(ledger)
    with ledger.transaction(commit=False) as cur:
        version = _get(cur, "engine_version")
        last = int(_get(cur, "last_seq") or 0)
    if version != ENGINE_VERSION:
        return rebuild(ledger)
    if ledger.max_seq() <= last:
        return 0
    with ledger.writing() as cur:
        # Re-read under the write lock: another process may have caught up meanwhile.
        last = int(_get(cur, "last_seq") or 0)
        high = (int(_get(cur, "high_at") or 0), int(_get(cur, "high_seq") or 0))
        row = cur.execute(
            "SELECT MIN(at_us) AS a, SUM(CASE WHEN type = 'Reversal' THEN 1 ELSE 0 END) AS r"
            " FROM bf_events WHERE seq > ?",
            (last,),
        ).fetchone()
        if row["a"] is None:
            return 0
        # A late event changes the past, and a new Reversal may undo an event whose
        # effects the snapshot did not keep: both are answered by a rebuild.
        in_order = row["a"] >= high[0] and not row["r"]
        engine = _load_engine(cur) if in_order else None
        if engine is not None and _touches_retired(cur, engine, last):
            engine = None
        if engine is None:
            late = True
        else:
            late = False
    if late:
        return rebuild(ledger)
    with ledger.writing() as cur, no_gc():
        writer = _Writer(cur)
        n, last_seq, new_high = _apply_rows(ledger, cur, engine, writer, last, None)
        _finish(cur, engine, last_seq, max(high, new_high))
    return n


# --- as-of queries on the materialised history -------------------------------------------

_FAR_FUTURE = 2**62


def _latest(
    ledger: Ledger,
    kind: str,
    keys_table: str,
    hist: str,
    cols: list[str],
    where: dict[str, Any],
    at_us: int | None,
) -> list[dict[str, Any]]:
    conds, params = [], []
    for c, v in where.items():
        if v is not None:
            conds.append(f"k.{c} = ?")
            params.append(v)
    if at_us is None:
        # Now: exactly the keys open now.
        cand = "SELECT key_id FROM bf_open WHERE kind = ?"
        cand_params: list[Any] = [kind]
        at_us = _FAR_FUTURE
    else:
        cand, cand_params = alive_keys_sql(kind, at_us)
    conds.append(f"k.key_id IN ({cand})")
    params.extend(cand_params)
    sql = (
        f"SELECT {', '.join('k.' + c for c in cols)}, (SELECT h.balance FROM {hist} h"
        " WHERE h.key_id = k.key_id AND h.at_us <= ?"
        " ORDER BY h.at_us DESC, h.seq DESC, h.n DESC LIMIT 1) AS qty"
        f" FROM {keys_table} k WHERE " + " AND ".join(conds)
    )
    with ledger.transaction(commit=False) as cur:
        rows = cur.execute(sql, [at_us, *params]).fetchall()
    out = []
    for r in rows:
        if r["qty"] is None:
            continue
        q = Decimal(r["qty"])
        if q != 0:
            d = {c: r[c] for c in cols}
            d["qty"] = q
            out.append(d)
    return out


def alive_keys_sql(kind: str, at_us: int) -> tuple[str, list[Any]]:
    """SQL (and parameters) selecting the key ids of ``kind`` that may be non-zero at ``at_us``."""
    bucket = at_us // BUCKET_US
    return (
        "SELECT key_id FROM bf_alive WHERE kind = ? AND bucket = ?"
        " UNION SELECT key_id FROM bf_open WHERE kind = ? AND from_bucket <= ?",
        [kind, bucket, kind, bucket],
    )


def onhand_asof(
    ledger: Ledger, at_us: int | None, item: str | None = None, location: str | None = None
) -> list[dict[str, Any]]:
    """On-hand per item/location/batch/lp as of ``at_us`` (None = everything)."""
    rows = _latest(
        ledger,
        "onhand",
        "bf_onhand_keys",
        "bf_onhand_hist",
        ["item", "location", "batch", "lp"],
        {"item": item, "location": location},
        at_us,
    )
    rows.sort(key=lambda r: (r["item"], r["location"], r["batch"] or "", r["lp"] or ""))
    return rows


def wip_asof(
    ledger: Ledger, at_us: int | None, resource: str | None = None
) -> list[dict[str, Any]]:
    """WIP per resource location as of ``at_us`` (None = everything)."""
    rows = _latest(
        ledger,
        "wip",
        "bf_wip_keys",
        "bf_wip_hist",
        ["resource", "location", "kind", "ord", "op", "item", "batch"],
        {"resource": resource},
        at_us,
    )
    for r in rows:
        r["order"] = r.pop("ord")
    rows.sort(
        key=lambda r: (
            r["resource"] or "", r["location"] or "", r["kind"], r["order"] or "",
            r["op"] or 0, r["item"] or "", r["batch"] or "",
        )
    )
    return [
        {k: r[k] for k in ("resource", "location", "kind", "order", "op", "item", "batch", "qty")}
        for r in rows
    ]


def flushes_of(ledger: Ledger, order: str, at_us: int | None = None) -> list[dict[str, Any]]:
    """The consumption postings of one order (as of ``at_us``), in apply order."""
    with ledger.transaction(commit=False) as cur:
        rows = cur.execute(
            "SELECT * FROM bf_flushes WHERE ord = ? AND at_us <= ? ORDER BY at_us, seq, n",
            (order, _FAR_FUTURE if at_us is None else at_us),
        ).fetchall()
    return [
        {
            "event_id": r["event_id"], "at_us": r["at_us"], "seq": r["seq"], "order": r["ord"],
            "line": r["line"], "item": r["item"], "trigger": r["trig"], "device": r["device"],
            "qty": Decimal(r["qty"]), "location": r["location"], "batch": r["batch"],
            "lp": r["lp"],
        }
        for r in rows
    ]


def needs_replay_for_known_at(ledger: Ledger, at_us: int, known_us: int) -> bool:
    """True when events recorded after ``known_us`` happened by ``at_us``.

    Only then does "what the ledger knew" differ from the materialised history at that
    time, and the question must be answered by a replay of what was known.
    """
    with ledger.transaction(commit=False) as cur:
        row = cur.execute(
            "SELECT 1 AS x FROM bf_events WHERE rec_us > ? AND at_us <= ? LIMIT 1",
            (known_us, at_us),
        ).fetchone()
    return row is not None
