"""What a whole-history replay reads: plain (seq, at_us, state) tuples, decoded by the
replay pass's own decoder. The what-ifs, whole-history findings and hours, audits under a
policy and ``verify --deep`` read this way (stop 30: 25-31% faster at 1M events); the rows
and the decoded events must be exactly what the general reads give, page after page, and on
PostgreSQL also past the first page (read in binary on psycopg after a first one on libpq).
"""

from __future__ import annotations

from pathlib import Path

import orjson
from backflush.ledger.codec import replay_dict
from backflush.ledger.importer import run_import
from backflush.ledger.simulate import simulate
from backflush.ledger.store import Ledger
from backflush.projections import materialise as mat


def _ledger(db_url: str, tmp_path: Path) -> Ledger:
    src = tmp_path / "h.jsonl"
    events = simulate(12, 5, ("reversal:0.5", "late", "split", "scrap:0.2"))
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    ledger = Ledger(db_url)
    assert not run_import(ledger, [str(src)]).errors
    return ledger


def test_replay_rows_are_the_general_rows_page_after_page(db_url, tmp_path):
    ledger = _ledger(db_url, tmp_path)
    general = [(r["seq"], r["at_us"], bytes(r["state"]))
               for r in ledger.iter_rows(by="at", batch=7)]
    plain = list(ledger.iter_rows(by="at", replay=True, batch=7))
    assert len(general) > 7 * 10  # many pages
    assert [(s, a, bytes(st)) for s, a, st in plain] == general
    assert all(type(s) is int and type(a) is int and isinstance(st, bytes)
               for s, a, st in plain)
    # (filters apply as on the general read)
    cut = general[len(general) // 2][1]
    assert [r[0] for r in ledger.iter_rows(by="at", replay=True, batch=5, at_lte=cut)] == [
        r["seq"] for r in ledger.iter_rows(by="at", batch=5, at_lte=cut)]


def test_replay_events_decode_as_the_general_decoder_does(db_url, tmp_path):
    ledger = _ledger(db_url, tmp_path)
    fast = list(mat.events_for_replay(ledger))
    slow = [replay_dict(orjson.loads(r["state"])["e"], r["seq"])
            for r in ledger.iter_rows(by="at")]
    assert fast == slow
    nested = {"BomDefined", "RouteDefined", "ProductionParametersSet"}  # the general path
    assert {e["type"] for e in fast} >= nested | {"Reversal", "Put"}
