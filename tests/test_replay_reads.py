"""What a whole-history replay reads: plain (seq, at_us, state) tuples, decoded by the
replay pass's own decoder. The what-ifs, whole-history findings and hours, audits under a
policy and ``verify --deep`` read this way (stop 30: 25-31% faster at 1M events); the rows
and the decoded events must be exactly what the general reads give, page after page, and on
PostgreSQL also past the first page (read in binary on psycopg after a first one on libpq).
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from backflush.ledger.codec import replay_dict
from backflush.ledger.importer import run_import
from backflush.ledger.simulate import simulate
from backflush.ledger.store import Ledger
from backflush.projections import materialise as mat
from fresh import reimported
from hypothesis import given, settings
from hypothesis import strategies as st


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


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=4),
    max_leaves=12,
)


@given(JSON, st.sampled_from(["bytes", "str", "memoryview", "padded"]))
@settings(max_examples=500)
def test_one_orders_decoder_reads_json_as_json_loads_does(value, form):
    # (the per-order replay decodes with json's C scanner, without the json package)
    text = json.dumps(value, ensure_ascii=False).encode()
    given_ = {"bytes": text, "str": text.decode(), "memoryview": memoryview(text),
              "padded": b" \n" + text + b"\t "}[form]
    assert mat._light_loads(given_) == json.loads(bytes(given_) if form == "memoryview"
                                                  else given_)


@pytest.mark.parametrize("bad", [b"", b"{", b'{"a":1} x', b"\xff\xfe", "[1,]", b"NaN x"])
def test_one_orders_decoder_fails_as_json_loads_does(bad):
    with pytest.raises(ValueError) as ours:
        mat._light_loads(bad)
    with pytest.raises(ValueError) as theirs:
        json.loads(bad)
    assert type(ours.value) is type(theirs.value) and str(ours.value) == str(theirs.value)


def test_one_orders_decoder_needs_no_json_package():
    code = ("from backflush.projections import materialise as mat\n"
            "assert mat._light_loads(b'{\"a\": [1, 2.5, null]}') == {'a': [1, 2.5, None]}")
    assert reimported(code, ("re", "json")) == []
