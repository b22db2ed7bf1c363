"""``backflush moves`` (stock-ledger register) and the one date grammar of --at/--from/--to."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from backflush.cli.dates import DateError, parse_instant
from backflush.cli.main import cli
from backflush.ledger.store import Ledger
from backflush.projections import asof
from click.testing import CliRunner

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FILES = sorted(EXAMPLES.glob("*/events.jsonl"))


def run(db: str, *args: str, code: int = 0) -> str:
    r = CliRunner().invoke(cli, ["--db", db, *args], env={"COLUMNS": "300"})
    assert r.exit_code == code, (r.output, r.exception)
    return r.output if code else r.stdout


@pytest.fixture
def db(db_url: str) -> str:
    for f in FILES:
        run(db_url, "import", str(f))
    return db_url


def _moves(db: str, *args: str) -> list[dict]:
    return json.loads(run(db, "moves", *args, "--json"))


def _items_and_locations(db: str) -> list[tuple[str, str]]:
    from backflush.projections import materialise

    with Ledger(db) as ledger:
        materialise.catch_up(ledger)
        with ledger.transaction(commit=False) as cur:
            rows = cur.execute("SELECT DISTINCT item, location FROM bf_onhand_keys").fetchall()
    return sorted((r["item"], r["location"]) for r in rows)


def _replayed_balance(db: str, at: datetime, item: str, location: str | None) -> Decimal:
    """On-hand by a full replay of the events (not the materialised history)."""
    with Ledger(db) as ledger:
        rows = asof.replay(ledger, at, None, None).onhand()
    return sum((r["qty"] for r in rows
                if r["item"] == item and (location is None or r["location"] == location)),
               Decimal(0))


def test_running_balance_agrees_with_a_replay(db: str) -> None:
    pairs = _items_and_locations(db)
    checked = 0
    for item in sorted({i for i, _ in pairs}):
        for location in [None, *sorted(loc for i, loc in pairs if i == item)]:
            args = ["--item", item] + (["--location", location] if location else [])
            rows = _moves(db, *args)
            assert rows, args
            balance = Decimal(0)
            last_at_balance: dict[str, Decimal] = {}
            for r in rows:
                assert (r["in"] is None) != (r["out"] is None)
                balance += Decimal(r["in"] or 0) - Decimal(r["out"] or 0)
                assert Decimal(r["balance"]) == balance
                if location:
                    assert r["location"] == location
                last_at_balance[r["at"]] = balance
            # at a few instants, the register's balance is what a replay gives
            for at in list(last_at_balance)[:: max(1, len(last_at_balance) // 3)]:
                when = datetime.fromisoformat(at)
                assert _replayed_balance(db, when, item, location) == last_at_balance[at]
                checked += 1
    assert checked > 20


def test_rows_name_real_events(db: str) -> None:
    events = {e["id"]: e for e in json.loads(run(db, "events", "--json"))}
    rows = _moves(db, "--item", "T-BLANK")
    assert len(rows) >= 4
    for r in rows:
        ev = events[r["event"]]
        assert ev["type"] == r["type"] and ev["order"] == r["order"]
        assert datetime.fromisoformat(ev["at"]) == datetime.fromisoformat(r["at"])
        assert ev["recorded"] == r["recorded"]


def test_window_and_opening_balance(db: str) -> None:
    full = _moves(db, "--item", "T-BLANK", "--location", "T-IN-10")
    assert len(full) >= 3
    cut = full[len(full) // 2]["at"]
    start = datetime.fromisoformat(cut)
    before = [r for r in full if datetime.fromisoformat(r["at"]) < start]
    window = _moves(db, "--item", "T-BLANK", "--location", "T-IN-10", "--from", cut)
    assert window[0]["type"] == "opening" and window[0]["event"] is None
    assert window[0]["balance"] == (before[-1]["balance"] if before else "0")
    assert window[1:] == [r for r in full if datetime.fromisoformat(r["at"]) >= start]
    # --to is inclusive; a window after every move is the opening balance alone
    upto = _moves(db, "--item", "T-BLANK", "--location", "T-IN-10", "--to", cut)
    assert upto == [r for r in full if datetime.fromisoformat(r["at"]) <= start]
    late = _moves(db, "--item", "T-BLANK", "--location", "T-IN-10", "--from", "2099-01-01")
    assert [(r["type"], r["balance"]) for r in late] == [("opening", full[-1]["balance"])]
    run(db, "moves", "--item", "T-BLANK", "--from", "2026-11-04", "--to", "2026-11-03", code=2)


def test_bare_dates_cover_the_whole_day(db: str) -> None:
    full = _moves(db, "--item", "T-BLANK")
    day = full[-1]["at"][:10]
    on_day = [r for r in full if datetime.fromisoformat(r["at"]).astimezone(UTC)
              .date().isoformat() == day]
    rows = _moves(db, "--item", "T-BLANK", "--from", day, "--to", day)
    assert rows[1:] == on_day
    same = _moves(db, "--item", "T-BLANK", "--from", f"{day}T00:00:00Z",
                  "--to", f"{day}T23:59:59.999999Z")
    assert same == rows


def test_unknown_names_exit_2_with_did_you_mean(db: str) -> None:
    out = run(db, "moves", "--item", "t-blank", code=2)
    assert "unknown item 't-blank'" in out and "T-BLANK" in out
    out = run(db, "moves", "--item", "T-BLNK", code=2)
    assert "did you mean" in out and "T-BLANK" in out
    out = run(db, "moves", "--item", "T-BLANK", "--location", "T-IN10", code=2)
    assert "unknown location" in out and "T-IN-10" in out
    run(db, "moves", code=2)  # --item is required


def test_table_and_other_formats(db: str) -> None:
    table = run(db, "moves", "--item", "T-BLANK", "--from", "2026-11-03")
    head = table.splitlines()[0].split()
    assert head[:4] == ["at", "recorded", "event", "type"] and head[-1] == "balance"
    assert "opening" in table and "from 2026-11-03T00:00:00+00:00" in table
    nl = run(db, "moves", "--item", "T-BLANK", "--nl").splitlines()
    assert [json.loads(x) for x in nl] == _moves(db, "--item", "T-BLANK")


# --- the date grammar --------------------------------------------------------------------


END = datetime(2026, 11, 3, 23, 59, 59, 999999, tzinfo=UTC)


@pytest.mark.parametrize("text", [
    "2026-11-03", "2026-11-03T23:59:59.999999Z", "2026-11-03T23:59:59.999999+00:00",
    "2026-11-04T00:59:59.999999+01:00", "2026-11-03 23:59:59.999999z",
    "2026-11-03T23:59:59.999999",  # no offset: UTC
    "2026-11-03T18:59:59.999999-05:00",
])
def test_every_spelling_of_the_end_of_a_day_agrees(text: str) -> None:
    assert parse_instant(text) == END


def test_from_is_the_start_of_a_bare_day() -> None:
    assert parse_instant("2026-11-03", start_of_day=True) == datetime(2026, 11, 3, tzinfo=UTC)
    # a full timestamp means what it says whatever the option
    assert parse_instant("2026-11-03T08:00Z", start_of_day=True) == datetime(
        2026, 11, 3, 8, tzinfo=UTC)
    d = parse_instant("2026-11-03T08:00:00.5+02:00")
    assert d.utcoffset() == timedelta(hours=2) and d.microsecond == 500000
    assert d.tzinfo == timezone(timedelta(hours=2))


@pytest.mark.parametrize("text", [
    "20261103", "1767225600", "1767225600.5", "2026-11-03Z", "2026-02-30",
    "2026-11-03T12:00:00.1234567Z", "2026-11-03T24:00:00Z", "2026-11-03T12", "03/11/2026",
    "2026-W45-2", "2026-11-03T12:00:00+0100", "2026-11-03T12:00:00+25:00", "", "now",
])
def test_other_spellings_are_refused(text: str) -> None:
    with pytest.raises(DateError):
        parse_instant(text)


def test_cli_date_options_use_the_grammar(db: str) -> None:
    a = run(db, "onhand", "--at", "2026-11-03", "--json")
    b = run(db, "onhand", "--at", "2026-11-03T23:59:59.999999Z", "--json")
    c = run(db, "onhand", "--at", "2026-11-04T00:59:59.999999+01:00", "--json")
    assert a == b == c
    out = run(db, "onhand", "--at", "20261103", code=2)
    assert "--at" in out and "20261103" in out
    run(db, "moves", "--item", "T-BLANK", "--to", "1767225600", code=2)


@pytest.mark.parametrize("window_us,rows", [(1, (1, 2)), (3_600_000_000, (0, 3)),
                                            (10**15, (0, 10**9))])
def test_the_register_read_window_by_window_is_the_same(db: str, monkeypatch, window_us,
                                                        rows) -> None:
    """The register reads an item's history a window of time at a time (bounded memory):
    tiny windows that halve and double, hour windows, and one window for everything give
    the same rows, with and without --from/--to."""
    from backflush.projections import moves

    items = sorted({i for i, _ in _items_and_locations(db)})
    cases = [[]] + [["--from", "2026-01-01T00:00:00Z", "--to", "2030-01-01T00:00:00Z"]]
    whole = {(i, tuple(c)): _moves(db, "--item", i, *c) for i in items for c in cases}
    assert sum(len(v) for v in whole.values()) > 50
    monkeypatch.setattr(moves, "_WINDOW_US", window_us)
    monkeypatch.setattr(moves, "_WINDOW_ROWS", rows)
    for (item, case), expected in whole.items():
        assert _moves(db, "--item", item, *case) == expected
