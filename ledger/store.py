"""The event store: one table of events on SQLite (embedded default) or PostgreSQL.

Each event is one row of ``bf_events``: its recording position ``seq`` (an INTEGER PRIMARY
KEY, i.e. SQLite's rowid), the sender's ``id`` (idempotency), its stream (one per
production order, ``master`` for master data, ``inventory`` for stock moves) and position
in it, its type, ``at`` and recorded time in microseconds (as-of and known-at), the order,
the stream's chain hash, and the stored ``state`` (see ``ledger.codec``). Each event is also
linked to the one recorded before it in ``bf_chain`` (the ledger-wide chain,
``ledger.anchor``), in the same transaction. A write takes the store's write lock first, so
concurrent importers queue instead of racing for positions.

Why not eventsourcing's recorder tables. Until schema 2, events went through eventsourcing's
application recorder into ``stored_events`` with an index row per event in ``bf_events``:
two rows, a composite text primary key and eight b-trees per event, and the only bulk path
was the recorder's private ``_insert_events`` (pinning eventsourcing ``<9.6``). Its public
API (``insert_events``) inserts and reads back one notification id per event and offers no
COPY on PostgreSQL. Import spent ~30% of its time there (issue 7). So the ledger writes its
one table itself, with ``executemany`` on SQLite and ``COPY`` on PostgreSQL. A
``stored_events`` view keeps eventsourcing's column names for readers.

Connections are plain ``sqlite3``/``psycopg`` ones (``ledger.connect``), with the semantics
eventsourcing's datastores gave (WAL, lock timeouts, explicit transactions): its persistence
layer and PostgreSQL pool were most of a short query's start-up (issue 7).

A ledger written by an older version (schema 1) is refused with a message to re-import.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from backflush.ledger.names import MASTER_TYPES

from backflush.errors import BackflushError

TYPE_CHECKING = False  # not typing's: a query process never imports typing (~3 ms)
if TYPE_CHECKING:
    from typing import Any

DEFAULT_DB = "./backflush.db"
SCHEMA_LOCK_KEY = 0x6266_6C65_6467_6572  # "bfledger": advisory lock for schema creation
TOPIC_PREFIX = "ledger.events:"
SCHEMA_VERSION = 2


class SchemaTooOld(BackflushError):
    """The ledger was written by an older backflush with another stored layout."""


# Each verify's result (ledger.integrity.record): the provenance queries can show.
VERIFY_DDL = (
    "CREATE TABLE IF NOT EXISTS bf_verify (verified_at TEXT, events INTEGER, ok INTEGER,"
    " heads TEXT)"
)


def _ddl(dialect: str) -> list[str]:
    from backflush.ledger.anchor import chain_ddl

    pg = dialect == "postgres"
    # On SQLite ``INTEGER PRIMARY KEY`` makes seq the rowid (no extra b-tree), and an index
    # on (at_us) carries the rowid, so it already orders ties by seq.
    seq = "seq BIGINT PRIMARY KEY" if pg else "seq INTEGER PRIMARY KEY"
    blob = "BYTEA" if pg else "BLOB"
    tail = ", seq" if pg else ""
    rowid = "" if pg else "seq AS rowid, "
    return [
        f"""CREATE TABLE IF NOT EXISTS bf_events (
        {seq},
        id TEXT NOT NULL UNIQUE,
        stream TEXT NOT NULL,
        version INTEGER NOT NULL,
        type TEXT NOT NULL,
        at_us BIGINT NOT NULL,
        rec_us BIGINT NOT NULL,
        ord TEXT,
        hash TEXT NOT NULL,
        state {blob} NOT NULL)""",
        # A named index rather than an inline UNIQUE (stream, version) (ledgers made before
        # have that one: the same guarantee), so that a bulk load can build it after the
        # rows (``Ledger.indexes_deferred``).
        "CREATE UNIQUE INDEX IF NOT EXISTS bf_events_sv ON bf_events (stream, version)",
        f"CREATE INDEX IF NOT EXISTS bf_events_at ON bf_events (at_us{tail})",
        f"CREATE INDEX IF NOT EXISTS bf_events_ord ON bf_events (ord, at_us{tail})",
        "CREATE INDEX IF NOT EXISTS bf_events_rec ON bf_events (rec_us, at_us)",
        # Only one event in ~40 is an OrderCreated: a partial index costs little per import.
        "CREATE INDEX IF NOT EXISTS bf_events_created ON bf_events (ord)"
        " WHERE type = 'OrderCreated'",
        # eventsourcing's column names, for readers that join stored states by position.
        f"CREATE VIEW stored_events AS SELECT {rowid}seq AS notification_id,"
        " stream AS originator_id, version AS originator_version,"
        f" '{TOPIC_PREFIX}' || type AS topic, state FROM bf_events",
        "CREATE TABLE IF NOT EXISTS bf_lock (k INTEGER PRIMARY KEY, v INTEGER)",
        chain_ddl(dialect),  # the ledger-wide chain (ledger.anchor)
        VERIFY_DDL,
    ] + (
        []
        if pg
        else [
            # Keep the view writable as the table was (tamper tests alter stored states).
            "CREATE TRIGGER IF NOT EXISTS stored_events_update INSTEAD OF UPDATE ON"
            " stored_events BEGIN UPDATE bf_events SET state = NEW.state,"
            " stream = NEW.originator_id, version = NEW.originator_version"
            " WHERE seq = OLD.notification_id; END",
            "CREATE TRIGGER IF NOT EXISTS stored_events_delete INSTEAD OF DELETE ON"
            " stored_events BEGIN DELETE FROM bf_events WHERE seq = OLD.notification_id; END",
        ]
    )


def _missing_database(exc: BaseException, name: str) -> bool:
    """Whether a PostgreSQL connection was refused because the server has no database
    ``name`` (not a missing role, which "does not exist" as well)."""
    return f'database "{name}" does not exist' in str(exc)


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


_COPY_TYPES = ["int8", "text", "text", "int4", "text", "int8", "int8", "text", "text", "bytea"]
_CHAIN_COPY_TYPES = ["int8", "text", "text", "int4", "text"]


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

    def tuples(self) -> Cursor:
        """A cursor of the same transaction whose rows are plain tuples (on PostgreSQL in
        binary form: a state comes as the bytes stored, not as hex text to decode). For
        reads of every event: a row looked up by name costs more than the work on it.
        Not on libpq's read-only transactions (``read_only=False`` avoids them)."""
        conn = self.raw.connection
        if self.dialect == "postgres":
            from psycopg.rows import tuple_row

            return Cursor(conn.cursor(row_factory=tuple_row, binary=True), self.dialect)
        raw = conn.cursor()
        raw.row_factory = None
        return Cursor(raw, self.dialect)


class Ledger:
    """The only door to the stored events (and to the projections' tables beside them)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        readonly: bool = False,
        lock_timeout: float | None = None,
        create: bool = True,
    ):
        """Open the ledger at ``url`` (a SQLite path or a ``postgresql://`` URL).

        ``readonly``: open SQLite read-only (``mode=ro``; ``immutable=1`` when the folder is
        not writable and no write-ahead log is pending, as on read-only media) and create
        nothing. ``create=False``: a database without a ledger in it raises
        ``LedgerNotFound`` instead of getting the ledger's tables (a read must not turn a
        mistyped ``--db`` into an empty ledger that answers "no rows"). ``lock_timeout``:
        seconds a write waits for the write lock (default env ``BACKFLUSH_LOCK_TIMEOUT``,
        else 60).
        """
        self.url = url or default_db()
        self.readonly = readonly
        self._shared: Cursor | None = None  # the transaction of ``one_read``
        self._missing_database: str | None = None
        self.lock_timeout = _lock_timeout(lock_timeout)
        wait = max(1, int(self.lock_timeout + 0.999))  # whole seconds, as before
        if self.url.startswith(("postgresql://", "postgres://")):
            from backflush.ledger.connect import PostgresConnections

            self.dialect = "postgres"
            self.connections: Any = PostgresConnections(_pg_params(self.url))
        else:
            from backflush.ledger.connect import SQLiteConnections

            self.dialect = "sqlite"
            path = self.url.removeprefix("sqlite:///")
            self.connections = SQLiteConnections(
                _ro_uri(path) if readonly else path, lock_timeout=wait, readonly=readonly
            )
        version = self._schema_version()
        if version is None and (readonly or not create or self._missing_database):
            from backflush.api import safe_url
            from backflush.errors import LedgerNotFound

            self.close()
            if self._missing_database:
                # No ledger can be made there either: backflush does not create databases.
                raise LedgerNotFound(
                    f"no backflush ledger at {safe_url(self.url)}: the server has no database"
                    f" {self._missing_database!r} (create it first: createdb"
                    f" {self._missing_database}; or check --db)")
            raise LedgerNotFound(
                f"no backflush ledger at {safe_url(self.url)}: import into it first, or check"
                " --db (or BACKFLUSH_DB)")
        if version is None:
            with self._schema_lock(), self.transaction(commit=True) as cur:
                for ddl in _ddl(self.dialect):
                    if ddl.startswith("CREATE VIEW"):
                        if self.dialect == "sqlite":
                            ddl = ddl.replace("CREATE VIEW", "CREATE VIEW IF NOT EXISTS", 1)
                        elif self._has_relation(cur, "stored_events"):
                            # No IF NOT EXISTS for views on PostgreSQL (the advisory lock
                            # makes asking first safe there).
                            continue
                    cur.execute(ddl)
                # Two processes creating one SQLite ledger at once: the second inserts
                # nothing. The version row (k=2) says the layout.
                cur.execute("INSERT INTO bf_lock VALUES (1, 0) ON CONFLICT DO NOTHING")
                cur.execute(
                    "INSERT INTO bf_lock VALUES (2, ?) ON CONFLICT DO NOTHING", (SCHEMA_VERSION,)
                )
            version = self._schema_version()
        if version != SCHEMA_VERSION:
            self.close()
            raise SchemaTooOld(
                f"{self.url}: this ledger was written by an older backflush (stored layout"
                f" {version or 1}, this version reads {SCHEMA_VERSION}); export it with the"
                " version that wrote it and import the export into a new ledger"
            )

    def _has_relation(self, cur: Cursor, name: str) -> bool:
        if self.dialect == "postgres":
            cur.execute("SELECT to_regclass(?) AS r", (name,))
            return cur.fetchone()["r"] is not None
        cur.execute("SELECT 1 AS x FROM sqlite_master WHERE name = ?", (name,))
        return cur.fetchone() is not None

    def _schema_version(self) -> int | None:
        """The stored layout's version: None for no ledger yet, 1 for the old layout."""
        # The lock row is written last when the schema is made: if it is there, opening
        # must not run DDL again, which on PostgreSQL would queue behind a running import.
        try:
            with self.transaction(commit=False) as cur:
                rows = cur.execute("SELECT k, v FROM bf_lock WHERE k IN (1, 2)").fetchall()
        except Exception as exc:  # missing table: each driver names it differently
            from backflush.errors import BackflushError

            if isinstance(exc, BackflushError):
                raise  # (no PostgreSQL driver installed is not "no ledger here")
            # Only a missing table (or database) is "no ledger here": a server that cannot
            # be reached or refuses the role, a lock (exit 3), a file that is not a database
            # (exit 2) are said as what they are.
            if self.dialect == "postgres":
                name = self.connections.params["dbname"]
                if _missing_database(exc, name):
                    self._missing_database = name
                elif getattr(exc, "sqlstate", None) != "42P01":
                    raise
            elif "no such table" not in str(exc):
                raise
            return None
        found = {r["k"]: r["v"] for r in rows}
        if 1 not in found:
            return None
        return found.get(2, 1)

    @contextmanager
    def _schema_lock(self) -> Iterator[None]:
        """Let one process at a time create (or re-declare) the schema.

        Two PostgreSQL sessions running the same DDL at once can fail with "tuple
        concurrently updated"; so two commands started together would see one of them
        refuse to open the ledger. SQLite serialises this by itself.
        """
        if self.dialect != "postgres":
            yield
            return
        with self.connections.connection() as conn:  # autocommit: a session-level lock
            conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))

    def close(self) -> None:
        """Release connections."""
        self.connections.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self, *, commit: bool, read_only: bool | None = None) -> Iterator[Cursor]:
        """A transaction on the store; rolled back on error or when ``commit`` is False.

        ``read_only`` (default: not ``commit``) promises no writes: on PostgreSQL such a
        transaction may run on a libpq connection without psycopg (``ledger.libpq``), as
        ``BEGIN READ ONLY``, so a stray write fails loudly instead of passing unseen.
        """
        if read_only is None:
            read_only = not commit
        if not commit and self._shared is not None:
            yield self._shared  # inside ``one_read``: its transaction
            return
        with self.connections.transaction(commit=commit, read_only=read_only) as raw:
            yield Cursor(raw, self.dialect)

    @contextmanager
    def one_read(self) -> Iterator[None]:
        """Run the reads inside (``transaction(commit=False)``) in one transaction.

        For a run of small reads that belong together (a ``verify --deep`` comparison: on
        PostgreSQL each read of its own cost a BEGIN and a ROLLBACK, two round trips, for
        one query). Keep it short: a read transaction holds back a rebuild's DDL."""
        if self._shared is not None:
            yield
            return
        with self.transaction(commit=False, read_only=False) as cur:
            self._shared = cur
            try:
                yield
            finally:
                self._shared = None

    @contextmanager
    def bulk_load(self) -> Iterator[bool]:
        """Around a first bulk load into an empty SQLite ledger: the rollback journal
        instead of the WAL while inside (``SQLiteConnections.rollback_journal``), if this
        is the one connection; says whether it switched. PostgreSQL: nothing changes."""
        if self.dialect != "sqlite":
            yield False
            return
        with self.connections.rollback_journal() as switched:
            yield switched

    def is_empty(self) -> bool:
        """Whether no event is stored (one read, no lock)."""
        with self.transaction(commit=False) as cur:
            return cur.execute("SELECT 1 AS x FROM bf_events LIMIT 1").fetchone() is None

    def analyze(self, tables: Sequence[str]) -> None:
        """Refresh PostgreSQL's planner statistics of ``tables`` after a bulk write.

        A freshly loaded table has none until autovacuum comes round (seen: minutes after a
        1M-event import, or never before the next command), and without them the planner
        takes a range of ``seq`` for a third of the table and scans it: a 1,000-event
        import then spent seconds on plans fit for a million rows. PostgreSQL's own advice
        after a bulk load is to run ANALYZE. SQLite plans from its indexes alone: no-op.
        """
        if self.dialect != "postgres":
            return
        # Under the write lock, as every other writer: ANALYZE locks its tables one by one in
        # the order given, and a rebuild's TRUNCATE of the same tables in another order by
        # another process (a second import catching up) deadlocked with it.
        with self.writing() as cur:
            cur.execute("ANALYZE " + ", ".join(tables))

    @contextmanager
    def writing(self, *, commit: bool = True) -> Iterator[Cursor]:
        """A write transaction holding the store's write lock from its first statement.

        Taking the lock before any read means stream heads read inside it cannot change
        under us: a second importer waits here instead of failing on a position clash.
        The wait is bounded by ``lock_timeout`` (then ``OperationalError``, exit 3) and
        said on stderr once it lasts more than a second.
        """
        with self.transaction(commit=commit, read_only=False) as cur:
            import threading  # (a writer's; a query process never loads it)

            notice = threading.Timer(LOCK_NOTICE_AFTER, _say_waiting)
            notice.daemon = True
            notice.start()
            try:
                if self.dialect == "postgres":
                    cur.execute(f"SET LOCAL lock_timeout = '{int(self.lock_timeout * 1000)}ms'")
                    cur.execute("LOCK TABLE bf_events IN EXCLUSIVE MODE")
                else:
                    cur.execute(f"PRAGMA busy_timeout = {int(self.lock_timeout * 1000)}")
                    # An import touches every index of the events table at random places: a
                    # larger page cache (default 2 MiB) keeps their inner pages in memory.
                    cur.execute("PRAGMA cache_size = -32768")
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

    def stream_heads(self, cur: Cursor, streams: Sequence[str]) -> dict[str, tuple[int, str]]:
        """(last version, last chain hash) of each of ``streams`` that exists."""
        out: dict[str, tuple[int, str]] = {}
        for i in range(0, len(streams), 500):
            chunk = list(streams[i : i + 500])
            # Each stream's last version through the (stream, version) index, one probe per
            # stream: a GROUP BY over ``stream IN (...)`` read every version of a long stream
            # ("inventory") on PostgreSQL, ~0.3-0.6 s per import into a 1M-event ledger.
            marks = ",".join(["(?)"] * len(chunk))
            cur.execute(
                f"WITH v(s) AS (VALUES {marks}) SELECT e.stream, e.version, e.hash FROM v"
                " JOIN bf_events e ON e.stream = v.s AND e.version ="
                " (SELECT MAX(m.version) FROM bf_events m WHERE m.stream = v.s)",
                chunk,
            )
            for row in cur.fetchall():
                out[row["stream"]] = (row["version"], row["hash"])
        return out

    def known_states(self, cur: Cursor, ids: Sequence[str]) -> dict[str, bytes]:
        """Stored state of every id in ``ids`` already recorded (earlier imports or batches)."""
        out: dict[str, bytes] = {}
        for i in range(0, len(ids), 500):
            chunk = list(ids[i : i + 500])
            marks = ",".join("?" * len(chunk))
            cur.execute(f"SELECT id FROM bf_events WHERE id IN ({marks})", chunk)
            hits = [row["id"] for row in cur.fetchall()]
            if hits:  # rare: re-imports; only then read the states
                marks = ",".join("?" * len(hits))
                cur.execute(f"SELECT id, state FROM bf_events WHERE id IN ({marks})", hits)
                for row in cur.fetchall():
                    out[row["id"]] = bytes(row["state"])
        return out

    def next_seq(self, cur: Cursor) -> int:
        """The position the next appended event gets (under the write lock)."""
        return (cur.execute("SELECT MAX(seq) AS m FROM bf_events").fetchone()["m"] or 0) + 1

    def write_rows(
        self, cur: Cursor, events: Sequence[tuple[Any, ...]], links: Sequence[tuple[Any, ...]]
    ) -> None:
        """The single function that writes events: ready rows, inside ``cur``'s transaction.

        ``events`` are (seq, id, stream, version, type, at_us, rec_us, ord, hash, state),
        ``links`` their ``bf_chain`` rows (seq, link, stream, version, id), both by seq.
        The caller owns the positions and the chain: the importer, which
        keeps the last position and link in memory between batches.
        """
        if self.dialect == "sqlite":
            cur.raw.executemany(
                "INSERT INTO bf_events (seq, id, stream, version, type, at_us, rec_us, ord,"
                " hash, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                events,
            )
            cur.raw.executemany(
                "INSERT INTO bf_chain (seq, link, stream, version, id) VALUES (?, ?, ?, ?, ?)",
                links,
            )
            return
        # Binary COPY: no text escaping of the states (bytea) and the integers.
        with cur.raw.copy(
            "COPY bf_events (seq, id, stream, version, type, at_us, rec_us, ord, hash,"
            " state) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(_COPY_TYPES)
            write = copy.write_row
            for row in events:
                write(row)
        with cur.raw.copy(
            "COPY bf_chain (seq, link, stream, version, id) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(_CHAIN_COPY_TYPES)
            write = copy.write_row
            for link in links:
                write(link)

    @contextmanager
    def indexes_deferred(self, cur: Cursor, *, keep_heads: bool) -> Iterator[None]:
        """Inside ``cur``'s write transaction: drop ``bf_events``' indexes that back no
        constraint, let the caller load rows, then build them again from the loaded table.

        One sorted build per index costs far less than a random b-tree insert per row per
        index when a load is large against what is stored (issue 7). The primary key and
        ``id``'s UNIQUE constraint stay: lookups by id and the duplicate check need it.
        ``keep_heads`` keeps ``(stream, version)`` too, for callers that read stream heads
        from the store while loading. The same transaction holds the drops and the
        builds, so a rollback (an error, a crash) leaves every index as it was; an error
        inside leaves them dropped until the caller rolls back, which it must.
        """
        indexes = self._droppable_indexes(cur)
        if keep_heads:
            indexes = [(n, sql) for n, sql in indexes if n != "bf_events_sv"]
        for name, _sql in indexes:
            cur.execute(f"DROP INDEX {name}")
        yield
        if indexes and self.dialect == "postgres":
            # The default (64 MB) sorts a million-event index on disk, in several passes.
            cur.execute("SET LOCAL maintenance_work_mem = '256MB'")
        for _name, sql in indexes:
            cur.execute(sql)

    def _droppable_indexes(self, cur: Cursor) -> list[tuple[str, str]]:
        """(name, CREATE statement) of each index on ``bf_events`` that no constraint owns,
        in creation order: this module's and any a reader added (the projections' own)."""
        if self.dialect == "sqlite":
            # Inline constraints' indexes (sqlite_autoindex_*) have no SQL and stay.
            rows = cur.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND"
                " tbl_name = 'bf_events' AND sql IS NOT NULL ORDER BY rowid"
            ).fetchall()
        else:
            rows = cur.execute(
                "SELECT c.relname AS name, pg_get_indexdef(x.indexrelid) AS sql FROM pg_index x"
                " JOIN pg_class c ON c.oid = x.indexrelid WHERE x.indrelid = 'bf_events'::regclass"
                " AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid)"
                " ORDER BY x.indexrelid"
            ).fetchall()
        return [(r["name"], r["sql"]) for r in rows]

    # --- reading -------------------------------------------------------------------------

    def _state_join(self) -> str:
        # Until schema 2 states lived in another table; readers that still join it as
        # ``s`` get the same row (the state is ``i.state`` now: prefer that).
        return "JOIN bf_events s ON s.seq = i.seq"

    def iter_rows(
        self,
        *,
        order: str | None = None,
        types: Sequence[str] | None = None,
        at_lte: int | None = None,
        rec_lte: int | None = None,
        seq_gt: int | None = None,
        seq_lte: int | None = None,
        by: str = "at",
        batch: int = 5000,
        replay: bool = False,
    ) -> Iterator[Any]:
        """Index rows joined with their stored state, by ``at`` (ties: seq) or by ``seq``.

        Streams in pages (keyset pagination), so a million events never sit in memory.
        ``replay``: plain ``(seq, at_us, state)`` tuples instead (what a replay reads of
        each event: a whole-history what-if read every column by name, 1.7 s of its 9 s at
        1M events on SQLite).
        """
        where, params = [], []
        if order is not None:
            where.append("i.ord = ?")
            params.append(order)
        if types:
            where.append(f"i.type IN ({','.join('?' * len(types))})")
            params.extend(types)
            if set(types) <= MASTER_TYPES:
                # There is no index on type (it would cost every import): master data is
                # one stream, and (stream, version) is indexed.
                where.append("i.stream = 'master'")
        if at_lte is not None:
            where.append("i.at_us <= ?")
            params.append(at_lte)
        if rec_lte is not None:
            where.append("i.rec_us <= ?")
            params.append(rec_lte)
        if seq_gt is not None:
            where.append("i.seq > ?")
            params.append(seq_gt)
        if seq_lte is not None:
            where.append("i.seq <= ?")
            params.append(seq_lte)
        cols = (
            "i.seq, i.at_us, i.state" if replay else
            "i.seq, i.id, i.stream, i.version, i.type, i.at_us, i.rec_us, i.ord, i.hash,"
            " i.state"
        )
        plain = replay and self.dialect == "sqlite"
        # PostgreSQL: a replay's first page as any read (libpq, no psycopg import for a
        # short one); the pages after it on psycopg in binary, as tuples (the states as
        # stored, not hex text to decode: ~1/4 less time for a whole-history what-if).
        binary = False
        base = f"SELECT {cols} FROM bf_events i"
        key: tuple[int, int] | None = None
        while True:
            conds, ps = list(where), list(params)
            if key is not None:
                if by == "at":
                    # A row value: PostgreSQL reads the (at_us, seq) index from the key; the
                    # OR form made every page filter all the earlier events.
                    conds.append("(i.at_us, i.seq) > (?, ?)")
                    ps.extend(key)
                else:
                    conds.append("i.seq > ?")
                    ps.append(key[1])
            sql = base + (" WHERE " + " AND ".join(conds) if conds else "")
            sql += " ORDER BY i.at_us, i.seq" if by == "at" else " ORDER BY i.seq"
            sql += f" LIMIT {batch}"
            with self.transaction(commit=False, read_only=not binary) as cur:
                if plain or binary:  # tuples: no row object per event (``Cursor.tuples``)
                    tuples = cur.tuples()
                    try:
                        rows = tuples.execute(sql, ps).fetchall()
                    finally:
                        tuples.raw.close()
                else:
                    rows = cur.execute(sql, ps).fetchall()
                    if replay:
                        rows = [(r["seq"], r["at_us"], r["state"]) for r in rows]
            if not rows:
                return
            yield from rows
            if len(rows) < batch:
                return
            binary = replay and self.dialect == "postgres"
            last = rows[-1]
            key = (last[1], last[0]) if replay else (last["at_us"], last["seq"])

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


def _pg_params(url: str) -> dict[str, str]:
    """``psycopg.connect`` parameters of a ``postgresql://`` URL (defaults: 127.0.0.1:5432,
    user postgres, database backflush).

    The plain URLs people write (``postgresql://user:secret@host:5432/db``) are split here;
    anything else (percent-escapes, IPv6 brackets, odd characters, a port that is not a
    number) goes to ``urllib.parse``, which a query process otherwise never loads (~2 ms
    with the ``ipaddress`` it imports). ``tests/test_pg_url.py`` checks that both give the
    same parameters, or the same error."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.isalpha() and _PLAIN_URL.issuperset(rest):
        netloc, _, path = rest.partition("/")
        userinfo, _, hostport = netloc.rpartition("@")
        host, _, port = hostport.partition(":")
        if not port or (port.isdigit() and int(port) <= 65535):
            user, _, password = userinfo.partition(":")
            return {
                "dbname": path.lstrip("/") or "backflush",
                "host": host.lower() or "127.0.0.1",
                "port": str(int(port or 0) or 5432),
                "user": user or "postgres",
                "password": password,
            }
    return _pg_params_parsed(url)


# What ``_pg_params`` splits by hand: letters, digits, and the few separators that mean the
# same to ``urllib.parse`` everywhere in a URL's authority and path (no ``%``, ``[``, ``]``,
# ``#``, ``;``, ``\``, spaces or controls: those take the general path).
_PLAIN_URL = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~:@/!$&'()*+,="
)


def _pg_params_parsed(url: str) -> dict[str, str]:
    """``_pg_params`` by ``urllib.parse``: the reference, and the general case. A URL it
    cannot take (a port that is not a number from 0 to 65535, a bad IPv6 address) is
    ``BadInput`` naming ``--db``, without the URL (it may hold a password)."""
    from urllib.parse import unquote, urlparse

    try:
        u = urlparse(url)
        port = u.port
    except ValueError as exc:
        from backflush.errors import BadInput

        raise BadInput(f"--db: not a usable PostgreSQL URL: {exc}") from None
    return {
        "dbname": unquote(u.path.lstrip("/")) or "backflush",
        "host": u.hostname or "127.0.0.1",
        "port": str(port or 5432),
        "user": unquote(u.username or "postgres"),
        "password": unquote(u.password or ""),
    }
