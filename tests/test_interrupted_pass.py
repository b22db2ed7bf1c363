"""A replay pass interrupted (Ctrl-C) keeps what it wrote up to its last kept checkpoint.

A first import of a plant's history is followed by a catch-up as long as a rebuild (18 s
at 1M events). Interrupted, it used to roll back whole, and the next command started it
again from the beginning. Now the pass stops at its last kept checkpoint, commits there,
and the next catch-up goes on from it. These tests interrupt rebuilds and catch-ups at
several points, in one process and with the replay worker, on SQLite and PostgreSQL, and
hold the projections then finished to those of an uninterrupted rebuild, row for row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from backflush.ledger.importer import run_import
from backflush.ledger.simulate import simulate
from backflush.ledger.store import Ledger
from backflush.projections import changelog
from backflush.projections import materialise as mat
from conftest import replay_steps
from test_projections_ledger import _tables, answers

FAULTS = ("double-flush:0.1", "scrap:0.1", "no-stock:0.1", "reversal", "late", "split")


def _import(ledger: Ledger, path: Path, events: list[dict[str, Any]]) -> None:
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    res = run_import(ledger, [str(path)])
    assert not res.errors, res.errors[:3]


def _interrupt_after(monkeypatch: Any, writes: int) -> list[int]:
    """Ctrl-C in the writing process after ``writes`` change logs were written."""
    seen = [0]
    real = mat._Run.changes

    def changes(self: Any, ch: tuple) -> None:
        if seen[0] == writes:
            raise KeyboardInterrupt
        seen[0] += 1
        real(self, ch)

    monkeypatch.setattr(mat._Run, "changes", changes)
    return seen


def _resume(ledger: Ledger) -> str | None:
    with ledger.transaction(commit=False) as cur:
        return mat._get(cur, "resume")


def _state(ledger: Ledger) -> tuple:
    return _tables(ledger), answers(ledger)


def _imported_and_rebuilt(ledger: Ledger, tmp_path: Any, events: list[dict]) -> Any:
    """Import ``events``, rebuild uninterrupted, and return that state: what an interrupted
    pass, once finished, must equal."""
    _import(ledger, tmp_path / "h.jsonl", events)
    mat.rebuild(ledger)
    return _state(ledger)


@pytest.fixture(params=["in-process", "worker"])
def workers(request: pytest.FixtureRequest, monkeypatch: Any) -> str:
    monkeypatch.setenv("BACKFLUSH_REPLAY_WORKERS", "1" if request.param == "worker" else "0")
    return request.param


@pytest.mark.parametrize("writes", [3, 11, 20])
def test_an_interrupted_rebuild_is_finished_by_the_next_catch_up(
        db_url, tmp_path, monkeypatch, workers, writes):
    replay_steps(monkeypatch, page=150, every=300, near_every=60, near_span=500)
    events = list(simulate(50, 3, FAULTS))
    ledger = Ledger(db_url)
    try:
        expected = _imported_and_rebuilt(ledger, tmp_path, events)
        with monkeypatch.context() as m:
            _interrupt_after(m, writes)
            with pytest.raises(KeyboardInterrupt):
                mat.rebuild(ledger)
        resume = _resume(ledger)
        assert resume is not None  # progress kept: where it stopped, up to which event
        stopped_at = tuple(int(x) for x in resume.split(",")[:2])
        applied = mat.catch_up(ledger)
        # Only what follows the checkpoint it stopped at, not the whole history again.
        with ledger.transaction(commit=False) as cur:
            after = cur.execute("SELECT COUNT(*) AS c FROM bf_events WHERE (at_us, seq) > (?, ?)",
                                stopped_at).fetchone()["c"]
        assert 0 < applied <= after < len(events)
        assert _resume(ledger) is None
        assert _state(ledger) == expected
        assert mat.catch_up(ledger) == 0
    finally:
        ledger.close()


def test_an_interrupted_catch_up_keeps_its_progress_twice_over(db_url, tmp_path, monkeypatch,
                                                              workers):
    """A catch-up of a second import (late events among them) interrupted, its resumption
    interrupted again, and a third import recorded between the two: finished, the
    projections are those of a rebuild."""
    replay_steps(monkeypatch, page=150, every=300, near_every=60, near_span=500)
    events = list(simulate(60, 5, FAULTS))
    cut = len(events) // 3
    ledger = Ledger(db_url)
    try:
        _import(ledger, tmp_path / "a.jsonl", events[:cut])
        mat.catch_up(ledger)
        _import(ledger, tmp_path / "b.jsonl", events[cut:-200])
        with monkeypatch.context() as m:
            _interrupt_after(m, 6)
            with pytest.raises(KeyboardInterrupt):
                mat.catch_up(ledger)
        first = _resume(ledger)
        assert first is not None
        _import(ledger, tmp_path / "c.jsonl", events[-200:])
        with monkeypatch.context() as m:
            _interrupt_after(m, 4)
            with pytest.raises(KeyboardInterrupt):
                mat.catch_up(ledger)
        second = _resume(ledger)
        assert second is not None and second != first
        assert mat.catch_up(ledger) > 0
        assert _resume(ledger) is None
        caught_up = _state(ledger)
        mat.rebuild(ledger)
        assert _state(ledger) == caught_up
    finally:
        ledger.close()


def test_interrupted_before_any_checkpoint_nothing_is_kept(sqlite_db, tmp_path, monkeypatch):
    replay_steps(monkeypatch, page=150, every=300, near_every=60, near_span=500)
    monkeypatch.setenv("BACKFLUSH_REPLAY_WORKERS", "0")
    events = list(simulate(30, 2, FAULTS))
    ledger = Ledger(sqlite_db)
    try:
        _import(ledger, tmp_path / "h.jsonl", events)
        with monkeypatch.context() as m:
            _interrupt_after(m, 0)
            with pytest.raises(KeyboardInterrupt):
                mat.catch_up(ledger)
        assert _resume(ledger) is None
        with ledger.transaction(commit=False) as cur:
            assert mat._get(cur, "last_seq") in (None, "0")
        assert mat.catch_up(ledger) == len(events)
        caught_up = _state(ledger)
        mat.rebuild(ledger)
        assert _state(ledger) == caught_up
    finally:
        ledger.close()


def test_ctrl_c_that_lands_in_the_worker_is_an_interruption_there_too(sqlite_db, tmp_path,
                                                                     monkeypatch):
    """Ctrl-C reaches the replay worker as well. Whichever process it lands in first, the pass
    is interrupted (not "the replay worker failed", exit 3) and keeps its progress."""
    replay_steps(monkeypatch, page=150, every=300, near_every=60, near_span=500)
    monkeypatch.setenv("BACKFLUSH_REPLAY_WORKERS", "1")
    events = list(simulate(40, 4, FAULTS))
    ledger = Ledger(sqlite_db)
    try:
        expected = _imported_and_rebuilt(ledger, tmp_path, events)
        seen = [0]
        real = changelog.changes

        def changes(*a: Any) -> Any:  # the producer's: called in the worker process
            seen[0] += 1
            if seen[0] == 12:
                raise KeyboardInterrupt
            return real(*a)

        with monkeypatch.context() as m:
            m.setattr(changelog, "changes", changes)
            with pytest.raises(KeyboardInterrupt):
                mat.rebuild(ledger)
        assert seen[0] == 0  # it ran in the worker, not here
        assert _resume(ledger) is not None
        assert 0 < mat.catch_up(ledger) < len(events)
        assert _state(ledger) == expected
    finally:
        ledger.close()
