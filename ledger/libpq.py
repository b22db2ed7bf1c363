"""Read-only PostgreSQL transactions straight through libpq, for short query processes.

Why it exists: ``import psycopg`` takes ~150-200 ms (it loads asyncio, ``importlib.metadata``,
its adapters and type registry), while ``backflush onhand`` on PostgreSQL reads a handful of
rows in a few milliseconds: with psycopg a query process was 8-9x a bare ``python -c pass``.
This module calls the very libpq psycopg itself sits on (the copy bundled with
``psycopg[binary]``, else the system's ``libpq.so.5``) through ``ctypes``: connect with the
same keyword parameters, run a statement with parameters, return rows as dicts with the
Python types psycopg gives for the column types the ledger uses.

It serves read-only transactions only (each statement its own, in a session whose
transactions are read-only by default); every writing transaction goes through psycopg
(``ledger.connect``). When no libpq can be loaded, ``load()`` returns None and psycopg
serves the reads too, so this is a speed path, never a requirement.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator, Sequence
from decimal import Decimal

TYPE_CHECKING = False  # not typing's: a query process never imports typing (~3 ms)
if TYPE_CHECKING:
    from typing import Any


_CONNECTION_OK = 0
_PGRES_COMMAND_OK = 1
_PGRES_TUPLES_OK = 2
_PQTRANS_IDLE = 0
_DIAG_SQLSTATE = ord("C")


class DatabaseError(Exception):
    """An error reported by the server or libpq (the CLI maps it to exit 3, as psycopg's)."""

    def __init__(self, message: str, sqlstate: str | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate


class OperationalError(DatabaseError):
    """The server could not be reached or the connection broke."""


def _bytea(v: bytes) -> bytes:
    # bytea_output=hex is asked for in the start-up packet: "\x" then two digits a byte.
    return bytes.fromhex(v[2:].decode("ascii"))


def _bool(v: bytes) -> bool:
    return v == b"t"


# Text-format decoders by type OID: the types the ledger's tables and queries produce. A
# column of any other type is an error, not a silently different value.
_DECODERS: dict[int, Any] = {
    16: _bool,  # boolean
    17: _bytea,  # bytea
    18: bytes.decode,  # "char"
    19: bytes.decode,  # name
    20: int,  # bigint
    21: int,  # smallint
    23: int,  # integer
    25: bytes.decode,  # text
    26: int,  # oid
    700: float,  # real
    701: float,  # double precision
    1042: bytes.decode,  # character(n)
    1043: bytes.decode,  # varchar
    1700: lambda v: Decimal(v.decode("ascii")),  # numeric
    24: bytes.decode,  # regproc
    2205: bytes.decode,  # regclass (to_regclass: does a table exist)
    2206: bytes.decode,  # regtype
}


def _param(v: Any) -> bytes | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return b"true" if v else b"false"
    if isinstance(v, (bytes, bytearray, memoryview)):
        return b"\\x" + bytes(v).hex().encode("ascii")
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, (int, Decimal, float)):
        return str(v).encode("ascii")
    raise TypeError(f"cannot pass a {type(v).__name__} to PostgreSQL through libpq")


def numbered(sql: str) -> str:
    """psycopg's placeholders (``%s``, ``%b``, ``%t``; ``%%`` a literal ``%``) as libpq's
    ``$1``, ``$2``, …, read the way psycopg reads them (literals are not special)."""
    if "%" not in sql:
        return sql
    out: list[str] = []
    n = 0
    i = 0
    while i < len(sql):
        c = sql[i]
        if c == "%" and i + 1 < len(sql):
            nxt = sql[i + 1]
            if nxt == "%":
                out.append("%")
                i += 2
                continue
            if nxt in "sbt":
                n += 1
                out.append(f"${n}")
                i += 2
                continue
        out.append(c)
        i += 1
    return "".join(out)


class _Lib:
    """The libpq functions this module calls, with their C signatures."""

    def __init__(self, dll: Any):
        p, i, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
        sig = {
            "PQconnectdbParams": (p, [ctypes.POINTER(s), ctypes.POINTER(s), i]),
            "PQstatus": (i, [p]),
            "PQerrorMessage": (s, [p]),
            "PQfinish": (None, [p]),
            "PQexec": (p, [p, s]),
            "PQexecParams": (p, [p, s, i, p, ctypes.POINTER(s), p, p, i]),
            "PQresultStatus": (i, [p]),
            "PQresultErrorMessage": (s, [p]),
            "PQresultErrorField": (s, [p, i]),
            "PQntuples": (i, [p]),
            "PQnfields": (i, [p]),
            "PQfname": (s, [p, i]),
            "PQftype": (ctypes.c_uint, [p, i]),
            "PQgetvalue": (s, [p, i, i]),
            "PQgetisnull": (i, [p, i, i]),
            "PQclear": (None, [p]),
            "PQtransactionStatus": (i, [p]),
        }
        for name, (res, args) in sig.items():
            fn = getattr(dll, name)
            fn.restype, fn.argtypes = res, args
            setattr(self, name, fn)


def _candidates() -> Iterator[str]:
    """libpq files to try: psycopg[binary]'s bundled copy first (what psycopg would use),
    then the system's by its soname."""
    from importlib.util import find_spec

    try:
        spec = find_spec("psycopg_binary")  # locates the package without importing it
    except (ImportError, ValueError):
        spec = None
    for where in (spec.submodule_search_locations or []) if spec else []:
        libs = os.path.join(os.path.dirname(where), "psycopg_binary.libs")
        if os.path.isdir(libs):
            yield from (os.path.join(libs, f) for f in sorted(os.listdir(libs))
                        if f.startswith("libpq"))
    yield from ("libpq.so.5", "libpq.5.dylib", "libpq.dll")


_LOADED: list[_Lib | None] = []


def load() -> _Lib | None:
    """libpq's functions, or None when no libpq can be loaded (psycopg then reads too).
    ``BACKFLUSH_PG_LIBPQ=0`` turns this path off."""
    if not _LOADED:
        lib = None
        if os.environ.get("BACKFLUSH_PG_LIBPQ", "1") != "0":
            for path in _candidates():
                try:
                    lib = _Lib(ctypes.CDLL(path))
                    break
                except (OSError, AttributeError):
                    continue
        _LOADED.append(lib)
    return _LOADED[0]


def _array(values: Sequence[bytes | None]) -> Any:
    arr = (ctypes.c_char_p * (len(values) + 1))()
    for k, v in enumerate(values):
        arr[k] = v
    arr[len(values)] = None
    return arr


class Connection:
    """One libpq connection, used for read-only transactions."""

    def __init__(self, lib: _Lib, params: dict[str, Any]):
        self.lib = lib
        self.rows_read = 0
        keys = [k.encode() for k in params]
        vals = [str(v).encode() for v in params.values()]
        self.pg = lib.PQconnectdbParams(_array(keys), _array(vals), 0)
        if not self.pg or lib.PQstatus(self.pg) != _CONNECTION_OK:
            msg = self._message()
            self.close()
            raise OperationalError(msg or "could not connect to PostgreSQL")

    def _message(self) -> str:
        if not self.pg:
            return ""
        raw = self.lib.PQerrorMessage(self.pg) or b""
        return raw.decode("utf-8", "replace").strip()

    def take_rows_read(self) -> int:
        """Rows decoded since the last call (``ledger.connect`` budgets them)."""
        n, self.rows_read = self.rows_read, 0
        return n

    @property
    def broken(self) -> bool:
        """True when the connection can no longer be used (or is not idle)."""
        return (not self.pg or self.lib.PQstatus(self.pg) != _CONNECTION_OK
                or self.lib.PQtransactionStatus(self.pg) != _PQTRANS_IDLE)

    def run(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; return its ``PGresult`` (the caller clears it)."""
        lib = self.lib
        if params:
            values = [_param(v) for v in params]
            res = lib.PQexecParams(self.pg, numbered(sql).encode("utf-8"), len(values), None,
                                   _array(values), None, None, 0)
        else:
            res = lib.PQexec(self.pg, numbered(sql).encode("utf-8"))
        if not res:
            raise OperationalError(self._message() or "no result from PostgreSQL")
        status = lib.PQresultStatus(res)
        if status not in (_PGRES_COMMAND_OK, _PGRES_TUPLES_OK):
            msg = (lib.PQresultErrorMessage(res) or b"").decode("utf-8", "replace").strip()
            state = lib.PQresultErrorField(res, _DIAG_SQLSTATE)
            lib.PQclear(res)
            bad = lib.PQstatus(self.pg) != _CONNECTION_OK
            raise (OperationalError if bad else DatabaseError)(
                msg or self._message(), state.decode() if state else None)
        return res

    def cursor(self) -> Cursor:
        return Cursor(self)

    def close(self) -> None:
        if self.pg:
            self.lib.PQfinish(self.pg)
            self.pg = None


class Cursor:
    """The part of a psycopg cursor (``dict_row``) the ledger's readers use."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self._rows: list[dict[str, Any]] = []
        self._next = 0

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        lib = self.conn.lib
        res = self.conn.run(sql, params)
        try:
            self._rows = self._decode(lib, res)
            self.conn.rows_read += len(self._rows)
        finally:
            lib.PQclear(res)
        self._next = 0
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        for r in rows:
            self.execute(sql, r)

    @staticmethod
    def _decode(lib: _Lib, res: Any) -> list[dict[str, Any]]:
        nrows, ncols = lib.PQntuples(res), lib.PQnfields(res)
        if not ncols:
            return []
        names = [lib.PQfname(res, c).decode("utf-8") for c in range(ncols)]
        decoders = []
        for c in range(ncols):
            oid = lib.PQftype(res, c)
            if oid not in _DECODERS:
                raise DatabaseError(f"column {names[c]!r} has a type (OID {oid}) this reader"
                                    " does not decode")
            decoders.append(_DECODERS[oid])
        getvalue, isnull = lib.PQgetvalue, lib.PQgetisnull
        cols = list(zip(range(ncols), decoders, strict=True))
        out = []
        for r in range(nrows):
            row = []
            for c, dec in cols:
                v = getvalue(res, r, c)
                row.append(None if not v and isnull(res, r, c) else dec(v))
            out.append(dict(zip(names, row, strict=True)))
        return out

    def fetchall(self) -> list[dict[str, Any]]:
        rows = self._rows[self._next:]
        self._next = len(self._rows)
        return rows

    def fetchone(self) -> dict[str, Any] | None:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while (row := self.fetchone()) is not None:
            yield row

    def close(self) -> None:
        self._rows = []
