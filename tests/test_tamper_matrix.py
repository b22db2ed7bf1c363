"""The tamper matrix: every row and column kind x remove / alter / re-chain / append.

Each attack works on the tables directly (sqlite3 / psycopg behind the ledger's back), as
someone with write access to the database would, and names where ``verify`` must say the
problem is. Attacks that a writer can make self-consistent (re-chaining everything,
removing the ledger's last events, appending a fully forged event) need the anchors an
auditor kept outside the database: those run ``verify --anchor``.

Add an attack by appending to ``ATTACKS``; it runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from backflush.ledger.anchor import GENESIS as LINK_GENESIS
from backflush.ledger.anchor import link_of
from backflush.ledger.codec import GENESIS, body_of, chain_hash
from backflush.ledger.store import to_us
from ledger_cli import run

FIRST = [
    {"type": "ItemDefined", "at": "2026-06-01T06:00:00Z", "id": "m-fg", "item": "FG"},
    {"type": "ItemDefined", "at": "2026-06-01T06:00:00Z", "id": "m-raw", "item": "RAW"},
    {"type": "BomDefined", "at": "2026-06-01T06:01:00Z", "id": "m-bom", "bom": "B", "item": "FG",
     "lines": [{"line": 10, "item": "RAW", "qty": 2}]},
    {"type": "InventoryReceived", "at": "2026-06-01T06:30:00Z", "id": "i-rcv", "item": "RAW",
     "qty": 50, "location": "BULK"},
    {"type": "OrderCreated", "at": "2026-06-01T07:00:00Z", "id": "p1-new", "order": "P1",
     "item": "FG", "qty": 10, "bom": "B"},
    {"type": "OrderReleased", "at": "2026-06-01T07:01:00Z", "id": "p1-rel", "order": "P1"},
    {"type": "ReportedAsFinished", "at": "2026-06-01T09:00:00Z", "id": "p1-raf1",
     "order": "P1", "good": 3},
    {"type": "OrderCreated", "at": "2026-06-01T07:10:00Z", "id": "p2-new", "order": "P2",
     "item": "FG", "qty": 5, "bom": "B"},
    {"type": "OrderReleased", "at": "2026-06-01T07:11:00Z", "id": "p2-rel", "order": "P2"},
]
SECOND = [
    {"type": "ReportedAsFinished", "at": "2026-06-01T10:00:00Z", "id": "p1-raf2",
     "order": "P1", "good": 7},
    {"type": "Reversal", "at": "2026-06-01T10:30:00Z", "id": "p1-rev", "reverses": "p1-raf2",
     "reason": "miscount"},
    {"type": "InventoryReceived", "at": "2026-06-01T11:00:00Z", "id": "i-rcv2", "item": "RAW",
     "qty": 5, "location": "BULK"},
    {"type": "OrderEnded", "at": "2026-06-01T11:05:00Z", "id": "p1-end", "order": "P1"},
]


class Raw:
    """Direct access to the store's tables, as an attacker with write access has it.

    Each event is one row of ``bf_events`` (its state and its index columns; stored_events
    is only a view on it), beside its ``bf_chain`` row.
    """

    def __init__(self, db: str):
        self.pg = db.startswith("postgresql://")
        if self.pg:
            import psycopg

            self.con = psycopg.connect(db)
        else:
            self.con = sqlite3.connect(db)

    def q(self, sql: str, params: tuple = ()) -> list[tuple]:
        cur = self.con.execute(sql.replace("?", "%s") if self.pg else sql, params)
        return [tuple(r) for r in cur.fetchall()] if cur.description else []

    def x(self, sql: str, params: tuple = ()) -> int:
        return self.con.execute(sql.replace("?", "%s") if self.pg else sql, params).rowcount

    def seq(self, eid: str) -> int:
        return self.q("SELECT seq FROM bf_events WHERE id = ?", (eid,))[0][0]

    def state(self, seq: int) -> dict[str, Any]:
        return orjson.loads(bytes(self.q("SELECT state FROM bf_events WHERE seq = ?",
                                         (seq,))[0][0]))

    def set_state(self, seq: int, d: dict[str, Any]) -> None:
        assert self.x("UPDATE bf_events SET state = ? WHERE seq = ?", (orjson.dumps(d), seq)) == 1

    def remove(self, seq: int, tables: str = "ec") -> None:
        """Remove the event at ``seq``: its (e)vent row and/or its (c)hain row."""
        if "e" in tables:
            assert self.x("DELETE FROM bf_events WHERE seq = ?", (seq,)) == 1
        if "c" in tables:
            assert self.x("DELETE FROM bf_chain WHERE seq = ?", (seq,)) == 1

    def rechain(self) -> None:
        """Recompute every stream hash, indexed hash/times and ledger-wide link, and
        renumber stream positions without gaps: a consistent forgery of the whole ledger."""
        rows = self.q("SELECT seq, stream, version, state FROM bf_events ORDER BY seq")
        heads: dict[str, tuple[int, str]] = {}
        link = LINK_GENESIS
        self.x("DELETE FROM bf_chain")
        for seq, stream, _version, state in rows:
            d = orjson.loads(bytes(state))
            v, prev = heads.get(stream, (0, GENESIS))
            v += 1
            body = body_of(d["e"])
            h = chain_hash(prev, stream, v, d["rec"], body, d["e"]["id"])
            d["prev"], d["hash"] = prev, h
            heads[stream] = (v, h)
            rec_us = to_us(_dt(d["rec"]))
            self.x(
                "UPDATE bf_events SET version = ?, state = ?, hash = ?, rec_us = ?, at_us = ?"
                " WHERE seq = ?",
                (v, orjson.dumps(d), h, rec_us, to_us(_dt(d["e"]["at"])), seq),
            )
            link = link_of(link, seq, stream, v, h, rec_us)
            self.x("INSERT INTO bf_chain (seq, link, stream, version, id) VALUES (?, ?, ?, ?, ?)",
                   (seq, link, stream, v, d["e"]["id"]))

    def rechain_stream(self, stream: str) -> None:
        """Recompute one stream's hashes (and its indexed hash), leaving ``bf_chain`` alone:
        what an attacker who knows only the per-stream chain would do."""
        prev = GENESIS
        for seq, version, state in self.q(
            "SELECT seq, version, state FROM bf_events WHERE stream = ? ORDER BY version",
            (stream,),
        ):
            d = orjson.loads(bytes(state))
            body = body_of(d["e"])
            d["prev"] = prev
            d["hash"] = prev = chain_hash(prev, stream, version, d["rec"], body, d["e"]["id"])
            self.set_state(seq, d)
            self.x("UPDATE bf_events SET hash = ? WHERE seq = ?", (prev, seq))

    def close(self) -> None:
        self.con.commit()
        self.con.close()


def _dt(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text)


def _alter_payload(r: Raw, eid: str, field: str, value: Any) -> None:
    seq = r.seq(eid)
    d = r.state(seq)
    d["e"][field] = value
    r.set_state(seq, d)


def _alter_state(r: Raw, eid: str, field: str, value: Any) -> None:
    seq = r.seq(eid)
    d = r.state(seq)
    d[field] = value
    r.set_state(seq, d)


def _drop_field(r: Raw, eid: str, field: str) -> None:
    seq = r.seq(eid)
    d = r.state(seq)
    del d["e"][field]
    r.set_state(seq, d)


def _index(col: str, value: Any) -> Callable[[Raw], None]:
    def go(r: Raw) -> None:
        assert r.x(f"UPDATE bf_events SET {col} = ? WHERE id = 'p1-raf1'", (value,)) == 1
    return go


def _swap_seq(r: Raw) -> None:
    a, b = r.seq("p1-rel"), r.seq("p2-new")
    r.x("UPDATE bf_events SET seq = -1 WHERE seq = ?", (a,))
    r.x("UPDATE bf_events SET seq = ? WHERE seq = ?", (a, b))
    r.x("UPDATE bf_events SET seq = ? WHERE seq = -1", (b,))


def _remove_stream(r: Raw, stream: str) -> None:
    for (seq,) in r.q("SELECT seq FROM bf_events WHERE stream = ?", (stream,)):
        r.remove(seq)


def _last_seqs(r: Raw, n: int) -> list[int]:
    return [s for (s,) in r.q("SELECT seq FROM bf_events ORDER BY seq DESC")][:n]


def _forge(r: Raw, link: bool) -> None:
    """Append an event to P2's stream with a recomputed hash and index row (and link)."""
    top = _last_seqs(r, 1)[0]
    (stream, version, h), = r.q(
        "SELECT stream, version, hash FROM bf_events WHERE stream = 'order:P2'"
        " ORDER BY version DESC LIMIT 1"
    )
    last = r.state(top)
    payload = {"type": "ReportedAsFinished", "at": "2026-06-01T12:00:00+00:00", "order": "P2",
               "good": "5", "error": "0", "device": "client", "id": "forged"}
    body = body_of(payload)
    nh = chain_hash(h, stream, version + 1, last["rec"], body, "forged")
    state = orjson.dumps({"e": payload, "rec": last["rec"], "prev": h, "hash": nh})
    seq = top + 1
    rec_us = to_us(_dt(last["rec"]))
    r.x("INSERT INTO bf_events (seq, id, stream, version, type, at_us, rec_us, ord, hash, state)"
        " VALUES (?, 'forged', ?, ?, 'ReportedAsFinished', ?, ?, 'P2', ?, ?)",
        (seq, stream, version + 1, to_us(_dt(payload["at"])), rec_us, nh, state))
    if link:
        prev = r.q("SELECT link FROM bf_chain ORDER BY seq DESC LIMIT 1")[0][0]
        r.x("INSERT INTO bf_chain (seq, link, stream, version, id) VALUES (?, ?, ?, ?, ?)",
            (seq, link_of(prev, seq, stream, version + 1, nh, rec_us), stream, version + 1,
             "forged"))


def _rechained(change: Callable[[Raw], None]) -> Callable[[Raw], None]:
    def go(r: Raw) -> None:
        change(r)
        r.rechain()
    return go


def _set_rec(r: Raw) -> None:
    seq = r.seq("p1-raf1")
    d = r.state(seq)
    d["rec"] = "2020-01-01T00:00:00+00:00"  # pretend it was known long before
    r.set_state(seq, d)


def _projection(table: str) -> Callable[[Raw], None]:
    def go(r: Raw) -> None:
        assert r.x(f"UPDATE {table} SET balance = '999999'") > 0
    return go


def _wip_shown(r: Raw) -> None:
    """Staged WIP is on-hand at the staging locations (``bf_staging``): point the staging map
    at the bulk store, so that `wip` shows its stock as staged (the fixture's WIP is zero
    throughout otherwise)."""
    assert r.x("UPDATE bf_staging SET map = '[[\"BULK\", [null]]]'") > 0


def _projection_removed(r: Raw) -> None:
    assert r.x("DELETE FROM bf_onhand_hist") > 0


@dataclass(frozen=True)
class Attack:
    """One way to tamper: what it does, and the places verify must name (with {seq:ID})."""

    name: str
    apply: Callable[[Raw], None]
    where: tuple[str, ...]
    anchor: bool = False  # needs the auditor's anchors (a consistent forgery)
    deep: bool = False  # needs the projections compared with a replay
    strict: bool = False  # needs every event covered by an anchor


ATTACKS: list[Attack] = [
    # --- stored events: alter / remove / append -------------------------------------------
    Attack("alter payload quantity", lambda r: _alter_payload(r, "p1-raf1", "good", "30"),
           ("order:P1@3 (event p1-raf1) seq {seq:p1-raf1} [state]",)),
    # An edited state need not be an event any more: said, not a crash.
    Attack("remove the payload's type", lambda r: _drop_field(r, "p1-rel", "type"),
           ("order:P1@2 (event p1-rel) seq {seq:p1-rel} [state]",
            "seq {seq:p1-rel} [type]", "seq {seq:p1-rel} [stream]")),
    Attack("remove an order event's order", lambda r: _drop_field(r, "p1-raf1", "order"),
           ("order:P1@3 (event p1-raf1) seq {seq:p1-raf1} [state]",
            "seq {seq:p1-raf1} [ord]", "seq {seq:p1-raf1} [stream]")),
    # The Reversal's order is read from its target: a target that is not an event any more.
    Attack("a reversed event's state not JSON", lambda r: r.x(
        "UPDATE bf_events SET state = ? WHERE id = 'p1-raf2'", (b"not json",)),
        ("seq {seq:p1-raf2} [state]", "seq {seq:p1-rev} [ord]")),
    Attack("an id that is not text", lambda r: _alter_payload(r, "p1-raf1", "id", 7),
           ("order:P1@3 (event 7) seq {seq:p1-raf1} [state]", "seq {seq:p1-raf1} [id]")),
    Attack("a prev that is not text", lambda r: _alter_state(r, "p1-raf1", "prev", 7),
           ("order:P1@3 (event p1-raf1) seq {seq:p1-raf1} [prev]",
            "order:P1@3 (event p1-raf1) seq {seq:p1-raf1} [state]")),
    Attack("alter payload at", lambda r: _alter_payload(r, "i-rcv", "at",
                                                        "2026-05-01T00:00:00+00:00"),
           ("inventory@1 (event i-rcv) seq {seq:i-rcv} [state]",)),
    Attack("alter recorded time in the state", _set_rec,
           ("seq {seq:p1-raf1} [state]", "seq {seq:p1-raf1} [rec_us]")),
    # The view's topic is the type column (the stored topic of layout 1).
    Attack("alter topic (the type column)", lambda r: r.x(
        "UPDATE bf_events SET type = 'Reversal' WHERE seq = ?",
        (r.seq("p1-rel"),)), ("seq {seq:p1-rel} [type]",)),
    Attack("move a stored event to another position", lambda r: r.x(
        "UPDATE bf_events SET version = 99 WHERE seq = ?",
        (r.seq("p1-raf1"),)), ("seq {seq:p1-raf1} [version]", "seq {seq:p1-raf1} [state]")),
    Attack("move a stored event to another stream", lambda r: r.x(
        "UPDATE bf_events SET stream = 'order:P2' WHERE seq = ?",
        (r.seq("p1-raf1"),)), ("seq {seq:p1-raf1} [stream]", "seq {seq:p1-raf1} [state]")),
    Attack("move a stored event through the view (SQLite: its triggers)", lambda r: r.x(
        "UPDATE stored_events SET originator_version = 99 WHERE notification_id = ?",
        (r.seq("p1-raf1"),)), ("seq {seq:p1-raf1} [version]", "seq {seq:p1-raf1} [state]")),
    Attack("state not an event", lambda r: r.x(
        "UPDATE bf_events SET state = ? WHERE seq = ?", (b"garbage", r.seq("m-bom"))),
        ("master@3 (event m-bom) seq {seq:m-bom} [state]",)),
    Attack("remove a middle event everywhere", lambda r: r.remove(r.seq("p1-rel")),
           ("order:P1@3 (event p1-raf1) seq {seq:p1-raf1} [version]", "seq {next:p1-rel} [link]")),
    Attack("remove a stream's last event everywhere", lambda r: r.remove(r.seq("p2-rel")),
           ("seq {next:p2-rel} [link]",)),
    Attack("remove a stream's last two events everywhere",
           lambda r: [r.remove(r.seq("p2-rel")), r.remove(r.seq("p2-new"))],
           ("seq {next:p2-rel} [link]",)),
    Attack("remove a whole order stream", lambda r: _remove_stream(r, "order:P2"),
           ("seq {next:p2-rel} [link]",)),
    # One row holds an event and its index columns: removing the stored event only is
    # removing its row and keeping its chain row, which names it.
    Attack("remove the event's row only", lambda r: r.remove(r.seq("p1-raf1"), "e"),
           ("order:P1@3 (event p1-raf1) seq {seq:p1-raf1} [link]", "order:P1@4 (event p1-raf2)"
            " seq {seq:p1-raf2} [version]")),
    Attack("remove the event's row through the view", lambda r: r.x(
        "DELETE FROM stored_events WHERE notification_id = ?", (r.seq("p1-raf1"),)),
           ("order:P1@3 (event p1-raf1) seq {seq:p1-raf1} [link]",)),
    Attack("remove the ledger's last event everywhere",
           lambda r: r.remove(_last_seqs(r, 1)[0]),
           ("anchor {anchors}:2 seq {last} [seq]",), anchor=True),
    Attack("remove the ledger's last two events everywhere",
           lambda r: [r.remove(s) for s in _last_seqs(r, 2)],
           ("anchor {anchors}:2 seq {last} [seq]",), anchor=True),
    Attack("swap two events' states", lambda r: [
        r.set_state(r.seq("p1-raf1"), r.state(r.seq("p1-rel"))) for _ in (0,)],
        ("seq {seq:p1-raf1} [state]",)),
    Attack("append a forged event without a link", lambda r: _forge(r, link=False),
           ("order:P2@3 (event forged) seq {last+1} [link]",)),
    Attack("append a forged event with hash, index row and link", lambda r: _forge(r, True),
           ("seq {last+1} [anchored]",), strict=True),
    # --- index rows: every column ---------------------------------------------------------
    *[
        Attack(f"alter index {col}", _index(col, value), (f"seq {{seq:p1-raf1}} [{col}]",))
        for col, value in (
            ("at_us", 1), ("rec_us", 1), ("ord", "P2"), ("type", "OrderEnded"),
            ("hash", "f" * 64), ("id", "someone-else"),
            ("stream", "order:P9"), ("version", 42),
        )
    ],
    # Swapping seq moves whole events (state and index columns) to each other's place.
    Attack("swap two events' seq", _swap_seq,
           ("order:P2@1 (event p2-new) seq {seq:p1-rel} [link]",
            "order:P1@2 (event p1-rel) seq {seq:p2-new} [version]")),
    Attack("alter a reversal's ord", lambda r: r.x(
        "UPDATE bf_events SET ord = NULL WHERE id = 'p1-rev'"), ("seq {seq:p1-rev} [ord]",)),
    Attack("append an event row for no recorded event", lambda r: r.x(
        "INSERT INTO bf_events (seq, id, stream, version, type, at_us, rec_us, ord, hash,"
        " state) VALUES (999, 'ghost', 'order:P1', 99, 'OrderEnded', 1, 1, 'P1', 'y', ?)",
        (b"x",)), ("order:P1@99 (event ghost) seq 999 [state]",
                   "order:P1@99 (event ghost) seq 999 [link]")),
    # --- the ledger-wide chain ------------------------------------------------------------
    Attack("alter a link", lambda r: r.x(
        "UPDATE bf_chain SET link = ? WHERE seq = ?", ("a" * 64, r.seq("p1-raf1"))),
        ("seq {seq:p1-raf1} [link]",)),
    Attack("remove a link", lambda r: r.remove(r.seq("p1-raf1"), "c"),
           ("seq {seq:p1-raf1} [link]",)),
    Attack("append a link for no event", lambda r: r.x(
        "INSERT INTO bf_chain (seq, link) VALUES (999, ?)", ("b" * 64,)), ("seq 999 [link]",)),
    Attack("alter a middle event and recompute its stream's chain", lambda r: [
        _alter_payload(r, "p1-raf1", "good", "30"), r.rechain_stream("order:P1")],
        ("order:P1@3 (event p1-raf1) seq {seq:p1-raf1} [link]",)),
    # --- re-chained forgeries: only anchors tell ------------------------------------------
    Attack("alter a middle event and re-chain everything",
           _rechained(lambda r: _alter_payload(r, "p1-raf1", "good", "30")),
           ("anchor {anchors}:1 seq {anchor1} [link]", "anchor {anchors}:2 seq {last} [link]"),
           anchor=True),
    Attack("remove a stream's tail and re-chain everything",
           _rechained(lambda r: r.remove(r.seq("p2-rel"))),
           ("anchor {anchors}:1 seq {anchor1} [seq]", "anchor {anchors}:2 seq {last} [events]"),
           anchor=True),
    Attack("remove a whole stream and re-chain everything",
           _rechained(lambda r: _remove_stream(r, "order:P2")),
           ("anchor {anchors}:2 seq {last} [events]", "anchor {anchors}:2 seq {last} [link]",
            "anchor {anchors}:2 seq {last} [heads_root]"), anchor=True),
    Attack("change recorded time and re-chain everything", _rechained(_set_rec),
           ("anchor {anchors}:1 seq {anchor1} [link]",), anchor=True),
    Attack("alter master data and re-chain everything",
           _rechained(lambda r: _alter_payload(r, "m-bom", "item", "RAW")),
           ("anchor {anchors}:1 seq {anchor1} [link]",), anchor=True),
    # --- projections: only a replay tells -------------------------------------------------
    Attack("alter on-hand history", _projection("bf_onhand_hist"),
           ("projection onhand [qty]: item=RAW location=BULK",), deep=True),
    Attack("alter WIP history", _wip_shown, ("projection wip [qty]",), deep=True),
    # A balance that is not a number: reported with its key, where the comparison crashed.
    Attack("an on-hand balance not a number", lambda r: r.x(
        "UPDATE bf_onhand_hist SET balance = 'abc'"),
        ("projection onhand [qty]: item=RAW location=BULK batch=- lp=-: stored 'abc'",),
        deep=True),
    Attack("alter an on-hand key", lambda r: r.x(
        "UPDATE bf_onhand_keys SET location = 'ELSEWHERE' WHERE item = 'RAW'"
        " AND location = 'BULK'"), ("projection onhand [qty]: item=RAW location=BULK",
                                    "projection onhand [qty]: item=RAW location=ELSEWHERE"),
        deep=True),
    Attack("remove on-hand history", _projection_removed,
           ("projection onhand [qty]: item=RAW location=BULK",), deep=True),
]


def _import(db: str, tmp_path: Path, name: str, events: list[dict], anchors: Path) -> None:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    r = run(db, "import", str(path), "--anchor", str(anchors))
    assert r.exit_code == 0, r.output


@pytest.fixture
def anchored(db_url: str, tmp_path: Path) -> tuple[str, Path]:
    """A ledger imported in two parts, each followed by an anchor line, projections built."""
    anchors = tmp_path / "anchors.jsonl"
    _import(db_url, tmp_path, "first", FIRST, anchors)
    _import(db_url, tmp_path, "second", SECOND, anchors)
    assert run(db_url, "onhand").exit_code == 0  # materialise the projections
    r = run(db_url, "verify", "--anchor", str(anchors), "--deep", "--strict")
    assert r.exit_code == 0, r.output
    return db_url, anchors


def _places(a: Attack, r: Raw, anchors: Path) -> tuple[list[str], dict[str, int]]:
    ids = [e["id"] for e in FIRST + SECOND]
    seqs = {eid: r.seq(eid) for eid in ids}
    ordered = sorted(seqs.values())
    last = ordered[-1]
    ctx: dict[str, Any] = {"last": last, "last+1": last + 1, "anchors": str(anchors),
                           "anchor1": seqs[FIRST[-1]["id"]]}
    for eid, s in seqs.items():
        ctx[f"seq:{eid}"] = s
        later = [q for q in ordered if q > s]
        ctx[f"next:{eid}"] = later[0] if later else s
    return [re.sub(r"\{([^}]+)\}", lambda m: str(ctx[m.group(1)]), w) for w in a.where], seqs


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_verify_names_the_place(attack: Attack, anchored: tuple[str, Path]) -> None:
    db, anchors = anchored
    raw = Raw(db)
    try:
        places, _ = _places(attack, raw, anchors)
        attack.apply(raw)
    finally:
        raw.close()
    args = ["verify"]
    if attack.anchor or attack.strict:
        args += ["--anchor", str(anchors)]
    if attack.strict:
        args += ["--strict"]
    if attack.deep:
        args += ["--deep"]
    r = run(db, *args)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("TAMPERED ")]
    for place in places:
        assert any(place in ln for ln in lines), (place, r.stderr)
    if attack.anchor or attack.deep or attack.strict:
        # What these catch, plain verify cannot: that is why the option exists.
        plain = run(db, "verify")
        assert plain.exit_code == 0, plain.stderr


def test_plain_verify_still_fails_without_anchor_for_visible_attacks(anchored) -> None:
    """Guard: the matrix's non-anchor attacks really are caught by plain ``verify``."""
    visible = [a for a in ATTACKS if not (a.anchor or a.deep or a.strict)]
    assert len(visible) >= 20
    assert {"remove", "alter", "append"} <= {a.name.split()[0] for a in visible}
    assert any(a.anchor for a in ATTACKS) and any(a.deep for a in ATTACKS)


@pytest.mark.parametrize("attack", [None, *ATTACKS],
                         ids=["untouched", *(a.name for a in ATTACKS)])
def test_the_usual_path_reports_what_the_general_checks_report(
        attack: Attack | None, anchored: tuple[str, Path], monkeypatch) -> None:
    """verify checks a usual event (as an import stored it) in one go, ``_Checker.usual``,
    and hands every other seq to the general checks, ``visit``. Whatever the tampering, the
    report (problems, counts, recomputed link, heads) must be the one the general checks
    alone make: the short path may only ever decline, never decide."""
    from backflush.ledger import integrity
    from backflush.ledger.store import Ledger

    db, anchors = anchored
    if attack is not None:
        raw = Raw(db)
        try:
            attack.apply(raw)
        finally:
            raw.close()
    declined: list[int] = []
    usual = integrity._Checker.usual

    def counting(self, e, link):
        ok = usual(self, e, link)
        if not ok:
            declined.append(e[0])
        return ok

    reports = []
    for checker in (counting, lambda self, e, link: False):
        monkeypatch.setattr(integrity._Checker, "usual", checker)
        with Ledger(db) as ledger:
            reports.append(integrity.check(ledger, integrity.load_anchors(str(anchors)),
                                           strict=True))
    assert reports[0] == reports[1]
    if attack is None:
        # Only the Reversal goes the general way: its order is read from its target.
        raw = Raw(db)
        try:
            assert declined == [raw.seq("p1-rev")]
        finally:
            raw.close()
        assert not reports[0].problems and reports[0].events == 13
    elif not (attack.anchor or attack.deep or attack.strict):
        assert reports[0].problems


def test_deep_on_altered_events_says_so_and_replays_nothing(anchored) -> None:
    """``verify --deep`` on events that fail the plain checks: exit 2 with what is wrong,
    and a note that the replay was not run (an edited state need not decode: it was a
    traceback)."""
    db, _anchors = anchored
    raw = Raw(db)
    try:
        _drop_field(raw, "p1-raf1", "order")
    finally:
        raw.close()
    r = run(db, "verify", "--deep")
    assert r.exit_code == 2, r.output
    assert "--deep not run" in r.stderr and "Traceback" not in r.output
    assert "[stream]: the hashed event names no type or order" in r.stderr


@pytest.mark.parametrize("state", [b"not json", b"{}", b'{"e": [1]}'],
                         ids=["not JSON", "no event", "not an object"])
def test_a_state_that_is_no_event_stops_every_reader_with_its_seq(
        state: bytes, anchored: tuple[str, Path]) -> None:
    """Reading a stored state that is not an event (the database edited behind the ledger's
    back) ends every command that reads it with one line naming the seq, exit 2: it was
    the JSON parser's traceback. Only verify says what else is wrong."""
    db, _anchors = anchored
    raw = Raw(db)
    try:
        seq = raw.seq("p2-rel")
        raw.x("UPDATE bf_events SET state = ? WHERE id = 'p2-rel'", (state,))
    finally:
        raw.close()
    want = f"Error: the stored event at seq {seq} does not read as a ledger event"
    for args in (["events"], ["export"], ["events", "--order", "P2", "--csv"],
                 ["audit", "P2", "--at", "2026-06-02"], ["findings", "--order", "P2"],
                 ["consumption", "--order", "P2"], ["findings"], ["hours"], ["rebuild"]):
        r = run(db, *args)
        assert r.exit_code == 2, (args, r.output)
        assert want in r.stderr and "Traceback" not in r.output, (args, r.stderr)
    r = run(db, "verify")
    assert r.exit_code == 2 and f"seq {seq} [state]" in r.stderr


def test_a_query_over_a_balance_that_is_not_a_number_says_so(anchored) -> None:
    """``onhand``/``wip`` meeting a stored balance that is not a number stop with one line
    naming the projection and the key (exit 2); it was decimal's ConversionSyntax."""
    db, _anchors = anchored
    raw = Raw(db)
    try:
        raw.x("UPDATE bf_onhand_hist SET balance = 'abc'")
    finally:
        raw.close()
    for args in (["onhand"], ["wip"], ["onhand", "--at", "2026-06-01T12:00:00Z"]):
        r = run(db, *args)
        assert r.exit_code == 2, (args, r.output)
        assert "Error: the projection bf_onhand_hist holds 'abc' for item=RAW location=" \
            in r.stderr and "Traceback" not in r.output, (args, r.stderr)
    assert run(db, "rebuild").exit_code == 0
    assert run(db, "onhand").exit_code == 0


def test_a_stored_quantity_that_is_not_a_number_is_one_line_everywhere(anchored) -> None:
    """Readers other than on-hand/WIP (the audit's postings, the stock register) meeting a
    stored quantity that is not a number: one line and exit 2, not decimal's traceback."""
    db, _anchors = anchored
    raw = Raw(db)
    try:
        assert raw.x("UPDATE bf_flushes SET qty = 'xyz'") > 0
        raw.x("UPDATE bf_onhand_hist SET balance = 'abc'")
    finally:
        raw.close()
    for args in (["audit", "P1", "--at", "2026-06-02"], ["moves", "--item", "RAW"]):
        r = run(db, *args)
        assert r.exit_code == 2, (args, r.output)
        assert "Error: a stored quantity is not a number" in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.output
