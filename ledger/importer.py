"""Import of JSON Lines files: validate everything, append all or nothing, skip what is known.

One pass over the input, inside one write transaction: each line is validated (pydantic,
from the raw bytes), checked against the names the ledger and the earlier lines define,
and appended in batches. If any line is bad, the transaction is rolled back and every
problem is reported as ``FILE:LINE: field: reason``; so a crash or a bad line leaves the
ledger as it was, and memory stays bounded by the batch size, not by the file.

A bulk load (into an empty ledger, or on SQLite a file at least as large as the ledger)
builds the events' secondary indexes after the rows, in the same transaction
(``Ledger.indexes_deferred``); duplicate ids are still caught before anything is written.

A bulk file (``PIPELINE_MIN_BYTES``, ~20k events) into an empty ledger, on a machine with two
usable CPUs, is imported by two processes (``ledger.parallel``): a forked worker runs this
module's per-line work (``_produce``: read, validate, dedup; into PostgreSQL also hash-chain
and build the rows) while this process holds the transaction and writes what it sends (into
SQLite it hash-chains and builds the rows itself, ``_Appender.rows``), linking them into the
ledger-wide chain. Same rows, same result, same all-or-nothing; ``BACKFLUSH_IMPORT_WORKERS=0``
keeps everything in one process. Such a file into an empty SQLite ledger is also written
with a rollback journal instead of the WAL (``Ledger.bulk_load``): each page once, not twice.
"""

from __future__ import annotations

import errno
import os
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any, BinaryIO

import orjson
from backflush.ledger import fastpath
from backflush.ledger.anchor import last_link
from backflush.ledger.bloom import Bloom
from backflush.ledger.codec import GENESIS, body_of, content_digest
from backflush.ledger.names import INVENTORY_TYPES, MASTER_TYPES, ORDER_TYPES
from backflush.ledger.store import Cursor, Ledger, to_us

BATCH = 1000
PROGRESS_EVERY = 10_000  # lines between progress callbacks
# Rows PostgreSQL gets per COPY: each COPY costs the server a statement's set-up, so fewer
# and larger ones (measured at 200k events: server CPU 2.65 s at 1,000 rows, 1.81 s at
# 5,000). SQLite's executemany has no such cost: its rows are written per batch.
COPY_ROWS = 5000
# Names derived from content for events sent without an id, so re-sending the same file
# is idempotent too (the n-th identical line of a file keeps its own id).
_ID_NAMESPACE = uuid.UUID("6f1c3c52-5d7e-4d5e-9a53-0b1f1a6c2b10")


@dataclass(frozen=True)
class ImportError_:
    """One bad input line: where, which field, why."""

    file: str
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.reason}"


# Problems kept (and listed) per import; the rest are only counted. A file whose master
# data was forgotten has a problem or two on every line: 1.6M at 1M lines, which took
# 800 MB to hold and as many lines of stderr to read. The first ones say what is wrong.
MAX_PROBLEMS = 1000


class Problems(list):
    """An import's problems in file and line order: the first ``MAX_PROBLEMS`` kept, every
    one counted (``total``). Some checks run per batch, so a problem can arrive after
    those of later lines: the list is cut back to its first ``MAX_PROBLEMS`` now and then,
    and what is cut can never be among the first overall (that many come before it)."""

    def __init__(self, rank: dict[str, int] | None = None):
        super().__init__()
        self.rank = rank or {}
        self.total = 0

    def append(self, problem: ImportError_) -> None:
        self.total += 1
        super().append(problem)
        if len(self) >= 2 * MAX_PROBLEMS:
            self.settle()

    def settle(self) -> None:
        """Sort by file and line, and keep the first ``MAX_PROBLEMS``."""
        rank, last = self.rank, len(self.rank)
        self.sort(key=lambda e: (rank.get(e.file, last), e.line))
        del self[MAX_PROBLEMS:]


@dataclass
class ImportResult:
    """What an import did (or, with errors, would have refused to do)."""

    appended: int = 0
    duplicates: int = 0
    errors: Problems = field(default_factory=Problems)
    lines: int = 0

    @property
    def problems(self) -> int:
        """How many problems were found (``errors`` lists the first ``MAX_PROBLEMS``)."""
        return self.errors.total


class _StoredOrders(dict):
    """order -> route of the orders recorded, each read from the store when first asked
    for (its OrderCreated, through a partial index); an order of this import is added
    (``_Names.add``). Reading every OrderCreated up front took ~0.7 s at 1M events on
    PostgreSQL, for any import."""

    def __init__(self, cur: Cursor):
        super().__init__()
        self._cur = cur
        self._absent: set[str] = set()

    def _load(self, order: Any) -> bool:
        if not isinstance(order, str) or order in self._absent:
            return False
        row = self._cur.execute(
            "SELECT state FROM bf_events WHERE type = 'OrderCreated' AND ord = ?", (order,)
        ).fetchone()
        if row is None:
            self._absent.add(order)
            return False
        self[order] = _state_payload(row["state"]).get("route")
        return True

    def __contains__(self, order: object) -> bool:
        return dict.__contains__(self, order) or self._load(order)

    def __missing__(self, order: str) -> str | None:
        if self._load(order):
            return dict.__getitem__(self, order)
        raise KeyError(order)

    def __setitem__(self, order: str, route: str | None) -> None:
        self._absent.discard(order)
        dict.__setitem__(self, order, route)


@dataclass
class _Names:
    """The names the ledger defines so far: what references may point to."""

    items: set[str] = field(default_factory=set)
    boms: set[str] = field(default_factory=set)
    routes: dict[str, set[int]] = field(default_factory=dict)
    resources: set[str] = field(default_factory=set)
    orders: dict[str, str | None] = field(default_factory=dict)  # order -> route

    @classmethod
    def load(cls, ledger: Ledger, cur: Cursor) -> _Names:
        names = cls()
        # Master data is the "master" stream, read whole (hundreds of events). Orders are
        # looked up as the import names them (``_StoredOrders``): a late import into a
        # plant's ledger names a few dozen of its tens of thousands.
        for row in cur.execute(
            "SELECT state FROM bf_events WHERE stream = 'master' ORDER BY version"
        ).fetchall():
            names.add(_state_payload(row["state"]))
        if ledger.next_seq(cur) > 1:
            names.orders = _StoredOrders(cur)
        return names

    def add(self, p: dict[str, Any]) -> None:
        t = p["type"]
        if t == "ItemDefined":
            self.items.add(p["item"])
        elif t == "ResourceDefined":
            self.resources.add(p["resource"])
        elif t == "BomDefined":
            self.boms.add(p["bom"])
        elif t == "RouteDefined":
            self.routes.setdefault(p["route"], set()).update(o["op"] for o in p["operations"])
        elif t == "OrderCreated":
            self.orders[p["order"]] = p.get("route")

    def check(self, p: dict[str, Any]) -> list[tuple[str, str]]:
        """References in ``p`` that point nowhere, as (field, reason)."""
        bad: list[tuple[str, str]] = []
        t = p["type"]

        def need(kind: str, fieldname: str, value: Any, known: Any) -> None:
            if value is not None and value not in known:
                bad.append((fieldname, f"unknown {kind} {value!r}"))

        if t == "BomDefined":
            need("item", "item", p["item"], self.items)
            for i, line in enumerate(p["lines"]):
                need("item", f"lines[{i}].item", line["item"], self.items)
        elif t == "RouteDefined":
            for i, op in enumerate(p["operations"]):
                need("resource", f"operations[{i}].resource", op["resource"], self.resources)
        elif t == "OrderCreated":
            need("item", "item", p["item"], self.items)
            need("BOM", "bom", p["bom"], self.boms)
            need("route", "route", p.get("route"), self.routes)
        elif t in INVENTORY_TYPES:
            need("item", "item", p["item"], self.items)
            need("order", "order", p.get("order"), self.orders)
        elif t in ORDER_TYPES:
            need("order", "order", p["order"], self.orders)
            if t == "MaterialConsumed":
                need("item", "item", p["item"], self.items)
            elif t == "OperationReported" and p["order"] in self.orders:
                route = self.orders[p["order"]]
                if route is not None and p["op"] not in self.routes.get(route, ()):
                    bad.append(("op", f"operation {p['op']} is not on route {route!r}"))
        return bad


def _state_payload(state: bytes) -> dict[str, Any]:
    return orjson.loads(state)["e"]


def stream_of(p: dict[str, Any], order: str | None = None) -> str:
    """The stream an event belongs to: its order's, else master data or inventory.

    A Reversal joins the stream of the order its reversed event belongs to (a correction
    of the order's history, as DESIGN lists it), else the inventory stream.
    """
    t = p["type"]
    if t in MASTER_TYPES:
        return "master"
    if t in ORDER_TYPES:
        return "order:" + p["order"]
    if t == "Reversal" and order:
        return "order:" + order
    return "inventory"


def _cannot_reverse(target: tuple[str, str, int], at_us: int) -> str | None:
    """Why a Reversal of ``target`` (order, type, at_us) could undo nothing, if it could not.

    DESIGN §2: a Reversal undoes an earlier inventory or order event. Master data is
    versioned by a later definition instead; a Reversal of a Reversal would be an undo of
    an undo the engine does not model; and one dated before its target would, replayed in
    ``at`` order, come before the event it undoes.
    """
    _order, type_, target_at = target
    if type_ in MASTER_TYPES:
        return f"cannot reverse master data ({type_}): record a new definition instead"
    if type_ == "Reversal":
        return "cannot reverse a Reversal: record the event again instead"
    if at_us < target_at:
        return "dated before the event it reverses"
    return None


MAX_LINE = 1 << 20  # bytes: one event is small; a longer line is a broken file, not an event


STDIN = "-"
STDIN_LABEL = "<stdin>"


def label_of(path: str) -> str:
    """How errors name an input: the path, or ``<stdin>`` for ``-``."""
    return STDIN_LABEL if path == STDIN else path


class _Stdin:
    """Standard input with its first bytes read ahead: how large an import from a pipe is
    cannot be asked in advance, only seen (``_large``).

    It reads through a descriptor of its own (a duplicate of the stream's), because the
    two-process import's worker reads on from it after ``fork``, and ``multiprocessing``
    closes ``sys.stdin`` in the processes it starts. A stream without a descriptor (one held
    in memory, as in tests) is read as it is, in this process only (``forkable``).
    """

    def __init__(self, stream: BinaryIO | None, ahead: int):
        try:
            fd = stream.fileno() if stream is not None else None
        except (AttributeError, OSError, ValueError):
            fd = None
        self.forkable = fd is not None
        self.fh: Any = stream
        if fd is not None:
            try:
                self.fh = open(os.dup(fd), "rb")  # noqa: SIM115
            except OSError:  # its descriptor was closed under it
                self.fh, self.forkable = None, False
        self.head = (self.fh.read(ahead) if self.fh is not None else b"") or b""
        self.seen = len(self.head)  # bytes known to be there (at least)

    def read(self, n: int) -> bytes:
        if self.head:
            head, self.head = self.head, b""
            return head
        if self.fh is None:  # started with standard input closed: a mistake, not "empty"
            raise OSError(errno.EBADF, "standard input is not open")
        return self.fh.read(n)

    def close(self) -> None:
        if self.forkable:
            self.fh.close()


# The first bytes of every gzip member. No JSON text starts with 0x1f (a control character),
# so a file or pipe that does is taken for gzip-compressed, whatever its name.
GZIP_MAGIC = b"\x1f\x8b"


class _Prefixed:
    """A stream whose first bytes were read already: those, then the rest."""

    def __init__(self, head: bytes, fh: Any):
        self.head, self.fh = head, fh

    def read(self, n: int) -> bytes:
        if self.head:
            if n < 0 or n >= len(self.head):
                head, self.head = self.head, b""
                return head
            head, self.head = self.head[:n], self.head[n:]
            return head
        return self.fh.read(n)


class _Gunzip:
    """A gzip-compressed stream read as its content; damaged data is an ``OSError`` (the
    import reports it against the file and appends nothing), not a traceback."""

    def __init__(self, fh: Any):
        import gzip

        self.z = gzip.GzipFile(fileobj=fh, mode="rb")
        self.bad = gzip.BadGzipFile

    def read(self, n: int) -> bytes:
        import zlib

        try:
            return self.z.read(n)
        except (EOFError, zlib.error, self.bad) as exc:
            raise OSError(f"damaged gzip data: {exc}") from None


def content_of(fh: Any) -> Any:
    """``fh`` (anything with ``read(n)``) as a stream of its content: decompressed when it
    is gzip-compressed (``GZIP_MAGIC``), else as it is."""
    head = fh.read(1 << 20)
    src = _Prefixed(head, fh)
    return _Gunzip(src) if head[:2] == GZIP_MAGIC else src


def content_size(path: str) -> int:
    """About how many bytes of content a file holds: its size, or for a gzip-compressed
    file the size its trailer records (modulo 4 GiB, of the last member: an estimate, used
    only to choose how to import, never for what is imported)."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        if fh.read(2) != GZIP_MAGIC or size < 18:
            return size
        fh.seek(-4, os.SEEK_END)
        return max(size, int.from_bytes(fh.read(4), "little"))


def read_lines(
    path: str, stdin: BinaryIO | _Stdin | None = None
) -> Iterator[tuple[int, bytes | None]]:
    """(line number, raw bytes) of the non-blank lines of a file (``-``: ``stdin``, by
    default the process's standard input), streamed; gzip-compressed input is read as
    what it holds (``content_of``).

    A line longer than ``MAX_LINE`` comes as ``None`` (it is skipped, not held in memory).
    """
    if path == STDIN:
        yield from _lines(content_of(sys.stdin.buffer if stdin is None else stdin))
        return
    with open(path, "rb") as fh:
        yield from _lines(content_of(fh))


def _lines(fh: Any) -> Iterator[tuple[int, bytes | None]]:
    # Read in chunks and split in C (a readline per line costs more than the split); a
    # line that grows past MAX_LINE is dropped as it is read, so memory stays bounded.
    n = 0
    carry = b""
    overlong = False
    while chunk := fh.read(1 << 20):
        parts = chunk.split(b"\n")
        rest = parts.pop()
        if parts:
            n += 1
            first = parts[0]
            if overlong or len(carry) + len(first) > MAX_LINE:
                yield n, None
            else:
                first = (carry + first).strip()
                if first:
                    yield n, first
            overlong, carry = False, b""
            for raw in parts[1:]:
                n += 1
                if len(raw) > MAX_LINE:
                    yield n, None
                    continue
                raw = raw.strip()
                if raw:
                    yield n, raw
        if overlong or len(carry) + len(rest) > MAX_LINE:
            overlong, carry = True, b""
        else:
            carry += rest
    if overlong:
        yield n + 1, None
    elif carry.strip():
        yield n + 1, carry.strip()


def import_files(
    ledger: Ledger,
    paths: Iterable[str],
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Import JSONL files into ``ledger`` in one transaction; see the module docstring."""
    paths = list(paths)
    recorded = now or datetime.now(UTC)
    rec_text = recorded.isoformat()
    rec_us = to_us(recorded)
    result = ImportResult()
    # How problems are ordered: by file as given (its label), then line.
    result.errors.rank = {label_of(p): i for i, p in reversed(list(enumerate(paths)))}
    # A large import from a pipe gets what a large file gets (bulk load, two processes).
    stdin = (
        _Stdin(getattr(sys.stdin, "buffer", None), PIPELINE_MIN_BYTES)
        if STDIN in paths
        else None
    )
    try:
        return _import(ledger, paths, dry_run, rec_text, rec_us, result, progress, stdin)
    finally:
        if stdin is not None:
            stdin.close()


def _import(
    ledger: Ledger,
    paths: list[str],
    dry_run: bool,
    rec_text: str,
    rec_us: int,
    result: ImportResult,
    progress: Callable[[int], None] | None,
    stdin: _Stdin | None,
) -> ImportResult:
    large = _large(paths, stdin)
    bulk = (
        ledger.bulk_load()
        if not dry_run and ledger.dialect == "sqlite" and large and ledger.is_empty()
        else nullcontext()
    )
    with bulk, ledger.writing(commit=not dry_run) as cur:
        names = _Names.load(ledger, cur)
        state = _Appender(ledger, cur, rec_text, rec_us, result)
        deferred = (
            ledger.indexes_deferred(cur, keep_heads=not state.fresh)
            if not dry_run and _bulk(ledger, paths, state, stdin)
            else nullcontext()
        )
        with deferred:
            if _pipelined(paths, state, stdin):
                from backflush.ledger import parallel

                def produce(remote: parallel.RemoteStore) -> tuple[Any, ...]:
                    # In the worker (forked): the same work, every store access through
                    # the writer; the result goes back as plain tuples.
                    state.store, state.ledger, state.cur = remote, None, None
                    state.chain_here = False
                    state.rows_elsewhere = ledger.dialect == "sqlite"
                    _produce(paths, names, state, result,
                             remote.progress if progress else None, stdin)
                    errs = [(e.file, e.line, e.field, e.reason) for e in result.errors]
                    return (result.lines, result.appended, result.duplicates, errs,
                            result.errors.total)

                lines, appended, dups, errs, total = parallel.run(produce, state.store, progress)
                result.lines, result.appended, result.duplicates = lines, appended, dups
                for e in errs:
                    result.errors.append(ImportError_(*e))
                result.errors.total = total
            else:
                _produce(paths, names, state, result, progress, stdin)
            if result.errors:
                # Some checks run per batch: list the problems in file and line order.
                result.errors.settle()
                # Leaving the context with an exception rolls the whole import back
                # (the dropped indexes with it).
                raise _Rollback(result)
    return result


def _produce(
    paths: list[str],
    names: _Names,
    state: _Appender,
    result: ImportResult,
    progress: Callable[[int], None] | None,
    stdin: _Stdin | None = None,
) -> None:
    """Validate every line of ``paths`` and append the good ones (through ``state``)."""
    for path in paths:
        occurrences: dict[str, int] = {}
        try:
            _validate(path, names, occurrences, state, result, progress, stdin)
        except OSError as exc:
            result.errors.append(
                ImportError_(label_of(path), 0, "(file)", exc.strerror or str(exc))
            )
    state.flush()
    state.drain()


# Files smaller than this (bytes, ~20k events) import in one process: a worker's start and
# the pipe cost more than they save there.
PIPELINE_MIN_BYTES = 20_000 * 128


def _large(paths: list[str], stdin: _Stdin | None = None) -> bool:
    """Whether ``paths`` hold at least ``PIPELINE_MIN_BYTES`` (stdin: as far as read ahead)."""
    size = 0
    for path in paths:
        if path == STDIN:
            size += stdin.seen if stdin is not None else 0
            continue
        try:
            size += content_size(path)
        except OSError:
            pass  # reported when it is read
    return size >= PIPELINE_MIN_BYTES


def _pipelined(paths: list[str], appender: _Appender, stdin: _Stdin | None = None) -> bool:
    """Whether to prepare the rows in a worker process while this one writes them
    (``ledger.parallel``).

    Only into an empty ledger: there the store is read only for the rare id the filter of
    written ids cannot rule out (and a Reversal's target from an earlier batch); into a
    non-empty one every batch reads the store (its ids, the stream heads), and each read
    waits for the writer to catch up, which leaves little to overlap. Standard input counts
    as large when it held ``PIPELINE_MIN_BYTES`` to read ahead; the forked worker reads on
    from where that stopped (this process reads no more of it).
    """
    if not appender.fresh or not _large(paths, stdin):
        return False
    if stdin is not None and not stdin.forkable:
        return False
    from backflush.ledger import parallel

    return parallel.usable()


# Bytes per event line the bulk rule assumes: simulated plants average ~140, so this
# overestimates a file's events a little, erring towards building indexes afterwards.
_BYTES_PER_EVENT = 128


def _bulk(
    ledger: Ledger, paths: list[str], appender: _Appender, stdin: _Stdin | None = None
) -> bool:
    """Whether to build ``bf_events``' secondary indexes after the load instead of row by row.

    Into an empty ledger, always: nothing is there to keep indexed, and the stream heads
    live in memory (the (stream, version) index goes too). Into a SQLite ledger, when the
    files hold at least as many events as are stored (by their size): then one sorted
    build of each index over everything costs less than a random insert per event. Not on
    PostgreSQL then: dropping an index locks readers out until the import commits, which a
    first import can afford and a running plant cannot.
    """
    if appender.fresh:
        return True
    if ledger.dialect != "sqlite":
        return False
    size = 0
    for path in paths:
        try:
            # Standard input: what was read ahead, a lower bound (so indexes stay in place).
            size += (stdin.seen if stdin is not None else 0) if path == STDIN else (
                content_size(path))
        except OSError:
            pass  # reported when it is read
    return size // _BYTES_PER_EVENT >= appender.seq - 1


class _Rollback(Exception):
    def __init__(self, result: ImportResult):
        super().__init__("import rolled back")
        self.result = result


def run_import(ledger: Ledger, paths: Iterable[str], **kw: Any) -> ImportResult:
    """``import_files`` that returns the result (with errors) instead of raising."""
    try:
        return import_files(ledger, paths, **kw)
    except _Rollback as rb:
        rb.result.appended = 0
        return rb.result


def _validate(
    path: str,
    names: _Names,
    occurrences: dict[str, int],
    appender: _Appender,
    result: ImportResult,
    progress: Callable[[int], None] | None,
    stdin: _Stdin | None = None,
) -> None:
    source, path = path, label_of(path)
    items, orders, routes = names.items, names.orders, names.routes
    pending, pending_ids = appender.pending, appender.pending_ids
    for lineno, raw in read_lines(source, stdin):
        result.lines += 1
        if progress is not None and result.lines % PROGRESS_EVERY == 0:
            progress(result.lines)
        if raw is None:
            result.errors.append(
                ImportError_(path, lineno, "(event)", f"line longer than {MAX_LINE} bytes")
            )
            continue
        try:
            d = loads(raw)
        except JSONDecodeError:
            d = None
        fast = None
        if type(d) is dict and (
            (raw.isascii() and b"\\" not in raw and b"\x7f" not in raw) or plain(raw)
        ):
            # fastpath.plain and fastpath.check, inline (they run once per line).
            try:
                fn = checks.get(d.get("type"))
            except TypeError:  # an unhashable "type"
                fn = None
            if fn is not None:
                fast = fn(d, raw)
        if fast is None:
            # The reference reading: exact parse + the pydantic models (and their reasons).
            # Imported here, for the lines that need it: a process that never loads pydantic
            # (~20 MB with the models) does not hand it to the replay worker it forks for the
            # import's catch-up.
            from backflush.ledger.events import EventErrors, normalise, parse_event

            try:
                event = parse_event(raw)
            except EventErrors as exc:
                for e in exc.errors:
                    result.errors.append(ImportError_(path, lineno, e.field, e.reason))
                continue
            payload, sender_id, at_us = normalise(event), event.id, to_us(event.at)
            body = None
        else:
            payload, sender_id, at_us, body = fast
        t = payload["type"]
        # The common lines name a known item and/or order: a set lookup says so; only the
        # others take the full check (which also words the reasons).
        if t in INVENTORY_TYPES:
            o = payload.get("order")
            ok = payload["item"] in items and (o is None or o in orders)
        elif t in _ORDER_ONLY:
            ok = payload["order"] in orders
        elif t == "MaterialConsumed":
            ok = payload["order"] in orders and payload["item"] in items
        elif t == "OperationReported":
            o = payload["order"]
            ok = o in orders and (
                (route := orders[o]) is None or payload["op"] in routes.get(route, ())
            )
        else:
            ok = False
        bad = [] if ok else names.check(payload)
        if t == "Reversal":
            target = appender.find(payload["reverses"])
            payload_order = None
            if target is None:
                bad.append(("reverses", f"unknown event id {payload['reverses']!r}"))
            else:
                why = _cannot_reverse(target, at_us)
                if why:
                    bad.append(("reverses", why))
                payload_order = target[0]
        else:
            payload_order = payload.get("order")
        if bad:
            for f, r in bad:
                result.errors.append(ImportError_(path, lineno, f, r))
            continue
        if t in _DEFINES:
            names.add(payload)
        if body is None:
            body = dumps(payload, option=OPT_SORT_KEYS)
        if sender_id is None:
            digest = content_digest(body)
            n = occurrences.get(digest, 0)
            occurrences[digest] = n + 1
            sender_id = str(uuid.uuid5(_ID_NAMESPACE, f"{digest}/{n}"))
        if sender_id in pending_ids:
            appender.add(sender_id, t, body, at_us, payload_order, path, lineno)
            continue
        # appender.add's common case, inline (it runs once per line).
        order = payload_order or None
        pending_ids[sender_id] = (body, path, payload_order or "", t, at_us)
        pending.append((sender_id, t, body, at_us, order, path, lineno))
        if len(pending) >= BATCH:
            appender.flush()


loads, dumps, OPT_SORT_KEYS = orjson.loads, orjson.dumps, orjson.OPT_SORT_KEYS
JSONDecodeError = orjson.JSONDecodeError
plain = fastpath.plain
checks = fastpath._CHECKS  # noqa: SLF001 - the importer is fastpath's one caller
_DEFINES = MASTER_TYPES | {"OrderCreated"}
_ORDER_ONLY = frozenset({"OrderReleased", "OrderStarted", "ReportedAsFinished", "OrderEnded"})


# 8 MiB, 2^26 bits, three bits per id: an id not yet written is looked up in the store
# (a "maybe") about once in 10^6 ids at 200k events and once in 10^4 at 1M, so in ~8% of
# the batches at 1M. With one bit per id it was ~1.5% of the ids, nearly every batch, and
# each lookup first writes the rows held back for a larger COPY (``drain``).
_WRITTEN_BYTES = 1 << 23
# Stream heads an import holds before it sets those of ended orders aside: ~8 MB.
HEADS_KEPT = 20_000


class _Appender:
    """Buffers validated events and appends them in batches, hash-chaining each stream."""

    def __init__(self, ledger: Ledger, cur: Cursor, rec_text: str, rec_us: int, res: ImportResult):
        self.ledger, self.cur = ledger, cur
        # Every read and write of the store goes through this (a worker process swaps in
        # one that asks the writing process: ``ledger.parallel``).
        self.store: Any = _LocalStore(ledger, cur)
        self.store.rows_of = self.rows
        # Whether ``flush`` links the events into the ledger-wide chain (``bf_chain``) or
        # leaves that to the store's ``write`` (a worker does: the writer has time to spare).
        self.chain_here = True
        # Whether ``flush`` sends validated events for the store to build the rows of
        # (``rows``, in the writing process) instead of building them here (a worker does,
        # into SQLite: its writer has the time; PostgreSQL's writer and server have not).
        self.rows_elsewhere = False
        self.rec_text, self.rec_us = rec_text, rec_us
        self.result = res
        self.heads: dict[str, tuple[int, str]] = {}
        # The next position and the last ledger-wide link, kept here between batches (the
        # write lock is held, nothing else appends). A ledger empty when the import began
        # has no stream heads to look up.
        self.seq = ledger.next_seq(cur)
        self.link = last_link(cur)[1]
        self.store.link = self.link
        self.fresh = self.seq == 1
        self.stream_names: dict[str, bytes] = {}  # stream -> its UTF-8
        # Past ``heads_kept`` heads, those of ended orders are set aside (``_set_aside``):
        # held, they grew a first import by ~400 bytes an order, 13 MB per million events.
        self.heads_kept = HEADS_KEPT
        self.ended: set[str] = set()  # order streams that ended since the last set-aside
        self.aside: _AsideHeads | None = None
        # Into a ledger that was empty, an id can only be known if this import wrote it: a
        # Bloom filter of the ids written says "surely not" for almost every id, and only
        # the rest are looked up in the store.
        self.written = Bloom(_WRITTEN_BYTES) if self.fresh else None
        # (id, type, body, at_us, order, path, line)
        self.pending: list[tuple[str, str, bytes, int, str | None, str, int]] = []
        self.pending_ids: dict[str, tuple[bytes, str, str, str, int]] = {}
        # Once a line is bad the import will roll back, but the good lines go on being
        # written inside the transaction all the same: later lines are checked against them
        # (ids reused with other content, Reversal targets) in the store, as on the good
        # path, so memory stays bounded. Remembering them in memory instead took 4.3 GB for
        # a 1M-line file with one bad first line.
        # Rows built but not yet written (PostgreSQL: up to COPY_ROWS, see ``drain``).
        self.unwritten: tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]] = ([], [])
        self.write_at = COPY_ROWS if ledger.dialect == "postgres" else 1

    def drain(self) -> None:
        """Write the rows held back; every read of the store comes after this, so it sees
        every earlier line of the import."""
        events, links = self.unwritten
        if events:
            self.store.write(events, links)
            self.unwritten = ([], [])

    def find(self, event_id: str) -> tuple[str, str, int] | None:
        """(order or '', type, at_us) of an already known event id, or None when unknown."""
        if event_id in self.pending_ids:
            _body, _path, order, type_, at_us = self.pending_ids[event_id]
            return order, type_, at_us
        self.drain()
        return self.store.find(event_id)

    def add(
        self, eid: str, type_: str, body: bytes, at_us: int, order: str | None, path: str,
        line: int,
    ) -> None:
        seen = self.pending_ids.get(eid)
        if seen is not None:
            self._duplicate_or_conflict(eid, body, seen[0], path, line)
            return
        self.pending_ids[eid] = (body, path, order or "", type_, at_us)
        self.pending.append((eid, type_, body, at_us, order or None, path, line))
        if len(self.pending) >= BATCH:
            self.flush()

    def _duplicate_or_conflict(self, eid: str, body: bytes, known: bytes, path: str, line: int):
        if body == known:
            self.result.duplicates += 1
        else:
            self.result.errors.append(
                ImportError_(path, line, "id", f"id {eid!r} already recorded with other content")
            )

    def _known(self, ids: list[str]) -> dict[str, bytes]:
        """Canonical body (without id) of each of ``ids`` the ledger holds."""
        self.drain()
        states = self.store.known_states(ids)
        return {i: body_of(orjson.loads(s)["e"]) for i, s in states.items()}

    def flush(self) -> None:
        """Append the buffered batch (after dropping duplicates of earlier imports)."""
        if not self.pending:
            return
        # Into an empty ledger only the ids the filter cannot rule out are looked up (an id
        # not written now is known: remembering it as written does no harm).
        written = self.written
        ids = list(self.pending_ids) if written is None else written.seen_then_add(
            self.pending_ids)
        known = self._known(ids) if ids else {}
        heads = self.heads
        if not self.fresh:
            streams = {stream_of_parts(p[1], p[4]) for p in self.pending} - heads.keys()
            self.drain()
            found = self.store.stream_heads(sorted(streams))
            for s in streams:
                heads[s] = found.get(s, (0, GENESIS))
        batch: list[tuple[str, str, bytes, int, str | None]] = []
        for eid, t, body, at_us, order, path, line in self.pending:
            if known and eid in known:
                self._duplicate_or_conflict(eid, body, known[eid], path, line)
                continue
            batch.append((eid, t, body, at_us, order))
        self.pending.clear()
        self.pending_ids.clear()
        if not batch:
            return
        self.result.appended += len(batch)
        if self.rows_elsewhere:
            # A worker (``ledger.parallel``): the writing process, which waits for rows
            # half of the time, chains and builds them (``rows``) as they arrive.
            self.store.write_pending(batch)
            return
        events, links = self.rows(batch)
        held, held_links = self.unwritten
        held += events
        held_links += links
        if len(held) >= self.write_at:
            self.drain()

    def rows(
        self, batch: list[tuple[str, str, bytes, int, str | None]]
    ) -> tuple[list[tuple[Any, ...]], list[tuple[int, str, str, int, str]]]:
        """The stored rows of ``batch`` (id, type, canonical body, at_us, order; validated,
        new), each hash-chained onto its stream's head, at the next positions; and their
        ``bf_chain`` rows, unless ``chain_here`` is off (the store's ``write`` links them)."""
        events: list[tuple[Any, ...]] = []
        links: list[tuple[int, str, str, int, str]] = []
        heads = self.heads
        seq, link = self.seq, self.link
        chain_here = self.chain_here
        rec_us = self.rec_us
        rec_b = self.rec_text.encode()
        sha, names = sha256, self.stream_names
        ended = self.ended
        for eid, t, body, at_us, order in batch:
            if t in MASTER_TYPES:
                stream = "master"
            elif order and (t in ORDER_TYPES or t == "Reversal"):
                stream = "order:" + order
                if t == "OrderEnded":
                    # (one with events after its end is set aside all the same: its head
                    # is found again when needed, which keeps this loop to one test)
                    ended.add(stream)
            else:
                stream = "inventory"
            version, prev = heads.get(stream) or self._head_aside(stream)
            version += 1
            stream_b = names.get(stream)
            if stream_b is None:
                stream_b = names[stream] = stream.encode()
            # codec.chain_hash, in one call: sha256(prev, position, time, id, body).
            eid_b, prev_b = eid.encode(), prev.encode()
            h = sha(
                b"%b\x00%b\x00%d\x00%b\x00%b\x00%b"
                % (prev_b, stream_b, version, rec_b, eid_b, body)
            ).hexdigest()
            heads[stream] = (version, h)
            # codec.state_of and anchor.link_of, inline (they run once per event).
            state = b'{"e":%b,"id":%b},"rec":"%b","prev":"%b","hash":"%b"}' % (
                body[:-1], dumps(eid), rec_b, prev_b, h.encode()
            )
            events.append((seq, eid, stream, version, t, at_us, rec_us, order, h, state))
            if chain_here:
                link = sha(dumps([link, seq, stream, version, h, rec_us])).hexdigest()
                links.append((seq, link, stream, version, eid))
            seq += 1
        self.seq, self.link = seq, link
        if len(heads) > self.heads_kept:
            self._set_aside()
        return events, links

    def _set_aside(self) -> None:
        """Set the heads of ended orders' streams aside: few of them get another event (a
        late report, a correction), and one that does finds its head again (``_head_aside``).
        Into an empty ledger they go to a private temporary database (the stream index of
        the ledger is dropped for the load); otherwise the store has them (every batch is
        written before the next one reads its streams' heads)."""
        heads, names = self.heads, self.stream_names
        gone = [(s, *heads.pop(s)) for s in self.ended]
        for s in self.ended:
            names.pop(s, None)
        self.ended.clear()
        if self.fresh and gone:
            if self.aside is None:
                self.aside = _AsideHeads()
            self.aside.put(gone)
        # Twice what stays: many orders open at once do not set aside at every batch.
        self.heads_kept = max(HEADS_KEPT, 2 * len(heads))

    def _head_aside(self, stream: str) -> tuple[int, str]:
        """(version, hash) of a stream whose head is not in ``heads``: set aside, or new."""
        if self.aside is not None:
            got = self.aside.get(stream)
            if got is not None:
                return got
        return 0, GENESIS


class _AsideHeads:
    """Stream heads a first import set aside: a private temporary SQLite database (on disk,
    deleted with its connection; a small page cache) behind a filter, so that a new stream,
    most of those not in memory, costs no query."""

    def __init__(self) -> None:
        import sqlite3

        self.db = sqlite3.connect("")
        self.db.execute("CREATE TABLE h (stream TEXT PRIMARY KEY, version INTEGER, hash TEXT)")
        self.seen = Bloom(1 << 20)

    def put(self, heads: list[tuple[str, int, str]]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO h VALUES (?, ?, ?)", heads)
        self.seen.add(s for s, _, _ in heads)

    def get(self, stream: str) -> tuple[int, str] | None:
        if stream not in self.seen:
            return None
        return self.db.execute("SELECT version, hash FROM h WHERE stream = ?",
                               (stream,)).fetchone()

class _LocalStore:
    """The store reads and writes the import makes, on this process's transaction."""

    def __init__(self, ledger: Ledger, cur: Cursor):
        self.ledger, self.cur = ledger, cur
        self.link = GENESIS  # the last ledger-wide link written (set by the appender)
        # The appender's ``rows`` (set by it): builds the rows of a ``write_pending`` batch.
        self.rows_of: Callable[[list[tuple[Any, ...]]], tuple[list, list]] | None = None

    def write(self, events: list[tuple[Any, ...]], links: list[tuple[Any, ...]]) -> None:
        """Write ready rows (``Ledger.write_rows``); with no ``links``, link the events into
        the ledger-wide chain here (``anchor.link_of``, inline), after ``self.link``."""
        if not links:
            link, sha = self.link, sha256
            for seq, eid, stream, version, _t, _at, rec_us, _o, h, _s in events:
                link = sha(dumps([link, seq, stream, version, h, rec_us])).hexdigest()
                links.append((seq, link, stream, version, eid))
            self.link = link
        self.ledger.write_rows(self.cur, events, links)

    def write_pending(self, batch: list[tuple[str, str, bytes, int, str | None]]) -> None:
        """Build the rows of validated events (``_Appender.rows``) and write them."""
        assert self.rows_of is not None
        events, links = self.rows_of(batch)
        self.write(events, links)

    def known_states(self, ids: list[str]) -> dict[str, bytes]:
        """``Ledger.known_states``."""
        return self.ledger.known_states(self.cur, ids)

    def stream_heads(self, streams: list[str]) -> dict[str, tuple[int, str]]:
        """``Ledger.stream_heads``."""
        return self.ledger.stream_heads(self.cur, streams)

    def find(self, event_id: str) -> tuple[str, str, int] | None:
        """(order or '', type, at_us) of a recorded event, or None."""
        row = self.cur.execute(
            "SELECT ord, type, at_us FROM bf_events WHERE id = ?", (event_id,)
        ).fetchone()
        if row is None:
            return None
        return row["ord"] or "", row["type"], row["at_us"]


def stream_of_parts(type_: str, order: str | None) -> str:
    """The stream of an event of ``type_`` for ``order`` (see ``stream_of``)."""
    if type_ in MASTER_TYPES:
        return "master"
    if order and (type_ in ORDER_TYPES or type_ == "Reversal"):
        return "order:" + order
    return "inventory"
