"""Plain database connections for the store: ``sqlite3`` or ``psycopg``, nothing in between.

The store needs connections, transactions, write-ahead logging and lock timeouts, and for a
query process they are most of its start-up: eventsourcing's datastores import its whole
persistence layer (and ``inspect``), and on PostgreSQL a ``psycopg_pool`` pool with a
background thread, to answer one query over one connection. This module keeps the semantics
the store relied on from them, and nothing else:

- SQLite: autocommit connections with an explicit ``BEGIN`` per transaction, rolled back on
  error or when not committing; ``timeout`` = the lock timeout (busy handler); the database
  switched to WAL when first opened (not in-memory databases, not read-only URIs); rows as
  ``sqlite3.Row``; usable from several threads (``check_same_thread=False``); one writing
  transaction at a time per store in a process (others wait), as eventsourcing's pool
  interlocked them.
- PostgreSQL: autocommit connections, ``BEGIN`` … ``COMMIT``/``ROLLBACK`` per transaction
  (psycopg's ``transaction()``), rows as dicts, ``idle_in_transaction_session_timeout`` off;
  a short read-only transaction on libpq (``ledger.libpq``) runs each statement as its own
  read-only transaction (READ COMMITTED: the same snapshots, two round trips fewer).
  Connections are made when first needed: a query makes one.

Connections are kept for reuse while the store is open: a transaction opened while another
is running (a reader inside a writer's loop) gets a connection of its own, as from a pool.
"""

from __future__ import annotations

import _thread  # (threading's Lock, without importing threading: ~0.7 ms of a query)
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

TYPE_CHECKING = False  # not typing's: a query process never imports typing (~3 ms)
if TYPE_CHECKING:
    from typing import Any


CONNECT_TIMEOUT = 10  # seconds to reach a PostgreSQL server before giving up (exit 3)
# Rows a process reads through libpq (``ledger.libpq``) before its read-only transactions
# go through psycopg: libpq saves a short query psycopg's ~150 ms import, but decodes each
# cell with a ctypes call, so a long read (a replay of the ledger: pages of 5,000 events) is
# faster on psycopg's C row decoding once its import is paid.
LIBPQ_ROW_BUDGET = 20_000


class _Connections:
    """Idle connections kept for reuse, made on demand (a store's pool)."""

    def __init__(self, connect: Callable[[], Any]):
        self._connect = connect
        self._idle: list[Any] = []
        self._lock = _thread.allocate_lock()
        self._closed = False

    def take(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def give(self, conn: Any) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                return
        with suppress(Exception):
            conn.close()

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A connection of the pool, outside any transaction (returned afterwards)."""
        conn = self.take()
        try:
            yield conn
        finally:
            self.give(conn)

    def release_idle(self) -> None:
        """Close the idle connections (their page caches with them); new ones are made on
        demand. Between a bulk write and what follows, so the two do not add up in memory."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            with suppress(Exception):
                conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle, self._closed = self._idle, [], True
        for conn in idle:
            with suppress(Exception):
                conn.close()


class SQLiteConnections(_Connections):
    """Connections to one SQLite database (a path or a ``file:`` URI)."""

    def __init__(self, database: str, *, lock_timeout: float, readonly: bool = False):
        self.database = database
        self.lock_timeout = lock_timeout
        self.readonly = readonly
        self.memory = ":memory:" in database or "mode=memory" in database
        self._wal_checked = self.memory
        self._writer = _thread.allocate_lock()
        super().__init__(self._open)

    @contextmanager
    def _writing(self, commit: bool) -> Iterator[None]:
        """One writing transaction at a time in this process (others wait, bounded)."""
        if not commit:
            yield
            return
        if not self._writer.acquire(timeout=self.lock_timeout):
            from backflush.errors import OperationalError

            raise OperationalError(
                "another writing transaction of this process did not finish within"
                f" {self.lock_timeout:g} s"
            )
        try:
            yield
        finally:
            self._writer.release()

    def _open(self) -> Any:
        import sqlite3

        conn = sqlite3.connect(self.database, uri=True, check_same_thread=False,
                               isolation_level=None, timeout=self.lock_timeout)
        if not self._wal_checked:
            # Readers never block the writer and a crash loses no committed transaction.
            # A ledger is made in WAL mode; a read-only opening only asks.
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode.lower() != "wal" and not self.readonly:
                # Fails at once ("locked") while a first bulk import writes in rollback
                # journal mode (``rollback_journal``): read as it is, it turns WAL again.
                with suppress(sqlite3.OperationalError):
                    conn.execute("PRAGMA journal_mode=WAL")
            self._wal_checked = True
        conn.row_factory = sqlite3.Row
        return conn

    @contextmanager
    def rollback_journal(self) -> Iterator[bool]:
        """Write with a rollback journal instead of the WAL while inside, if this is the one
        connection to the database (else nothing changes); says whether it switched.

        For a first bulk import (issue 7): in WAL mode every page of the load is written
        twice, into the log and then by the checkpoint into the database, and for an empty
        database the rollback journal holds next to nothing, so each page is written once.
        It is as atomic (a crash leaves a hot journal that the next opening rolls back).
        SQLite refuses to leave WAL while any other connection has the database open, so a
        reader already there is never surprised; one that opens meanwhile waits for the
        import's commit (up to the lock timeout) before it reads, where in WAL mode it would
        have read the still empty ledger. WAL again on the way out.
        """
        if self.memory or self.readonly:
            yield False
            return
        import sqlite3

        self.release_idle()
        with self.connection() as conn:
            try:
                mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
            except sqlite3.OperationalError:  # another connection: stay in WAL
                mode = "wal"
        switched = mode.lower() == "delete"
        try:
            yield switched
        finally:
            if switched:
                with self.connection() as conn, suppress(sqlite3.OperationalError):
                    # If a reader holds it now, the next opening switches (``_open``).
                    conn.execute("PRAGMA journal_mode=WAL")

    @contextmanager
    def transaction(self, *, commit: bool, read_only: bool = False) -> Iterator[Any]:
        """A ``sqlite3`` cursor in a transaction: committed at the end if ``commit``, else
        (and on any error) rolled back. ``read_only`` changes nothing on SQLite."""
        with self._writing(commit):
            conn = self.take()
            try:
                cur = conn.cursor()
                try:
                    cur.execute("BEGIN")
                    try:
                        yield cur
                    except BaseException:
                        conn.rollback()
                        raise
                    if commit:
                        try:
                            conn.commit()
                        except BaseException:
                            with suppress(Exception):  # e.g. busy: leave no open transaction
                                conn.rollback()
                            raise
                    else:
                        conn.rollback()
                finally:
                    cur.close()
            finally:
                self.give(conn)


class PostgresConnections(_Connections):
    """Connections to one PostgreSQL database (``psycopg`` keyword parameters)."""

    def __init__(self, params: dict[str, Any]):
        self.params = params
        super().__init__(self._open)
        self._readers = _Connections(self._open_reader)
        self.rows_via_libpq = 0

    def _open_reader(self) -> Any:
        """A libpq connection for read-only transactions, or None (no libpq: psycopg)."""
        from backflush.ledger import libpq

        lib = libpq.load()
        if lib is None:
            return None
        return libpq.Connection(lib, {
            **self.params,
            "connect_timeout": CONNECT_TIMEOUT,
            "client_encoding": "UTF8",
            # Every statement on it is its own read-only transaction (``_reading``).
            "options": "-c idle_in_transaction_session_timeout=0 -c bytea_output=hex"
                       " -c default_transaction_read_only=on",
        })

    def close(self) -> None:
        super().close()
        self._readers.close()

    def _open(self) -> Any:
        try:
            import psycopg
            from psycopg.rows import dict_row
        except ImportError as exc:
            from backflush.errors import DriverMissing

            raise DriverMissing(
                f"a PostgreSQL ledger needs psycopg, which this installation lacks ({exc}):"
                " pip install 'backflush[postgres]'") from None

        return psycopg.connect(
            **self.params,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=CONNECT_TIMEOUT,
            # In the start-up packet (no extra round trip): a transaction left open by a
            # slow consumer is not cut off by a server default.
            options="-c idle_in_transaction_session_timeout=0",
        )

    @contextmanager
    def transaction(self, *, commit: bool, read_only: bool = False) -> Iterator[Any]:
        """A ``psycopg`` cursor (rows as dicts) in a transaction: committed at the end if
        ``commit``, else (and on any error) rolled back. ``read_only``: a libpq cursor of
        the same face when libpq can be loaded (``ledger.libpq``: no psycopg import)."""
        reader = None
        if read_only and not commit and self.rows_via_libpq < LIBPQ_ROW_BUDGET:
            reader = self._readers.take()
        if reader is not None:
            with self._reading(reader) as cur:
                yield cur
            return
        conn = self.take()
        try:
            with conn.transaction(force_rollback=not commit), conn.cursor() as cur:
                yield cur
        finally:
            if conn.closed or conn.broken:
                with suppress(Exception):
                    conn.close()
            else:
                self.give(conn)

    @contextmanager
    def _reading(self, conn: Any) -> Iterator[Any]:
        """A read-only transaction on a libpq connection; a broken one is closed.

        No ``BEGIN`` … ``ROLLBACK``: each statement runs as its own transaction, read-only
        by the session's default (set at connect, in the start-up packet). Under READ
        COMMITTED, PostgreSQL's default and the level every transaction here runs at, each
        statement of a transaction takes its own snapshot anyway, so the two statements
        only cost round trips: 16 of the 24 of a ``findings --order`` process (issue 7).
        """
        try:
            yield conn.cursor()
        finally:
            self.rows_via_libpq += conn.take_rows_read()
            if conn.broken:
                conn.close()
            else:
                self._readers.give(conn)
