"""``verify``: prove that no stored event, index row or projection was altered, removed,
reordered or forged.

One pass over the ledger in recording order (seq) reads two tables side by side: the
events (``bf_events``: the stored state the hashes cover, and the columns queries filter
on) and the ledger-wide chain (``bf_chain``, see ``ledger.anchor``). For every seq:

- the stored event's stream chain: its hash recomputes from its content, it points to its
  stream's previous hash, and positions run 1, 2, 3 without a gap;
- every index column agrees with the hashed payload: ``id``, ``type``, ``stream``,
  ``version``, ``at_us``, ``rec_us`` (the recorded time, covered by the stream hash and the
  ledger-wide link), ``ord``, ``hash`` (a moved ``seq`` breaks the stream's positions and
  the ledger-wide chain; a duplicated event is refused by the unique ``id``);
- the ledger-wide link recomputes from the previous one, so a removed stream tail, a whole
  removed stream or an appended forged event breaks the chain at the next event.

Whoever can write the database can recompute every hash and link ("re-chain"): anchors,
kept outside it, catch that (``verify --anchor``): the link recomputed from the events at an
anchored seq, the event count up to it and the Merkle root of the stream heads there must
equal the anchored ones. ``deep_check`` replays every event and compares with what the
stored projections answer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

import orjson
from backflush.ledger.anchor import GENESIS as LINK_GENESIS
from backflush.ledger.anchor import (
    AnchorError,
    check_signature,
    heads_digest,
    link_of,
    merkle_root,
)
from backflush.ledger.codec import GENESIS, body_of, chain_hash
from backflush.ledger.importer import stream_of
from backflush.ledger.store import VERIFY_DDL, Ledger, from_us, to_us


@dataclass(frozen=True)
class Problem:
    """One integrity failure: where (seq, stream@version, event, column) and why."""

    stream: str
    version: int | None
    event_id: str | None
    reason: str
    seq: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = self.stream if self.version is None else f"{self.stream}@{self.version}"
        if self.event_id:
            where += f" (event {self.event_id})"
        if self.seq is not None:
            where += f" seq {self.seq}"
        if self.column:
            where += f" [{self.column}]"
        return f"{where}: {self.reason}"


@dataclass
class Report:
    """What ``check`` found: events read, problems, and what an anchor would record."""

    events: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    last_seq: int = 0
    link: str = LINK_GENESIS  # recomputed from the events, never from bf_chain
    heads_root: str = ""
    streams: int = 0
    anchors_checked: int = 0


# The columns ``check`` reads, in the order of its two queries' tuples.
_EVENT_COLS = ("seq", "id", "stream", "version", "type", "at_us", "rec_us", "ord", "hash",
               "state")
_CHAIN_COLS = ("seq", "link", "stream", "version", "id")


def _by_seq(ledger: Ledger, sql: str, page: int = 5000) -> Iterator[tuple]:
    """Rows of ``sql`` (with ``seq > ?`` and ORDER BY seq) as plain tuples, in pages, each
    page read in its own transaction (on PostgreSQL on psycopg, whose cursors give tuples:
    libpq's reader gives dicts, and a verify is long enough for psycopg's import)."""
    last = -(2**62)
    while True:
        with ledger.transaction(commit=False, read_only=False) as cur:
            raw = cur.tuples()
            try:
                rows = raw.execute(sql + f" LIMIT {page}", (last,)).fetchall()
            finally:
                raw.raw.close()
        yield from rows
        if len(rows) < page:
            return
        last = rows[-1][0]


def _last_position(ledger: Ledger) -> int:
    """The highest seq in ``bf_events`` or ``bf_chain`` (one snapshot; without the chain
    table, that of the events)."""
    with ledger.transaction(commit=False) as cur:
        try:
            row = cur.execute("SELECT (SELECT MAX(seq) FROM bf_events) AS e,"
                              " (SELECT MAX(seq) FROM bf_chain) AS c").fetchone()
        except Exception:  # bf_chain dropped: ``check`` reports it
            row = None
    if row is None:
        return ledger.max_seq()
    return int(max(row["e"] or 0, row["c"] or 0))


_NO_HEAD = (0, GENESIS)


def _peek(it: Iterator[tuple]) -> tuple | None:
    return next(it, None)


@lru_cache(maxsize=256)  # an import's events share one recorded time
def _rec_us(text: str) -> int:
    return _at_us(text)


def _at_us(text: str) -> int:
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return to_us(dt)


class _Checker:
    def __init__(self, ledger: Ledger, anchors: Sequence[tuple[str, dict[str, Any]]]):
        self.ledger = ledger
        self.report = Report()
        self.heads: dict[str, tuple[int, str]] = {}
        self.link = LINK_GENESIS  # recomputed from genesis, for anchors
        self.resync = LINK_GENESIS  # follows bf_chain after a break: report each break once
        self.count = 0
        self.anchors = sorted(anchors, key=lambda a: a[1]["last_seq"], reverse=True)
        self.top_anchor = max((a["last_seq"] for _, a in anchors), default=None)
        self.seqs_tail: list[int] = []  # seqs after the last anchor (memory: that tail)
        self.has_chain = True

    def after_anchor(self, top: int) -> tuple[int, int] | None:
        """(first seq, count) of the events after anchored seq ``top``, if any."""
        tail = [q for q in self.seqs_tail if q > top]
        return (tail[0], len(tail)) if tail else None

    def problem(self, stream: str, version: int | None, eid: str | None, reason: str,
                seq: int | None = None, column: str | None = None) -> None:
        self.report.problems.append(Problem(stream, version, eid, reason, seq, column))

    # --- one seq ---------------------------------------------------------------------

    def usual(self, e: tuple, link_row: str | None) -> bool:
        """Check the usual seq, an event as an import stored it with its chain link, in one
        go: True when every check ``visit`` makes passes, with the same effect on the
        checker. Otherwise False, having changed nothing: ``visit`` then checks that seq and
        says what is wrong. (Most of a long verify was looking columns up by name.)"""
        try:
            seq, eid_i, st, v, type_i, at_us_i, rec_us_i, ord_i, hash_i, state = e
            last_v, last_h = self.heads.get(st, _NO_HEAD)
            if v != last_v + 1 or self.resync != self.link:
                return False  # a gap, or after a break: visit reports and resyncs
            d = orjson.loads(state)
            payload = d["e"]
            rec, prev, h = d["rec"], d["prev"], d["hash"]
            eid, t = payload["id"], payload["type"]
            if (last_h != "" and prev != last_h) or t == "Reversal" or type_i != t:
                return False  # (a Reversal's order is its target's: visit reads it)
            rec_us = _rec_us(rec)
            if (eid_i != eid or hash_i != h or rec_us_i != rec_us
                    or at_us_i != _at_us(payload["at"])):
                return False
            ord_ = payload.get("order") or None
            if ord_i != ord_ or stream_of(payload, ord_) != st:
                return False
            if chain_hash(prev, st, v, rec, body_of(payload), eid) != h:
                return False
            link = link_of(self.link, seq, st, v, h, rec_us)
            if self.has_chain and link_row != link:
                return False
        except Exception:  # noqa: BLE001  (whatever it is, visit says it)
            return False
        self.count += 1
        if self.top_anchor is not None and seq > self.top_anchor:
            self.seqs_tail.append(seq)
        rep = self.report
        rep.events += 1
        self.heads[st] = (v, h)
        self.link = self.resync = link
        rep.last_seq = seq
        return True

    def visit(self, seq: int, s: dict | None, i: dict | None, c: dict | None) -> None:
        if s is not None or i is not None:
            self.count += 1
            if self.top_anchor is not None and seq > self.top_anchor:
                self.seqs_tail.append(seq)
        payload, d = None, None
        if s is not None:
            self.report.events += 1
            payload, d = self._stored(seq, s)
        if i is None and s is not None:
            eid = payload.get("id") if payload else None
            self.problem(s["stream"], s["version"], eid, "stored event has no index row",
                         seq, "seq")
        elif i is not None and s is None:
            self.problem(i["stream"], i["version"], i["id"],
                         "indexed event missing from the store (removed)", seq, "seq")
        elif i is not None and s is not None:
            self._index(seq, s, i, payload, d)
        # The ledger-wide link, from what the hashes bind (the stored event) when it is there.
        if d is not None:
            key = (seq, s["stream"], s["version"], d["hash"], d["_rec_us"])
        elif i is not None:
            key = (seq, i["stream"], i["version"], i["hash"], i["rec_us"])
        elif s is not None:
            key = (seq, s["stream"], s["version"], "", 0)
        else:
            key = None
        if key is not None:
            # A column SQLite kept as a blob cannot be hashed as JSON: its repr is (the
            # link is broken there either way, and said so).
            key = tuple(x if x is None or type(x) in (str, int) else repr(x) for x in key)
            same = self.resync == self.link  # the usual case: the chain never broke
            self.link = link_of(self.link, *key)
            self.resync = self.link if same else link_of(self.resync, *key)
        if not self.has_chain:
            pass
        elif c is None:
            st, v, eid = self._who(s, i, payload)
            self.problem(st, v, eid, "not on the ledger-wide chain (bf_chain row missing)",
                         seq, "link")
        elif key is None:
            # The event's row is gone: the chain's labels say which event it was.
            self.problem(c.get("stream") or "ledger", c.get("version"), c.get("id"),
                         "chain link for an event the ledger does not hold (removed)", seq,
                         "link")
            self.resync = c["link"]
        elif c["link"] != self.resync:
            st, v, eid = self._who(s, i, payload)
            self.problem(st, v, eid,
                         "ledger-wide chain broken here: an event before it was removed,"
                         " altered or inserted, or this link was rewritten", seq, "link")
            self.resync = c["link"]
        self.report.last_seq = seq

    @staticmethod
    def _who(s: dict | None, i: dict | None, payload: dict | None) -> tuple[str, int | None,
                                                                             str | None]:
        if s is not None:
            # An unreadable state: the indexed id (one row holds both) still names it.
            return s["stream"], s["version"], payload.get("id") if payload else s.get("id")
        if i is not None:
            return i["stream"], i["version"], i["id"]
        return "ledger", None, None

    def _stored(self, seq: int, s: dict) -> tuple[dict | None, dict | None]:
        st, v = s["stream"], s["version"]
        # SQLite keeps whatever type is written into a column: say so, then go on as if the
        # event were where it should be, so the rest of it (and its stream) is still checked.
        if type(st) is not str:
            self.problem(repr(st), None, s.get("id"), f"stream {st!r} is not text", seq,
                         "stream")
            st = repr(st)
        if type(v) is not int:
            self.problem(st, None, s.get("id"), f"position {v!r} is not a number", seq,
                         "version")
            v = self.heads.get(st, _NO_HEAD)[0] + 1
        last_v, last_h = self.heads.get(st, (0, GENESIS))
        try:
            d = orjson.loads(s["state"])
            payload, rec, prev, h = d["e"], d["rec"], d["prev"], d["hash"]
            eid = payload.get("id")
            # Kept beside the decoded state: the index and link checks need them again.
            d["_rec_us"] = _rec_us(rec)
            d["_body"] = body = body_of(payload)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError):
            self.problem(st, v, s.get("id"), "stored state is not a ledger event", seq, "state")
            self.heads[st] = (v, "")
            return None, None
        if v != last_v + 1:
            if v > last_v + 1:
                gap = f"position {last_v + 1}" + (f"..{v - 1}" if v - 1 > last_v + 1 else "")
                self.problem(st, v, eid, f"{gap} missing before it (removed event)", seq,
                             "version")
            else:
                self.problem(st, v, eid, f"position {v} recorded after {last_v} (reordered)",
                             seq, "version")
        elif last_h != "" and prev != last_h:
            self.problem(st, v, eid, "does not follow its predecessor (reordered or rewritten)",
                         seq, "prev")
        try:
            same = chain_hash(prev, st, v, rec, body, eid or "") == h
        except (AttributeError, TypeError):  # an edited state: a prev or an id not text
            same = False
        if not same:
            self.problem(st, v, eid, "content does not match its hash (altered)", seq, "state")
        self.heads[st] = (v, h)
        return payload, d

    def _expected_ord(self, payload: dict) -> tuple[str | None, str | None]:
        """(order the index must name, problem) for a payload."""
        if payload.get("type") != "Reversal":
            return payload.get("order") or None, None
        # A Reversal joins its target's order: read it from the target's hashed payload.
        join = self.ledger._state_join()  # noqa: SLF001
        with self.ledger.transaction(commit=False) as cur:
            row = cur.execute(
                f"SELECT s.state, i.ord FROM bf_events i {join} WHERE i.id = ?",
                (payload.get("reverses"),),
            ).fetchone()
        if row is None:
            return None, "reverses an event the ledger does not hold"
        try:
            target = orjson.loads(row["state"])["e"]
            reversal = target.get("type") == "Reversal"
            order = target.get("order") or None
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            # (the target's own seq says what is wrong with it)
            return None, "reverses an event whose stored state is not a ledger event"
        return (row["ord"] or None, None) if reversal else (order, None)

    def _index(self, seq: int, s: dict, i: dict, payload: dict | None, d: dict | None) -> None:
        st, v = s["stream"], s["version"]
        if (i["stream"], i["version"]) != (st, v):
            col = "stream" if i["stream"] != st else "version"
            self.problem(st, v, i["id"],
                         f"index row at this seq names {i['stream']}@{i['version']}, the"
                         f" store holds {st}@{v} here (seq swapped or row moved)", seq, col)
        if payload is None or d is None:
            return
        eid = payload.get("id")

        def differ(col: str, indexed: Any, hashed: Any) -> None:
            if indexed != hashed:
                self.problem(st, v, eid, f"index says {indexed!r}, the hashed event says"
                             f" {hashed!r}", seq, col)

        differ("id", i["id"], eid)
        differ("type", i["type"], payload.get("type"))
        try:
            differ("at_us", i["at_us"], _at_us(payload["at"]))
        except (KeyError, TypeError, ValueError):
            self.problem(st, v, eid, "payload has no readable at", seq, "at_us")
        differ("rec_us", i["rec_us"], d["_rec_us"])
        differ("hash", i["hash"], d["hash"])
        ord_, why = self._expected_ord(payload)
        if why:
            self.problem(st, v, eid, why, seq, "ord")
        else:
            differ("ord", i["ord"], ord_)
            try:
                want = stream_of(payload, ord_)
            except (KeyError, TypeError):  # an edited state: no type, or an order event's order
                self.problem(st, v, eid, "the hashed event names no type or order to place it"
                             " in a stream", seq, "stream")
            else:
                if want != st:
                    self.problem(st, v, eid, f"the event belongs to stream {want!r}", seq,
                                 "stream")

    # --- anchors -----------------------------------------------------------------------

    def anchors_before(self, next_seq: int | None) -> None:
        """Check every anchor whose seq is passed (``next_seq`` None: the end)."""
        while self.anchors and (next_seq is None or self.anchors[-1][1]["last_seq"] < next_seq):
            where, a = self.anchors.pop()
            self._anchor(where, a, at_end=next_seq is None)

    def _anchor(self, where: str, a: dict[str, Any], *, at_end: bool) -> None:
        self.report.anchors_checked += 1
        want = a["last_seq"]
        if want == 0:
            if a["events"] != 0 or a["link"] != LINK_GENESIS:
                self.problem(f"anchor {where}", None, None, "empty-ledger anchor is malformed")
            return
        if self.report.last_seq != want:
            if at_end and self.report.last_seq < want:
                reason = (f"anchored seq {want} is beyond the ledger's last event"
                          f" {self.report.last_seq} (its tail was removed)")
            else:
                reason = f"the event at anchored seq {want} is gone (removed)"
            self.problem(f"anchor {where}", None, None, reason, want, "seq")
            return
        if self.count != a["events"]:
            self.problem(f"anchor {where}", None, None,
                         f"{self.count} events up to seq {want}, the anchor says {a['events']}"
                         " (events removed or inserted)", want, "events")
        if self.link != a["link"]:
            self.problem(f"anchor {where}", None, None,
                         "the chain recomputed from the events differs from the anchored link"
                         " (history up to here altered, removed or re-chained)", want, "link")
        root = merkle_root(self.heads)
        if root != a["heads_root"]:
            self.problem(f"anchor {where}", None, None,
                         "the streams' heads differ from the anchored Merkle root", want,
                         "heads_root")


def check(
    ledger: Ledger,
    anchors: Sequence[tuple[str, dict[str, Any]]] = (),
    pubkey: Any = None,
    strict: bool = False,
) -> Report:
    """Verify the whole ledger (and ``anchors``: (where, anchor) pairs); see the module doc.

    With ``pubkey`` every anchor must carry a valid signature by it. With ``strict`` every
    event must be covered by an anchor (a ledger anchored at each import): events after
    the last anchor are a problem, not a note — a fully forged append is caught only so.
    """
    ck = _Checker(ledger, anchors)
    for where, a in anchors:
        if pubkey is not None:
            why = check_signature(a, pubkey)
            if why:
                ck.problem(f"anchor {where}", None, None, why, a["last_seq"], "sig")
        elif a.get("sig"):
            ck.report.notes.append(f"anchor {where}: signed, signature not checked (no --pubkey)")
    # Every page is its own snapshot: both tables are read up to the last position either
    # held when the check began (one statement), so that an import committed meanwhile,
    # seen in one table's last page and not yet in the other's, cannot read as a broken
    # chain. Taken over both, a row removed from the end of one is still seen.
    upto = _last_position(ledger)
    # One table holds each event's state and its index columns: both sides of a seq.
    events = _by_seq(
        ledger,
        "SELECT seq, id, stream, version, type, at_us, rec_us, ord, hash, state FROM bf_events"
        f" WHERE seq > ? AND seq <= {upto} ORDER BY seq",
    )
    try:
        chain = _by_seq(
            ledger,
            f"SELECT seq, link, stream, version, id FROM bf_chain WHERE seq > ? AND seq <= {upto}"
            " ORDER BY seq",
        )
        c = _peek(chain)
    except Exception:  # every ledger this version opens is made with it: it was dropped
        ck.problem("ledger", None, None, "the ledger-wide chain (table bf_chain) is missing"
                   " (removed): only the streams' chains and the index were checked",
                   None, "link")
        chain, c = iter(()), None
        ck.has_chain = False
    e = _peek(events)
    e_cols, c_cols = _EVENT_COLS, _CHAIN_COLS
    usual, visit, anchors_before = ck.usual, ck.visit, ck.anchors_before
    from backflush.projections.materialise import no_gc

    with no_gc():  # a million rows, no cycles among them: the collector would only cost
        while e is not None or c is not None:
            seq = e[0] if c is None or (e is not None and e[0] <= c[0]) else c[0]
            if ck.anchors:
                anchors_before(seq)
            here = e if e is not None and e[0] == seq else None
            there = c if c is not None and c[0] == seq else None
            if here is None or not usual(here, None if there is None else there[1]):
                # One row holds both sides of a seq: its stored event and its index columns.
                row = None if here is None else dict(zip(e_cols, here, strict=True))
                visit(seq, row, row,
                      None if there is None else dict(zip(c_cols, there, strict=True)))
            if here is not None:
                e = _peek(events)
            if there is not None:
                c = _peek(chain)
    ck.anchors_before(None)
    if anchors:
        top = max(a["last_seq"] for _, a in anchors)
        after = ck.after_anchor(top)
        if after:
            first, n = after
            text = (f"{n} event{'s' if n != 1 else ''} from this seq on are after the last"
                    f" anchor (seq {top})")
            if strict:
                ck.problem("ledger", None, None, text + ": not covered by any anchor", first,
                           "anchored")
            else:
                ck.report.notes.append(f"seq {first}: {text}, not covered by it")
    rep = ck.report
    rep.link = ck.link
    rep.heads_root = merkle_root(ck.heads)
    rep.streams = len(ck.heads)
    return rep


def verify(ledger: Ledger) -> tuple[int, list[Problem]]:
    """Check every event, index row and link; return (events checked, problems found)."""
    rep = check(ledger)
    return rep.events, rep.problems


def anchor_of(ledger: Ledger) -> dict[str, Any]:
    """The checkpoint of the ledger as it is (unsigned), from the index and chain tables.

    Taken from one snapshot (``anchor.ledger_state``) so count, last seq, link and heads
    agree.
    """
    from backflush.ledger.anchor import ledger_state, make_anchor

    from backflush import __version__

    n, seq, link, heads = ledger_state(ledger)
    return make_anchor(n, seq, link, merkle_root(heads), len(heads), __version__)


def record(ledger: Ledger, rep: Report, ok: bool, *, now: datetime | None = None) -> None:
    """Add the result to ``bf_verify`` (what ``output`` shows as provenance)."""
    with ledger.transaction(commit=True) as cur:
        cur.execute(VERIFY_DDL)
        cur.execute(
            "INSERT INTO bf_verify (verified_at, events, ok, heads) VALUES (?, ?, ?, ?)",
            ((now or datetime.now(UTC)).isoformat(), rep.events, 1 if ok else 0,
             rep.heads_root),
        )


# --- deep: replay and compare with the stored projections ---------------------------------


def _key_text(d: dict[str, Any], cols: Sequence[str]) -> str:
    return " ".join(f"{c}={d[c] if d[c] is not None else '-'}" for c in cols)


class Inconclusive(str):
    """A note of ``deep_check`` meaning the comparison was not made (or cannot be relied
    on): not "all clear"; the command line exits 3 on it."""


def deep_check(ledger: Ledger, writer: Ledger | None = None) -> tuple[list[Problem], list[str]]:
    """Replay every event in memory and compare on-hand and WIP now with the stored answers.

    ``writer`` (a writable ledger on the same store) brings the projections up to date
    first; without it, projections behind the events are not compared (an ``Inconclusive``
    note says so). Events recorded while it runs (an import beside it) change the stored
    answers under the comparison: its problems are then dropped, for an ``Inconclusive``
    note, rather than reported as tampering. Returns (problems, notes).
    """
    from backflush.projections import materialise as mat

    notes: list[str] = []
    # Each read below is its own snapshot (a long read transaction would hold back an
    # import for the whole check): the last position, read first and again at the end,
    # says whether anything was recorded meanwhile.
    before = ledger.max_seq()
    try:
        with ledger.transaction(commit=False) as cur:
            row = cur.execute("SELECT v FROM bf_proj WHERE k = 'last_seq'").fetchone()
        tracked = int(row["v"]) if row is not None else 0
    except Exception:  # no projection tables yet
        tracked = -1
    if tracked < before or tracked < 0:
        if writer is None:
            notes.append(Inconclusive(
                "projections are behind the events and the ledger is read-only:"
                " --deep compared nothing"))
            return [], notes
        mat.catch_up(writer)
    problems = _deep_compare(ledger)
    after = ledger.max_seq()
    if after != before:
        n = after - before
        notes.append(Inconclusive(
            f"{n} event{'s were' if n != 1 else ' was'} recorded while --deep ran: the"
            " stored answers changed under the comparison, which is not reliable; run it"
            " again when no import runs"))
        return [], notes
    return problems, notes


def _deep_compare(ledger: Ledger) -> list[Problem]:
    from backflush.projections import materialise as mat
    # Compare at many moments, not only now: a tampered history row of a key that is zero
    # now still changes every `--at` answer before that. Every distinct `at` on a small
    # ledger, the end of every day (UTC) on a large one, and the end.
    small = ledger.max_seq() <= DEEP_EVERY_EVENT_UP_TO
    problems: list[Problem] = []
    seen: set[tuple[str, tuple]] = set()
    # As a rebuild does: undo kept only for events a Reversal targets, and each order
    # forgotten once past its last event (on-hand and WIP live in the stock, not in the
    # orders), so memory follows the orders in progress, not the history (was ~0.5 GB at
    # 179k events).
    with ledger.transaction(commit=False) as cur:
        plan = mat._retirement_plan(cur)  # noqa: SLF001
        engine = _new_engine(mat._reversal_targets(cur))  # noqa: SLF001
    last_mark: int | None = None
    last_at = 0
    with mat.no_gc():
        for ev in mat.events_for_replay(ledger):
            at_us = to_us(ev["at"])
            while plan and plan[-1][0] < at_us:
                engine.retire(plan.pop()[1])
            mark = at_us if small else at_us // _DAY_US
            if last_mark is not None and mark != last_mark:
                moment = last_at if small else (last_mark + 1) * _DAY_US - 1
                _compare(ledger, engine, moment, problems, seen)
            last_mark, last_at = mark, at_us
            engine.apply(ev)
            engine.balance_changes.clear()
            engine.flushes.clear()
    _compare(ledger, engine, None, problems, seen)
    return problems


DEEP_EVERY_EVENT_UP_TO = 20_000
_DAY_US = 86_400 * 1_000_000


def _new_engine(reversible: set[str] | None = None) -> Any:
    from backflush.projections.engine import Replay

    return Replay(reversible=reversible)


_ONHAND_COLS = ("item", "location", "batch", "lp")
_WIP_COLS = ("resource", "location", "kind", "order", "op", "item", "batch")


def _compare(ledger: Ledger, engine: Any, at_us: int | None, problems: list[Problem],
             seen: set[tuple[str, tuple]]) -> None:
    """Problems where the stored projections as of ``at_us`` differ from the engine's state
    (each key reported once, at the first moment it differs)."""
    from backflush.projections import materialise as mat

    bad: list[tuple[str, dict, Any]] = []  # stored balances that are not numbers
    with ledger.one_read():  # about ten reads: one transaction, not ten (PostgreSQL)
        onhand = mat.onhand_asof(ledger, at_us, bad=bad)
        wip = mat.wip_asof(ledger, at_us, bad=bad)
    when = "now" if at_us is None else f"as of {from_us(at_us).isoformat()}"
    for kind, key, value in bad:
        cols = _ONHAND_COLS if kind == "onhand" else _WIP_COLS
        k = tuple(key["ord" if c == "order" else c] for c in cols)
        if (kind, k) not in seen:
            seen.add((kind, k))  # (its replayed value is not compared: the row is garbage)
            problems.append(Problem(
                f"projection {kind}", None, None,
                f"{_key_text(dict(zip(cols, k, strict=True)), cols)}: stored {value!r}"
                f" {when} is not a quantity", None, "qty"))
    for name, cols, replayed, stored in (
        ("onhand", _ONHAND_COLS, engine.onhand(), onhand),
        ("wip", _WIP_COLS, engine.wip(), wip),
    ):
        want = {tuple(r[c] for c in cols): Decimal(r["qty"]) for r in replayed}
        have = {tuple(r[c] for c in cols): Decimal(r["qty"]) for r in stored}
        for k in sorted(want.keys() | have.keys(), key=lambda t: tuple(str(x) for x in t)):
            w, h = want.get(k, Decimal(0)), have.get(k, Decimal(0))
            if w != h and (name, k) not in seen:
                seen.add((name, k))
                problems.append(
                    Problem(
                        f"projection {name}", None, None,
                        f"{_key_text(dict(zip(cols, k, strict=True)), cols)}: stored {h}"
                        f" {when}, replay of the events gives {w}",
                        None, "qty",
                    )
                )


def load_anchors(path: str) -> list[tuple[str, dict[str, Any]]]:
    """Anchors of a file as (``FILE:LINE``, anchor) pairs; AnchorError when unreadable."""
    from backflush.ledger.anchor import parse_anchors

    return [(f"{path}:{n}", a) for n, a in parse_anchors(path)]


__all__ = [
    "AnchorError", "Inconclusive", "Problem", "Report", "anchor_of", "check", "deep_check",
    "heads_digest",
    "load_anchors", "record", "verify",
]
