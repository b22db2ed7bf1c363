"""The full-rebuild pass's fast paths give what the plain ones give.

- ``codec.replay_decoder`` (one closure per pass) makes the very dict ``replay_dict`` makes
  from the same stored state, for every event type a simulated history and the examples hold;
- the checkpoint due-count (``_Run._due``, computed once per checkpoint) picks the same counts
  as the rule it replaces, tested at every event;
- the writer's open keys (kept by a signed id) read back as the (kind, key id, bucket) rows
  they were given, in the order checkpoints and bf_open store them.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from backflush.ledger.codec import replay_decoder, replay_dict
from backflush.ledger.importer import run_import
from backflush.ledger.simulate import simulate
from backflush.ledger.store import Ledger
from backflush.projections import materialise

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _states(tmp_path: Path, lines: list[bytes]) -> list[tuple[int, bytes]]:
    src = tmp_path / "h.jsonl"
    src.write_bytes(b"".join(lines))
    ledger = Ledger(str(tmp_path / "l.db"))
    res = run_import(ledger, [str(src)])
    assert not res.errors, res.errors[:3]
    with ledger.transaction(commit=False) as cur:
        rows = cur.execute("SELECT seq, state FROM bf_events ORDER BY seq").fetchall()
    ledger.close()
    return [(r["seq"], bytes(r["state"])) for r in rows]


def test_decoder_equals_replay_dict_on_a_simulated_history(tmp_path: Path) -> None:
    lines = [orjson.dumps(ev) + b"\n" for ev in simulate(40, 3, ("scrap", "late"))]
    states = _states(tmp_path, lines)
    decode = replay_decoder()
    types = set()
    for seq, state in states:
        want = replay_dict(orjson.loads(state)["e"], seq)
        got = decode(state, seq)
        assert got == want
        assert [type(v) for v in got.values()] == [type(v) for v in want.values()]
        types.add(want["type"])
    # Master data with nested parts (the general path) and the hot types (the fast one).
    assert {"BomDefined", "RouteDefined", "ProductionParametersSet", "Put", "Picked",
            "OperationReported", "InventoryReceived"} <= types


EXAMPLE_DIRS = sorted(p.parent.name for p in EXAMPLES.glob("*/events.jsonl"))


def test_there_are_examples() -> None:
    assert EXAMPLE_DIRS


@pytest.mark.parametrize("example", EXAMPLE_DIRS)
def test_decoder_equals_replay_dict_on_the_examples(tmp_path: Path, example: str) -> None:
    text = (EXAMPLES / example / "events.jsonl").read_bytes()
    lines = [ln + b"\n" for ln in text.splitlines() if ln.strip()]
    decode = replay_decoder()
    for seq, state in _states(tmp_path, lines):
        assert decode(state, seq) == replay_dict(orjson.loads(state)["e"], seq)


def _old_rule_counts(start: int, total: int, near_from: int) -> list[int]:
    """The counts at which the per-event rule of the pass took a checkpoint."""
    every, near = materialise.CHECKPOINT_EVERY, min(materialise.CHECKPOINT_EVERY,
                                                      materialise.CHECKPOINT_NEAR_EVERY)
    out, last = [], start
    for count in range(start + 1, total + 1):
        if count - last >= (near if count >= near_from else every):
            out.append(count)
            last = count
    return out


@pytest.mark.parametrize("start,total", [(0, 95_000), (0, 21_000), (0, 5_000), (43_210, 97_531),
                                         (79_999, 100_000), (80_500, 100_000)])
def test_checkpoint_due_counts_match_the_per_event_rule(start: int, total: int) -> None:
    run = materialise._Run.__new__(materialise._Run)  # only _due's inputs
    run.near_from = total - materialise.CHECKPOINT_NEAR_SPAN
    got, last = [], start
    while True:
        due = run._due(last)
        if due > total:
            break
        got.append(due)
        last = due
    assert got == _old_rule_counts(start, total, run.near_from)


def test_writer_open_keys_round_trip(tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path / "l.db"))
    materialise.create_tables(ledger)
    given = [("wip", 3, 20), ("onhand", 7, 19), ("onhand", 2, 21), ("wip", 1, 18)]
    with ledger.transaction(commit=False) as cur:
        writer = materialise._Writer(cur, open_keys=given)
        assert writer.open_keys() == sorted(given)
    ledger.close()
