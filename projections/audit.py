"""The audit timeline of one production order: every event, what it flushed, running totals,
and the findings at the event where they arise (DESIGN §6).

``audit_order`` is pure (events in, a plain dict out). Two ways to feed it:

- *exact and global* (``--policy``, ``--known-at``): every event of the ledger; flushes, batches
  and every finding come from that one replay;
- *fast* (default): master data plus the order's own events (``asof.order_events``) — exact for
  quantities since an order's postings depend only on its own reports — with batches and
  locations from the materialised postings (``flush_rows``) and the findings that depend on
  other orders' stock (NEGATIVE_ON_HAND, UNRESOLVED_BATCH) from the materialised history
  (``global_findings``: (event id, Finding) pairs, see ``negative_takes``).

A finding *arises* at the first of the order's events after which it is present (identity:
code, order, line, item and location/operation); its final quantity is the one after the last
event. A finding that disappears again (a reversal) is dropped from the final list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from backflush.ledger.names import MASTER_TYPES
from backflush.projections.engine import Replay
from backflush.projections.findings import (
    GLOBAL_CODES,
    SEVERITY,
    Finding,
    findings,
    fmt_qty,
    out_of_sequence,
    sort_key,
)

TYPE_CHECKING = False  # not typing's: a query process never imports typing (~3 ms)
if TYPE_CHECKING:
    from typing import Any

ZERO = Decimal(0)
DETAIL_FIELDS = ("op", "good", "error", "qty", "item", "line", "location", "from_location",
                 "to_location", "batch", "lp", "work", "reverses", "reason")
LOCAL_CODES = tuple(c for c in SEVERITY if c not in GLOBAL_CODES and c != "POLICY_OVERLAP")


def _status(o) -> str:
    if o.ended is not None:
        return "ended"
    if o.fin_good + o.fin_error > 0:
        return "reported as finished"
    if o.started:
        return "started"
    if o.released is not None:
        return "released"
    return "created"


def _running(o) -> list[dict[str, Any]]:
    return [{"line": ln.line, "item": ln.item, "expected": ln.expected, "posted": ln.posted}
            for ln in o.all_lines()]


def _flush_dict(r) -> dict[str, Any]:
    get = r.get if isinstance(r, dict) else lambda k: getattr(r, k)
    return {"line": get("line"), "item": get("item"), "trigger": get("trigger"),
            "device": get("device"), "qty": get("qty"), "location": get("location"),
            "batch": get("batch"), "lp": get("lp")}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


class _Postings:
    """Materialised postings read in step with the replay: both come in (at, seq) order,
    so the rows of the event being replayed are the next ones (rows of an event the audit
    passes over, one before the order's creation, are skipped)."""

    def __init__(self, rows: Iterable[dict[str, Any]]):
        self._rows = iter(rows)
        self._next = next(self._rows, None)

    def of(self, ev: dict[str, Any]) -> list[dict[str, Any]]:
        """The rows of event ``ev`` (call in the events' order)."""
        key = ((ev["at"] - _EPOCH) // _US, ev["seq"])  # ledger.store.to_us, without the store
        out = []
        r = self._next
        while r is not None and (r["at_us"], r["seq"]) <= key:
            if r["event_id"] == ev["id"]:
                out.append(r)
            r = next(self._rows, None)
        self._next = r
        return out


def _finding_dict(f: Finding, arises: str | None) -> dict[str, Any]:
    d = f.as_dict()
    d["arises_at"] = arises
    return d


def audit_order(
    events: Iterable[dict[str, Any]],
    order: str,
    policy: dict[str, Any] | None = None,
    flush_rows: Iterable[dict[str, Any]] | None = None,
    global_findings: Callable[[Any], list[tuple[str, Finding]]] | None = None,
    onhand_at: Callable[[str, str, str], Decimal] | None = None,
    timeline: Callable[[dict[str, Any]], None] | None = None,
    reversible: set[str] | None = None,
) -> dict[str, Any] | None:
    """Replay ``events`` and record the audit of ``order`` (None when the order is unknown).

    ``timeline``, when given, is handed each timeline entry as it is made, and the result's
    ``"timeline"`` is None: an order of hundreds of BOM lines and thousands of events has a
    timeline of hundreds of MB (every line's running totals after every event), which the
    caller can then write out as it comes instead of holding it.

    ``reversible``: the ids some Reversal among ``events`` undoes, the only events whose undo
    the replay keeps (None: every event's, ~400 bytes per line flushed).

    ``flush_rows`` (materialised postings of the order, in (at_us, seq) order, as
    ``materialise.iter_flushes_of`` streams them: read alongside ``events``, so only one
    event's are held) switches to the fast, order-local mode described in the module
    docstring; ``global_findings(order_state)`` then gives the
    (event id, Finding) pairs that depend on other orders' stock, and ``onhand_at(item,
    location, event id)`` the true on-hand after that event, which caps RESIDUAL_AT_INPUT
    (what was put for the order may since have been taken by other orders).
    """
    local = flush_rows is not None
    postings = _Postings(flush_rows or ())
    glob_by_event: dict[str, list] = {}
    glob_seen: dict = {}
    codes = LOCAL_CODES if local else tuple(SEVERITY)
    oos = _OutOfSequence() if "OUT_OF_SEQUENCE" in codes else None
    codes = tuple(c for c in codes if c != "OUT_OF_SEQUENCE")

    engine = Replay(policy=policy, reversible=reversible)
    entries: list[dict[str, Any]] = []
    put = entries.append if timeline is None else timeline
    n_entries = 0
    present: dict = {}  # finding key -> (Finding, arises_at event id)
    o = None
    n_seen = 0
    for ev in events:
        engine.apply(ev)
        new_flushes = engine.flushes[:]
        engine.discard_changes()
        if o is None:
            o = engine.order_state(order)
            if o is None:
                continue
            if global_findings is not None:
                for gid, f in global_findings(o):
                    glob_by_event.setdefault(gid, []).append(f)
        if len(o.events) == n_seen or ev["type"] in MASTER_TYPES:
            continue  # not this order's event
        n_seen = len(o.events)
        eid = ev["id"]
        if local:
            flushed = [_flush_dict(r) for r in postings.of(ev)]
        else:
            flushed = [_flush_dict(r) for r in new_flushes if r.order == order]
        now = findings(engine, order=order, codes=codes)
        if oos is not None:
            now.extend(oos.after(o))
        if onhand_at is not None:
            now = [_cap_residual(f, onhand_at) for f in now]
            now = [f for f in now if f is not None]
        for f in glob_by_event.get(eid, ()):
            glob_seen[f.key] = f
        now.extend(glob_seen.values())
        keys = {}
        arising = []
        for f in now:
            keys[f.key] = f
            if f.key in present:
                present[f.key] = (f, present[f.key][1])
            else:
                present[f.key] = (f, eid)
                arising.append(f)
        for k in [k for k in present if k not in keys]:
            del present[k]
        arising.sort(key=sort_key)
        entry = {
            "seq": n_entries + 1,
            "id": eid,
            "at": ev["at"],
            "type": ev["type"],
            "device": ev.get("device"),
        }
        for k in DETAIL_FIELDS:
            v = ev.get(k)
            if v is not None and k != "order":
                entry[k] = v
        entry["flushed"] = flushed
        entry["running"] = _running(o)
        entry["findings"] = [_finding_dict(f, eid) for f in arising]
        put(entry)
        n_entries += 1
    if o is None:
        return None
    if oos is not None:  # (their quantities and events as after the order's last event)
        for f in oos.final(o):
            if f.key in present:
                present[f.key] = (f, present[f.key][1])
    final = sorted(present.values(), key=lambda p: sort_key(p[0]))
    by_trigger = {ln.line: dict(ln.by_trigger or ()) for ln in o.all_lines()}
    return {
        "order": o.order,
        "item": o.item,
        "qty": o.qty,
        "status": _status(o),
        "bom": o.bom,
        "route": o.route,
        "lines": [
            {"line": ln.line, "item": ln.item, "principle": ln.principle, "op": ln.op,
             "location": ln.location, "expected": ln.expected, "posted": ln.posted,
             "variance": ln.posted - ln.expected, "by_trigger": by_trigger[ln.line]}
            for ln in o.all_lines()
        ],
        "timeline": entries if timeline is None else None,
        "findings": [_finding_dict(f, a) for f, a in final],
    }


class _OutOfSequence:
    """OUT_OF_SEQUENCE of the audited order after each of its events, without building it
    from all of the order's records after every event.

    The finding lists every event out of sequence; built after each event, it made the
    audit of an order with thousands of them quadratic (5,000 took 8 s, 20,000 72 s). Which
    of these findings are present changes only when a record of a new (reason, operation)
    appears or a record goes (a reversal); only then are they built again. Otherwise the
    ones built last stand for them (same keys), and ``final`` builds the last ones from the
    records and counters as they were after the order's last event (``after`` keeps them).
    """

    def __init__(self) -> None:
        self.recs: Any = None  # the order's list of records when last seen
        self.n = 0  # how many there were
        self.last: Any = None  # the last of them
        self.groups: set = set()  # their (reason, op)
        self.found: list[Finding] = []  # the findings built last
        self.stale = False  # whether ``found`` may differ from the findings now
        self.counters: tuple = ()  # what the quantities read, as after the last event

    def after(self, o) -> list[Finding]:
        """The OUT_OF_SEQUENCE findings after an event of order ``o`` (see the class)."""
        recs = o.out_of_sequence
        n = len(recs)
        grown = recs is self.recs and n >= self.n and (
            self.n == 0 or recs[self.n - 1] is self.last)
        if grown and all((r.reason, r.op) in self.groups
                         for r in recs[self.n:]):
            self.stale = True
        else:
            self.groups = {(r.reason, r.op) for r in recs}
            self.found = out_of_sequence(o)
            self.stale = False
        self.recs, self.n, self.last = recs, n, recs[-1] if n else None
        self.counters = (dict(o.op_good or ()), dict(o.op_error or ()), o.fin_good,
                         o.fin_error)
        return self.found

    def final(self, o) -> list[Finding]:
        """The findings as after the last event ``after`` saw."""
        if not self.stale:
            return self.found
        recs = o.out_of_sequence
        if not (recs is self.recs and len(recs) >= self.n
                and (self.n == 0 or recs[self.n - 1] is self.last)):
            return out_of_sequence(o)  # (changed since by no event of the order's own)
        good, error, fin_good, fin_error = self.counters
        return out_of_sequence(_OrderThen(o, recs[:self.n], good, error, fin_good, fin_error))


class _OrderThen:
    """What ``findings.out_of_sequence`` reads of an order, as it was (``_OutOfSequence``)."""

    __slots__ = ("order", "item", "qty", "out_of_sequence", "op_good", "op_error", "fin_good",
                 "fin_error")

    def __init__(self, o, recs, op_good, op_error, fin_good, fin_error) -> None:
        self.order, self.item, self.qty = o.order, o.item, o.qty
        self.out_of_sequence = recs
        self.op_good, self.op_error = op_good, op_error
        self.fin_good, self.fin_error = fin_good, fin_error


# --- globally dependent findings from the materialised history (fast path) -----------------


def _cap_residual(f: Finding, onhand_at) -> Finding | None:
    if f.code != "RESIDUAL_AT_INPUT":
        return f
    # where = "location<TAB>batch": the cap is per batch, as the finding is
    loc, _, batch = f.where.partition("\t")
    there = onhand_at(f.item, loc, f.events[-1], batch or None)
    if there >= f.qty:
        return f
    if there <= 0:
        return None
    return Finding(f.code, f.severity, f.order, f.line, f.item, there, f.events,
                   f.message.replace(fmt_qty(f.qty), fmt_qty(there), 1), f.where)


def onhand_after(ledger, item: str, location: str, at_us: int, seq: int,
                 batch: Any = ...) -> Decimal:
    """Materialised on-hand of item at location (all lps; all batches unless ``batch`` is
    given, None meaning no batch) after event (at_us, seq)."""
    from backflush.projections.materialise import alive_keys_sql

    total = ZERO
    alive, params = alive_keys_sql("onhand", at_us)
    with ledger.transaction(commit=False) as cur:
        # Only keys that may be non-zero then: not every batch the location ever held.
        keys = cur.execute(
            "SELECT key_id, batch FROM bf_onhand_keys WHERE item = ? AND location = ?"
            f" AND key_id IN ({alive})",
            (item, location, *params),
        ).fetchall()
        if batch is not ...:
            keys = [k for k in keys if k["batch"] == batch]
        for k in keys:
            row = cur.execute(
                "SELECT balance FROM bf_onhand_hist WHERE key_id = ? AND (at_us < ? OR"
                " (at_us = ? AND seq <= ?)) ORDER BY at_us DESC, seq DESC, n DESC LIMIT 1",
                (k["key_id"], at_us, at_us, seq),
            ).fetchone()
            if row is not None:
                total += Decimal(row["balance"])
    return total


def unresolved_from_rows(order: str, flush_rows: Iterable[dict[str, Any]], tracked: set[str]
                         ) -> list[tuple[str, Finding]]:
    """UNRESOLVED_BATCH, cumulative per line and location, from materialised postings of the
    batch/serial-tracked items ``tracked``."""
    out = []
    acc: dict = {}
    for r in flush_rows:
        if r["item"] not in tracked or r["batch"] is not None or r["qty"] <= 0:
            continue
        if r["trigger"] == "reversal":
            continue  # manual consumption with no batch to take is unresolved too (engine)
        k = (r["line"], r["item"], r["location"])
        qty, ids = acc.get(k, (ZERO, ()))
        qty, ids = qty + r["qty"], (*ids, r["event_id"])
        acc[k] = (qty, ids)
        line, item, loc = k
        label = f"line {line} ({item})" if line is not None else item
        f = Finding("UNRESOLVED_BATCH", SEVERITY["UNRESOLVED_BATCH"], order, line, item, qty,
                    tuple(dict.fromkeys(ids)),
                    f"{label} is batch-tracked: {fmt_qty(qty)} flushed from {loc} with no batch "
                    "on hand or put for the order to take it from", loc)
        out.append((r["event_id"], f))
    return out


def negative_findings(order: str, takes: list[dict[str, Any]], lines: list) -> list[
        tuple[str, Finding]]:
    """NEGATIVE_ON_HAND (cumulative, deepest point) from ``negative_takes`` rows."""
    out = []
    acc: dict = {}
    for t in takes:
        k = (t["item"], t["location"], t["batch"])
        depth, ids = acc.get(k, (ZERO, ()))
        depth, ids = max(depth, -t["balance"]), (*ids, t["event_id"])
        acc[k] = (depth, ids)
        item, loc, batch = k
        cands = [ln for ln in lines if ln.item == item]
        ln = next((x for x in cands if x.location == loc), cands[0] if cands else None)
        b = f" batch {batch}" if batch else ""
        why = ("a put without a matching pick" if loc == "IN_TRANSIT"
               else f"order {order} took more than was there")
        f = Finding("NEGATIVE_ON_HAND", SEVERITY["NEGATIVE_ON_HAND"], order,
                    ln.line if ln else None, item, depth, tuple(dict.fromkeys(ids)),
                    f"on-hand of {item}{b} at {loc} went {fmt_qty(depth)} below zero: {why}",
                    f"{loc} {batch}")
        out.append((t["event_id"], f))
    return out


def negative_takes(ledger, seqs: dict[int, str]) -> list[dict[str, Any]]:
    """Materialised on-hand changes made by the events ``seqs`` (seq -> event id) that took a
    balance below zero (a decrease ending negative), in (at, seq) order. I/O edge."""
    if not seqs:
        return []
    out = []
    keys = sorted(seqs)
    with ledger.transaction(commit=False) as cur:
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            marks = ",".join("?" * len(chunk))
            rows = cur.execute(
                "SELECT k.item, k.location, k.batch, k.lp, h.key_id, h.at_us, h.seq, h.n,"
                " h.balance FROM bf_onhand_hist h JOIN bf_onhand_keys k ON k.key_id = h.key_id"
                f" WHERE h.seq IN ({marks})",
                chunk,
            ).fetchall()
            for r in rows:
                bal = Decimal(r["balance"])
                if bal >= 0:
                    continue
                prev = cur.execute(
                    "SELECT balance FROM bf_onhand_hist WHERE key_id = ? AND (at_us < ? OR"
                    " (at_us = ? AND (seq < ? OR (seq = ? AND n < ?))))"
                    " ORDER BY at_us DESC, seq DESC, n DESC LIMIT 1",
                    (r["key_id"], r["at_us"], r["at_us"], r["seq"], r["seq"], r["n"]),
                ).fetchone()
                before = Decimal(prev["balance"]) if prev is not None else ZERO
                if bal < before:
                    out.append({"event_id": seqs[r["seq"]], "at_us": r["at_us"], "seq": r["seq"],
                                "n": r["n"], "item": r["item"], "location": r["location"],
                                "batch": r["batch"], "lp": r["lp"], "balance": bal})
    out.sort(key=lambda t: (t["at_us"], t["seq"], t["n"]))
    return out
