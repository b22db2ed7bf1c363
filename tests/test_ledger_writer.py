"""The importer's own write path: rows built inline, positions and links kept in memory.

``ledger.importer`` builds each stored row itself (chain hash, stored state, ledger-wide
link: ``codec.chain_hash``, ``codec.state_of`` and ``anchor.link_of`` inlined), keeps the
next position and link in memory between batches, and into an empty ledger looks up
only the ids its filter of written ids cannot rule out. These tests pin all three: every
stored byte equals what the reference encoders give, also for ids and order names that
need JSON escaping, and every duplicate id and Reversal target is found across batches,
with tiny batches so that every such lookup crosses a batch boundary.
"""

from __future__ import annotations

import orjson
import pytest
from backflush.ledger import importer
from backflush.ledger.anchor import GENESIS, link_of
from backflush.ledger.codec import body_of, chain_hash, state_of
from backflush.ledger.integrity import verify
from backflush.ledger.store import Ledger

AT = "2026-03-01T{:02d}:{:02d}:00Z"


def _ev(n: int, **fields) -> dict:
    return {"at": AT.format(6 + n // 60, n % 60), **fields}


# Names a JSON encoder must escape (quote, backslash) or keeps raw (non-ASCII).
ORDERS = ['P"1', "P\\2", "Pé3"]
IDS = ['id"q', "id\\b", "idé", "id/s"]


def _history() -> list[dict]:
    evs = [
        _ev(0, type="ItemDefined", id="m-fg", item="FG", decimals=0),
        _ev(1, type="ItemDefined", id="m-raw", item="RAW", decimals=3),
        _ev(2, type="BomDefined", id="m-bom", bom="B", item="FG",
            lines=[{"line": 10, "item": "RAW", "qty": "0.5"}]),
        _ev(3, type="InventoryReceived", id=IDS[0], item="RAW", qty="100", location="BULK"),
    ]
    n = 4
    for i, order in enumerate(ORDERS):
        evs.append(_ev(n, type="OrderCreated", id=f"c{i}", order=order, item="FG", qty=2,
                       bom="B"))
        evs.append(_ev(n + 1, type="OrderReleased", id=f"r{i}", order=order))
        evs.append(_ev(n + 2, type="MaterialConsumed", id=IDS[1 + i], order=order,
                       item="RAW", qty="0.25"))
        evs.append(_ev(n + 3, type="Picked", item="RAW", qty="1", location="BULK",
                       order=order))  # no id: named from its content
        n += 4
    # A Reversal of an event written several batches earlier, and a plain inventory tail.
    evs.append(_ev(n, type="Reversal", id="rev", reverses=IDS[1], reason='wrong "lot"'))
    for k in range(7):
        evs.append(_ev(n + 1 + k, type="InventoryTransferred", id=f"t{k}", item="RAW",
                       qty="1", from_location="BULK", to_location="M1"))
    return evs


def _write(path, events: list[dict]) -> str:
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return str(path)


def _stored(url: str) -> tuple[list[dict], list[dict]]:
    with Ledger(url) as ledger, ledger.transaction(commit=False) as cur:
        rows = [dict(r) for r in cur.execute("SELECT * FROM bf_events ORDER BY seq").fetchall()]
        links = [dict(r) for r in cur.execute("SELECT * FROM bf_chain ORDER BY seq").fetchall()]
    return rows, links


def _check_against_reference(rows: list[dict], links: list[dict]) -> None:
    heads: dict[str, str] = {}
    link = GENESIS
    assert [r["seq"] for r in rows] == [c["seq"] for c in links]
    for r, c in zip(rows, links, strict=True):
        state = bytes(r["state"])
        d = orjson.loads(state)
        prev = heads.get(r["stream"], GENESIS)
        body = body_of(d["e"])
        h = chain_hash(prev, r["stream"], r["version"], d["rec"], body, r["id"])
        assert r["hash"] == h == d["hash"], r["id"]
        assert d["prev"] == prev
        assert state == state_of(body, r["id"], d["rec"].encode(), prev, h), r["id"]
        link = link_of(link, r["seq"], r["stream"], r["version"], h, r["rec_us"])
        assert (c["link"], c["stream"], c["version"], c["id"]) == (
            link, r["stream"], r["version"], r["id"])
        heads[r["stream"]] = h


@pytest.mark.parametrize("batch", [1, 3, 1000])
def test_rows_equal_the_reference_encoders(db_url, tmp_path, monkeypatch, batch):
    monkeypatch.setattr(importer, "BATCH", batch)
    evs = _history()
    first = _write(tmp_path / "a.jsonl", evs[:9])
    second = _write(tmp_path / "b.jsonl", evs[9:])
    with Ledger(db_url) as ledger:
        res = importer.run_import(ledger, [first])
        assert not res.errors and res.appended == 9
        # A second import into a non-empty ledger: heads, position and link read back.
        res = importer.run_import(ledger, [second, first])
        assert [str(e) for e in res.errors] == []
        assert (res.appended, res.duplicates) == (len(evs) - 9, 9)
        assert verify(ledger)[1] == []
    rows, links = _stored(db_url)
    assert len(rows) == len(evs)
    assert {r["id"] for r in rows} >= set(IDS)
    assert {r["stream"] for r in rows} >= {f"order:{o}" for o in ORDERS}
    assert next(r for r in rows if r["id"] == "rev")["ord"] == ORDERS[0]
    _check_against_reference(rows, links)


@pytest.mark.parametrize("batch", [1, 2, 1000])
def test_reads_see_every_earlier_batch(db_url, tmp_path, monkeypatch, batch):
    """A duplicate id with other content and a Reversal of an earlier batch's event are
    found although their first occurrence may still be on its way to the store; and a
    bad last line leaves nothing written, however many batches went before it."""
    monkeypatch.setattr(importer, "BATCH", batch)
    evs = _history()
    clash = dict(evs[3], qty="99")  # IDS[0] again, other content
    bad = _ev(59, type="InventoryReceived", item="NOPE", qty="1", location="BULK")
    path = _write(tmp_path / "h.jsonl", [*evs, clash, evs[5], bad])
    with Ledger(db_url) as ledger:
        res = importer.run_import(ledger, [path])
        assert [(e.line, e.field) for e in res.errors] == [
            (len(evs) + 1, "id"), (len(evs) + 3, "item")]
        assert res.duplicates == 1
        assert ledger.count() == 0
        # Without the bad lines the same file goes in whole, the repeat counted once.
        path = _write(tmp_path / "ok.jsonl", [*evs, evs[5]])
        res = importer.run_import(ledger, [path])
        assert not res.errors and (res.appended, res.duplicates) == (len(evs), 1)
        assert verify(ledger)[1] == []
    _check_against_reference(*_stored(db_url))
