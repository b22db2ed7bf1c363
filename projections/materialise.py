"""Projections materialised beside the events, kept up to date exactly once.

The replay engine (``projections.engine``) is pure; this module is its I/O edge. Catch-up
reads the events recorded since the tracked position, applies them in ``at`` order and
writes, in the same transaction as the new tracked position:

- ``bf_onhand_hist`` / ``bf_wip_hist``: for every on-hand or WIP key, its balance after
  each change, stamped with the ``at`` and seq of the event that changed it. "As of T" is
  then one index probe per key (the last row with ``at`` <= T), whatever the history
  length: never a replay per query;
  Staged WIP (material at a resource's input location) is on-hand there: it has no rows
  of its own, ``bf_staging`` keeps which locations stage for which resources since when;
- ``bf_flushes``: every consumption posting (what the audit shows per event);
- ``bf_proj``: the tracked position (``last_seq``), the engine version, and where an
  interrupted pass stopped (``resume``, see ``_keep``);
- ``bf_proj_ckpt``: checkpoints of the engine (its state after the event at a position
  ``(at_us, seq)``) as versioned data (``projections.snapshot``: JSON, never a pickle), one
  every ``CHECKPOINT_EVERY`` events of replay order, one every ``CHECKPOINT_NEAR_EVERY``
  within the last ``CHECKPOINT_NEAR_SPAN`` (where late events land), plus the head after
  the last event.

Catch-up is incremental and late-tolerant: events recorded since the tracked position are
applied from the latest checkpoint strictly before the earliest position they change (their
earliest ``at``; for a new Reversal, the event it undoes). An order with events after the
checkpoint that it no longer holds (retired after what was then its last event) is taken
back from a short replay of its own past, or, when many are, the checkpoint moves before
its last earlier event. What the events after that checkpoint wrote is deleted and written
again, so a late event costs what follows it, not the length of the history; in order
events simply continue from the head. A snapshot that cannot be read as this version's
data means a rebuild from the log, never a load.

On PostgreSQL a full rebuild loads into tables without their secondary indexes and without
the history tables' primary keys, and builds those once at the end, in the same transaction.

A long pass interrupted (Ctrl-C) keeps what it wrote up to its last kept checkpoint
(``_keep``): the next catch-up continues from there, as from any checkpoint, instead of
replaying from where the interrupted pass began.

A pass (``_Run``) is a producer (read the pages, apply them, drain the engine's change log
as plain data: ``changelog.changes``, ``encode_engine``) and a consumer (key ids, rows, checkpoints,
in the write transaction). A long one runs the producer in a worker process on the other
core (``projections.pipeline``); the rows and checkpoints are the same either way.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from decimal import Decimal, localcontext
from itertools import chain
from operator import itemgetter

from backflush.ledger.bloom import Bloom
from backflush.ledger.store import Cursor, Ledger
from backflush.projections.common import ARITHMETIC, sort_wip, staged_rows
from backflush.projections.rules import ZERO

TYPE_CHECKING = False  # not typing's: a query process never imports typing (~3 ms)
if TYPE_CHECKING:  # the engine (and pydantic under it) loads only when a replay runs
    from typing import Any

    from backflush.projections.engine import Replay

if TYPE_CHECKING:  # the engine (and pydantic under it) loads only when a replay runs
    from backflush.projections.engine import Replay

# Bump when the engine's rules or its state's shape change: stored projections rebuild.
# 7: snapshots as data (``projections.snapshot``) and checkpoints; no pickle is ever read.
# 8: staged WIP derived from on-hand and bf_staging, no history rows of its own.
# 9: bf_unresolved. 10: bf_negative. 11: bf_residual.
# 12: a BOM line's flush records (``units``, ``by_trigger``, ...) made at its first flush.
# 13: an order's operation counters, put tables and ``consumed_at`` made at first use.
ENGINE_VERSION = "13"
# Events applied from which PostgreSQL's planner statistics are refreshed (Ledger.analyze).
ANALYZE_AFTER = 10_000
PROJECTION_TABLES = ("bf_onhand_keys", "bf_onhand_hist", "bf_wip_keys", "bf_wip_hist",
                     "bf_flushes", "bf_unresolved", "bf_negative", "bf_residual", "bf_staging",
                     "bf_open", "bf_alive", "bf_proj_ckpt")
CHECKPOINT_EVERY = 10_000  # events of replay order between two kept checkpoints (each ~10 ms)
# Late events are late by hours, so they land near the head: within the last NEAR_SPAN events
# a checkpoint is kept every NEAR_EVERY events, and a late import replays about NEAR_EVERY/2
# events before its earliest change instead of CHECKPOINT_EVERY/2. Once the head has moved on,
# the dense ones are thinned back to one per CHECKPOINT_EVERY (``_thin_checkpoints``).
CHECKPOINT_NEAR_EVERY = 1_000
CHECKPOINT_NEAR_SPAN = 20_000
# And, once the last checkpoint's state was at least CHECKPOINT_LARGE_BYTES (as JSON), never
# closer than one event per CHECKPOINT_BYTES_PER_EVENT of it. Encoding and writing one cost
# ~50 ns a byte, and a state can grow with the history: one order of 200k reports keeps its
# event ids, 2.2 MB (~50 ms a checkpoint), or 21 MB with an out-of-sequence record for
# each (~0.8 s; its rebuild spent 30 of 34 s taking 40 of them). Spaced in proportion,
# checkpoints stay about a quarter of a pass at most (geometrically spaced as the state
# grows). A plant's usual state (~60 kB at 1M events, ~1.5 ms) keeps the spacing above,
# and late events near the head their short replays.
CHECKPOINT_LARGE_BYTES = 200_000
CHECKPOINT_BYTES_PER_EVENT = 100
# Keys whose ids the writer holds before it forgets the closed ones (``_Writer``): ~25 MB.
KEY_CACHE = 100_000
# The filter of the keys a fresh pass forgot: 2^25 bits, a false "maybe" (a look-up) for
# one new key in ~17,000 at 3M events (~440k forgotten), one in ~30 at 30M.
FORGOTTEN_BYTES = 1 << 22
# Taking a retired order back (``_revive``) restores a checkpoint and replays up to a span
# of events: counted as this many events more, against replaying everything since it.
REVIVE_COST = 2_000

DDL = [
    "CREATE TABLE IF NOT EXISTS bf_proj (k TEXT PRIMARY KEY, v TEXT)",
    "CREATE TABLE IF NOT EXISTS bf_proj_blob (k TEXT PRIMARY KEY, v BYTEA)",
    """CREATE TABLE IF NOT EXISTS bf_proj_ckpt (
        at_us BIGINT NOT NULL, seq BIGINT NOT NULL, n BIGINT NOT NULL, head INTEGER NOT NULL,
        v BYTEA NOT NULL, PRIMARY KEY (at_us, seq))""",
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
    # Which locations stage material for which resources, from the event that changed it:
    # staged WIP is on-hand there (no history rows of its own).
    # Takes of a batch-tracked item with no batch to take (UNRESOLVED_BATCH of one order
    # without a global replay; a reversed event's rows are left out by the reader).
    """CREATE TABLE IF NOT EXISTS bf_unresolved (
        event_id TEXT NOT NULL, at_us BIGINT NOT NULL, seq BIGINT NOT NULL, n INTEGER NOT NULL,
        ord TEXT NOT NULL, line INTEGER, item TEXT NOT NULL, location TEXT NOT NULL,
        qty TEXT NOT NULL, PRIMARY KEY (seq, n))""",
    "CREATE INDEX IF NOT EXISTS bf_unresolved_ord ON bf_unresolved (ord, at_us, seq)",
    # The engine's negative on-hand records (NEGATIVE_ON_HAND of one order without a global
    # replay: as the engine decided it, whatever its rules for which takes count).
    """CREATE TABLE IF NOT EXISTS bf_negative (
        event_id TEXT NOT NULL, at_us BIGINT NOT NULL, seq BIGINT NOT NULL, n INTEGER NOT NULL,
        ord TEXT, item TEXT NOT NULL, location TEXT NOT NULL, batch TEXT, lp TEXT,
        balance TEXT NOT NULL, PRIMARY KEY (seq, n))""",
    "CREATE INDEX IF NOT EXISTS bf_negative_ord ON bf_negative (ord, at_us, seq)",
    # What an OrderEnded found still at the input, as the global replay computed it.
    """CREATE TABLE IF NOT EXISTS bf_residual (
        event_id TEXT NOT NULL, at_us BIGINT NOT NULL, seq BIGINT NOT NULL, n INTEGER NOT NULL,
        ord TEXT NOT NULL, item TEXT NOT NULL, location TEXT NOT NULL, batch TEXT,
        qty TEXT NOT NULL, put_events TEXT NOT NULL, PRIMARY KEY (seq, n))""",
    "CREATE INDEX IF NOT EXISTS bf_residual_ord ON bf_residual (ord, at_us, seq)",
    """CREATE TABLE IF NOT EXISTS bf_staging (
        at_us BIGINT NOT NULL, seq BIGINT NOT NULL, map TEXT NOT NULL,
        PRIMARY KEY (at_us, seq))""",
    # Which events some Reversal undoes is asked before every replay: without this (small:
    # reversals are rare) index that is a scan of every stored event, states included.
    "CREATE INDEX IF NOT EXISTS bf_events_reversal ON bf_events (seq) WHERE type = 'Reversal'",
    # What one event did to on-hand (the audit asks it per event of an order).
    "CREATE INDEX IF NOT EXISTS bf_onhand_hist_seq ON bf_onhand_hist (seq)",
    # Whole key: a catch-up looks keys up one by one (an item at a location has many batches).
    "DROP INDEX IF EXISTS bf_onhand_keys_item",
    "CREATE INDEX IF NOT EXISTS bf_onhand_keys_key ON bf_onhand_keys (item, location, batch, lp)",
    "CREATE INDEX IF NOT EXISTS bf_wip_keys_ord ON bf_wip_keys (ord, op)",
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
    "bf_alive", "bf_staging", "bf_unresolved", "bf_negative", "bf_residual",
]
# The secondary indexes of the projection tables: a full rebuild on PostgreSQL drops them,
# loads the rows and builds them once at the end (a sort), instead of row by row.
# The keys' own indexes stay: a writer that forgot closed keys looks the returning ones up
# by them (``_Writer._prefetch``), and they take one row per key, not per change.
_BULK_INDEXES = [
    d for d in DDL if d.startswith("CREATE INDEX") and " ON bf_events " not in d
    and " ON bf_onhand_keys " not in d and " ON bf_wip_keys " not in d
]
# On PostgreSQL the primary keys of the big history tables go too (a b-tree insert per row,
# in key order across the whole table, was most of their COPY), and come back the same way.
# (SQLite cannot drop them: those tables are WITHOUT ROWID, the key is the table.)
_PG_BULK_KEYS = {
    "bf_onhand_hist": "key_id, at_us, seq, n",
    "bf_wip_hist": "key_id, at_us, seq, n",
    "bf_alive": "kind, bucket, key_id",
}
BUCKET_US = 86_400 * 1_000_000  # one day
_NEVER = -(2**62)  # before any event
# Events read per page; the history rows are written once per page (and at each checkpoint,
# every CHECKPOINT_EVERY events). Pages of 10,000 (the checkpoint spacing) halved the sweeps
# over the history tables' b-trees (~3-10% less rebuild time at 200k) but cost ~12 MB: at 1M
# events `import` (ingest, then this catch-up, in one process) peaked at 151-155 MB against
# the 150 MB limit, 141 MB with 5,000, and the rebuild time at 1M did not move measurably.
PAGE = 5_000
GC_EVERY = 200_000  # events between two sweeps of the cyclic collector during a pass


def _blob_type(ledger: Ledger, sql: str) -> str:
    if ledger.dialect != "sqlite":
        return sql.replace(" WITHOUT ROWID", "")
    # On SQLite a composite primary key is otherwise a second b-tree beside the rows:
    # WITHOUT ROWID keeps one, halving the writes of the history tables.
    return sql.replace("BYTEA", "BLOB")


def create_tables(ledger: Ledger) -> None:
    """Run the projection DDL (each statement is idempotent)."""
    # Under the write lock, as every other writer. Without it, on PostgreSQL, this locked
    # the projection tables (each CREATE INDEX IF NOT EXISTS takes its table's lock) and
    # then waited for bf_events (the index of Reversals), while a second import catching up
    # held bf_events (the write lock) and waited to TRUNCATE those tables: a deadlock.
    with ledger.writing() as cur:
        for ddl in DDL:
            cur.execute(_blob_type(ledger, ddl))


def _get(cur: Cursor, k: str) -> str | None:
    row = cur.execute("SELECT v FROM bf_proj WHERE k = ?", (k,)).fetchone()
    return None if row is None else row["v"]


def _put(cur: Cursor, k: str, v: str) -> None:
    cur.execute("DELETE FROM bf_proj WHERE k = ?", (k,))
    cur.execute("INSERT INTO bf_proj (k, v) VALUES (?, ?)", (k, v))


_KEY_COLS = {
    "bf_onhand_keys": ("item", "location", "batch", "lp"),
    "bf_wip_keys": ("resource", "location", "kind", "ord", "op", "item", "batch"),
}
# The indexed columns a batch of key look-ups joins on (positions in ``_KEY_COLS``).
_KEY_PREFIX = {"bf_onhand_keys": (0, 1), "bf_wip_keys": (3, 4)}


class _Writer:
    """Turns the engine's change log into rows, batched per transaction."""

    def __init__(self, cur: Cursor, fresh: bool = False,
                 open_keys: list | None = None):
        self.cur = cur
        # Key ids are looked up when first met (an incremental catch-up touches few keys of
        # a long history); ``fresh`` (a rebuild on emptied tables) knows there are none.
        self.fresh = fresh
        # Key -> id of the keys met, closed ones forgotten once there are more than
        # ``keep_keys`` (``_forget_closed``): a plant's keys grow with its history (a batch
        # per receipt, WIP keys per order), ~230 bytes each in memory, 125 MB at 3M events.
        self.onhand_ids: dict[tuple, int] = {}
        self.wip_ids: dict[tuple, int] = {}
        self.keep_keys = KEY_CACHE
        # A fresh pass's forgotten keys (None until it forgets some): a key not in the maps
        # and surely not in here is new, with no look-up (those that are not: ``_stored``).
        self.forgotten: Bloom | None = None
        self.next_id = {
            t: cur.execute(f"SELECT COALESCE(MAX(key_id), 0) AS m FROM {t}").fetchone()["m"] + 1
            for t in _KEY_COLS
        }
        self.new_keys: dict[tuple[str, int], list[tuple]] = {}
        # Keys open (non-zero) now and since which day bucket: kept in memory during a pass
        # (and in checkpoints), written to bf_open once at its end (``write_open``). Keyed
        # by a signed id (on-hand ``kid``, WIP ``-kid``; ids start at 1): no tuple per change.
        self.open_from: dict[int, int] = {
            (kid if k == "onhand" else -kid): b for k, kid, b in (open_keys or ())
        }
        # The last day bucket listed in bf_alive for a key, while it may be listed again:
        # a key that closed on day d and opened again that same day starts its next range
        # at d + 1. Events come in time order, so once the day moves on only such keys
        # (open since the day they were last listed) are kept: memory follows one day.
        self.listed: dict[int, int] = {}  # by signed id, as ``open_from``
        self.listed_bucket = _NEVER

    def _stored(self, key: tuple) -> bool:
        """Whether ``key`` may have an id in its table already (else it surely has none)."""
        return not self.fresh or (self.forgotten is not None and key in self.forgotten)

    def _forget_closed(self) -> None:
        """Forget the ids of the keys closed now (zero balance): most never change again
        (an emptied batch, an ended order's WIP), and one that does is looked up (the keys
        table has it). The open ones stay: they are the plant's state, not its history."""
        open_from = self.open_from
        if self.fresh and self.forgotten is None:
            self.forgotten = Bloom(FORGOTTEN_BYTES)
        maps = []
        for ids, sign in ((self.onhand_ids, 1), (self.wip_ids, -1)):
            kept = {k: kid for k, kid in ids.items() if sign * kid in open_from}
            if self.forgotten is not None:
                self.forgotten.add([k for k in ids if k not in kept])
            maps.append(kept)  # a new dict: one that had entries deleted keeps its size
        self.onhand_ids, self.wip_ids = maps
        # Twice what stays: a plant with more open keys than that does not forget at every
        # batch for nothing.
        self.keep_keys = max(KEY_CACHE, 2 * (len(maps[0]) + len(maps[1])))

    def _key_id(self, ids: dict[tuple, int], table: str, key: tuple, width: int) -> int:
        kid = ids.get(key)
        if kid is None:
            if self._stored(key):
                cols = _KEY_COLS[table]
                conds = [f"{c} = ?" if v is not None else f"{c} IS NULL"
                         for c, v in zip(cols, key, strict=True)]
                row = self.cur.execute(
                    f"SELECT key_id FROM {table} WHERE " + " AND ".join(conds),
                    [v for v in key if v is not None],
                ).fetchone()
                kid = None if row is None else row["key_id"]
            if kid is None:
                kid = self.next_id[table]
                self.next_id[table] = kid + 1
                self.new_keys.setdefault((table, width), []).append((kid, *key))
            ids[key] = kid
        return kid

    def _prefetch(self, bal: list[tuple]) -> None:
        """Look up, a few statements per batch, the stored ids of the keys this batch
        touches for the first time (one statement per key was a round trip each)."""
        # In the order first met, so that new keys are numbered as one by one (dicts).
        want: dict[str, dict[tuple, None]] = {"bf_onhand_keys": {}, "bf_wip_keys": {}}
        onhand_ids, wip_ids = self.onhand_ids, self.wip_ids
        stored = self._stored
        for kind, key, *_ in bal:
            if kind == "onhand":
                if key not in onhand_ids and stored(key):
                    want["bf_onhand_keys"][key] = None
            elif key not in wip_ids and stored(key):
                want["bf_wip_keys"][key] = None
        for table, keys in want.items():
            ids = onhand_ids if table == "bf_onhand_keys" else wip_ids
            cols = _KEY_COLS[table]
            a, b = _KEY_PREFIX[table]
            # One statement per pattern of null columns, every column matched by the index:
            # ``= v.c`` where the keys have a value, ``IS NULL`` where they have none. An
            # ``(= OR both NULL)`` match used only the indexed prefix, so each key looked up
            # walked every key of its (item, location), thousands of batches in a plant's
            # ledger: a catch-up of 570k events at 1M spent 12 s here.
            by_nulls: dict[tuple[bool, ...], list[tuple]] = {}
            for k in keys:
                if k[a] is not None and k[b] is not None:
                    by_nulls.setdefault(tuple(v is None for v in k), []).append(k)
            for nulls, group in sorted(by_nulls.items()):
                group.sort(key=repr)
                given = [j for j, null in enumerate(nulls) if not null]
                names = [f"c{j}" for j in given]
                match = " AND ".join(
                    f"t.{cols[j]} IS NULL" if null else f"t.{cols[j]} = v.c{j}"
                    for j, null in enumerate(nulls))
                row_marks = "(" + ", ".join("?" * len(given)) + ")"
                per = 999 // len(given)  # variables per statement: any SQLite build takes 999
                for i in range(0, len(group), per):
                    chunk = group[i:i + per]
                    rows = self.cur.execute(
                        f"WITH v({', '.join(names)}) AS (VALUES "
                        + ",".join([row_marks] * len(chunk)) + ")"
                        f" SELECT t.key_id, {', '.join('t.' + c for c in cols)}"
                        f" FROM {table} t JOIN v ON {match}",
                        [k[j] for k in chunk for j in given],
                    ).fetchall()
                    for r in rows:
                        k = tuple(r[c] for c in cols)
                        if k in keys:
                            ids[k] = r["key_id"]
            width = len(cols)
            for k in keys:  # not stored (a null prefix is looked up one by one instead)
                if k not in ids and k[a] is not None and k[b] is not None:
                    kid = ids[k] = self.next_id[table]
                    self.next_id[table] = kid + 1
                    self.new_keys.setdefault((table, width), []).append((kid, *k))

    def _flush_keys(self) -> None:
        for (table, width), rows in self.new_keys.items():
            marks = ",".join("?" * (width + 1))
            self._insert(table, rows, marks)
        self.new_keys.clear()

    def _insert(self, table: str, rows: list[tuple], marks: str, plain: bool = False) -> None:
        """Append rows to a table: executemany, or COPY on PostgreSQL, where a pipelined
        INSERT per row costs several times the row itself. ``plain``: every value is an
        integer or a text that needs no escaping (a decimal, a kind), so the COPY text is
        formatted here at once instead of value by value."""
        if not rows:
            return
        if self.cur.dialect == "postgres" and len(rows) > 20:
            with self.cur.raw.copy(f"COPY {table} FROM STDIN") as copy:
                if plain:
                    line = "\t".join(["%s"] * len(rows[0])) + "\n"
                    copy.write("".join([line % r for r in rows]).encode())
                    return
                for r in rows:
                    copy.write_row(r)
            return
        # SQLite: many rows per statement (one parse, cached; one step per statement)
        # instead of a bind-step-reset round per row; the remainder row by row. At most
        # 999 variables per statement: any SQLite build takes that many.
        per = max(1, 999 // len(rows[0]))
        full = len(rows) - len(rows) % per
        if full:
            sql = f"INSERT INTO {table} VALUES " + ",".join([f"({marks})"] * per)
            raw = self.cur.raw
            for i in range(0, full, per):
                raw.execute(sql, list(chain.from_iterable(rows[i:i + per])))
        self.cur.executemany(f"INSERT INTO {table} VALUES ({marks})", rows[full:])

    def open_keys(self) -> list[tuple[str, int, int]]:
        """The keys open now as (kind, key id, since bucket), sorted."""
        return sorted(("onhand", ok, b) if ok > 0 else ("wip", -ok, b)
                      for ok, b in self.open_from.items())

    def write_open(self) -> None:
        """bf_open as the pass leaves it (the keys open now)."""
        self.cur.execute("DELETE FROM bf_open")
        self.cur.executemany("INSERT INTO bf_open VALUES (?,?,?)", self.open_keys())

    def write_changes(self, ch: tuple) -> None:
        """Write a change log taken by ``changes``: key ids, history rows, bf_alive (and the
        keys open in memory), then the other tables' rows as they come."""
        bal, ats, flushes, staging, unresolved, negative, residual = ch
        onhand, wip = [], []
        onhand_ids, wip_ids = self.onhand_ids, self.wip_ids
        key_id = self._key_id
        n = 0
        last_seq, at_us = None, 0
        # Changes come grouped by event: number them within an event, and look each event's
        # time up once, not once per change.
        open_from = self.open_from
        alive: list[tuple[str, int, int]] = []
        listed, bucket = self.listed, self.listed_bucket
        if not self.fresh or self.forgotten is not None:
            self._prefetch(bal)
        for kind, key, balance, seq, zero in bal:
            if seq != last_seq:
                last_seq, n = seq, 0
                at_us = ats[seq]
                if at_us // BUCKET_US > bucket:
                    bucket = at_us // BUCKET_US
                    if listed:
                        listed = {k: u for k, u in listed.items() if open_from.get(k) == u}
            else:
                n += 1
            if kind == "onhand":
                ok = kid = onhand_ids.get(key) or key_id(onhand_ids, "bf_onhand_keys", key, 4)
                onhand.append((kid, at_us, seq, n, balance))
            else:
                kid = wip_ids.get(key) or key_id(wip_ids, "bf_wip_keys", key, 7)
                wip.append((kid, at_us, seq, n, balance))
                ok = -kid
            if not zero:
                if ok not in open_from:
                    open_from[ok] = bucket
            else:
                start = open_from.pop(ok, None)
                if start is not None:
                    upto = listed.get(ok)
                    if upto is not None and upto >= start:
                        start = upto + 1
                    if start == bucket:
                        alive.append((kind, bucket, kid))
                    else:
                        alive.extend((kind, b, kid) for b in range(start, bucket + 1))
                    listed[ok] = bucket
        self.listed, self.listed_bucket = listed, bucket
        self._flush_keys()
        if len(onhand_ids) + len(wip_ids) > self.keep_keys:
            self._forget_closed()  # (after _flush_keys: every key forgotten is in its table)
        # In primary-key order: one pass down the b-tree instead of a random walk. Rows are
        # made in (at_us, seq, n) order, so a stable sort on the key id alone is enough.
        by_key = itemgetter(0)
        onhand.sort(key=by_key)
        wip.sort(key=by_key)
        self._insert("bf_onhand_hist", onhand, "?,?,?,?,?", plain=True)
        self._insert("bf_wip_hist", wip, "?,?,?,?,?", plain=True)
        alive.sort()
        if self.fresh:  # nothing written before this pass: no row can already be there
            self._insert("bf_alive", alive, "?,?,?", plain=True)
        else:
            self.cur.executemany(
                "INSERT INTO bf_alive VALUES (?,?,?) ON CONFLICT DO NOTHING", alive)
        self._insert("bf_flushes", flushes, "?,?,?,?,?,?,?,?,?,?,?,?,?")
        self.cur.executemany("INSERT INTO bf_staging VALUES (?,?,?)", staging)
        self._insert("bf_unresolved", unresolved, "?,?,?,?,?,?,?,?,?")
        self._insert("bf_negative", negative, "?,?,?,?,?,?,?,?,?,?")
        self._insert("bf_residual", residual, "?,?,?,?,?,?,?,?,?,?")


def events_for_replay(ledger: Ledger, *, light: bool = False,
                      **filters: Any) -> Iterator[dict[str, Any]]:
    """Stored events as the engine wants them, in (at, seq) order, streamed.

    ``light``: few events (one order's), decoded by the standard library's parser (the same
    values), so that a short query process does not import orjson (which loads
    dataclasses, inspect and uuid: ~10 ms).
    """
    from backflush.ledger.codec import replay_decoder, replay_dict

    if not light:  # the replay pass's own reads and decoder (``read_pages``, ``_Run.replay``)
        decode = replay_decoder()
        for seq, _at_us, state in ledger.iter_rows(by="at", replay=True, **filters):
            yield decode(state, seq)
        return
    from backflush.ledger.codec import payload_of, unreadable

    loads = _light_loads
    for seq, _at_us, state in ledger.iter_rows(by="at", replay=True, **filters):
        try:
            ev = replay_dict(payload_of(state, seq, loads), seq)
        except (ValueError, KeyError, TypeError, AttributeError):  # as replay_decoder does
            raise unreadable(seq) from None
        yield ev


def _orjson_loads() -> Callable[[Any], Any]:
    import orjson

    return orjson.loads


def _light_loads(text: Any) -> Any:
    """``orjson.loads`` by the standard library (which takes no memoryview).

    By ``json``'s own C scanner, without the ``json`` package: that imports ``re`` (with
    ``enum``, ~3 ms of a 30 ms order query). Anything the scanner does not take whole (a
    text with surrounding blanks, not UTF-8, not JSON) goes to ``json.loads``, so the
    values and the errors are always ``json.loads``'s.
    """
    raw = bytes(text) if isinstance(text, memoryview) else text
    scan = _scanner()
    if scan is not None:
        try:
            s = raw if isinstance(raw, str) else raw.decode()
            value, end = scan(s, 0)
            if end == len(s):
                return value
        except (StopIteration, UnicodeDecodeError):
            pass
    import json

    return json.loads(raw)


_SCANNER: list[Any] = []


def _scanner() -> Callable[[str, int], tuple[Any, int]] | None:
    """``json``'s C scanner with ``json.loads``'s defaults, or None without it."""
    if not _SCANNER:
        try:
            from _json import make_scanner
        except ImportError:
            _SCANNER.append(None)
        else:
            class Defaults:  # what the scanner reads of a decoder: JSONDecoder()'s
                strict = True
                object_hook = object_pairs_hook = None
                parse_float, parse_int = float, int
                parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"),
                                  "NaN": float("nan")}.__getitem__

            _SCANNER.append(make_scanner(Defaults()))
    return _SCANNER[0]


def _reversal_targets(cur: Cursor) -> set[str]:
    """Ids of the events some Reversal undoes: the only ones whose effects must be kept."""
    rows = cur.execute(
        "SELECT s.state FROM bf_events i JOIN stored_events s ON "
        + ("s.rowid" if cur.dialect == "sqlite" else "s.notification_id")
        + " = i.seq WHERE i.type = 'Reversal'"
    ).fetchall()
    loads = _orjson_loads()
    return {loads(r["state"])["e"]["reverses"] for r in rows}


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


def _reversal_targets_after(cur: Cursor, last: int) -> list[str]:
    """Ids reversed by the Reversals recorded after seq ``last``."""
    rows = cur.execute(
        "SELECT s.state FROM bf_events i JOIN stored_events s ON "
        + ("s.rowid" if cur.dialect == "sqlite" else "s.notification_id")
        + " = i.seq WHERE i.type = 'Reversal' AND i.seq > ?",
        (last,),
    ).fetchall()
    loads = _orjson_loads()
    return [loads(r["state"])["e"]["reverses"] for r in rows]


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


# --- checkpoints ----------------------------------------------------------------------------
#
# A checkpoint is the engine's state after the event at position (at_us, seq), as data
# (``projections.snapshot``), with the set of on-hand/WIP keys open then (``bf_open``). One is
# kept every CHECKPOINT_EVERY events of replay order, plus the head (after the last event
# applied), replaced at every catch-up. Orders whose last event is before a checkpoint's
# ``at`` are retired in it (their state is final and already materialised): a checkpoint at
# position P holds order O iff O was created by P and O's last event is at or after P's at.


def encode_engine(engine: Replay) -> tuple[bytes, int, int]:
    """The engine's part of a checkpoint, encoded (``snapshot.encode_part_compressed``):
    its JSON compressed as it is written, made where the engine lives (a replay worker) and
    joined by ``_save_checkpoint``; with the next free object number and the JSON's size."""
    from backflush.projections import snapshot
    return snapshot.encode_part_compressed(engine.state(), 1)


def _save_checkpoint(cur: Cursor, encoded: tuple[bytes, int], writer: _Writer,
                     pos: tuple[int, int], count: int, head: bool) -> None:
    """Store a checkpoint: the engine's state (``encode_engine``) and the keys open then.

    The document is the one ``snapshot.dumps({"engine": ..., "open": ...})`` writes."""
    from backflush.projections import snapshot

    if head and cur.execute(
        "SELECT 1 AS x FROM bf_proj_ckpt WHERE at_us = ? AND seq = ?", pos
    ).fetchone() is not None:
        return  # a kept checkpoint was taken after this very event: it is the head
    engine_part, nxt = encoded
    open_json, _ = snapshot.encode_part_json([list(k) for k in writer.open_keys()], nxt)
    blob = snapshot.dumps_parts(
        [("engine", engine_part if type(engine_part) is snapshot.Compressed
          else snapshot.Compressed(engine_part)), ("open", open_json)], ENGINE_VERSION)
    # Any earlier head is superseded (it is before this one and closer than the spacing).
    cur.execute("DELETE FROM bf_proj_ckpt WHERE head = 1")
    cur.execute(
        "INSERT INTO bf_proj_ckpt (at_us, seq, n, head, v) VALUES (?, ?, ?, ?, ?)",
        (pos[0], pos[1], count, 1 if head else 0, blob),
    )


def _thin_checkpoints(cur: Cursor, before: int) -> None:
    """Keep one checkpoint per CHECKPOINT_EVERY events (the first of each span) among those
    taken before count ``before``: the dense ones near an older head are not needed any more."""
    every = int(CHECKPOINT_EVERY)
    cur.execute(
        "DELETE FROM bf_proj_ckpt WHERE head = 0 AND n < ? AND n > (SELECT MIN(c.n) FROM"
        f" bf_proj_ckpt c WHERE c.head = 0 AND c.n / {every} = bf_proj_ckpt.n / {every})",
        (before,),
    )


def _checkpoint_before(cur: Cursor, bound: tuple[int, int]) -> Any:
    """The latest checkpoint strictly before position ``bound`` (a row, or None)."""
    return cur.execute(
        "SELECT at_us, seq, n, head, v FROM bf_proj_ckpt WHERE (at_us, seq) < (?, ?)"
        " ORDER BY at_us DESC, seq DESC LIMIT 1",
        (bound[0], bound[1]),
    ).fetchone()


class _Run:
    """One replay pass: events after a position, applied and written, checkpoints taken.

    The pass is a producer (read pages, apply them, say what changed: ``replay``) and a
    consumer (write it: ``changes``, ``checkpoint``, ``page``). ``run`` does both in this
    process; ``projections.pipeline`` runs the producer in a worker process beside it."""

    def __init__(self, ledger: Ledger, cur: Cursor, engine: Replay, writer: _Writer,
                 start: tuple[int, int], count: int, last_spaced: int,
                 retire: list[tuple[int, str]], total: int):
        self.ledger, self.cur, self.engine, self.writer = ledger, cur, engine, writer
        self.pos, self.count, self.last_spaced, self.retire = start, count, last_spaced, retire
        self.last_seq = 0
        # From which count on checkpoints are dense (``total``: about the count at the end).
        self.near_from = total - CHECKPOINT_NEAR_SPAN
        self.events = total - count  # about how many events this pass replays
        self.progress: Callable[[int], None] | None = None
        # The position of the last kept (spaced) checkpoint this pass wrote: everything up
        # to it is written, so an interrupted pass can stop there (``_keep``).
        self.kept: tuple[int, int] | None = None

    def _retire_before(self, at_us: int) -> None:
        retire, engine = self.retire, self.engine
        while retire and retire[-1][0] < at_us:
            engine.retire(retire.pop()[1])

    # --- the consumer: what the producer says, written in this transaction --------------

    def changes(self, ch: tuple) -> None:
        self.writer.write_changes(ch)

    def checkpoint(self, pos: tuple[int, int], count: int, head: bool,
                   encoded: tuple[bytes, int]) -> None:
        _save_checkpoint(self.cur, encoded, self.writer, pos, count, head)
        if not head:
            self.last_spaced = count
            self.kept = pos

    def page(self, n: int, pos: tuple[int, int], count: int, last_seq: int) -> None:
        self.pos, self.count, self.last_seq = pos, count, last_seq
        if self.progress is not None:
            self.progress(n)

    # --- the producer ---------------------------------------------------------------------

    def _due(self, last: int, size: int = 0) -> int:
        """The count at which the checkpoint after the one at count ``last`` is due: the
        first count ``c`` with ``c - last`` at least CHECKPOINT_EVERY, or at least
        CHECKPOINT_NEAR_EVERY once ``c`` is within the last CHECKPOINT_NEAR_SPAN; and, for
        a large state, at least its ``size`` (bytes) / CHECKPOINT_BYTES_PER_EVENT."""
        every = CHECKPOINT_EVERY
        least = last + (size // CHECKPOINT_BYTES_PER_EVENT
                        if size >= CHECKPOINT_LARGE_BYTES else 0)
        if last + every < self.near_from:
            return max(last + every, least)
        return max(self.near_from, last + min(every, CHECKPOINT_NEAR_EVERY), least)

    def _emit_checkpoint(self, sink: Any, at_us_of: dict[int, int], head: bool) -> int:
        """Hand the changes so far and a checkpoint to ``sink``; returns the engine state's
        size in bytes of JSON."""
        from backflush.projections.changelog import changes

        sink.changes(changes(self.engine, at_us_of))
        self._retire_before(self.pos[0])
        part, nxt, size = encode_engine(self.engine)
        sink.checkpoint(self.pos, self.count, head, (part, nxt))
        return size

    def run(self, progress: Callable[[int], None] | None) -> int:
        """The pass in this process; returns the events applied."""
        self.progress = progress
        pages = read_pages(self.cur, self.pos)
        try:
            return self.replay(pages, self)
        finally:
            pages.close()  # now, not when collected (maybe after the connection closed)

    def replay(self, pages: Iterable[list[tuple]], sink: Any) -> int:
        """Apply the pages of events after ``pos`` (``read_pages``) and hand what changed to
        ``sink`` (``changes``/``checkpoint``/``page``, as this class does), the head
        checkpoint last; returns the events applied."""
        from backflush.ledger.codec import replay_decoder
        from backflush.projections.changelog import apply_rows, changes, page_times

        engine = self.engine
        decode = replay_decoder()
        apply = engine._apply  # noqa: SLF001  (one arithmetic context for the whole pass)
        n = 0
        count, last_seq = self.count, self.last_seq
        due = self._due(self.last_spaced)
        at_us_of: dict[int, int] = {}
        with localcontext(ARITHMETIC):
            for rows in pages:
                at_us_of = page_times(rows)
                i, page_len = 0, len(rows)
                while i < page_len:
                    # up to the next checkpoint due, at least one event
                    j = min(page_len, i + max(1, due - count))
                    apply_rows(apply, decode, rows, i, j)
                    count += j - i
                    i = j
                    if count >= due:
                        self.pos, self.count = (rows[j - 1][1], rows[j - 1][0]), count
                        state_size = self._emit_checkpoint(sink, at_us_of, head=False)
                        due = self._due(count, state_size)
                if rows:
                    self.pos = (rows[-1][1], rows[-1][0])
                    last_seq = max(last_seq, *at_us_of)
                self.count, self.last_seq = count, last_seq
                n += len(rows)
                sink.changes(changes(engine, at_us_of))
                self._retire_before(self.pos[0])
                if n // GC_EVERY != (n - len(rows)) // GC_EVERY:
                    # The collector is off during replay (see no_gc); retired orders hold
                    # reference cycles, so sweep them now and then to keep memory flat.
                    gc.collect()
                sink.page(n, self.pos, count, last_seq)
            self._emit_checkpoint(sink, at_us_of, head=True)
        return n


def read_pages(cur: Cursor, start: tuple[int, int]) -> Iterator[list[tuple]]:
    """The events after position ``start`` in replay order, ``PAGE`` at a time, as
    (seq, at_us, state) tuples; the last page is the first one shorter than ``PAGE``."""
    # Reads go through the writing transaction's own connection (on SQLite a second one
    # would not see rows it has not committed yet), on a cursor of plain tuples: a row per
    # event, looked up by name, was measurable.
    # A row value, not ``a > ? OR (a = ? AND s > ?)``: PostgreSQL turns that OR into a
    # filter over every earlier event, so each page cost more than the one before.
    pages_cur = _tuple_cursor(cur)
    mark = "%s" if cur.dialect == "postgres" else "?"
    sql = (
        "SELECT i.seq, i.at_us, i.state FROM bf_events i"
        f" WHERE (i.at_us, i.seq) > ({mark}, {mark}) ORDER BY i.at_us, i.seq LIMIT {PAGE}"
    )
    pos = start
    try:
        while True:
            pages_cur.execute(sql, pos)
            rows = pages_cur.fetchall()
            yield rows
            if len(rows) < PAGE:
                return
            pos = (rows[-1][1], rows[-1][0])
    finally:
        pages_cur.close()


def _replay(run: _Run, progress: Callable[[int], None] | None,
            rebuilt: Callable[[], None] | None = None) -> int:
    """Run the pass, in a worker process beside this one where that pays
    (``projections.pipeline``), else here. Interrupted (Ctrl-C) after a kept checkpoint,
    it keeps its progress (``_keep``; ``rebuilt``: what a rebuild must finish first) and
    raises ``_Kept``, for the caller to commit before the interruption goes on."""
    from backflush.projections import pipeline

    try:
        if pipeline.wanted(run.ledger, run.events):
            return pipeline.run(run, progress)
        return run.run(progress)
    except KeyboardInterrupt as exc:
        if run.kept is None or isinstance(exc, _Kept):
            raise
        try:
            if rebuilt is not None:
                rebuilt()
            _keep(run.cur, run.kept)
        except Exception:  # noqa: BLE001  (e.g. PostgreSQL's transaction aborted: roll back)
            raise exc from None
        raise _Kept(exc) from exc


class _Kept(KeyboardInterrupt):
    """A pass interrupted whose progress ``_keep`` wrote in the write transaction: the
    caller commits it, then raises the interruption (``interrupt``: Ctrl-C's, SIGTERM's)."""

    def __init__(self, interrupt: KeyboardInterrupt):
        super().__init__()
        self.interrupt = interrupt


def _keep(cur: Cursor, kept: tuple[int, int]) -> None:
    """Stop an interrupted pass at its last kept checkpoint ``kept``: delete what the
    events after it wrote, and say in ``resume`` where it stopped and up to which recorded
    position it was replaying. The projections are then exact for the events up to that
    position at or before ``kept``; ``catch_up`` continues from that checkpoint."""
    _rewind(cur, kept)
    # Under the write lock: every event recorded, those of an earlier ``resume`` included.
    recorded = cur.execute("SELECT MAX(seq) AS m FROM bf_events").fetchone()["m"] or 0
    _put(cur, "resume", f"{kept[0]},{kept[1]},{recorded}")
    _put(cur, "engine_version", ENGINE_VERSION)


def _resume(cur: Cursor) -> tuple[int, int, int] | None:
    """Where an interrupted pass stopped (its checkpoint's at_us and seq) and the last
    position it was replaying up to (``_keep``); None: no pass was left unfinished."""
    v = _get(cur, "resume")
    if v is None:
        return None
    at, seq, upto = (int(x) for x in v.split(","))
    return at, seq, upto


def _resumed_bound(cur: Cursor, last: int) -> tuple[int, int] | None:
    """``_bound`` for the events after seq ``last``, or, after an interrupted pass kept its
    progress (``_keep``), the position after its checkpoint or before the first event
    recorded since, whichever is first."""
    resume = _resume(cur)
    if resume is None:
        return _bound(cur, last)
    at, seq, upto = resume
    newer = _bound(cur, upto)
    after = (at, seq + 1)  # just after the checkpoint's own event: it is the one before
    return after if newer is None else min(after, newer)


def _tuple_cursor(cur: Cursor) -> Any:
    """A raw cursor of the same transaction whose rows are plain tuples (``Cursor.tuples``;
    on PostgreSQL the page reads took half the time at 200k events)."""
    return cur.tuples().raw


def rebuild(ledger: Ledger, progress: Callable[[int], None] | None = None) -> int:
    """Drop and rebuild every projection from the log; returns the events applied."""
    # A rebuild also brings the schema up to this version (new tables or indexes).
    create_tables(ledger)
    kept = None
    with no_gc(), ledger.writing() as cur:
        try:
            n = _rebuild(ledger, cur, progress)
        except _Kept as exc:
            kept = exc  # committed as it leaves: the next catch-up goes on from there
    if kept is not None:
        raise kept.interrupt
    ledger.analyze(PROJECTION_TABLES)  # fresh tables: no planner statistics yet (PostgreSQL)
    return n


def _rebuild(ledger: Ledger, cur: Cursor, progress: Callable[[int], None] | None) -> int:
    from backflush.projections.engine import Replay

    if cur.dialect == "postgres":
        # Transactional there, and it leaves no dead rows for the new ones to grow past.
        cur.execute("TRUNCATE " + ", ".join(TABLES))
    else:
        for t in TABLES:
            cur.execute(f"DELETE FROM {t}")
    cur.execute("DELETE FROM bf_proj")
    # Older versions kept a pickled engine here: dropped unread.
    cur.execute("DELETE FROM bf_proj_blob")
    cur.execute("DELETE FROM bf_proj_ckpt")
    # PostgreSQL only: on SQLite building them at the end measured no faster (the b-tree
    # inserts of a WITHOUT ROWID table dominate) and its sort took ~12 MB more memory.
    pg = cur.dialect == "postgres"
    for ddl in _BULK_INDEXES if pg else ():
        cur.execute("DROP INDEX IF EXISTS " + ddl.split()[5])
    if pg:
        for t in _PG_BULK_KEYS:
            cur.execute(f"ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {t}_pkey")
    engine = Replay(reversible=_reversal_targets(cur))
    # The event count, for where checkpoints turn dense: positions are given max+1 under the
    # write lock (the importer), so the highest is the count, read off the primary key;
    # a COUNT(*) read the whole table on PostgreSQL (~1 s at 200k events).
    total = cur.execute("SELECT MAX(seq) AS c FROM bf_events").fetchone()["c"] or 0
    run = _Run(ledger, cur, engine, _Writer(cur, fresh=True), (_NEVER, 0), 0, 0,
               _retirement_plan(cur), total)
    def rebuilt() -> None:
        for ddl in _BULK_INDEXES if pg else ():
            cur.execute(ddl)
        if pg:
            for t, cols in _PG_BULK_KEYS.items():
                cur.execute(f"ALTER TABLE {t} ADD PRIMARY KEY ({cols})")

    n = _replay(run, progress, rebuilt)
    rebuilt()
    _finish(cur, run)
    return n


def _finish(cur: Cursor, run: _Run) -> None:
    _thin_checkpoints(cur, run.count - CHECKPOINT_NEAR_SPAN)
    run.writer.write_open()
    _put(cur, "engine_version", ENGINE_VERSION)
    last = max(run.last_seq, int(_get(cur, "last_seq") or 0))
    resume = _resume(cur)
    if resume is not None:  # an interrupted pass, now finished
        last = max(last, resume[2])
        cur.execute("DELETE FROM bf_proj WHERE k = 'resume'")
    _put(cur, "last_seq", str(last))


def _bound(cur: Cursor, last: int) -> tuple[int, int] | None:
    """The earliest position the events recorded after seq ``last`` change (None: none).

    A checkpoint strictly before it can be continued from: (a) every new event comes after
    it; (b) every event a new Reversal undoes comes after it, so that it is replayed with
    its undo information kept. Orders the checkpoint no longer holds are ``_start``'s.
    """
    far = 2**62
    row = cur.execute("SELECT MIN(at_us) AS a FROM bf_events WHERE seq > ?", (last,)).fetchone()
    if row["a"] is None:
        return None
    bound = (row["a"], far)
    targets = _reversal_targets_after(cur, last)
    for i in range(0, len(targets), 500):
        chunk = targets[i : i + 500]
        marks = ",".join("?" * len(chunk))
        for r in cur.execute(
            f"SELECT at_us, seq FROM bf_events WHERE id IN ({marks})", chunk
        ).fetchall():
            bound = min(bound, (r["at_us"], r["seq"]))
    return bound


def _start(cur: Cursor, bound: tuple[int, int], reversible: set[str]
           ) -> tuple[Any, dict[str, Any] | None, Replay | None]:
    """The checkpoint to continue from, its state and its engine, holding every order that
    has events on both sides of it (None, None, None: replay from the start).

    A checkpoint retires the orders whose last event, as recorded when it was taken, is
    before its ``at``. An event recorded since for such an order (a correction posted to
    an order that ended months ago) finds it gone: it is taken back from a short replay of
    its own past (``_revive``: a checkpoint span at most, nothing written), unless moving
    to the checkpoint before its last earlier event costs less (everything since, written
    again). A correction to an old order then costs what follows the correction, not the
    months, and the checkpoints between stay as they are: whoever continues from one of
    them takes the order back the same way.
    """
    from backflush.projections import snapshot
    from backflush.projections.engine import Replay

    ck = _checkpoint_before(cur, bound)
    while ck is not None:
        state = snapshot.loads(ck["v"], ENGINE_VERSION)
        engine = Replay.restore(state["engine"], reversible=reversible)
        gone = _gone(cur, engine, (ck["at_us"], ck["seq"]))
        if not gone:
            return ck, state, engine
        earlier = _checkpoint_before(cur, (gone[0][1], 2**62))
        skipped = ck["n"] - (earlier["n"] if earlier is not None else 0)
        if len(gone) * (int(CHECKPOINT_EVERY) + REVIVE_COST) < skipped:
            for order, at_us, seq in gone:
                _revive(cur, engine, order, (at_us, seq), reversible)
            return ck, state, engine
        ck = earlier
    return None, None, None


def _gone(cur: Cursor, engine: Replay, pos: tuple[int, int],
          stop: tuple[int, int] | None = None) -> list[tuple[str, int, int]]:
    """Orders with events after ``pos`` (up to ``stop``) and at or before it that ``engine``
    (restored at ``pos``) does not hold, each with its last event at or before ``pos``,
    earliest first."""
    # One statement: the orders after ``pos``, each with its latest ``at`` up to ``pos``
    # through the (ord, at_us) index (few are not held: only those ask for the exact seq).
    sql = ("SELECT n.ord, (SELECT MAX(o.at_us) FROM bf_events o WHERE o.ord = n.ord"
           " AND o.at_us <= ?) AS a FROM (SELECT DISTINCT ord FROM bf_events"
           " WHERE (at_us, seq) > (?, ?) AND ord IS NOT NULL")
    args: list[Any] = [pos[0], *pos]
    if stop is not None:
        sql += " AND (at_us, seq) <= (?, ?)"
        args += stop
    out = []
    for r in cur.execute(sql + ") n", args).fetchall():
        order = r["ord"]
        if r["a"] is None or engine.order_state(order) is not None:
            continue
        prev = cur.execute(
            "SELECT at_us, seq FROM bf_events WHERE ord = ? AND (at_us, seq) <= (?, ?)"
            " ORDER BY at_us DESC, seq DESC LIMIT 1", (order, *pos)).fetchone()
        if prev is not None:
            out.append((order, prev["at_us"], prev["seq"]))
    out.sort(key=itemgetter(1, 2, 0))
    return out


def _revive(cur: Cursor, engine: Replay, order: str, last: tuple[int, int],
            reversible: set[str]) -> None:
    """Give ``engine`` back ``order``, retired in it, as it was after its last event at
    position ``last``: replayed, without writing anything, from the latest checkpoint
    before that event (itself given back any order it lacks that the replay needs)."""
    from backflush.ledger.codec import replay_decoder
    from backflush.projections import snapshot
    from backflush.projections.engine import Replay

    ck = _checkpoint_before(cur, (last[0], 2**62))
    if ck is None:
        past, start = Replay(reversible=reversible), (-(2**62), 0)
    else:
        state = snapshot.loads(ck["v"], ENGINE_VERSION)
        past, start = Replay.restore(state["engine"], reversible=reversible), (ck["at_us"],
                                                                                ck["seq"])
        for other, at_us, seq in _gone(cur, past, start, last):
            _revive(cur, past, other, (at_us, seq), reversible)
    decode = replay_decoder()
    pages = read_pages(cur, start)
    try:
        with localcontext(ARITHMETIC):
            for rows in pages:
                for seq, at_us, text in rows:
                    if (at_us, seq) > last:
                        break
                    past._apply(decode(text, seq))  # noqa: SLF001
                else:
                    continue
                break
    finally:
        pages.close()
    o = past.order_state(order)
    if o is not None:  # None: events naming an order never created (anomalies either way)
        engine.adopt(o)


def _rewind(cur: Cursor, pos: tuple[int, int]) -> None:
    """Delete what the events after ``pos`` wrote (bf_open is rewritten at the end)."""
    at, seq = pos
    # A row value: an index range on both backends (PostgreSQL scans for the OR form).
    after = "(at_us, seq) > (?, ?)"
    # Tables led by seq (or indexed on it) delete the rows of the replayed events through
    # that index; the others are small or scanned.
    events_after = f"seq IN (SELECT seq FROM bf_events WHERE {after})"
    for t in ("bf_onhand_hist", "bf_flushes", "bf_unresolved", "bf_negative", "bf_residual"):
        cur.execute(f"DELETE FROM {t} WHERE {events_after}", (at, seq))
    for t in ("bf_wip_hist", "bf_staging"):
        cur.execute(f"DELETE FROM {t} WHERE {after}", (at, seq))
    # Rows of the checkpoint's own day stay: bf_alive only narrows which keys an as-of
    # query probes, so a key listed once too often costs a probe, never an answer. (The
    # kinds named: a range of the primary key, not a scan.)
    cur.execute("DELETE FROM bf_alive WHERE kind IN ('onhand', 'wip') AND bucket > ?",
                (at // BUCKET_US,))
    cur.execute(f"DELETE FROM bf_proj_ckpt WHERE {after}", (at, seq))


def _plan_from(cur: Cursor, at_us: int) -> list[tuple[int, str]]:
    """``_retirement_plan`` restricted to the orders with events at or after ``at_us``."""
    rows = cur.execute(
        "SELECT ord, MAX(at_us) AS last FROM bf_events WHERE at_us >= ? AND ord IS NOT NULL"
        " GROUP BY ord",
        (at_us,),
    ).fetchall()
    plan = [(r["last"], r["ord"]) for r in rows]
    plan.sort(reverse=True)
    return plan


def _check_current(ledger: Ledger) -> int:
    """A ledger opened read-only answers from its projections only when they are current:
    stale answers would be silently wrong, and bringing them up to date needs a write."""
    from backflush.errors import OperationalError

    try:
        with ledger.transaction(commit=False) as cur:
            version = _get(cur, "engine_version")
            last = int(_get(cur, "last_seq") or 0)
    except Exception:  # no projection tables: never caught up
        version, last = None, -1
    if version != ENGINE_VERSION or ledger.max_seq() > last:
        raise OperationalError(
            f"the projections of {ledger.url} are behind its events and the ledger is "
            "read-only: run any query once on a writable copy (or `backflush rebuild`)"
        )
    return 0


def _progress(ledger: Ledger) -> tuple[str | None, int, int] | None:
    """(engine version, last seq applied, last seq recorded) in one statement: every query
    on a writable ledger asks, and on PostgreSQL each statement and transaction is a round
    trip. None when a projection table is missing (``bf_proj_ckpt`` is the newest)."""
    try:
        with ledger.transaction(commit=False) as cur:
            row = cur.execute(
                "SELECT (SELECT v FROM bf_proj WHERE k = 'engine_version') AS version,"
                " (SELECT v FROM bf_proj WHERE k = 'last_seq') AS last,"
                " (SELECT MAX(seq) FROM bf_events) AS recorded,"
                " (SELECT 1 FROM bf_proj_ckpt LIMIT 1) AS ckpt"
            ).fetchone()
    except Exception:  # a missing table: each driver names it differently
        return None
    return row["version"], int(row["last"] or 0), row["recorded"] or 0


def catch_up(ledger: Ledger) -> int:
    """Bring the projections up to everything recorded; returns the events applied.

    Exactly once: the tracked position moves in the same transaction as the rows. Events
    recorded late (before the high-water mark) and new Reversals re-replay from the latest
    checkpoint before the earliest position they change, so the cost follows the events
    after that time, not the history; orders that checkpoint retired are taken back
    (``_start``).
    """
    if getattr(ledger, "readonly", False):
        return _check_current(ledger)
    state = _progress(ledger)
    if state is None:  # no projection tables yet (or of an older version)
        create_tables(ledger)
        state = _progress(ledger) or (None, 0, 0)
    version, last, recorded = state
    if version != ENGINE_VERSION:
        return rebuild(ledger)
    if recorded <= last:
        return 0
    kept = None
    with no_gc(), ledger.writing() as cur:
        # Re-read under the write lock: another process may have caught up meanwhile.
        last = int(_get(cur, "last_seq") or 0)
        bound = _resumed_bound(cur, last)
        if bound is None:
            return 0
        from backflush.projections import snapshot

        try:
            start = list(_start(cur, bound, _reversal_targets(cur)))
        except (snapshot.SnapshotError, ValueError, KeyError, TypeError):
            start = [None, None, None]  # unreadable or of another version: rebuild
        try:
            if start[1] is None:
                n = _rebuild(ledger, cur, None)
            else:
                n = _continue(cur, ledger, start)
        except _Kept as exc:
            kept = exc  # committed as it leaves: the next catch-up goes on from there
    if kept is not None:
        raise kept.interrupt
    if n >= ANALYZE_AFTER:
        ledger.analyze(PROJECTION_TABLES)
    return n


def _continue(cur: Cursor, ledger: Ledger, start: list) -> int:
    """Catch-up from a checkpoint (``start``: ``_start``'s checkpoint, its state and its
    engine, taken out of the list): delete what follows it and replay from there."""
    ck, state, engine = start
    start.clear()  # (the run is then the only holder of the engine: see below)
    pos = (ck["at_us"], ck["seq"])
    if not ck["head"]:
        _rewind(cur, pos)
    else:
        # The head is after every event applied: nothing to delete.
        cur.execute("DELETE FROM bf_proj_ckpt WHERE head = 1")
    spaced = cur.execute(
        "SELECT MAX(n) AS n FROM bf_proj_ckpt WHERE head = 0").fetchone()["n"] or 0
    after = cur.execute("SELECT COUNT(*) AS c FROM bf_events WHERE at_us >= ?",
                        (pos[0],)).fetchone()["c"]
    run = _Run(ledger, cur, engine, _Writer(cur, open_keys=state["open"]), pos, ck["n"],
               spaced, _plan_from(cur, pos[0]), ck["n"] + after)
    # A replay worker takes the engine over; this process then only writes, and lets go of
    # its copy (``pipeline.run``): 20,000 open orders are ~100 MB of it.
    del engine, state, ck
    n = _replay(run, None)
    _finish(cur, run)
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
    bad: list | None = None,
) -> list[dict[str, Any]]:
    """The latest balance at or before ``at_us`` of each key that may be non-zero then.

    A balance that is not a number (an edited database) raises ``ProjectionUnreadable``,
    or, with ``bad``, is left out and added to it as (kind, key, stored value)."""
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
        try:
            q = Decimal(r["qty"])
            if not q.is_finite():
                raise ValueError(q)
        except (ArithmeticError, TypeError, ValueError):
            key = {c: r[c] for c in cols}
            if bad is None:
                from backflush.errors import ProjectionUnreadable

                raise ProjectionUnreadable(hist, key, r["qty"]) from None
            bad.append((kind, key, r["qty"]))
            continue
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
    ledger: Ledger, at_us: int | None, item: str | None = None, location: str | None = None,
    bad: list | None = None,
) -> list[dict[str, Any]]:
    """On-hand per item/location/batch/lp as of ``at_us`` (None = everything); ``bad``: see
    ``_latest``."""
    rows = _latest(
        ledger,
        "onhand",
        "bf_onhand_keys",
        "bf_onhand_hist",
        ["item", "location", "batch", "lp"],
        {"item": item, "location": location},
        at_us,
        bad,
    )
    rows.sort(key=lambda r: (r["item"], r["location"], r["batch"] or "", r["lp"] or ""))
    return rows


def staging_asof(ledger: Ledger, at_us: int | None) -> dict[str, tuple]:
    """Staging map in force at ``at_us`` (None = now): location -> resources staging there."""
    with ledger.transaction(commit=False) as cur:
        row = cur.execute(
            "SELECT map FROM bf_staging WHERE at_us <= ? ORDER BY at_us DESC, seq DESC LIMIT 1",
            (_FAR_FUTURE if at_us is None else at_us,),
        ).fetchone()
    if row is None:
        return {}
    return {loc: tuple(rs) for loc, rs in _light_loads(row["map"])}


def wip_asof(
    ledger: Ledger, at_us: int | None, resource: str | None = None, bad: list | None = None
) -> list[dict[str, Any]]:
    """WIP per resource location as of ``at_us`` (None = everything); ``bad``: see
    ``_latest``."""
    rows = _latest(
        ledger,
        "wip",
        "bf_wip_keys",
        "bf_wip_hist",
        ["resource", "location", "kind", "ord", "op", "item", "batch"],
        {"resource": resource},
        at_us,
        bad,
    )
    for r in rows:
        r["order"] = r.pop("ord")
    staging = staging_asof(ledger, at_us)
    if resource is not None:
        staging = {loc: (resource,) for loc, rs in staging.items() if resource in rs}
    with localcontext(ARITHMETIC):
        onhand: dict = {}
        for loc in staging:
            for r in onhand_asof(ledger, at_us, location=loc, bad=bad):
                k = (loc, r["item"], r["batch"])
                onhand[k] = onhand.get(k, ZERO) + r["qty"]
    rows.extend(staged_rows(onhand, staging))
    out = [
        {k: r[k] for k in ("resource", "location", "kind", "order", "op", "item", "batch", "qty")}
        for r in rows
    ]
    sort_wip(out)
    return out


def flushes_of(ledger: Ledger, order: str, at_us: int | None = None,
               items: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The consumption postings of one order (as of ``at_us``), in apply order; with
    ``items``, only those of these items that took no batch (what UNRESOLVED_BATCH counts)."""
    sql = "SELECT * FROM bf_flushes WHERE ord = ? AND at_us <= ?"
    params: list[Any] = [order, _FAR_FUTURE if at_us is None else at_us]
    if items is not None:
        items = sorted(items)
        if not items:
            return []
        sql += f" AND batch IS NULL AND item IN ({','.join('?' * len(items))})"
        params += items
    with ledger.transaction(commit=False) as cur:
        rows = cur.execute(sql + " ORDER BY at_us, seq, n", params).fetchall()
    return [_flush_row(r) for r in rows]


def iter_flushes_of(ledger: Ledger, order: str, at_us: int | None = None,
                    page: int = 5000) -> Iterator[dict[str, Any]]:
    """``flushes_of``, streamed in pages (an order of hundreds of BOM lines and thousands of
    reports has hundreds of thousands of postings)."""
    at_us = _FAR_FUTURE if at_us is None else at_us
    key: tuple[int, int, int] = (-(1 << 62), 0, 0)
    while True:
        with ledger.transaction(commit=False) as cur:
            rows = cur.execute(
                "SELECT * FROM bf_flushes WHERE ord = ? AND at_us <= ?"
                " AND (at_us, seq, n) > (?, ?, ?) ORDER BY at_us, seq, n"
                f" LIMIT {int(page)}",
                (order, at_us, *key),
            ).fetchall()
        yield from map(_flush_row, rows)
        if len(rows) < page:
            return
        last = rows[-1]
        key = (last["at_us"], last["seq"], last["n"])


def _flush_row(r: Any) -> dict[str, Any]:
    return {
        "event_id": r["event_id"], "at_us": r["at_us"], "seq": r["seq"], "order": r["ord"],
        "line": r["line"], "item": r["item"], "trigger": r["trig"], "device": r["device"],
        "qty": Decimal(r["qty"]), "location": r["location"], "batch": r["batch"],
        "lp": r["lp"],
    }


def orderless_negative(ledger: Ledger, at_us: int | None = None) -> bool:
    """Whether a take outside any order drove on-hand negative (by ``at_us``)."""
    with ledger.transaction(commit=False) as cur:
        row = cur.execute(
            "SELECT 1 AS x FROM bf_negative WHERE ord IS NULL AND at_us <= ? LIMIT 1",
            (_FAR_FUTURE if at_us is None else at_us,),
        ).fetchone()
    return row is not None


def orderless_takes_possible(ledger: Ledger, at_us: int | None, last_seq: int) -> bool:
    """Whether a replay of the events up to ``at_us`` and position ``last_seq``, under any
    policy, may take stock outside every order (the only source of findings of no order).

    Conservative: yes when there is a transfer, a pick, a put or a reversal naming no order
    (a reversal names its target's order), or an order whose first event (by at, seq) is
    not its creation (a pick or put before it belongs to no order then). Counts never
    record a negative; receipts only add; every other take runs inside its order.
    """
    at_us = _FAR_FUTURE if at_us is None else at_us
    with ledger.transaction(commit=False) as cur:
        # Through the (ord, at_us) index: the events of no order are receipts and counts
        # above all, a tenth of a plant's history.
        row = cur.execute(
            "SELECT 1 AS x FROM bf_events WHERE ord IS NULL AND at_us <= ? AND seq <= ?"
            " AND type IN ('InventoryTransferred', 'Picked', 'Put', 'Reversal') LIMIT 1",
            (at_us, last_seq),
        ).fetchone()
        if row is not None:
            return True
        row = cur.execute(
            "SELECT 1 AS x FROM (SELECT DISTINCT ord FROM bf_events WHERE ord IS NOT NULL) o"
            " WHERE (SELECT e.type FROM bf_events e WHERE e.ord = o.ord AND e.at_us <= ?"
            " AND e.seq <= ? ORDER BY e.at_us, e.seq LIMIT 1) <> 'OrderCreated' LIMIT 1",
            (at_us, last_seq),
        ).fetchone()
    return row is not None


def unresolved_of(ledger: Ledger, order: str, at_us: int | None = None) -> list[dict[str, Any]]:
    """Batch-less takes of batch-tracked items by one order (as of ``at_us``), apply order."""
    with ledger.transaction(commit=False) as cur:
        rows = cur.execute(
            "SELECT event_id, line, item, location, qty FROM bf_unresolved WHERE ord = ?"
            " AND at_us <= ? ORDER BY at_us, seq, n",
            (order, _FAR_FUTURE if at_us is None else at_us),
        ).fetchall()
    return [{"event_id": r["event_id"], "line": r["line"], "item": r["item"],
             "location": r["location"], "qty": Decimal(r["qty"])} for r in rows]


def negative_of(ledger: Ledger, order: str, at_us: int | None = None) -> list[dict[str, Any]]:
    """The engine's negative on-hand records caused by one order (as of ``at_us``)."""
    with ledger.transaction(commit=False) as cur:
        rows = cur.execute(
            "SELECT event_id, item, location, batch, lp, balance FROM bf_negative WHERE ord = ?"
            " AND at_us <= ? ORDER BY at_us, seq, n",
            (order, _FAR_FUTURE if at_us is None else at_us),
        ).fetchall()
    return [{"event_id": r["event_id"], "key": (r["item"], r["location"], r["batch"], r["lp"]),
             "balance": Decimal(r["balance"])} for r in rows]


def residual_of(ledger: Ledger, order: str, at_us: int | None = None
                ) -> list[tuple[str, list[dict[str, Any]]]]:
    """What each OrderEnded of one order (as of ``at_us``) found still at the input, in apply
    order: (end event id, residual rows)."""
    with ledger.transaction(commit=False) as cur:
        rows = cur.execute(
            "SELECT event_id, n, item, location, batch, qty, put_events FROM bf_residual"
            " WHERE ord = ? AND at_us <= ? ORDER BY at_us, seq, n",
            (order, _FAR_FUTURE if at_us is None else at_us),
        ).fetchall()
    out: list[tuple[str, list[dict[str, Any]]]] = []
    for r in rows:
        if not out or out[-1][0] != r["event_id"]:
            out.append((r["event_id"], []))
        if r["n"] >= 0:
            out[-1][1].append({"item": r["item"], "location": r["location"],
                               "batch": r["batch"], "qty": Decimal(r["qty"]),
                               "put_events": tuple(_light_loads(r["put_events"]))})
    return out


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
