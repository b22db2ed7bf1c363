"""The two-process import (``ledger.parallel``) keeps every promise of the one-process one.

A bulk import into an empty ledger prepares its rows in a forked worker while the main
process writes them. These tests force that path onto small files and pin that it stores
the very same bytes as the one-process import (both backends, ``bf_events`` and
``bf_chain``), returns the same ``ImportResult`` (errors in file and line order, same
messages), writes nothing when a line is bad, answers the worker's reads with every row
sent before them (duplicates and Reversal targets across tiny batches), and that a worker
that dies or raises rolls the import back with a one-line error, leaving no process behind.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import uuid
from datetime import UTC, datetime

import orjson
import pytest
from backflush.ledger import bloom, importer, parallel
from backflush.ledger.integrity import verify
from backflush.ledger.simulate import FAULTS, simulate
from backflush.ledger.store import Ledger
from conftest import _with_database
from test_ledger_writer import _check_against_reference, _history, _stored

from backflush.errors import OperationalError

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)

pytestmark = pytest.mark.skipif(not parallel.usable(), reason="needs Linux and 2 usable CPUs")


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def two_urls(request, tmp_path):
    """Two empty ledgers of one backend: (one-process, pipelined)."""
    if request.param == "sqlite":
        yield str(tmp_path / "one.db"), str(tmp_path / "two.db")
        return
    import psycopg

    base = request.getfixturevalue("pg_url")
    names = [f"t_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    with psycopg.connect(base, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield tuple(_with_database(base, n) for n in names)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def runs(monkeypatch) -> list[int]:
    """Make every import of a file pipelined (count the pipeline's runs)."""
    monkeypatch.setattr(importer, "PIPELINE_MIN_BYTES", 0)
    monkeypatch.delenv(parallel.ENV, raising=False)
    calls: list[int] = []
    real = parallel.run

    def counted(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(parallel, "run", counted)
    return calls


def _write(path, lines: list[bytes]) -> str:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return str(path)


def _plant_lines() -> list[bytes]:
    """A simulated history with every fault (Reversals among them), a repeated line from
    far back (a duplicate), and lines without an id (ids derived from the content)."""
    lines = [orjson.dumps(e) for e in simulate(25, 7, {**FAULTS, "reversal": 0.5})]
    no_id = [orjson.dumps({k: v for k, v in orjson.loads(x).items() if k != "id"})
             for x in lines[-40:-30]]
    return [*lines, lines[len(lines) // 3], *no_id, no_id[0]]


def _import(url: str, paths: list[str], *, workers: bool, monkeypatch, **kw):
    monkeypatch.setenv(parallel.ENV, "" if workers else "0")
    with Ledger(url) as ledger:
        return importer.run_import(ledger, paths, now=NOW, **kw)


def _same(a, b) -> None:
    assert (a.lines, a.appended, a.duplicates) == (b.lines, b.appended, b.duplicates)
    assert [str(e) for e in a.errors] == [str(e) for e in b.errors]


def _rows(url: str):
    rows, links = _stored(url)
    return [{**r, "state": bytes(r["state"])} for r in rows], links


@pytest.mark.parametrize("batch", [2, 1000])
def test_same_rows_and_result_as_one_process(two_urls, tmp_path, monkeypatch, runs, batch):
    monkeypatch.setattr(importer, "BATCH", batch)
    lines = _plant_lines()
    assert any(b'"Reversal"' in x for x in lines)
    half = len(lines) // 2
    paths = [_write(tmp_path / "a.jsonl", lines[:half]), _write(tmp_path / "b.jsonl", lines[half:])]
    one, two = two_urls
    a = _import(one, paths, workers=False, monkeypatch=monkeypatch)
    assert runs == []
    b = _import(two, paths, workers=True, monkeypatch=monkeypatch)
    assert runs == [1]
    assert not b.errors and b.duplicates >= 2 and b.appended == len(lines) - b.duplicates
    _same(a, b)
    rows = _rows(two)
    assert rows == _rows(one)
    _check_against_reference(*rows)
    with Ledger(two) as ledger:
        assert verify(ledger)[1] == []


@pytest.mark.parametrize("batch", [1, 1000])
def test_across_batches_with_escapes(two_urls, tmp_path, monkeypatch, runs, batch):
    """The writer's ``test_ledger_writer`` history: ids and orders that need escaping, a
    Reversal of an event several batches back, events without id, one repeated."""
    monkeypatch.setattr(importer, "BATCH", batch)
    evs = _history()
    path = _write(tmp_path / "h.jsonl", [orjson.dumps(e) for e in [*evs, evs[5], evs[7]]])
    one, two = two_urls
    a = _import(one, [path], workers=False, monkeypatch=monkeypatch)
    b = _import(two, [path], workers=True, monkeypatch=monkeypatch)
    assert runs == [1] and not b.errors and b.duplicates == 1  # evs[7] has no id: a new one
    _same(a, b)
    assert _rows(two) == _rows(one)


def test_bad_lines_same_errors_and_nothing_written(two_urls, tmp_path, monkeypatch, runs):
    monkeypatch.setattr(importer, "BATCH", 3)
    lines = _plant_lines()
    clash = orjson.loads(lines[10])
    clash["at"] = "2025-01-01T00:00:00Z"  # its id again, other content
    bad_item = dict(orjson.loads(lines[-5]), id="x-1", item="NOPE")
    paths = [
        _write(tmp_path / "a.jsonl", [*lines[:50], b"{not json", *lines[50:]]),
        _write(tmp_path / "b.jsonl", [orjson.dumps(clash), orjson.dumps(bad_item)]),
        str(tmp_path / "missing.jsonl"),
    ]
    one, two = two_urls
    a = _import(one, paths, workers=False, monkeypatch=monkeypatch)
    b = _import(two, paths, workers=True, monkeypatch=monkeypatch)
    assert runs == [1]
    assert [e.field for e in b.errors][-3:] == ["id", "item", "(file)"]
    assert len(b.errors) >= 4 and b.appended == 0
    _same(a, b)
    for url in two_urls:
        with Ledger(url) as ledger:
            assert ledger.count() == 0


def test_many_problems_keep_the_first_and_count_all(two_urls, tmp_path, monkeypatch, runs):
    """Only the first ``MAX_PROBLEMS`` problems are kept (a file missing its master data has
    one on every line), in file and line order, whichever check found them and when (an id
    reused with other content shows up when its batch is written, after later lines'
    problems), and every problem is counted."""
    monkeypatch.setattr(importer, "BATCH", 3)
    lines = _plant_lines()
    bad = [orjson.dumps(dict(orjson.loads(x), item="NOPE"))
           if b'"item"' in x and b'Defined"' not in x else x for x in lines[40:]]
    clash = dict(orjson.loads(lines[45]), at="2025-01-01T00:00:00Z")  # its id, other content
    paths = [_write(tmp_path / "a.jsonl", [*lines[:40], orjson.dumps(clash), *bad]),
             _write(tmp_path / "b.jsonl", [b"{not json", *bad[:20]])]
    one, two = two_urls
    monkeypatch.setattr(importer, "MAX_PROBLEMS", 10**6)
    full = _import(one, paths, workers=False, monkeypatch=monkeypatch)
    assert full.problems == len(full.errors) > 60
    order = [(e.file.endswith("b.jsonl"), e.line) for e in full.errors]
    assert order == sorted(order) and "id" in {e.field for e in full.errors}
    monkeypatch.setattr(importer, "MAX_PROBLEMS", 7)
    for url, workers in ((one, False), (two, True)):
        capped = _import(url, paths, workers=workers, monkeypatch=monkeypatch)
        assert capped.problems == full.problems and capped.appended == 0
        assert [str(e) for e in capped.errors] == [str(e) for e in full.errors[:7]]
        with Ledger(url) as ledger:
            assert ledger.count() == 0
    assert runs == [1]


def test_dry_run_writes_nothing(two_urls, tmp_path, monkeypatch, runs):
    lines = _plant_lines()
    path = _write(tmp_path / "a.jsonl", lines)
    one, two = two_urls
    a = _import(one, [path], workers=False, monkeypatch=monkeypatch, dry_run=True)
    b = _import(two, [path], workers=True, monkeypatch=monkeypatch, dry_run=True)
    assert runs == [1] and b.appended == len(lines) - b.duplicates > 0
    _same(a, b)
    with Ledger(two) as ledger:
        assert ledger.count() == 0


def test_not_pipelined_when_switched_off_small_or_not_empty(tmp_path, monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(parallel, "run", lambda *a, **k: calls.append(1))
    path = _write(tmp_path / "a.jsonl", _plant_lines())
    db = str(tmp_path / "l.db")
    # Small: under PIPELINE_MIN_BYTES.
    assert _import(db, [path], workers=True, monkeypatch=monkeypatch).appended
    monkeypatch.setattr(importer, "PIPELINE_MIN_BYTES", 0)
    # Not empty: every batch would read the store.
    assert _import(db, [path], workers=True, monkeypatch=monkeypatch).duplicates
    # Switched off.
    monkeypatch.setenv(parallel.ENV, "0")
    assert not parallel.usable()
    assert _import(str(tmp_path / "m.db"), [path], workers=False, monkeypatch=monkeypatch).appended
    assert calls == []


def _no_children() -> None:
    assert multiprocessing.active_children() == []
    # And none left as a zombie: no child of this process is waiting to be reaped.
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def test_worker_killed_rolls_back(two_urls, tmp_path, monkeypatch, runs):
    """The worker dies mid-import (SIGKILL after its third batch): a one-line error, nothing
    written, no process left."""
    monkeypatch.setattr(importer, "BATCH", 5)
    lines = _plant_lines()
    path = _write(tmp_path / "a.jsonl", lines)
    sent = [0]
    # Into SQLite the worker sends validated events (``write_pending``), else rows.
    real = {name: getattr(parallel.RemoteStore, name) for name in ("write", "write_pending")}

    def dying(name):
        def send(self, *batch):
            real[name](self, *batch)
            sent[0] += 1
            if sent[0] == 3:
                os.kill(os.getpid(), signal.SIGKILL)

        return send

    for name in real:
        monkeypatch.setattr(parallel.RemoteStore, name, dying(name))
    url = two_urls[1]
    with pytest.raises(OperationalError) as exc, Ledger(url) as ledger:
        importer.run_import(ledger, [path], now=NOW)
    assert "worker" in str(exc.value) and "\n" not in str(exc.value)
    assert "-9" in str(exc.value)
    _no_children()
    with Ledger(url) as ledger:
        assert ledger.count() == 0
        # The indexes dropped for the load came back with the rollback: a later import works.
    for name, send in real.items():
        monkeypatch.setattr(parallel.RemoteStore, name, send)
    res = _import(url, [path], workers=True, monkeypatch=monkeypatch)
    assert not res.errors and res.appended == len(lines) - res.duplicates > 0


def test_worker_raising_rolls_back(tmp_path, monkeypatch, runs):
    monkeypatch.setattr(importer, "BATCH", 5)
    path = _write(tmp_path / "a.jsonl", _plant_lines())

    def boom(self, ids):
        raise MemoryError("no room\nsecond line")

    monkeypatch.setattr(bloom.Bloom, "seen_then_add", boom)
    db = str(tmp_path / "l.db")
    with pytest.raises(OperationalError) as exc, Ledger(db) as ledger:
        importer.run_import(ledger, [path], now=NOW)
    assert str(exc.value) == (
        "the import worker failed: MemoryError: no room; nothing was imported")
    _no_children()
    with Ledger(db) as ledger:
        assert ledger.count() == 0


def test_writer_failing_ends_the_worker(tmp_path, monkeypatch, runs):
    """A write failing in the main process: its error surfaces, the worker is ended."""
    monkeypatch.setattr(importer, "BATCH", 5)
    path = _write(tmp_path / "a.jsonl", _plant_lines())
    calls = [0]
    real = importer._LocalStore.write  # noqa: SLF001

    def failing(self, events, links):
        calls[0] += 1
        if calls[0] == 2:
            raise OSError(28, "No space left on device")
        real(self, events, links)

    monkeypatch.setattr(importer._LocalStore, "write", failing)  # noqa: SLF001
    db = str(tmp_path / "l.db")
    with pytest.raises(OSError, match="No space"), Ledger(db) as ledger:
        importer.run_import(ledger, [path], now=NOW)
    _no_children()
    with Ledger(db) as ledger:
        assert ledger.count() == 0


def test_progress_reaches_the_caller(tmp_path, monkeypatch, runs):
    path = _write(tmp_path / "a.jsonl", _plant_lines())
    monkeypatch.setattr(importer, "PROGRESS_EVERY", 100)
    seen: list[int] = []
    with Ledger(str(tmp_path / "l.db")) as ledger:
        res = importer.run_import(ledger, [path], now=NOW, progress=seen.append)
    assert runs == [1] and not res.errors and res.lines > 300
    assert seen == list(range(100, res.lines + 1, 100))


def _piped_stdin(monkeypatch, tmp_path, data: bytes) -> None:
    """Make ``sys.stdin`` the read end of a real pipe that another process fills with
    ``data`` (not a thread here: the forked worker would inherit the write end, and the
    pipe would never end)."""
    import io
    import subprocess
    import sys

    src = tmp_path / "piped.jsonl"
    src.write_bytes(data)
    cat = subprocess.Popen(["cat", str(src)], stdout=subprocess.PIPE)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(cat.stdout))


def test_stdin_pipelined_reads_on_after_the_read_ahead(two_urls, tmp_path, monkeypatch, runs):
    """``import -`` from a pipe is pipelined when the pipe held enough to read ahead; the
    worker reads on from where the read-ahead stopped (``multiprocessing`` closes
    ``sys.stdin`` in it), and the rows are those of the same lines imported from a file."""
    lines = _plant_lines()
    data = b"".join(x + b"\n" for x in lines)
    # A read-ahead that ends mid-line, well before the end of the pipe.
    monkeypatch.setattr(importer, "PIPELINE_MIN_BYTES", len(data) // 3 + 7)
    one, two = two_urls
    a = _import(one, [_write(tmp_path / "a.jsonl", lines)], workers=False, monkeypatch=monkeypatch)
    _piped_stdin(monkeypatch, tmp_path, data)
    b = _import(two, ["-"], workers=True, monkeypatch=monkeypatch)
    assert runs == [1]
    _same(a, b)
    assert _rows(one) == _rows(two)


def test_stdin_small_or_in_memory_is_not_pipelined(tmp_path, monkeypatch, runs):
    """Less than the read-ahead in the pipe: one process. A stream with no descriptor (held
    in memory) cannot be read on by a forked worker: one process too. Both import it all."""
    import io
    import sys

    lines = _plant_lines()
    data = b"".join(x + b"\n" for x in lines)
    monkeypatch.setattr(importer, "PIPELINE_MIN_BYTES", len(data) + 1)
    _piped_stdin(monkeypatch, tmp_path, data)
    a = _import(str(tmp_path / "a.db"), ["-"], workers=True, monkeypatch=monkeypatch)
    monkeypatch.setattr(importer, "PIPELINE_MIN_BYTES", 10)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    b = _import(str(tmp_path / "b.db"), ["-"], workers=True, monkeypatch=monkeypatch)
    assert runs == []
    assert a.appended == b.appended == len(lines) - a.duplicates > 0
    _same(a, b)


def test_stdin_pipelined_names_stdin_in_errors(tmp_path, monkeypatch, runs):
    lines = _plant_lines()
    lines[len(lines) // 2] = b'{"type": "OperationReported", "qty": "x"}'
    data = b"".join(x + b"\n" for x in lines)
    monkeypatch.setattr(importer, "PIPELINE_MIN_BYTES", 100)
    _piped_stdin(monkeypatch, tmp_path, data)
    db = str(tmp_path / "a.db")
    b = _import(db, ["-"], workers=True, monkeypatch=monkeypatch)
    assert runs == [1] and b.appended == 0 and b.errors
    assert {e.file for e in b.errors} == {"<stdin>"}
    assert {e.line for e in b.errors} == {len(lines) // 2 + 1}
    with Ledger(db) as ledger:
        assert ledger.count() == 0


@pytest.mark.parametrize("workers", [False, True])
@pytest.mark.parametrize("split", [False, True])
def test_heads_of_ended_orders_set_aside_give_the_same_rows(two_urls, tmp_path, monkeypatch,
                                                            runs, workers, split):
    """An import holds few stream heads: past ``HEADS_KEPT``, those of ended orders go aside
    (into an empty ledger: a private database; into another: the store has them) and come
    back for an event after the end (a late report): the same chains."""
    lines = _plant_lines()
    half = len(lines) // 2 if split else len(lines)
    paths = [_write(tmp_path / "a.jsonl", lines[:half])]
    if split:  # the second file into a ledger with events (never pipelined)
        paths.append(_write(tmp_path / "b.jsonl", lines[half:]))
    one, two = two_urls
    for path in paths:
        _import(one, [path], workers=False, monkeypatch=monkeypatch)
    found = tmp_path / "came-back"  # a file: the rows may be made in a forked process
    found.write_text("")
    real = importer._AsideHeads.get  # noqa: SLF001

    def get(self, stream):
        head = real(self, stream)
        if head is not None:
            with found.open("a") as f:
                f.write(stream + "\n")
        return head

    monkeypatch.setattr(importer._AsideHeads, "get", get)  # noqa: SLF001
    monkeypatch.setattr(importer, "HEADS_KEPT", 2)
    monkeypatch.setattr(importer, "BATCH", 5)
    for path in paths:
        assert not _import(two, [path], workers=workers, monkeypatch=monkeypatch).errors
    assert runs == ([1] if workers else [])
    # Orders reported on after their end (in the second half of the history).
    assert (found.read_text().count("order:") >= 1) is not split
    assert _rows(two) == _rows(one)
    with Ledger(two) as ledger:
        assert verify(ledger)[1] == []
