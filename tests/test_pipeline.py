"""The replay pass with a worker process (``projections.pipeline``) writes what the pass in
one process writes, byte for byte, on SQLite and PostgreSQL: a full rebuild and a catch-up
that continues from a checkpoint after late events, reversals and split imports. A worker
that dies or raises rolls the transaction back with one error, leaves no process behind,
and progress is still reported."""

from __future__ import annotations

import gzip
import os
import signal
from pathlib import Path

import orjson
import pytest
from backflush.ledger.importer import run_import
from backflush.ledger.store import Ledger
from backflush.projections import materialise, pipeline
from conftest import replay_steps

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def steps(monkeypatch):
    """Pages and checkpoints of a few dozen events: a short history crosses many of both."""
    replay_steps(monkeypatch, page=40, every=300, near_every=70, near_span=500)


@pytest.fixture
def passes(monkeypatch):
    """Count the passes that ran with a worker (so a test cannot pass without one)."""
    ran = []
    real = pipeline.run

    def counted(run, progress):
        ran.append(run.events)
        return real(run, progress)

    monkeypatch.setattr(pipeline, "run", counted)
    return ran


def _lines() -> list[bytes]:
    data = gzip.decompress((GOLDEN / "sim-120-s2-all-faults.jsonl.gz").read_bytes())
    return [line for line in data.splitlines() if line.strip()]


def _import(ledger: Ledger, path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"\n".join(lines) + b"\n")
    res = run_import(ledger, [str(path)])
    assert not res.errors, [str(e) for e in res.errors[:3]]


def tables(ledger: Ledger) -> dict[str, list[tuple]]:
    """Every projection table (and the tracked position), every row, in key order."""
    out = {}
    with ledger.transaction(commit=False) as cur:
        for t in (*materialise.PROJECTION_TABLES, "bf_proj"):
            rows = cur.execute(f"SELECT * FROM {t}").fetchall()
            cols = list(rows[0].keys()) if rows else []
            out[t] = sorted(
                tuple(bytes(r[c]) if isinstance(r[c], (bytes, memoryview)) else r[c]
                      for c in cols)
                for r in rows
            )
    return out


def _split(lines: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """The history without some stock counts of its last tenth, and those (late)."""
    at = [orjson.loads(x)["at"] for x in lines]
    order = sorted(range(len(lines)), key=lambda i: at[i])
    tail = order[int(len(order) * 0.8):]
    late = {i for i in tail if orjson.loads(lines[i])["type"] == "InventoryCounted"}
    assert late
    return [x for i, x in enumerate(lines) if i not in late], [lines[i] for i in sorted(late)]


def _pg_pair(pg_url: str):
    import uuid

    import psycopg

    names = ["p_" + uuid.uuid4().hex[:12] for _ in range(2)]
    with psycopg.connect(pg_url, autocommit=True) as con:
        for n in names:
            con.execute(f"CREATE DATABASE {n}")
    base = pg_url.rsplit("/", 1)[0]
    return names, [f"{base}/{n}" for n in names]


def _drop(pg_url: str, names: list[str]) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as con:
        for n in names:
            con.execute(f"DROP DATABASE IF EXISTS {n} WITH (FORCE)")


def _same_both_ways(tmp: Path, url_a: str, url_b: str, monkeypatch, passes) -> None:
    first, late = _split(_lines())
    one, two = Ledger(url_a), Ledger(url_b)
    try:
        for ledger in (one, two):
            _import(ledger, tmp / "first.jsonl", first)
        monkeypatch.setenv(pipeline.ENV, "0")
        materialise.catch_up(one)
        monkeypatch.setenv(pipeline.ENV, "1")
        materialise.catch_up(two)
        assert len(passes) == 1
        assert tables(one) == tables(two)
        # Late events (and the reversals among what follows): a catch-up from a checkpoint,
        # the writer looking keys up instead of numbering them fresh.
        for ledger in (one, two):
            _import(ledger, tmp / "late.jsonl", late)
        monkeypatch.setenv(pipeline.ENV, "0")
        applied = materialise.catch_up(one)
        monkeypatch.setenv(pipeline.ENV, "1")
        assert materialise.catch_up(two) == applied
        assert 0 < applied < len(first)
        assert len(passes) == 2
        assert tables(one) == tables(two)
        # A full rebuild, with progress reported as pages are written.
        seen: list[int] = []
        materialise.rebuild(two, seen.append)
        assert len(passes) == 3
        monkeypatch.setenv(pipeline.ENV, "0")
        materialise.rebuild(one)
        assert tables(one) == tables(two)
        assert seen == sorted(seen) and seen[-1] == len(first) + len(late) and len(seen) > 10
    finally:
        one.close()
        two.close()


def test_a_worker_writes_the_very_tables_one_process_writes(tmp_path, steps, monkeypatch,
                                                             passes):
    _same_both_ways(tmp_path, str(tmp_path / "a.db"), str(tmp_path / "b.db"), monkeypatch,
                    passes)


@pytest.mark.postgres
def test_a_worker_writes_the_very_tables_one_process_writes_on_postgresql(
        tmp_path, pg_url, steps, monkeypatch, passes):
    names, urls = _pg_pair(pg_url)
    try:
        _same_both_ways(tmp_path, *urls, monkeypatch, passes)
    finally:
        _drop(pg_url, names)


def _children() -> list[int]:
    pid = os.getpid()
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        out.extend(int(x) for x in text.split())
    return out


def _assert_no_child() -> None:
    assert _children() == []
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="Linux /proc")
def test_a_worker_that_dies_rolls_back_with_one_error_and_is_reaped(tmp_path, db_url, steps,
                                                                    monkeypatch, passes):
    ledger = Ledger(db_url)
    try:
        _import(ledger, tmp_path / "h.jsonl", _lines())
        monkeypatch.setenv(pipeline.ENV, "0")
        materialise.catch_up(ledger)
        before = tables(ledger)
        monkeypatch.setenv(pipeline.ENV, "1")
        # The smallest pipe: the worker cannot run far ahead (and finish) before it is killed.
        monkeypatch.setattr(pipeline, "_PIPE_BYTES", 4096)
        killed = []

        def kill_worker(n: int) -> None:
            if not killed:
                (child,) = _children()
                os.kill(child, signal.SIGKILL)
                killed.append(child)

        with pytest.raises(pipeline.ReplayWorkerFailed, match="signal 9") as err:
            materialise.rebuild(ledger, kill_worker)
        assert "\n" not in str(err.value) and killed and passes
        _assert_no_child()
        assert tables(ledger) == before  # rolled back: the old projections stand
    finally:
        ledger.close()


def test_a_worker_that_raises_raises_here_and_rolls_back(tmp_path, db_url, steps,
                                                          monkeypatch, passes):
    ledger = Ledger(db_url)
    try:
        lines = _lines()
        _import(ledger, tmp_path / "h.jsonl", lines)
        monkeypatch.setenv(pipeline.ENV, "0")
        materialise.catch_up(ledger)
        before = tables(ledger)
        # A stored state that does not decode, late in replay order (tampered with: verify
        # says so; a replay stops on it).
        with ledger.transaction(commit=True) as cur:
            seq = cur.execute("SELECT seq FROM bf_events ORDER BY at_us DESC, seq DESC"
                              " LIMIT 1 OFFSET 100").fetchone()["seq"]
            cur.execute("UPDATE bf_events SET state = ? WHERE seq = ?", (b"{not json", seq))
        with pytest.raises(Exception) as alone:  # noqa: B017, PT011
            materialise.rebuild(ledger)
        monkeypatch.setenv(pipeline.ENV, "1")
        with pytest.raises(Exception) as err:  # noqa: B017, PT011
            materialise.rebuild(ledger)
        assert passes
        assert type(err.value) is type(alone.value)
        assert str(err.value) == str(alone.value)
        _assert_no_child()
        assert tables(ledger) == before  # rolled back: the old projections stand
    finally:
        ledger.close()


def test_pages_read_ahead_come_in_order_and_a_failed_read_is_raised_where_they_are_used():
    """The PostgreSQL worker reads the next page in a thread while it applies this one: the
    same pages in the same order, each handed over once the one before was taken; a read
    that fails is raised in the worker, after the pages read before it."""
    pages = [[(i, i * 10, b"x")] for i in range(7)]
    assert list(pipeline._read_ahead(iter(pages))) == pages
    assert list(pipeline._read_ahead(iter([]))) == []

    def failing():
        yield pages[0]
        yield pages[1]
        raise pipeline.OperationalError("connection lost")

    got = []
    with pytest.raises(pipeline.OperationalError, match="connection lost"):
        for page in pipeline._read_ahead(failing()):
            got.append(page)
    assert got == pages[:2]


def test_a_worker_only_where_it_pays(tmp_path, monkeypatch):
    ledger = Ledger(str(tmp_path / "l.db"))
    try:
        monkeypatch.delenv(pipeline.ENV, raising=False)
        small = pipeline.wanted(ledger, pipeline.PIPELINE_MIN - 1)
        assert not small
        big = pipeline.wanted(ledger, pipeline.PIPELINE_MIN)
        assert big == (pipeline.usable_cpus() >= 2)
        monkeypatch.setenv(pipeline.ENV, "0")
        assert not pipeline.wanted(ledger, 10**9)
        monkeypatch.setenv(pipeline.ENV, "1")
        assert pipeline.wanted(ledger, 1)
    finally:
        ledger.close()


def test_the_writer_lets_go_of_a_restored_engine_once_the_worker_has_it(tmp_path, steps,
                                                                        monkeypatch, passes):
    # A catch-up from a checkpoint restores the engine here, then forks the worker with it:
    # while this process writes what the worker sends, no engine restored here is alive
    # (with many open orders it was ~100 MB beside the writer's page cache).
    import weakref

    from backflush.projections.engine import Replay

    first, late = _split(_lines())
    ledger = Ledger(str(tmp_path / "a.db"))
    try:
        _import(ledger, tmp_path / "first.jsonl", first)
        monkeypatch.setenv(pipeline.ENV, "0")
        materialise.catch_up(ledger)
        _import(ledger, tmp_path / "late.jsonl", late)
        restored: list = []
        real_restore = Replay.restore.__func__

        def restore(cls, state, reversible=None):
            engine = real_restore(cls, state, reversible)
            restored.append(weakref.ref(engine))
            return engine

        monkeypatch.setattr(Replay, "restore", classmethod(restore))
        alive_while_writing: list[int] = []
        real_consume = pipeline._consume

        def consume(f, run):
            alive_while_writing.append(sum(r() is not None for r in restored))
            assert run.engine is None
            assert run.retire == []  # nor the retirement plan (an entry per order)
            return real_consume(f, run)

        planned: list[int] = []
        real_let_go = pipeline._let_go_of_engine

        def let_go(run):
            planned.append(len(run.retire))
            real_let_go(run)

        monkeypatch.setattr(pipeline, "_consume", consume)
        monkeypatch.setattr(pipeline, "_let_go_of_engine", let_go)
        monkeypatch.setenv(pipeline.ENV, "1")
        assert materialise.catch_up(ledger) > 0
        assert passes and restored  # a worker ran, from a restored engine
        assert alive_while_writing == [0]
        assert planned and planned[0] > 0
    finally:
        ledger.close()
