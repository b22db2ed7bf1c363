"""A replay pass on two cores: a worker process replays, this one writes.

A full rebuild (or a long catch-up) is two jobs of about equal size: reading, decoding and
applying the events to the engine, and turning what changed into rows and writing them.
Here a forked worker does the first on its own read connection and sends each page's
change log (``changelog.changes``: plain data, ``marshal``-ed through a pipe) and each
checkpoint's encoded engine (``materialise.encode_engine``) to this process, which holds
the write transaction and writes them as the single-process pass would (``_Run``): the
same rows, the same checkpoints, byte for byte.

Why a separate read connection sees the right events: the pass runs under the ledger's
write lock (``Ledger.writing``), taken after the events it replays were committed (an
import commits its events, then catches up), so none can be appended meanwhile; the worker
reads only ``bf_events``, which this transaction does not change (on SQLite a WAL reader,
on PostgreSQL ``ACCESS SHARE`` beside the ``EXCLUSIVE`` lock). The engine, the retirement
plan and the reversible ids were made here before the fork: the child inherits them.

Bounded: the pipe holds about a page (``_PIPE_BYTES``) and the worker blocks on a full
pipe, so at most a page or two is in flight. A worker that raises sends its error and
exits; one that dies is seen as the pipe's end before the last message; either way the
error is raised here, so the transaction rolls back, and the worker is always reaped (and
killed first when this side fails).

Where the boundary is (measured at 200k events, SQLite, CPU seconds of the pass): the
worker ~2.9 s (page reads, decode, engine, draining the change log to plain data, marshal),
this process ~1.9 s (key ids, history rows, bf_alive, the inserts, checkpoints), against
~4.0 s in one process; the worker is the longer side, so everything that can be done from
plain data is done here. Moving the page reads here (pages sent to the worker) starved
the worker: a page of states (~1.7 MB) does not fit a pipe, and this side, busy writing,
cannot feed it; a feeding thread fought the main thread for the GIL. What crosses the pipe
must be plain data, so a Decimal becomes text and a record a row in the worker.

Used where it pays (``wanted``): ``PIPELINE_MIN`` events or more, two usable CPUs, ``fork``
(Linux); ``BACKFLUSH_REPLAY_WORKERS=0`` turns it off, ``=1`` forces it on. It pays only with
a core to spare: the two sides together spend ~20% more CPU than one process, so on a
machine whose other core is busy the pass is no faster (or slower) than in one process.
"""

from __future__ import annotations

import importlib
import marshal
import os
import signal
import struct
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, BinaryIO

from backflush.errors import OperationalError

if TYPE_CHECKING:
    from backflush.ledger.store import Ledger
    from backflush.projections.materialise import _Run

# Events a pass must replay before a worker pays: starting one costs a fork and a
# connection (~10-50 ms); a late import's catch-up of a few thousand events stays here.
PIPELINE_MIN = 50_000
ENV = "BACKFLUSH_REPLAY_WORKERS"
_PIPE_BYTES = 1 << 20  # about one page's change log (F_SETPIPE_SZ; the default is 64 KiB)
_LEN = struct.Struct("<Q")


def usable_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def wanted(ledger: Ledger, events: int) -> bool:
    """Whether a pass of about ``events`` events should run with a worker process."""
    mode = os.environ.get(ENV, "").strip().lower()
    if mode in ("0", "no", "off", "false"):
        return False
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return False  # fork is what lets the worker inherit the engine
    if ledger.dialect == "sqlite" and getattr(ledger.connections, "memory", False):
        return False  # nothing another process could open
    if mode in ("1", "yes", "on", "true"):
        return True
    return events >= PIPELINE_MIN and usable_cpus() >= 2


class ReplayWorkerFailed(OperationalError):
    """The worker process ended without finishing the pass (exit 3, like a lost database)."""


class _Sender:
    """The worker's side: ``_Run``'s sink methods, each sent as one message."""

    def __init__(self, fd: int):
        self.fd = fd

    def send(self, msg: tuple, raw: bytes | bytearray = b"") -> None:
        data = marshal.dumps(msg)
        # ``raw`` (a checkpoint's compressed engine, MBs with many open orders) goes as it is,
        # after the message that gives its length: neither marshalled nor copied
        for buf in (memoryview(_LEN.pack(len(data)) + data), memoryview(raw)):
            while buf:
                buf = buf[os.write(self.fd, buf):]

    def changes(self, ch: tuple) -> None:
        self.send(("c", ch))

    def checkpoint(self, pos: tuple[int, int], count: int, head: bool,
                   encoded: tuple[bytes, int]) -> None:
        part, nxt = encoded
        self.send(("k", pos, count, head, nxt, len(part)), part)

    def page(self, n: int, pos: tuple[int, int], count: int, last_seq: int) -> None:
        self.send(("p", n, pos, count, last_seq))


def _child(run: _Run, fd: int) -> None:
    """The worker: read and apply the pages on its own read connection, send what changed,
    exit. Never returns, never touches the parent's connections (``os._exit``: no
    finalizers, no connection closed on the parent's behalf)."""
    code = 1
    try:
        sender = _Sender(fd)
        try:
            from backflush.ledger.store import Ledger
            from backflush.projections.materialise import read_pages

            reader = Ledger(run.ledger.url)
            with reader.transaction(commit=False, read_only=False) as cur:
                # SQLite's default page cache: the writing connection's 32 MB here as well
                # measured ~0.1-0.2 s less CPU at 200k events and +32 MB of peak RSS.
                pages = read_pages(cur, run.pos)
                if reader.dialect == "postgres":
                    pages = _read_ahead(pages)
                n = run.replay(pages, sender)
            sender.send(("d", n))
            code = 0
        except BaseException as exc:  # noqa: BLE001  (whatever it is, the parent raises it)
            sender.send(("e", _describe(exc)))
    except BaseException:  # noqa: BLE001, S110  (the parent sees the pipe end: "died")
        pass
    finally:
        os._exit(code)


def _read_ahead(pages: Iterator[list[tuple]]) -> Iterator[list[tuple]]:
    """``pages``, the next one read by a thread while this one is applied. On PostgreSQL the
    worker otherwise waits for the server to produce each page (~6% of its time at 200k
    events), and the worker is the longer side; the thread waits on the socket without the
    GIL. (On SQLite reading is this process's own CPU, and both cores are busy already.)"""
    import queue
    import threading

    box: queue.Queue = queue.Queue(maxsize=1)
    done = object()

    def read() -> None:
        try:
            for page in pages:
                box.put((page, None))
        except BaseException as exc:  # noqa: BLE001  (raised where the pages are used)
            box.put((None, exc))
            return
        box.put((done, None))

    threading.Thread(target=read, daemon=True).start()
    while True:
        page, exc = box.get()
        if exc is not None:
            raise exc
        if page is done:
            return
        yield page


def _describe(exc: BaseException) -> tuple:
    attrs = {}
    for k, v in vars(exc).items():
        try:
            marshal.dumps(v)
        except ValueError:
            continue
        attrs[k] = v
    return (type(exc).__module__, type(exc).__qualname__, str(exc), attrs)


def _raise(info: tuple) -> None:
    """Raise in this process the exception the worker described (same class and message
    where it can be made without its constructor; else a ReplayWorkerFailed)."""
    module, name, message, attrs = info
    try:
        cls = getattr(importlib.import_module(module), name)
        if isinstance(cls, type) and issubclass(cls, KeyboardInterrupt):
            # Ctrl-C (SIGTERM to the group) reaches both processes: the same interruption
            # here, wherever it hit first.
            raise cls()
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            raise TypeError(name)
        exc = cls.__new__(cls)
        exc.args = (message,)
        for k, v in attrs.items():
            setattr(exc, k, v)
    except Exception:  # noqa: BLE001
        raise ReplayWorkerFailed(f"the replay worker failed: {name}: {message}") from None
    raise exc


def _read(f: BinaryIO) -> tuple | None:
    head = f.read(_LEN.size)
    if len(head) < _LEN.size:
        return None
    (size,) = _LEN.unpack(head)
    data = f.read(size)
    if len(data) < size:
        return None
    return marshal.loads(data)


def _read_part(f: BinaryIO, size: int) -> bytearray:
    """The ``size`` bytes of a checkpoint's compressed engine, read into the very object the
    checkpoint is written from (no copy of several MB)."""
    from backflush.projections.snapshot import Compressed

    part = Compressed(size)
    if f.readinto(part) < size:
        raise ReplayWorkerFailed("the replay worker ended before the pass did")
    return part


def _consume(f: BinaryIO, run: _Run) -> int:
    """This process's side: write what the worker sends until it says it is done."""
    changes, checkpoint, page = run.changes, run.checkpoint, run.page
    while True:
        msg = _read(f)
        if msg is None:
            raise ReplayWorkerFailed("the replay worker ended before the pass did")
        tag = msg[0]
        if tag == "c":
            changes(msg[1])
        elif tag == "p":
            page(*msg[1:])
        elif tag == "k":
            pos, count, head, nxt, size = msg[1:]
            part = _read_part(f, size)
            checkpoint(pos, count, head, (part, nxt))
        elif tag == "d":
            return msg[1]
        else:
            _raise(msg[1])


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.WEXITSTATUS(status)}"


def _let_go_of_engine(run: _Run) -> None:
    """Drop this process's engine and retirement plan, which the worker now has: a
    catch-up from a checkpoint restored the engine here (with 20,000 open orders, ~100 MB
    that the writing side would otherwise hold beside its own work). Its orders and lines
    refer to each other, and catch-up runs with the cyclic collector off, so it is collected
    here, while the worker starts (on its own CPU)."""
    restored = run.engine.holds_orders()  # (a fresh engine, as a rebuild's, holds none)
    run.engine = None
    # So is the retirement plan, an entry per order (13 MB at 3M events): only the side
    # that replays retires orders.
    run.retire = []
    if restored:
        import gc

        gc.collect()


def run(run: _Run, progress: Callable[[int], None] | None) -> int:
    """``run.run(progress)`` with the replay in a worker process; returns events applied."""
    run.progress = progress
    r, w = os.pipe()
    try:
        import fcntl

        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    except (ImportError, AttributeError, OSError):
        pass  # the default pipe: smaller messages in flight, same results
    pid = os.fork()
    if pid == 0:  # pragma: no cover  (the worker; its work is checked by the results)
        os.close(r)
        _child(run, w)
    os.close(w)
    _let_go_of_engine(run)
    finished = False
    try:
        with open(r, "rb", buffering=1 << 16) as f:
            try:
                n = _consume(f, run)
            except ReplayWorkerFailed as exc:
                _, status = os.waitpid(pid, 0)
                pid = 0
                raise ReplayWorkerFailed(f"{exc} ({_status(status)})") from None
        finished = True
        return n
    finally:
        if pid:
            if not finished:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os.waitpid(pid, 0)

