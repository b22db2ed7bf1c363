"""Answering a question "as of": which source answers it, and how cheaply.

- On-hand and WIP at ``--at T``: the materialised history (one index probe per key).
- One order's consumption or hours at ``--at T``: a short replay of the master data and
  that order's events only (the ``ord`` index), since what an order posts depends on its
  own reports, not on other orders; batches are read from the materialised postings.
- One order's findings (``order_findings``): the same short replay, with what depends on
  other orders' stock (negative on-hand, takes with no batch, what is still at the input)
  read from the materialised history: the audit's fast path, equal to the global replay's.
- Hours of every order (``iter_hours``) and every finding (``iter_findings``): one
  streaming replay that retires each order once its last event is applied, so memory
  follows the orders in progress, not the history. Sorted by order, each order's rows go
  out once every order named before it is final (``_name_order``): plants number orders
  as they open them, so the first rows come early and few are held. An order that holds
  the others back (one posted to long after it ended, a long-running one) is answered
  from its own events, as ``--order`` answers it, once enough orders wait behind it.
- ``--known-at K``: the materialised history still answers unless some event recorded
  after K happened by T; only then is what was known replayed.
- ``--policy P``: a replay of the history under P (the recorded ledger is not touched).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from itertools import chain, islice

from backflush.ledger.store import Ledger, to_us
from backflush.projections import materialise as mat

TYPE_CHECKING = False  # not typing's: a query process never imports typing (~3 ms)
if TYPE_CHECKING:  # the engine loads only when a replay runs (not for materialised answers)
    from typing import Any

    from backflush.projections.engine import Replay

RETIRE_EVERY = 2000  # events between checks for orders whose findings are final
# Orders final and held behind an order named before them that is not, before that order
# is answered on its own (``_name_order``): each costs about what replaying PATIENCE
# orders' events does, so the stream pays at most a few percent for its first rows.
PATIENCE = 256


def _us(dt: datetime | None) -> int | None:
    return None if dt is None else to_us(dt)


def replay(
    ledger: Ledger,
    at: datetime | None = None,
    known_at: datetime | None = None,
    policy: dict[str, Any] | None = None,
) -> Replay:
    """A full in-memory replay of what happened by ``at`` and was recorded by ``known_at``,
    every order kept to the end (the reference the bounded replays are tested against; its
    memory grows with the history)."""
    from backflush.projections.engine import Replay

    engine = Replay(policy=policy)
    last = ledger.max_seq()  # as ``_streaming_replay``: no import seen in part
    with mat.no_gc():
        for ev in mat.events_for_replay(ledger, at_lte=_us(at), rec_lte=_us(known_at),
                                        seq_lte=last):
            engine.apply(ev)
            engine.discard_changes()
    return engine


def _stock_replay(
    ledger: Ledger,
    at: datetime | None,
    known_at: datetime | None,
    policy: dict[str, Any] | None,
    retire_every: int = RETIRE_EVERY,
) -> Replay:
    """``replay`` for on-hand and WIP only (``--policy``, or a ``--known-at`` the
    projections cannot answer): stock lives outside the orders, so each order is forgotten
    once past its last event and memory follows the orders in progress, not the history
    (``replay`` held every order: 224 MB at 179k events)."""
    from collections import deque

    steps = _streaming_replay(ledger, at, known_at, policy, retire_every, keep_findings=False)
    return deque(steps, maxlen=1)[0][0]  # run it through; the last step holds the end


def findings_replay(
    ledger: Ledger,
    at: datetime | None = None,
    known_at: datetime | None = None,
    policy: dict[str, Any] | None = None,
    codes: Any = None,
    retire_every: int = RETIRE_EVERY,
) -> list[Any]:
    """Every finding of the ledger, by one streaming replay with bounded memory (sorted)."""
    return list(iter_findings(ledger, at, known_at, policy, codes, retire_every))


def iter_findings(
    ledger: Ledger,
    at: datetime | None = None,
    known_at: datetime | None = None,
    policy: dict[str, Any] | None = None,
    codes: Any = None,
    retire_every: int = RETIRE_EVERY,
) -> Iterator[Any]:
    """Every finding of the ledger in ``sort_key`` order, yielded while the replay runs.

    An order's findings are final once no later event refers to it: they are taken then,
    and the order is forgotten, so memory follows the orders in progress, not the history.
    They are yielded as soon as every order named before it is final too (``_name_order``).
    Findings of no order (a take outside any order driving on-hand negative) sort first but
    are only known at the end: when the materialised history says there may be some (or
    cannot say: a policy or ``--known-at``), nothing is yielded before the replay ends.
    """
    from backflush.projections.findings import findings_of_orders

    last = ledger.max_seq()  # the replay's and the check's: the same events
    names = mat.last_event_of_orders(ledger)
    stream = _no_orderless_findings(ledger, at, known_at, policy, codes, last)
    # The check reads the projections as they are now: if an import committed since
    # ``last``, they may hold none of the replay's findings of no order (a late receipt
    # covers the take). Holding every row to the end is then the answer that stays right.
    stream = stream and _unchanged(ledger, last)
    # One order's findings from its own events and the materialised history: the same
    # answer (``order_findings``), which that path gives only as recorded and known now.
    alone = None
    if stream and policy is None and known_at is None:
        def alone(order: str) -> list[Any] | None:
            return _if_unchanged(ledger, last, order_findings(ledger, order, at, codes))

    def pieces() -> Iterator[dict[str | None, list[Any]]]:
        for engine, done in _streaming_replay(ledger, at, known_at, policy, retire_every,
                                              keep_findings=True, plan=list(names),
                                              last=last):
            if done is None:
                found = findings_of_orders(engine, None, codes)
                yield _group(found, engine.orders())
                return
            finished = set(done)
            yield _group(findings_of_orders(engine, finished, codes), done)
            engine.negative_onhand[:] = [r for r in engine.negative_onhand
                                         if r.order not in finished]

    yield from _name_order(pieces(), [o for _, o in names] if stream else [], alone)


def _unchanged(ledger: Ledger, last: int) -> bool:
    """Whether nothing was recorded after position ``last`` (what a replay pinned there saw)."""
    return ledger.max_seq() == last


def _if_unchanged(ledger: Ledger, last: int, rows: list[Any]) -> list[Any] | None:
    """``rows`` answered from the ledger as it is now, or None if it moved past ``last``
    (read after them: positions only grow, and an import's events commit before its
    projections, so an unchanged last position means the rows saw nothing later)."""
    return rows if _unchanged(ledger, last) else None


def _group(found: list[Any], orders: list[str]) -> dict[str | None, list[Any]]:
    """Findings by order (each order of ``orders`` present, with none if need be)."""
    out: dict[str | None, list[Any]] = {o: [] for o in orders}
    for f in found:
        out.setdefault(f.order, []).append(f)
    return out


def _no_orderless_findings(ledger: Ledger, at: datetime | None, known_at: datetime | None,
                           policy: dict[str, Any] | None, codes: Any, last: int) -> bool:
    """True when no finding of no order can arise: then findings stream in order."""
    if codes is not None and "NEGATIVE_ON_HAND" not in set(codes):
        return True
    if known_at is not None:
        return False
    if policy is not None:
        # A what-if moves other quantities, so the recorded negatives say nothing; but only
        # a take outside any order can end in a finding of no order, and whether the
        # events hold one does not depend on the policy.
        return not mat.orderless_takes_possible(ledger, _us(at), last)
    # The materialised negative records are the global replay's own (same events, same
    # order): the only findings of no order are those records with no order.
    from backflush.errors import OperationalError

    try:
        mat.catch_up(ledger)
    except OperationalError:  # read-only and behind: nothing materialised to lean on
        return False
    return not mat.orderless_negative(ledger, _us(at))


def _name_order(pieces: Iterator[dict[Any, list[Any]]], names: list[str],
                alone: Callable[[str], list[Any] | None] | None = None,
                patience: int | None = None) -> Iterator[Any]:
    """Rows grouped by order, re-emitted in order-name order as early as that order allows.

    ``pieces`` yields ``{order: rows}`` for orders that became final (every order once, the
    last piece holding every order left); ``names``: every order that will come, known in
    advance. An order's rows go out once every name before it has come; whatever is held at
    the end goes out sorted (None first, as ``sort_key`` puts it). With no ``names``,
    everything is held to the end.

    ``alone(order)``, when given, answers one order's final rows by itself. An order named
    first but touched again late in the history (a correction posted to it months after
    it ended) would otherwise hold every later name back until the replay ends: once
    ``patience`` (default ``PATIENCE``) orders have become final behind it, it is answered
    alone, and its rows from the replay are dropped when they come. The rows are the same
    either way (the per-order paths are held equal to the replay's by the tests), only
    sooner. ``alone`` returns None when it cannot answer as the replay would (the ledger
    moved on since the replay began): then it is not asked again.
    """
    if patience is None:
        patience = PATIENCE
    todo = sorted(set(names))
    i = 0
    held = _Held()
    try:  # the file, if rows went to one, is dropped however the stream ends
        early: set[Any] = set()
        waited = 0
        last: Any = None
        for piece in pieces:
            for k, rows in piece.items():
                if k not in early:
                    held.put(k, rows)
            waited += len(piece)
            while i < len(todo):
                head = todo[i]
                if head in held:
                    rows = held.pop(head)
                elif alone is not None and waited >= patience:
                    answer, waited = alone(head), 0
                    if answer is None:
                        alone = None
                        break
                    rows = answer
                    early.add(head)
                else:
                    break
                last = head
                yield from rows
                i += 1
        for k in sorted(held.keys(), key=lambda o: (0, "") if o is None else (1, o)):
            if last is not None and (k is None or k < last):
                # An order the plan did not know, named before one already out: a bug upstream.
                raise RuntimeError(f"streamed rows out of order: {k!r} after {last!r}")
            yield from held.pop(k)
    finally:
        held.close()


# Rows held back in memory before ``_Held`` moves them to a temporary file: a few MB. A
# what-if (``--policy``, ``--known-at``) holds every row to the end; at 1M events that was
# ~200k findings, 161 MB.
SPILL_ROWS = 20_000


class _Held:
    """Rows by group, held back until their turn; past ``SPILL_ROWS`` rows in memory, the
    groups go to an anonymous temporary file (pickled), so memory stays bounded whatever
    the output size. Read back once each (``pop``)."""

    def __init__(self, limit: int | None = None):
        self.limit = SPILL_ROWS if limit is None else limit
        self.mem: dict[Any, list[Any]] = {}
        self.rows = 0
        self.disk: dict[Any, tuple[int, int]] = {}  # group -> (offset, length)
        self.file: Any = None

    def put(self, k: Any, rows: list[Any]) -> None:
        """Hold ``rows`` for group ``k`` (a group comes once)."""
        self.mem[k] = rows
        self.rows += len(rows)
        if self.rows > self.limit:
            self._spill()

    def _spill(self) -> None:
        import pickle
        import tempfile

        if self.file is None:
            self.file = tempfile.TemporaryFile()  # noqa: SIM115  closed by ``close``
        f = self.file
        f.seek(0, 2)
        for k, rows in self.mem.items():
            data = pickle.dumps(rows, pickle.HIGHEST_PROTOCOL)
            self.disk[k] = (f.tell(), len(data))
            f.write(data)
        self.mem.clear()
        self.rows = 0

    def __contains__(self, k: Any) -> bool:
        return k in self.mem or k in self.disk

    def keys(self) -> list[Any]:
        """Every group held."""
        return [*self.mem, *self.disk]

    def pop(self, k: Any) -> list[Any]:
        """The rows of group ``k``, no longer held."""
        if k in self.mem:
            rows = self.mem.pop(k)
            self.rows -= len(rows)
            return rows
        import pickle

        offset, length = self.disk.pop(k)
        self.file.seek(offset)
        return pickle.loads(self.file.read(length))  # noqa: S301  our own file, this process

    def close(self) -> None:
        """Drop the temporary file, if any."""
        if self.file is not None:
            self.file.close()
            self.file = None


def _streaming_replay(
    ledger: Ledger,
    at: datetime | None,
    known_at: datetime | None,
    policy: dict[str, Any] | None,
    retire_every: int,
    *,
    keep_findings: bool,
    plan: list[tuple[int, str]] | None = None,
    last: int | None = None,
) -> Iterator[tuple[Replay, list[str] | None]]:
    """One replay of every event that forgets finished orders as it goes.

    Every ``retire_every`` events it yields ``(engine, orders)`` for the orders whose last
    event is behind (sorted), and retires them once the caller has read what it needs; at
    the end it yields ``(engine, None)``: everything still held. Memory follows the orders
    in progress, not the history. ``keep_findings``: keep the logs only findings read
    (negative on-hand, anomalies) instead of dropping them at each pause. ``last``: the
    last position to replay (default: the last recorded when it starts).
    """
    from backflush.projections.engine import Replay

    # The events recorded when it starts, and no later ones: the pages are read one by one
    # (each its own snapshot), and an import committing meanwhile would otherwise be seen
    # in part (its events after the page reached, not those before): answers that were
    # never true. An import is atomic and its positions follow every earlier one.
    if last is None:
        last = ledger.max_seq()
    if plan is None:
        plan = mat.last_event_of_orders(ledger)
    engine = Replay(policy=policy, reversible=mat.reversal_targets(ledger))
    events = mat.events_for_replay(ledger, at_lte=_us(at), rec_lte=_us(known_at), seq_lte=last)
    with mat.no_gc():
        while True:
            # ``retire_every`` events in one arithmetic context (``Replay.apply`` enters one
            # per event); left before each yield, so the caller runs in its own.
            ev = engine.apply_some(events, retire_every)
            if ev is None:
                break
            engine.discard_changes()
            if not keep_findings:
                engine.negative_onhand.clear()
                engine.anomalies.clear()
            now = to_us(ev["at"])
            done = []
            while plan and plan[-1][0] < now:
                done.append(plan.pop()[1])
            if done:
                done.sort()
                yield engine, done
                for o in done:
                    engine.retire(o)
        engine.discard_changes()
        try:
            yield engine, None
        finally:
            # The orders still held, retired once the caller is done with them: the engine
            # is then freed when dropped (lines point back to their order), even while the
            # caller keeps the collector off. Stock and WIP stay (``_stock_replay``).
            for o in engine.orders():
                engine.retire(o)


def order_events(
    ledger: Ledger, order: str, at: datetime | None = None, known_at: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """Master data plus one order's events (its picks, puts and reversals too), by ``at``."""
    from backflush.ledger.names import MASTER_TYPES

    f = {"at_lte": _us(at), "rec_lte": _us(known_at)}
    # Few events: decoded without orjson (a short query process, see events_for_replay).
    master = mat.events_for_replay(ledger, types=sorted(MASTER_TYPES), light=True, **f)
    own = mat.events_for_replay(ledger, order=order, light=True, **f)
    return heapq.merge(master, own, key=lambda e: (e["at"], e["seq"]))


def order_replay(
    ledger: Ledger,
    order: str,
    at: datetime | None = None,
    known_at: datetime | None = None,
    policy: dict[str, Any] | None = None,
) -> Replay:
    """Replay of one order in isolation (fast; exact for quantities, not for batches)."""
    from backflush.projections.engine import Replay

    events, reversible = order_events_reversible(ledger, order, at, known_at)
    engine = Replay(policy=policy, reversible=reversible)
    return engine.apply_all(_drained(engine, events))


# An order with fewer events than this comes in one read (``Ledger.iter_rows``' page).
_ONE_READ = 5000


def order_events_reversible(
    ledger: Ledger, order: str, at: datetime | None = None, known_at: datetime | None = None
) -> tuple[Iterator[dict[str, Any]], set[str]]:
    """``order_events``, and the ids among them some Reversal undoes (a Reversal is stored
    under its target's order): the only ones a replay of the order must keep the undo of.
    Keeping it for every event took 490 MB and 8 s for an order of 200k reports, against
    63 MB and 3 s. An order read in one page gives them from its own events (no further
    statement: a query process pays per round trip); a longer one asks the store."""
    from backflush.ledger.names import MASTER_TYPES

    f = {"at_lte": _us(at), "rec_lte": _us(known_at)}
    own = mat.events_for_replay(ledger, order=order, light=True, **f)
    head = list(islice(own, _ONE_READ))
    if len(head) < _ONE_READ:
        reversible = {e["reverses"] for e in head if e["type"] == "Reversal"}
        own = iter(head)
    else:
        reversible = {e["reverses"] for e in mat.events_for_replay(
            ledger, order=order, types=["Reversal"], light=True, **f)}
        own = chain(head, own)
    master = mat.events_for_replay(ledger, types=sorted(MASTER_TYPES), light=True, **f)
    return heapq.merge(master, own, key=lambda e: (e["at"], e["seq"])), reversible


def _drained(engine: Replay, events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """``events``, the engine's change log (what a materialising pass writes, which a
    replay of one order only reads its state for) emptied now and then, between them."""
    for n, ev in enumerate(events, start=1):
        yield ev
        if not n % 1000:
            engine.discard_changes()


def _materialised_ok(ledger: Ledger, at: datetime | None, known_at: datetime | None) -> bool:
    if known_at is None:
        return True
    horizon = mat._FAR_FUTURE if at is None else to_us(at)  # noqa: SLF001
    return not mat.needs_replay_for_known_at(ledger, horizon, to_us(known_at))


def onhand(
    ledger: Ledger,
    at: datetime | None = None,
    known_at: datetime | None = None,
    policy: dict[str, Any] | None = None,
    item: str | None = None,
    location: str | None = None,
) -> list[dict[str, Any]]:
    """On-hand rows (item, location, batch, lp, qty) as of ``at``/``known_at``."""
    if policy is None and _materialised_ok(ledger, at, known_at):
        mat.catch_up(ledger)
        return mat.onhand_asof(ledger, _us(at), item, location)
    rows = _stock_replay(ledger, at, known_at, policy).onhand()
    return [
        r for r in rows
        if (item is None or r["item"] == item) and (location is None or r["location"] == location)
    ]


def wip(
    ledger: Ledger,
    at: datetime | None = None,
    known_at: datetime | None = None,
    policy: dict[str, Any] | None = None,
    resource: str | None = None,
) -> list[dict[str, Any]]:
    """WIP rows per resource location as of ``at``/``known_at``."""
    if policy is None and _materialised_ok(ledger, at, known_at):
        mat.catch_up(ledger)
        return mat.wip_asof(ledger, _us(at), resource)
    rows = _stock_replay(ledger, at, known_at, policy).wip()
    return [r for r in rows if resource is None or r["resource"] == resource]


def consumption(
    ledger: Ledger,
    order: str,
    at: datetime | None = None,
    known_at: datetime | None = None,
    policy: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Consumption per line of one order: expected, posted, by trigger, variance."""
    return order_replay(ledger, order, at, known_at, policy).consumption(order)


def hours(
    ledger: Ledger,
    order: str | None = None,
    resource: str | None = None,
    at: datetime | None = None,
    known_at: datetime | None = None,
    policy: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Standard vs reported hours per order, operation and resource (sorted by order)."""
    if order is not None:
        engine = order_replay(ledger, order, at, known_at, policy)
        return engine.hours(order=order, resource=resource)
    return list(iter_hours_by_order(ledger, resource, at, known_at, policy))


def iter_hours(
    ledger: Ledger,
    resource: str | None = None,
    at: datetime | None = None,
    known_at: datetime | None = None,
    policy: dict[str, Any] | None = None,
    retire_every: int = RETIRE_EVERY,
    plan: list[tuple[int, str]] | None = None,
) -> Iterator[dict[str, Any]]:
    """Hours rows of every order, yielded as each order's hours become final (in the order
    orders end, not by name), by one streaming replay: memory follows the orders in
    progress, not the history."""
    for engine, done in _streaming_replay(ledger, at, known_at, policy, retire_every,
                                          keep_findings=False, plan=plan):
        if done is None:
            yield from engine.hours(resource=resource)
            return
        for o in done:
            yield from engine.hours(order=o, resource=resource)


def iter_hours_by_order(
    ledger: Ledger,
    resource: str | None = None,
    at: datetime | None = None,
    known_at: datetime | None = None,
    policy: dict[str, Any] | None = None,
    retire_every: int = RETIRE_EVERY,
) -> Iterator[dict[str, Any]]:
    """`iter_hours` sorted by order (each order's rows in the engine's order), yielded as
    soon as every order named before it is final: the first rows come early when orders
    end roughly in the order of their names, as a plant numbers them."""
    # Pinned before the plan is read: a plan older than the replay's events would miss an
    # order an import added in between (its rows came last, out of name order) and retire
    # orders before events the import added to them.
    last = ledger.max_seq()
    plan = mat.last_event_of_orders(ledger)

    def pieces() -> Iterator[dict[str, list[dict[str, Any]]]]:
        for engine, done in _streaming_replay(ledger, at, known_at, policy, retire_every,
                                              keep_findings=False, plan=list(plan),
                                              last=last):
            orders = engine.orders() if done is None else done
            yield {o: engine.hours(order=o, resource=resource) for o in orders}
            if done is None:
                return

    def alone(order: str) -> list[dict[str, Any]] | None:
        # An order's hours are its own: its events and the master data (``hours``).
        engine = order_replay(ledger, order, at, known_at, policy)
        rows = engine.hours(order=order, resource=resource)
        engine.retire(order)  # freed once dropped, as ``order_findings``' engine
        return _if_unchanged(ledger, last, rows)

    yield from _name_order(pieces(), [o for _, o in plan], alone)


def order_findings(
    ledger: Ledger,
    order: str,
    at: datetime | None = None,
    codes: Any = None,
) -> list[Any]:
    """Findings of one order from its own events and the materialised history (the audit's
    fast path): master data and the order's events replayed, batches, negative on-hand and
    what is still at the input location read from the projections."""
    from backflush.projections import audit as A
    from backflush.projections.engine import NegativeOnHand, Replay, Residual, Unresolved
    from backflush.projections.findings import findings, sort_key

    mat.catch_up(ledger)
    at_us = _us(at)
    events, reversible = order_events_reversible(ledger, order, at)
    engine = Replay(reversible=reversible)
    engine.apply_all(_drained(engine, events))
    o = engine.order_state(order)
    if o is None:
        return []
    # Which takes found no batch depends on other orders' stock: the materialised records
    # (of the events this replay did not see reversed) replace the order-local ones, and the
    # same findings code reads them.
    reversed_ids = engine.reversed_ids()
    o.unresolved = [
        Unresolved(u["event_id"], None, u["line"], u["item"], u["location"], u["qty"])
        for u in mat.unresolved_of(ledger, order, at_us) if u["event_id"] not in reversed_ids
    ]
    # So do the engine's own negative on-hand records of the order (kept, like the global
    # replay's, whatever later reversals did).
    engine.negative_onhand[:] = [
        NegativeOnHand(r["event_id"], None, r["key"], r["balance"], order)
        for r in mat.negative_of(ledger, order, at_us)
    ]
    # And what was still at the input when the order ended, as the global replay saw it
    # (the stock there is shared): the latest end not reversed.
    names = set(Residual.__slots__)
    for end_id, res in reversed(mat.residual_of(ledger, order, at_us)):
        if end_id not in reversed_ids:
            o.residual_at_end = tuple(
                Residual(**{k: v for k, v in r.items() if k in names}, end_event=end_id)
                for r in res)
            break
    found = findings(engine, order=order,
                     codes=(*A.LOCAL_CODES, "UNRESOLVED_BATCH", "NEGATIVE_ON_HAND"))
    if codes is not None:
        keep = set(codes)
        found = [f for f in found if f.code in keep]
    found.sort(key=sort_key)
    # Lines point back to their order: retiring it breaks that cycle, so this engine is
    # freed once dropped, even inside a stream of findings (the collector switched off)
    # that answers hundreds of orders alone.
    engine.retire(order)
    return found
