"""Answering a question "as of": which source answers it, and how cheaply.

- On-hand and WIP at ``--at T``: the materialised history (one index probe per key).
- One order's consumption or hours at ``--at T``: a short replay of the master data and
  that order's events only (the ``ord`` index), since what an order posts depends on its
  own reports, not on other orders; batches are read from the materialised postings.
- ``--known-at K``: the materialised history still answers unless some event recorded
  after K happened by T; only then is what was known replayed.
- ``--policy P``: a replay of the history under P (the recorded ledger is not touched).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from backflush.ledger.store import Ledger, to_us
from backflush.projections import materialise as mat

if TYPE_CHECKING:  # the engine loads only when a replay runs (not for materialised answers)
    from backflush.projections.engine import Replay

RETIRE_EVERY = 2000  # events between checks for orders whose findings are final


def _us(dt: datetime | None) -> int | None:
    return None if dt is None else to_us(dt)


def replay(
    ledger: Ledger,
    at: datetime | None = None,
    known_at: datetime | None = None,
    policy: dict[str, Any] | None = None,
) -> Replay:
    """A full in-memory replay of what happened by ``at`` and was recorded by ``known_at``."""
    from backflush.projections.engine import Replay

    engine = Replay(policy=policy)
    with mat.no_gc():
        for ev in mat.events_for_replay(ledger, at_lte=_us(at), rec_lte=_us(known_at)):
            engine.apply(ev)
            engine.balance_changes.clear()
            engine.flushes.clear()
    return engine


def findings_replay(
    ledger: Ledger,
    at: datetime | None = None,
    known_at: datetime | None = None,
    policy: dict[str, Any] | None = None,
    codes: Any = None,
    retire_every: int = RETIRE_EVERY,
) -> list[Any]:
    """Every finding of the ledger, by one streaming replay with bounded memory.

    An order's findings are final once no later event refers to it: they are taken then,
    and the order is forgotten, so memory follows the orders in progress, not the history.
    """
    from backflush.projections.engine import Replay
    from backflush.projections.findings import findings_of_orders, sort_key

    plan = mat.last_event_of_orders(ledger)
    engine = Replay(policy=policy, reversible=mat.reversal_targets(ledger))
    out: list[Any] = []
    n = 0
    with mat.no_gc():
        for ev in mat.events_for_replay(ledger, at_lte=_us(at), rec_lte=_us(known_at)):
            engine.apply(ev)
            n += 1
            if n % retire_every == 0:
                engine.balance_changes.clear()
                engine.flushes.clear()
                now = to_us(ev["at"])
                done = set()
                while plan and plan[-1][0] < now:
                    done.add(plan.pop()[1])
                if done:
                    out.extend(findings_of_orders(engine, done, codes))
                    engine.negative_onhand[:] = [
                        r for r in engine.negative_onhand if r.order not in done
                    ]
                    for o in done:
                        engine.retire(o)
    out.extend(findings_of_orders(engine, None, codes))
    out.sort(key=sort_key)
    return out


def order_events(
    ledger: Ledger, order: str, at: datetime | None = None, known_at: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """Master data plus one order's events (its picks, puts and reversals too), by ``at``."""
    from backflush.ledger.events import MASTER_TYPES

    f = {"at_lte": _us(at), "rec_lte": _us(known_at)}
    master = mat.events_for_replay(ledger, types=sorted(MASTER_TYPES), **f)
    own = mat.events_for_replay(ledger, order=order, **f)
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

    engine = Replay(policy=policy)
    for ev in order_events(ledger, order, at, known_at):
        engine.apply(ev)
    return engine


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
    rows = replay(ledger, at, known_at, policy).onhand()
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
    rows = replay(ledger, at, known_at, policy).wip()
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
    """Standard vs reported hours per order, operation and resource."""
    if order is not None:
        engine = order_replay(ledger, order, at, known_at, policy)
    else:
        engine = replay(ledger, at, known_at, policy)
    return engine.hours(order=order, resource=resource)
