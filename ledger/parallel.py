"""A two-process import pipeline: a worker prepares the rows, this process writes them.

A bulk import spends about half its time in per-line Python (parse, validate, hash-chain,
build the stored rows) and half inside the database (insert, build the indexes, commit).
On a machine with two usable CPUs the two halves can overlap: ``run`` forks a worker that
does the per-line work and sends batches over a pipe, while this process, which holds the
one write transaction, writes them. Into SQLite the worker sends validated events and this
process hash-chains them and builds the rows (``PENDING``: measured at 1M events, the writer
was idle half the time while the worker was the longer side. Since the worker no longer
runs pydantic for plain lines the writer is the longer side, 7.8 s busy against 5.5 s, but
rows built in the worker still lose: their states are 2.5 times the lines' bytes on the
pipe, and the ingest took 8.9-10.0 s against 7.7 s, docs/benchmarks.md); into PostgreSQL, whose
server is a third process on the same cores, it sends finished rows (``ROWS``). The worker
never touches the database connection it inherits; what it needs to read from the store
(ids already written, stream heads, a Reversal's target) it asks for, and this process
answers after writing every batch sent before the question, so the answer sees every
earlier line of the import.

Messages are ``marshal``-ed tuples of int/str/bytes/None (cheaper to build and to read
than pickle for these row tuples). The pipe is the queue: a worker that runs ahead blocks
in ``send`` once the socket buffer holds about a batch, so memory stays bounded.

Anything going wrong on either side ends both: the worker dying or raising makes this
process raise ``OperationalError`` (one line; the caller's transaction rolls back), and this
process raising (a write failed, Ctrl-C) terminates and reaps the worker.

Used only where it pays and is safe: Linux (``fork``, so the worker inherits the loaded
modules and the state prepared before it), at least two usable CPUs, and not switched off
with ``BACKFLUSH_IMPORT_WORKERS=0``. The importer decides which imports (``importer``).
"""

from __future__ import annotations

import marshal
import multiprocessing
import os
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any

from backflush.errors import OperationalError

ENV = "BACKFLUSH_IMPORT_WORKERS"

# Message kinds (first element of each marshalled tuple).
ROWS, KNOWN, HEADS, FIND, PROGRESS, DONE, FAILED, PENDING = range(8)


def usable() -> bool:
    """Whether this machine and environment allow the two-process import."""
    if os.environ.get(ENV, "").strip() == "0":
        return False
    if not sys.platform.startswith("linux"):
        # Without fork the worker would have to rebuild the prepared state from pickles
        # (``spawn``): not worth a second code path; the single-process import runs there.
        return False
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    if multiprocessing.current_process().daemon:
        return False  # a daemonic process may not start children
    try:
        return len(os.sched_getaffinity(0)) >= 2
    except (AttributeError, OSError):
        return (os.cpu_count() or 1) >= 2


class RemoteStore:
    """The worker's face of the store: writes and reads go to the writing process."""

    def __init__(self, conn: Any):
        self._send, self._recv = conn.send_bytes, conn.recv_bytes

    def _ask(self, msg: tuple[Any, ...]) -> Any:
        self._send(marshal.dumps(msg))
        return marshal.loads(self._recv())

    def write(self, events: list[tuple[Any, ...]], links: list[tuple[Any, ...]]) -> None:
        """Send a batch of finished rows (written in the order sent)."""
        self._send(marshal.dumps((ROWS, events, links)))

    def write_pending(self, batch: list[tuple[Any, ...]]) -> None:
        """Send a batch of validated events for the writer to build the rows of and write."""
        self._send(marshal.dumps((PENDING, batch)))

    def known_states(self, ids: list[str]) -> dict[str, bytes]:
        """Stored state of each of ``ids`` recorded so far (this import's earlier rows too)."""
        return self._ask((KNOWN, ids))

    def stream_heads(self, streams: list[str]) -> dict[str, tuple[int, str]]:
        """(last version, last chain hash) of each of ``streams`` that exists."""
        return self._ask((HEADS, streams))

    def find(self, event_id: str) -> tuple[str, str, int] | None:
        """(order or '', type, at_us) of a recorded event, or None."""
        return self._ask((FIND, event_id))

    def progress(self, lines: int) -> None:
        """Tell the writing process how many lines were read (its progress bar)."""
        self._send(marshal.dumps((PROGRESS, lines)))


def run(
    produce: Callable[[RemoteStore], Any],
    store: Any,
    progress: Callable[[int], None] | None = None,
) -> Any:
    """Run ``produce(remote_store)`` in a forked worker while writing what it sends to
    ``store`` here (``write``, ``known_states``, ``stream_heads``, ``find``); return what
    ``produce`` returned (marshallable)."""
    ctx = multiprocessing.get_context("fork")
    # The worker flushes the standard streams it inherits when it ends: empty them first,
    # or anything buffered here would be printed twice.
    sys.stdout.flush()
    sys.stderr.flush()
    here, there = ctx.Pipe(duplex=True)
    proc = ctx.Process(target=_worker, args=(produce, here, there), daemon=True)
    proc.start()
    there.close()  # so that the worker's end closing (it died) reads as EOF here
    # A thread takes the worker's messages off the pipe as they come, so that the worker
    # does not wait for each write to end before it can send the next batch: a few batches
    # in flight absorb the two processes' uneven pace (the machine is shared).
    inbox: queue.Queue[bytes | None] = queue.Queue(IN_FLIGHT)
    stop = threading.Event()
    reader = threading.Thread(target=_read, args=(here.recv_bytes, inbox, stop), daemon=True)
    reader.start()
    send = here.send_bytes
    last = False  # the worker sent its last message and is ending by itself
    try:
        while True:
            data = inbox.get()
            if data is None:
                proc.join(5)
                raise OperationalError(
                    f"the import worker process ended unexpectedly (exit code {proc.exitcode});"
                    " nothing was imported"
                )
            msg = marshal.loads(data)
            kind = msg[0]
            last = kind in (DONE, FAILED)
            if kind == PENDING:
                store.write_pending(msg[1])
            elif kind == ROWS:
                store.write(msg[1], msg[2])
            elif kind == KNOWN:
                send(marshal.dumps(store.known_states(msg[1])))
            elif kind == HEADS:
                send(marshal.dumps(store.stream_heads(msg[1])))
            elif kind == FIND:
                send(marshal.dumps(store.find(msg[1])))
            elif kind == PROGRESS:
                if progress is not None:
                    progress(msg[1])
            elif kind == DONE:
                return msg[1]
            else:  # FAILED
                raise OperationalError(f"the import worker failed: {msg[1]}; nothing was imported")
    finally:
        stop.set()
        if not last:
            proc.terminate()
        proc.join()  # its end of the pipe is closed now: the reader sees EOF and ends
        reader.join()
        here.close()


# Messages received but not yet handled: bounds the writer's memory (a few batches).
IN_FLIGHT = 4


def _read(recv: Callable[[], bytes], inbox: queue.Queue, stop: threading.Event) -> None:
    while True:
        try:
            data: bytes | None = recv()
        except (EOFError, OSError):
            data = None
        while True:
            try:
                inbox.put(data, timeout=0.1)
                break
            except queue.Full:
                if stop.is_set():  # the writer stopped listening
                    return
        if data is None:
            return


def _worker(produce: Callable[[RemoteStore], Any], here: Any, there: Any) -> None:
    # The writer's end, inherited by fork: closed here so that the writer dying reads as a
    # broken pipe (not a send blocked forever on a socket nobody reads).
    here.close()
    try:
        out = produce(RemoteStore(there))
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the writer
        text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
        try:
            there.send_bytes(marshal.dumps((FAILED, text)))
        except OSError:
            pass  # the writer is gone: nobody to tell
        return
    there.send_bytes(marshal.dumps((DONE, out)))
