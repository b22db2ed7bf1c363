"""Pure in-memory replay: a list of events in, the ledger's answers out, no database.

``backflush.replay(events, policy=None)`` is what a test or a notebook wants: the events of
a JSONL file (dicts, JSON text or pydantic event models) validated exactly as ``backflush
import`` validates them, put in the order the ledger applies them ((``at``, arrival order)),
and replayed through the same engine. The result answers the questions of the command line
(on-hand, WIP, consumption, hours, findings) with the same rows, for the whole history or as
of a point in time on the floor::

    import backflush
    result = backflush.replay(events, policy=backflush.Policy.from_file("fix-policy.json"))
    result.findings(code="DOUBLE_FLUSH")        # [] when the policy is right

Where a stored ledger would differ: there is no ``known_at`` (nothing was recorded, so
everything is known), and nothing is written anywhere.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from backflush.errors import BadInput
from backflush.policy import Policy

__all__ = ["ReplayResult", "parse_events", "policy_params", "replay", "to_jsonl"]


def policy_params(policy: Any) -> dict[str, Any] | None:
    """The engine's form of ``policy``: a `Policy`, a dict, a JSON file path, or None.

    None means the production parameters recorded in the history (D365 defaults until a
    ``ProductionParametersSet`` records others).
    """
    if policy is None:
        return None
    if isinstance(policy, Policy):
        return policy.params
    if isinstance(policy, dict):
        # Quantities may be Decimals (as the strategies draw them): JSON has them as text.
        return Policy.parse(orjson.dumps(policy, default=str)).params
    if isinstance(policy, str | os.PathLike):
        return Policy.from_file(policy).params
    raise TypeError(f"policy: expected a Policy, dict, path or None, not {type(policy).__name__}")


def _raw(ev: Any) -> bytes:
    """One event as JSON bytes: what an import reads from one line of a file."""
    if isinstance(ev, bytes | bytearray):
        return bytes(ev)
    if isinstance(ev, str):
        return ev.encode()
    if hasattr(ev, "model_dump_json"):  # a pydantic event model (st.from_type draws those)
        return ev.model_dump_json(exclude_none=True).encode()
    if isinstance(ev, dict):
        # Decimals and datetimes as text, like a JSONL file would carry them.
        return orjson.dumps(ev, default=_json_default)
    raise TypeError(f"event: expected a dict, JSON text or event model, not {type(ev).__name__}")


def _json_default(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    return str(v)  # Decimal, and anything else text-like


def parse_events(events: Iterable[Any], source: str = "<events>") -> list[dict[str, Any]]:
    """Validate ``events`` as ``backflush import`` does; the stored payloads, in arrival order.

    Each event is checked by the pydantic models of the interchange format and against the
    names defined so far (items, BOMs, routes, resources, orders, reversed ids); an event
    without ``id`` gets the id an import would give it, a repeated id with the same content is
    a duplicate (skipped) and with other content an error. Raises `BadInput` listing every
    problem as ``SOURCE:N: field: reason`` (N counts events from 1).
    """
    from backflush.ledger.codec import canonical, content_digest
    from backflush.ledger.events import EventErrors, normalise, parse_event
    from backflush.ledger.importer import _ID_NAMESPACE, _Names

    names = _Names()
    errors: list[str] = []
    out: list[dict[str, Any]] = []
    digests: dict[str, str] = {}
    occurrences: dict[str, int] = {}
    for n, ev in enumerate(events, start=1):
        try:
            event = parse_event(_raw(ev))
        except EventErrors as exc:
            errors.extend(f"{source}:{n}: {e.field}: {e.reason}" for e in exc.errors)
            continue
        payload = normalise(event)
        bad = names.check(payload)
        if payload["type"] == "Reversal" and payload["reverses"] not in digests:
            bad.append(("reverses", f"unknown event id {payload['reverses']!r}"))
        if bad:
            errors.extend(f"{source}:{n}: {f}: {r}" for f, r in bad)
            continue
        names.add(payload)
        digest = content_digest(canonical(payload))
        if event.id is None:
            k = occurrences.get(digest, 0)
            occurrences[digest] = k + 1
            eid = str(uuid.uuid5(_ID_NAMESPACE, f"{digest}/{k}"))
        else:
            eid = event.id
        known = digests.get(eid)
        if known is not None:
            if known != digest:
                errors.append(f"{source}:{n}: id: id {eid!r} already recorded with other content")
            continue  # same id, same content: a duplicate, skipped as an import skips it
        digests[eid] = digest
        payload["id"] = eid
        out.append(payload)
    if errors:
        raise BadInput(errors)
    return out


def to_jsonl(events: Iterable[Any]) -> str:
    """Events as JSON Lines text (one event a line, quantities as decimal strings).

    Takes interchange dicts, JSON text, event models or the engine's normalised dicts (those
    of ``backflush.testing.strategies``: ``seq`` is dropped, None fields left out). The text
    can be saved to a file and fed to ``backflush import``.
    """
    lines = []
    for ev in events:
        if isinstance(ev, dict):
            ev = {k: v for k, v in ev.items() if k != "seq" and v is not None}
            for key in ("lines", "operations", "rules"):
                if isinstance(ev.get(key), list):
                    ev[key] = [{k: v for k, v in x.items() if v is not None}
                               if isinstance(x, dict) else x for x in ev[key]]
        lines.append(_raw(ev).decode())
    return "".join(line + "\n" for line in lines)


@dataclass
class ReplayResult:
    """The answers of one in-memory replay; rows as ``backflush.Ledger`` gives them.

    ``events`` are the validated events in the order they were applied; ``engine`` is the
    replay state itself (``backflush.projections.engine.Replay``) for anything deeper.
    """

    events: list[dict[str, Any]]
    engine: Any = field(repr=False)
    policy: dict[str, Any] | None = field(default=None, repr=False)

    def onhand(self, *, item: str | None = None, location: str | None = None
               ) -> list[dict[str, Any]]:
        """On-hand rows (item, location, batch, lp, qty), in transit included."""
        return [r for r in self.engine.onhand()
                if (item is None or r["item"] == item)
                and (location is None or r["location"] == location)]

    def wip(self, *, resource: str | None = None) -> list[dict[str, Any]]:
        """WIP rows (resource, location, kind, order, op, item, batch, qty)."""
        return [r for r in self.engine.wip() if resource is None or r["resource"] == resource]

    def consumption(self, order: str | None = None) -> list[dict[str, Any]]:
        """Per order line: expected, posted, variance, posted by trigger (every order if None)."""
        return self.engine.consumption(order)

    def hours(self, *, order: str | None = None, resource: str | None = None
              ) -> list[dict[str, Any]]:
        """Standard vs reported hours per order, operation and resource."""
        return self.engine.hours(order=order, resource=resource)

    def findings(self, *, order: str | None = None, code: str | None = None
                 ) -> list[dict[str, Any]]:
        """Findings (code, severity, order, line, item, qty, events, message), sorted."""
        from backflush.projections.findings import findings

        codes = None if code is None else [code.upper()]
        return [f.as_dict() for f in findings(self.engine, order, codes)]

    def item_totals(self) -> dict[str, dict[str, Any]]:
        """Per item: received, produced, consumed, adjusted, on-hand (conservation check)."""
        return self.engine.item_totals()

    def orders(self) -> list[str]:
        """The production orders of the history, sorted."""
        return self.engine.orders()

    def to_jsonl(self) -> str:
        """The validated events as JSON Lines (arrival order kept for equal ``at``)."""
        return to_jsonl(self.events)


def replay(events: Iterable[Any], policy: Any = None, *, at: datetime | None = None,
           source: str = "<events>") -> ReplayResult:
    """Replay ``events`` in memory; the answers of a ledger that imported them.

    ``events``: dicts as in a JSONL file, JSON lines, or event models, in arrival order
    (validated as an import validates them; `BadInput` otherwise). They are applied by
    (``at``, arrival order), as the ledger applies them. ``policy``: a `backflush.Policy`,
    a dict or a policy file path replacing every recorded rule set (what-if); None replays
    under the recorded parameters. ``at``: only what had happened on the floor by then.
    """
    from backflush.ledger.codec import replay_dict
    from backflush.projections.engine import Replay

    if at is not None and at.tzinfo is None:
        raise BadInput("at: a timestamp needs an offset (e.g. 2026-11-21T08:00:00Z)")
    params = policy_params(policy)
    payloads = parse_events(events, source)
    # replay_dict turns the payload into the engine's dict in place: keep the payloads apart.
    applied = [replay_dict(orjson.loads(orjson.dumps(p)), seq)
               for seq, p in enumerate(payloads, start=1)]
    applied.sort(key=lambda e: (e["at"], e["seq"]))
    if at is not None:
        applied = [e for e in applied if e["at"] <= at]
    engine = Replay(policy=params).apply_all(applied)
    return ReplayResult(events=payloads if at is None else _upto(payloads, applied), engine=engine,
                        policy=params)


def _upto(payloads: list[dict[str, Any]], applied: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = {e["id"] for e in applied}
    return [p for p in payloads if p["id"] in keep]
