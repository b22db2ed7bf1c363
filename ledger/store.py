"""The event store: eventsourcing's recorders on SQLite (embedded default) or PostgreSQL.

Events live in eventsourcing's ``stored_events`` table, written through its application
recorder (one stream per production order, ``master`` for master data, ``inventory`` for
stock moves), so notification ids give the recording order. Beside it the ledger keeps
``bf_events``, an index row per event in the same transaction: the sender's id (for
idempotency), ``at`` and recorded time in microseconds (for as-of and known-at), the order,
and the chain hash. A write takes the store's write lock first, so concurrent importers
queue instead of racing for stream positions.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from backflush.ledger.anchor import CHAIN_DDL, chain_unlinked, link_events
from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteAggregateRecorder, SQLiteFactory
from eventsourcing.utils import Environment

DEFAULT_DB = "./backflush.db"
SCHEMA_LOCK_KEY = 0x6266_6C65_6467_6572  # "bfledger": advisory lock for schema creation
TOPIC_PREFIX = "ledger.events:"

INDEX_DDL = [
    """CREATE TABLE IF NOT EXISTS bf_events (
        seq BIGINT PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        stream TEXT NOT NULL,
        version INTEGER NOT NULL,
        type TEXT NOT NULL,
        at_us BIGINT NOT NULL,
        rec_us BIGINT NOT NULL,
        ord TEXT,
        digest TEXT NOT NULL,
        hash TEXT NOT NULL,
        UNIQUE (stream, version))""",
    "CREATE INDEX IF NOT EXISTS bf_events_at ON bf_events (at_us, seq)",
    "CREATE INDEX IF NOT EXISTS bf_events_ord ON bf_events (ord, at_us, seq)",
    "CREATE INDEX IF NOT EXISTS bf_events_rec ON bf_events (rec_us, at_us)",
    "CREATE INDEX IF NOT EXISTS bf_events_type ON bf_events (type, at_us, seq)",
    "CREATE TABLE IF NOT EXISTS bf_lock (k INTEGER PRIMARY KEY, v INTEGER)",
    CHAIN_DDL,  # the ledger-wide chain (ledger.anchor)
    # Each verify's result (ledger.integrity.record): the provenance queries can show.
    "CREATE TABLE IF NOT EXISTS bf_verify (verified_at TEXT, events INTEGER, ok INTEGER,"
    " heads TEXT)",
]
DEFAULT_LOCK_TIMEOUT = 60.0  # seconds a writer waits for the write lock (BACKFLUSH_LOCK_TIMEOUT)
LOCK_NOTICE_AFTER = 1.0  # seconds of waiting before saying so on stderr


def default_db() -> str:
    """The ledger location: env ``BACKFLUSH_DB`` or ``./backflush.db``."""
    return os.environ.get("BACKFLUSH_DB") or DEFAULT_DB


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def to_us(dt: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (the sortable form of ``at``)."""
    return (dt - _EPOCH) // _US


def from_us(us: int) -> datetime:
    """Inverse of ``to_us`` (UTC)."""
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


@dataclass(frozen=True)
class IndexRow:
    """One row of ``bf_events`` to write beside the stored event."""

    id: str
    stream: str
    version: int
    type: str
    at_us: int
    rec_us: int
    ord: str | None
    digest: str
    hash: str


class Cursor:
    """A small uniform face over sqlite3 and psycopg cursors (``?`` placeholders)."""

    def __init__(self, raw: Any, dialect: str):
        self.raw = raw
        self.dialect = dialect

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgres" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        self.raw.execute(self._sql(sql), params)
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.raw.executemany(self._sql(sql), rows)

    def fetchall(self) -> list[Any]:
        return self.raw.fetchall()

    def fetchone(self) -> Any:
        return self.raw.fetchone()

    def __iter__(self) -> Iterator[Any]:
        return iter(self.raw)


class Ledger:
    """The only door to the stored events (and to the projections' tables beside them)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        readonly: bool = False,
        lock_timeout: float | None = None,
    ):
        """Open the ledger at ``url`` (a SQLite path or a ``postgresql://`` URL).

        ``readonly``: open SQLite read-only (``mode=ro``; ``immutable=1`` when the folder is
        not writable and no write-ahead log is pending, as on read-only media) and create
        nothing. ``lock_timeout``: seconds a write waits for the write lock (default env
        ``BACKFLUSH_LOCK_TIMEOUT``, else 60).
        """
        self.url = url or default_db()
        self.readonly = readonly
        self.lock_timeout = _lock_timeout(lock_timeout)
        wait = str(max(1, int(self.lock_timeout + 0.999)))
        if self.url.startswith(("postgresql://", "postgres://")):
            from eventsourcing.postgres import PostgresFactory  # only when asked for

            self.dialect = "postgres"
            env = _pg_env(self.url)
            env["POSTGRES_LOCK_TIMEOUT"] = wait
            self.factory = PostgresFactory(Environment(env=env))
        else:
            self.dialect = "sqlite"
            path = self.url.removeprefix("sqlite:///")
            self.factory = SQLiteFactory(
                Environment(
                    env={
                        "SQLITE_DBNAME": _ro_uri(path) if readonly else path,
                        "ORIGINATOR_ID_TYPE": "text",
                        "SQLITE_LOCK_TIMEOUT": wait,
                        "CREATE_TABLE": "false",
                    }
                )
            )
        self.datastore = self.factory.datastore
        self.recorder = self.factory.application_recorder()
        if readonly:
            if not self._schema_ready(chain=False):
                from backflush.errors import LedgerNotFound

                self.close()
                raise LedgerNotFound(f"no backflush ledger at {self.url!r}")
        elif not self._schema_ready():
            with self._schema_lock():
                self.recorder.create_table()
                with self.transaction(commit=True) as cur:
                    for ddl in INDEX_DDL:
                        cur.execute(ddl)
                    cur.execute("SELECT k FROM bf_lock WHERE k = 1")
                    if cur.fetchone() is None:
                        cur.execute("INSERT INTO bf_lock VALUES (1, 0)")
                    # A ledger made before the ledger-wide chain: link what it holds.
                    chain_unlinked(cur)

    def _schema_ready(self, *, chain: bool = True) -> bool:
        # The lock row is written last when the schema is made: if it is there, opening
        # must not run DDL again, which on PostgreSQL would queue behind a running import.
        try:
            with self.transaction(commit=False) as cur:
                if chain:  # a ledger older than the chain table is brought up to date
                    cur.execute("SELECT seq FROM bf_chain LIMIT 1").fetchall()
                return cur.execute("SELECT k FROM bf_lock WHERE k = 1").fetchone() is not None
        except Exception:  # missing table: each driver names it differently
            return False

    @contextmanager
    def _schema_lock(self) -> Iterator[None]:
        """Let one process at a time create (or re-declare) the schema.

        eventsourcing re-runs its ``CREATE OR REPLACE FUNCTION`` on every open, and two
        PostgreSQL sessions doing that at once fail with "tuple concurrently updated"; so
        two commands started together would see one of them refuse to open the ledger.
        SQLite serialises this by itself.
        """
        if self.dialect != "postgres":
            yield
            return
        with self.datastore.get_connection() as conn:  # autocommit: a session-level lock
            conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))

    def close(self) -> None:
        """Release connections."""
        self.factory.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self, *, commit: bool) -> Iterator[Cursor]:
        """A transaction on the store; rolled back on error or when ``commit`` is False."""
        with self.datastore.transaction(commit=commit) as raw:
            yield Cursor(raw, self.dialect)

    @contextmanager
    def writing(self, *, commit: bool = True) -> Iterator[Cursor]:
        """A write transaction holding the store's write lock from its first statement.

        Taking the lock before any read means stream heads read inside it cannot change
        under us: a second importer waits here instead of failing on a position clash.
        The wait is bounded by ``lock_timeout`` (then ``OperationalError``, exit 3) and
        said on stderr once it lasts more than a second.
        """
        with self.transaction(commit=commit) as cur:
            notice = threading.Timer(LOCK_NOTICE_AFTER, _say_waiting)
            notice.daemon = True
            notice.start()
            try:
                if self.dialect == "postgres":
                    cur.execute(f"SET LOCAL lock_timeout = '{int(self.lock_timeout * 1000)}ms'")
                    cur.execute("LOCK TABLE stored_events IN EXCLUSIVE MODE")
                else:
                    cur.execute(f"PRAGMA busy_timeout = {int(self.lock_timeout * 1000)}")
                cur.execute("UPDATE bf_lock SET v = v + 1 WHERE k = 1")
            except Exception as exc:
                if _is_lock_timeout(exc):
                    from backflush.errors import OperationalError

                    raise OperationalError(
                        f"the ledger's write lock was not free within {self.lock_timeout:g} s"
                        " (another import or catch-up holds it; BACKFLUSH_LOCK_TIMEOUT sets"
                        " the wait)"
                    ) from None
                raise
            finally:
                notice.cancel()
            yield cur

    # --- writing -------------------------------------------------------------------------

    def stream_head(self, cur: Cursor, stream: str) -> tuple[int, str | None]:
        """(last version, last chain hash) of a stream; (0, None) when it is new."""
        cur.execute(
            "SELECT version, hash FROM bf_events WHERE stream = ? ORDER BY version DESC LIMIT 1",
            (stream,),
        )
        row = cur.fetchone()
        return (0, None) if row is None else (row["version"], row["hash"])

    def known_digests(self, cur: Cursor, ids: Sequence[str]) -> dict[str, str]:
        """Digest of every id in ``ids`` already stored (earlier imports or batches)."""
        out: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            cur.execute(f"SELECT id, digest FROM bf_events WHERE id IN ({marks})", chunk)
            for row in cur.fetchall():
                out[row["id"]] = row["digest"]
        return out

    def append(self, cur: Cursor, rows: Sequence[IndexRow], states: Sequence[bytes]) -> None:
        """Append events (index rows and stored states, same order) inside ``cur``'s txn."""
        stored = [
            StoredEvent(
                originator_id=r.stream,
                originator_version=r.version,
                topic=TOPIC_PREFIX + r.type,
                state=s,
            )
            for r, s in zip(rows, states, strict=True)
        ]
        if self.dialect == "sqlite":
            # eventsourcing's application recorder inserts row by row to learn each rowid;
            # under our write lock the rowids are simply max+1.., so one executemany does.
            top = cur.execute("SELECT COALESCE(MAX(rowid), 0) AS m FROM stored_events")
            first = top.fetchone()["m"] + 1
            SQLiteAggregateRecorder._insert_events(self.recorder, cur.raw, stored)  # noqa: SLF001
            seqs = range(first, first + len(stored))
        else:
            self.recorder._insert_stored_events(cur.raw, stored)  # noqa: SLF001
            seqs = self.recorder._fetch_ids_after_insert_events(cur.raw, stored)  # noqa: SLF001
        cur.executemany(
            "INSERT INTO bf_events (seq, id, stream, version, type, at_us, rec_us, ord, digest,"
            " hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (q, r.id, r.stream, r.version, r.type, r.at_us, r.rec_us, r.ord, r.digest, r.hash)
                for q, r in zip(seqs, rows, strict=True)
            ],
        )
        chained = zip(seqs, rows, strict=True)
        link_events(cur, [(q, r.stream, r.version, r.hash, r.rec_us) for q, r in chained])

    # --- reading -------------------------------------------------------------------------

    def _state_join(self) -> str:
        key = "rowid" if self.dialect == "sqlite" else "notification_id"
        return f"JOIN stored_events s ON s.{key} = i.seq"

    def iter_rows(
        self,
        *,
        order: str | None = None,
        types: Sequence[str] | None = None,
        at_lte: int | None = None,
        rec_lte: int | None = None,
        seq_gt: int | None = None,
        by: str = "at",
        batch: int = 5000,
    ) -> Iterator[Any]:
        """Index rows joined with their stored state, by ``at`` (ties: seq) or by ``seq``.

        Streams in pages (keyset pagination), so a million events never sit in memory.
        """
        where, params = [], []
        if order is not None:
            where.append("i.ord = ?")
            params.append(order)
        if types:
            where.append(f"i.type IN ({','.join('?' * len(types))})")
            params.extend(types)
        if at_lte is not None:
            where.append("i.at_us <= ?")
            params.append(at_lte)
        if rec_lte is not None:
            where.append("i.rec_us <= ?")
            params.append(rec_lte)
        if seq_gt is not None:
            where.append("i.seq > ?")
            params.append(seq_gt)
        cols = (
            "i.seq, i.id, i.stream, i.version, i.type, i.at_us, i.rec_us, i.ord, i.hash,"
            " s.state"
        )
        base = f"SELECT {cols} FROM bf_events i {self._state_join()}"
        key: tuple[int, int] | None = None
        while True:
            conds, ps = list(where), list(params)
            if key is not None:
                if by == "at":
                    conds.append("(i.at_us > ? OR (i.at_us = ? AND i.seq > ?))")
                    ps.extend([key[0], key[0], key[1]])
                else:
                    conds.append("i.seq > ?")
                    ps.append(key[1])
            sql = base + (" WHERE " + " AND ".join(conds) if conds else "")
            sql += " ORDER BY i.at_us, i.seq" if by == "at" else " ORDER BY i.seq"
            sql += f" LIMIT {batch}"
            with self.transaction(commit=False) as cur:
                rows = cur.execute(sql, ps).fetchall()
            if not rows:
                return
            yield from rows
            if len(rows) < batch:
                return
            last = rows[-1]
            key = (last["at_us"], last["seq"])

    def max_seq(self) -> int:
        """The last recorded position (0 for an empty ledger)."""
        with self.transaction(commit=False) as cur:
            row = cur.execute("SELECT MAX(seq) AS m FROM bf_events").fetchone()
        return row["m"] or 0

    def count(self) -> int:
        """Number of events recorded."""
        with self.transaction(commit=False) as cur:
            return cur.execute("SELECT COUNT(*) AS n FROM bf_events").fetchone()["n"]


def _lock_timeout(value: float | None) -> float:
    if value is not None:
        return float(value)
    env = os.environ.get("BACKFLUSH_LOCK_TIMEOUT", "").strip()
    try:
        return float(env) if env else DEFAULT_LOCK_TIMEOUT
    except ValueError:
        from backflush.errors import BadInput

        raise BadInput(f"BACKFLUSH_LOCK_TIMEOUT: not a number of seconds: {env!r}") from None


def _say_waiting() -> None:
    print("waiting for the ledger's write lock…", file=sys.stderr, flush=True)


def _is_lock_timeout(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "database is locked" in text or "lock timeout" in text or "locknotavailable" in (
        type(exc).__name__.lower()
    )


def _ro_uri(path: str) -> str:
    """SQLite URI opening ``path`` read-only, and immutable when on read-only media.

    A WAL database needs its ``-shm`` file; where the folder cannot be written it cannot be
    made, and ``immutable=1`` is the way to read it. That is only safe when no write-ahead
    log is waiting to be checkpointed (a cleanly closed ledger has none).
    """
    from urllib.parse import quote

    apath = os.path.abspath(path)
    folder = os.path.dirname(apath) or "."
    uri = "file:" + quote(apath) + "?mode=ro"
    wal = apath + "-wal"
    pending = os.path.exists(wal) and os.path.getsize(wal) > 0
    if not os.access(folder, os.W_OK) and not pending and not os.path.exists(apath + "-shm"):
        uri += "&immutable=1"
    return uri


def _pg_env(url: str) -> dict[str, str]:
    u = urlparse(url)
    env = {
        "POSTGRES_DBNAME": unquote(u.path.lstrip("/")) or "backflush",
        "POSTGRES_HOST": u.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(u.port or 5432),
        "POSTGRES_USER": unquote(u.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(u.password or ""),
        "ORIGINATOR_ID_TYPE": "text",
        "POSTGRES_LOCK_TIMEOUT": "60",
        "POSTGRES_POOL_SIZE": "2",
        "CREATE_TABLE": "false",
    }
    q = parse_qs(u.query)
    if "schema" in q:
        env["POSTGRES_SCHEMA"] = q["schema"][0]
    return env
