"""Golden answers: the projections must keep giving exactly these answers while they change.

Each case is a fixed JSONL history (simulated histories stored under ``tests/golden/``, so a
change to the simulator cannot move them; and the shipped examples). For each, the answers
of a full rebuild — on-hand and WIP now and at a few times, consumption and hours per order,
every finding, each order's postings — are kept in ``tests/golden/<case>.answers.json.gz``
(histories as ``<case>.jsonl.gz``: gzip keeps the repository small).

Regenerate (only when a behaviour change is intended, and say so in the commit):

    .venv/bin/python tests/test_golden.py            # rewrites tests/golden/*.answers.json.gz
    .venv/bin/python tests/test_golden.py --histories  # also re-simulates the stored histories

The first run of this file recorded the answers of the code before the engine was touched
(pickled snapshot, full rebuild on late events).
"""

from __future__ import annotations

import gzip
import sys
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from backflush.ledger.importer import run_import
from backflush.ledger.store import Ledger
from backflush.projections import asof, materialise

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
EXAMPLES = HERE.parent / "examples"

# (name, orders, seed, faults): small simulate() histories stored as files.
SIMULATED = [
    ("sim-60-s1-clean", 60, 1, ()),
    ("sim-120-s2-all-faults", 120, 2, ("double-flush", "scrap", "late", "no-stock")),
    ("sim-90-s3-late-scrap", 90, 3, ("late", "scrap")),
    ("sim-50-s4-noStock", 50, 4, ("no-stock", "double-flush")),
]


def _cases() -> list[tuple[str, Path]]:
    out = [(name, GOLDEN / f"{name}.jsonl.gz") for name, *_ in SIMULATED]
    out += [(d.name, d / "events.jsonl") for d in sorted(EXAMPLES.iterdir())
            if (d / "events.jsonl").exists()]
    return out


def _plain(v: Any) -> Any:
    """Answers as JSON: Decimals as their exact text (a changed exponent is a change)."""
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def read_history(path: Path) -> bytes:
    """The JSONL bytes of a stored history (gzipped or plain)."""
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def _times(path: Path) -> list[datetime]:
    """A few moments inside the history (by the events' own ``at``): quartiles."""
    ats = sorted(datetime.fromisoformat(orjson.loads(line)["at"].replace("Z", "+00:00"))
                 for line in read_history(path).splitlines() if line.strip())
    return [ats[len(ats) * k // 4] + timedelta(seconds=1) for k in (1, 2, 3)]


def answers(ledger: Ledger, times: list[datetime]) -> dict[str, Any]:
    """Every answer the golden files keep, from the ledger's materialised projections."""
    with ledger.transaction(commit=False) as cur:
        orders = [r["ord"] for r in cur.execute(
            "SELECT ord FROM bf_events WHERE type = 'OrderCreated' ORDER BY ord").fetchall()]
    out: dict[str, Any] = {
        "onhand": asof.onhand(ledger),
        "wip": asof.wip(ledger),
        "at": {t.isoformat(): {"onhand": asof.onhand(ledger, t), "wip": asof.wip(ledger, t)}
               for t in times},
        "consumption": {o: asof.consumption(ledger, o) for o in orders},
        "hours": asof.hours(ledger),
        "findings": [f.as_dict() for f in asof.findings_replay(ledger)],
        "flushes": {o: materialise.flushes_of(ledger, o) for o in orders},
    }
    return _plain(out)


def answers_of_file(path: Path, db: Path) -> dict[str, Any]:
    """Import one history into a fresh ledger, rebuild fully, and answer."""
    plain = db.parent / "history.jsonl"
    plain.write_bytes(read_history(path))
    ledger = Ledger(str(db))
    try:
        res = run_import(ledger, [str(plain)])
        assert not res.errors, [str(e) for e in res.errors[:5]]
        materialise.rebuild(ledger)
        return answers(ledger, _times(path))
    finally:
        ledger.close()


@pytest.mark.parametrize("name,path", _cases(), ids=[c[0] for c in _cases()])
def test_full_rebuild_gives_the_golden_answers(tmp_path, name, path):
    expected = orjson.loads(gzip.decompress((GOLDEN / f"{name}.answers.json.gz").read_bytes()))
    got = answers_of_file(path, tmp_path / "l.db")
    assert got == expected


@pytest.mark.parametrize("one_read", [None, 3], ids=["orders-in-one-read", "long-orders"])
@pytest.mark.parametrize("name,path", _cases()[:2] + _cases()[-4:],
                         ids=[c[0] for c in _cases()[:2] + _cases()[-4:]])
def test_per_order_paths_give_the_golden_answers(tmp_path, monkeypatch, name, path, one_read):
    """``findings --order`` (the order's own events plus the projections), one order's
    consumption and hours, and streamed hours answer exactly what the full replay answered.
    ``long-orders``: every order read as one too long for one page, whose Reversals' targets
    are then asked of the store."""
    if one_read is not None:
        monkeypatch.setattr(asof, "_ONE_READ", one_read)
    expected = orjson.loads(gzip.decompress((GOLDEN / f"{name}.answers.json.gz").read_bytes()))
    plain = tmp_path / "history.jsonl"
    plain.write_bytes(read_history(path))
    ledger = Ledger(str(tmp_path / "l.db"))
    try:
        assert not run_import(ledger, [str(plain)]).errors
        orders = sorted(expected["consumption"])
        assert orders
        for o in orders:
            got = _plain([f.as_dict() for f in asof.order_findings(ledger, o)])
            assert got == [f for f in expected["findings"] if f["order"] == o], o
            # An order's hours from its own events (what a streamed `hours` answers alone).
            got = _plain(asof.hours(ledger, order=o))
            assert got == [h for h in expected["hours"] if h["order"] == o], o
            assert _plain(asof.consumption(ledger, o)) == expected["consumption"][o], o
        # Checking after every event retires each order as early as possible.
        streamed = sorted(asof.iter_hours(ledger, retire_every=1), key=lambda r: r["order"])
        assert _plain(streamed) == expected["hours"]
    finally:
        ledger.close()


@pytest.mark.parametrize("one_read", [None, 3], ids=["orders-in-one-read", "long-orders"])
def test_per_order_replays_keep_the_undo_their_reversals_need(tmp_path, monkeypatch, one_read):
    """An order's replay keeps the undo of its reversed events only (of every event, an order
    of 200k reports took 490 MB): with Reversals among the order's events, its consumption,
    hours and findings are those of a replay that kept the undo of everything."""
    from backflush.ledger.simulate import FAULTS, simulate
    from backflush.projections.engine import Replay
    from backflush.projections.findings import findings, sort_key

    if one_read is not None:
        monkeypatch.setattr(asof, "_ONE_READ", one_read)
    events = list(simulate(40, 9, {**FAULTS, "reversal": 0.6}))
    reversed_orders = {e["order"] for e in events if e["type"] == "Reversal" and "order" in e}
    plain = tmp_path / "history.jsonl"
    plain.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    with Ledger(str(tmp_path / "l.db")) as ledger:
        assert not run_import(ledger, [str(plain)]).errors
        with ledger.transaction(commit=False) as cur:
            reversed_orders |= {r["ord"] for r in cur.execute(
                "SELECT ord FROM bf_events WHERE type = 'Reversal' AND ord IS NOT NULL")}
        assert len(reversed_orders) >= 3
        for o in sorted(reversed_orders):
            every = Replay().apply_all(asof.order_events(ledger, o))  # undo of every event
            assert _plain(asof.consumption(ledger, o)) == _plain(every.consumption(o)), o
            assert _plain(asof.hours(ledger, order=o)) == _plain(every.hours(order=o)), o
            kept = asof.order_replay(ledger, o)
            assert kept.reversed_ids() == every.reversed_ids() != set(), o
            mine = sorted(findings(kept, order=o), key=sort_key)
            assert [f.as_dict() for f in mine] == [
                f.as_dict() for f in sorted(findings(every, order=o), key=sort_key)], o


def _regenerate(histories: bool) -> None:
    import tempfile

    GOLDEN.mkdir(exist_ok=True)
    if histories:
        from backflush.ledger.simulate import simulate

        for name, orders, seed, faults in SIMULATED:
            lines = (orjson.dumps(e) for e in simulate(orders, seed, faults))
            data = b"\n".join(lines) + b"\n"
            (GOLDEN / f"{name}.jsonl.gz").write_bytes(gzip.compress(data, 9, mtime=0))
    for name, path in _cases():
        with tempfile.TemporaryDirectory() as tmp:
            got = answers_of_file(path, Path(tmp) / "l.db")
        data = orjson.dumps(got, option=orjson.OPT_SORT_KEYS) + b"\n"
        (GOLDEN / f"{name}.answers.json.gz").write_bytes(gzip.compress(data, 9, mtime=0))
        print(f"{name}: {sum(len(v) if isinstance(v, list | dict) else 1 for v in got.values())}")


if __name__ == "__main__":
    _regenerate("--histories" in sys.argv[1:])
