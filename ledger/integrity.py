"""``verify``: prove that no stored event was altered, removed or reordered.

Every stream is a hash chain (see ``ledger.codec``). Verification walks each stream in
position order and checks, per event: its hash recomputes from its content; it points to
the hash of the event before it; positions run 1, 2, 3 without a gap; and the index row
written beside it in the same transaction carries the same hash, so a removed last event
(which leaves no gap) still shows as a row the index has and the store lacks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from backflush.ledger.codec import GENESIS, body_of, chain_hash
from backflush.ledger.store import Ledger


@dataclass(frozen=True)
class Problem:
    """One integrity failure, naming the stream, position and event id when known."""

    stream: str
    version: int
    event_id: str | None
    reason: str

    def __str__(self) -> str:
        who = f" (event {self.event_id})" if self.event_id else ""
        return f"{self.stream}@{self.version}{who}: {self.reason}"


def _pages(ledger: Ledger, sql: str, page: int = 5000) -> Iterator[tuple[Any, ...]]:
    # Rows come back as tuples (s, v, ...) whatever the driver's row type.
    last: tuple[str, int] = ("", -1)
    while True:
        with ledger.transaction(commit=False) as cur:
            raw = cur.execute(sql + f" LIMIT {page}", (last[0], last[0], last[1])).fetchall()
        rows = [tuple(r.values()) if isinstance(r, dict) else tuple(r) for r in raw]
        yield from rows
        if len(rows) < page:
            return
        last = (rows[-1][0], rows[-1][1])


def verify(ledger: Ledger) -> tuple[int, list[Problem]]:
    """Check every stream's chain; return (events checked, problems found)."""
    stored = _pages(
        ledger,
        "SELECT originator_id, originator_version, state FROM stored_events"
        " WHERE originator_id > ? OR (originator_id = ? AND originator_version > ?)"
        " ORDER BY originator_id, originator_version",
    )
    index = _pages(
        ledger,
        "SELECT stream, version, id, hash FROM bf_events"
        " WHERE stream > ? OR (stream = ? AND version > ?) ORDER BY stream, version",
    )
    problems: list[Problem] = []
    checked = 0
    # Streams are walked in the same order on both sides, so a small look-ahead map of
    # index rows keeps memory bounded while matching them to stored rows.
    index_iter = iter(index)
    pending_index: dict[tuple[str, int], tuple[str, str]] = {}

    def index_row(stream: str, version: int) -> tuple[str, str] | None:
        key = (stream, version)
        while key not in pending_index:
            nxt = next(index_iter, None)
            if nxt is None:
                return None
            k = (nxt[0], nxt[1])
            if k > key:
                pending_index[k] = (nxt[2], nxt[3])
                return None
            pending_index[k] = (nxt[2], nxt[3])
        return pending_index.get(key)

    stream, expect_version, expect_prev = None, 1, GENESIS
    for row in stored:
        s, v, state = row[0], row[1], row[2]
        if s != stream:
            stream, expect_version, expect_prev = s, 1, GENESIS
        checked += 1
        try:
            d = orjson.loads(state)
            payload, rec, prev, h = d["e"], d["rec"], d["prev"], d["hash"]
            eid = payload.get("id")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            problems.append(Problem(s, v, None, "stored state is not a ledger event"))
            expect_version, expect_prev = v + 1, ""
            continue
        if v != expect_version:
            problems.append(
                Problem(s, v, eid, f"position {expect_version} is missing (removed event)")
            )
        elif prev != expect_prev and expect_prev != "":
            problems.append(Problem(s, v, eid, "does not follow its predecessor (reordered)"))
        if chain_hash(prev, s, v, rec, body_of(payload), eid or "") != h:
            problems.append(Problem(s, v, eid, "content does not match its hash (altered)"))
        ix = index_row(s, v)
        if ix is None:
            problems.append(Problem(s, v, eid, "no index row for this event"))
        else:
            if ix[1] != h:
                problems.append(Problem(s, v, eid, "hash differs from the one indexed (altered)"))
            if ix[0] != eid:
                problems.append(Problem(s, v, eid, f"index names event {ix[0]} here (reordered)"))
            pending_index.pop((s, v), None)
        expect_version, expect_prev = v + 1, h
    # Index rows left over are events the store no longer has.
    for (s, v), (eid, _) in list(pending_index.items()):
        problems.append(Problem(s, v, eid, "indexed event missing from the store (removed)"))
    for nxt in index_iter:
        problems.append(
            Problem(nxt[0], nxt[1], nxt[2], "indexed event missing from the store (removed)")
        )
    return checked, problems
