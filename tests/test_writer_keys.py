"""The replay writer forgets the ids of closed keys, so its memory follows the plant's open
keys, not its history (a batch per receipt, WIP keys per order): and what it writes stays
the same, whether a forgotten key comes back (looked up, never numbered twice) or not.

Also the filter behind it (``ledger.bloom``): never "no" for what was added.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from backflush.ledger.bloom import Bloom
from backflush.ledger.importer import run_import
from backflush.ledger.simulate import simulate
from backflush.ledger.store import Ledger
from backflush.projections import materialise
from hypothesis import given
from hypothesis import strategies as st
from test_incremental import projection

KEYS = {
    "bf_onhand_keys": "item, location, batch, lp",
    "bf_wip_keys": "resource, location, kind, ord, op, item, batch",
}


def _history(tmp_path: Path) -> Path:
    path = tmp_path / "h.jsonl"
    path.write_bytes(b"".join(orjson.dumps(ev) + b"\n"
                              for ev in simulate(40, 5, ("scrap", "late"))))
    return path


def _ledger(url: str, path: Path) -> Ledger:
    ledger = Ledger(url)
    res = run_import(ledger, [str(path)])
    assert not res.errors, [str(e) for e in res.errors[:3]]
    return ledger


def _twice_numbered(ledger: Ledger) -> dict[str, int]:
    """Per keys table: rows beyond one per distinct key (a key numbered twice)."""
    out = {}
    with ledger.transaction(commit=False) as cur:
        for table, cols in KEYS.items():
            out[table] = cur.execute(
                f"SELECT COUNT(*) - (SELECT COUNT(*) FROM (SELECT DISTINCT {cols} FROM {table})"
                f" d) AS c FROM {table}").fetchone()["c"]
    return out


def _by_key(ledger: Ledger) -> dict[str, list[tuple]]:
    """bf_alive and bf_open by key values (their ids differ between writers)."""
    out = {}
    with ledger.transaction(commit=False) as cur:
        for table, cols in (("bf_alive", "a.bucket"), ("bf_open", "a.from_bucket")):
            rows = []
            for kind, keys in (("onhand", "bf_onhand_keys"), ("wip", "bf_wip_keys")):
                key = ", ".join("k." + c for c in KEYS[keys].split(", "))
                rows += [tuple("" if v is None else v for v in
                               (r.values() if isinstance(r, dict) else r))
                         for r in cur.execute(
                             f"SELECT {cols} AS b, {key} FROM {table} a JOIN {keys} k"
                             f" ON k.key_id = a.key_id WHERE a.kind = '{kind}'").fetchall()]
            out[table] = sorted(rows)
    return out


def _spy(monkeypatch) -> dict[str, int]:
    """Count the writer's forgetting and its look-ups of keys it may have forgotten."""
    seen = {"forgot": 0, "looked_up": 0}
    forget, stored = materialise._Writer._forget_closed, materialise._Writer._stored

    def forgetting(self):
        seen["forgot"] += 1
        forget(self)

    def may_be_stored(self, key):
        hit = stored(self, key)
        seen["looked_up"] += hit and self.fresh
        return hit

    monkeypatch.setattr(materialise._Writer, "_forget_closed", forgetting)
    monkeypatch.setattr(materialise._Writer, "_stored", may_be_stored)
    return seen


def test_a_rebuild_that_forgets_closed_keys_writes_what_one_that_keeps_them_does(
        tmp_path, db_url, monkeypatch):
    ledger = _ledger(db_url, _history(tmp_path))
    try:
        materialise.rebuild(ledger)
        want = (projection(ledger), _by_key(ledger))
        assert _twice_numbered(ledger) == {"bf_onhand_keys": 0, "bf_wip_keys": 0}
        seen = _spy(monkeypatch)
        monkeypatch.setattr(materialise, "KEY_CACHE", 40)
        monkeypatch.setattr(materialise, "PAGE", 50)  # many writes, each may forget
        materialise.rebuild(ledger)
        assert _twice_numbered(ledger) == {"bf_onhand_keys": 0, "bf_wip_keys": 0}
        assert (projection(ledger), _by_key(ledger)) == want
        # It forgot, and keys it had forgotten came back (a bin emptied and refilled).
        assert seen["forgot"] > 3 and seen["looked_up"] > 0, seen
    finally:
        ledger.close()


def test_a_catch_up_that_forgets_closed_keys_equals_a_rebuild(tmp_path, db_url, monkeypatch):
    """Split imports, each caught up by a writer that forgets (and looks keys up)."""
    lines = _history(tmp_path).read_bytes().splitlines(keepends=True)
    seen = _spy(monkeypatch)
    monkeypatch.setattr(materialise, "KEY_CACHE", 40)
    monkeypatch.setattr(materialise, "PAGE", 50)
    ledger = Ledger(db_url)
    try:
        for k, part in enumerate((lines[:700], lines[700:1500], lines[1500:])):
            p = tmp_path / f"part{k}.jsonl"
            p.write_bytes(b"".join(part))
            assert not run_import(ledger, [str(p)]).errors
            materialise.catch_up(ledger)
        assert seen["forgot"] > 3, seen
        assert _twice_numbered(ledger) == {"bf_onhand_keys": 0, "bf_wip_keys": 0}
        got = (projection(ledger), _by_key(ledger))
        monkeypatch.undo()
        materialise.rebuild(ledger)
        assert (projection(ledger), _by_key(ledger)) == got
    finally:
        ledger.close()


@given(st.lists(st.one_of(st.text(max_size=8), st.integers(), st.tuples(
    st.text(max_size=4), st.none() | st.text(max_size=4))), max_size=300),
       st.sampled_from([1, 64, 1 << 12]))
def test_a_bloom_filter_never_says_no_to_what_was_added(values, nbytes):
    f = Bloom(nbytes)
    half = len(values) // 2
    f.add(values[:half])
    maybe = f.seen_then_add(values[half:])
    assert all(v in f for v in values)
    # What was added in the first half is said to be seen again in the second.
    assert [v for v in values[half:] if v in values[:half]] == [
        v for v in maybe if v in values[:half]]


def test_a_bloom_filter_rules_out_most_of_what_it_never_saw():
    f = Bloom(1 << 16)  # 2^19 bits for 10^4 values: about 1 in 5,000 false
    f.add(f"in-{i}" for i in range(10_000))
    assert sum(f"out-{i}" in f for i in range(10_000)) < 50


@pytest.mark.parametrize("nbytes", [0, 3, 1 << 24])
def test_a_bloom_filters_size_is_a_power_of_two_up_to_8_mib(nbytes):
    with pytest.raises(ValueError, match="power of two"):
        Bloom(nbytes)
