"""The stored encoding of events (orjson) and the decoding used by replay.

A stored event's state is ``{"e": payload, "rec": recorded, "prev": hash, "hash": hash}``:
the normalised payload (see ``ledger.events.normalise``, with its ``id``), the time the
ledger recorded it, and the hash chain of its stream. The chain hash covers the stream,
the position, the recorded time, the previous hash and the canonical payload, so any
altered, removed or reordered row breaks the chain (``ledger.integrity``).

Replay must not pay for pydantic per event: ``replay_dict`` turns a stored payload into
the plain dict the engine expects (Decimal quantities, aware ``at``, absent optionals as
None) with a per-type table of fields computed once from the models.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

from backflush.ledger.names import (
    BOM_LINE_DECIMALS,
    BOM_LINE_OPTIONAL,
    OPERATION_DECIMALS,
    REPLAY_FIELDS,
    RULE_OPTIONAL,
)

TYPE_CHECKING = False  # not typing's: a query process never imports typing (~3 ms)
if TYPE_CHECKING:
    from typing import Any

GENESIS = "0" * 64


def canonical(payload: dict[str, Any]) -> bytes:
    """Canonical bytes of a payload: sorted keys, no whitespace (what hashes are taken of)."""
    return (_SORTED_DUMPS or _sorted_dumps())(payload)


def content_digest(body: bytes) -> str:
    """Digest of what an event says (its canonical bytes without the id)."""
    return (_SHA256 or _sha256())(body).hexdigest()[:32]


def chain_hash(prev: str, stream: str, version: int, recorded: str, body: bytes, eid: str) -> str:
    """Hash of one link of a stream's chain: position, time, predecessor, id and content."""
    return (_SHA256 or _sha256())(
        b"%b\x00%b\x00%d\x00%b\x00%b\x00%b"
        % (prev.encode(), stream.encode(), version, recorded.encode(), eid.encode(), body)
    ).hexdigest()


# hashlib and orjson are loaded at the first hash, not with this module: a query that
# replays one order decodes events and never hashes, and orjson's import loads dataclasses,
# inspect and uuid (~10 ms). Kept once loaded: an ``import`` in a compiled function is a
# lookup per call, which a verify of 1M events paid 0.2 s for.
_SHA256 = None
_SORTED_DUMPS = None


def _sha256() -> Any:
    global _SHA256
    import hashlib

    _SHA256 = hashlib.sha256
    return _SHA256


def _sorted_dumps() -> Any:
    global _SORTED_DUMPS
    from functools import partial

    import orjson

    _SORTED_DUMPS = partial(orjson.dumps, option=orjson.OPT_SORT_KEYS)
    return _SORTED_DUMPS


def body_of(payload: dict[str, Any]) -> bytes:
    """Canonical bytes of a stored payload without its id (what the chain hash covers)."""
    return canonical({k: v for k, v in payload.items() if k != "id"})


def encode_state(payload: dict[str, Any], recorded: str, prev: str, hash_: str) -> bytes:
    """The bytes kept in the event store for one event."""
    import orjson

    return orjson.dumps({"e": payload, "rec": recorded, "prev": prev, "hash": hash_})


def state_of(body: bytes, eid: str, recorded: bytes, prev: str, hash_: str) -> bytes:
    """``encode_state`` from the canonical body, without decoding it again (import's path).

    The payload is the body with its ``id`` added last; ``body_of`` of it gives the body.
    """
    import orjson

    return b'{"e":%b,"id":%b},"rec":"%b","prev":"%b","hash":"%b"}' % (
        body[:-1],
        orjson.dumps(eid),
        recorded,
        prev.encode(),
        hash_.encode(),
    )


def decode_state(state: bytes) -> dict[str, Any]:
    """Inverse of ``encode_state``."""
    import orjson

    return orjson.loads(state)


def decimal_fields(model: type) -> tuple[str, ...]:
    """The fields of a pydantic model that hold one Decimal (``ledger.events`` checks
    ``ledger.names.REPLAY_FIELDS`` with it)."""
    out = []
    for name, f in model.model_fields.items():
        ann = repr(f.annotation)
        if "Decimal" in ann and "list" not in ann:
            out.append(name)
    return tuple(out)


def optional_fields(model: type) -> tuple[str, ...]:
    """The optional fields of a pydantic model whose default is None."""
    return tuple(
        n for n, f in model.model_fields.items() if not f.is_required() and f.default is None
    )


# Plain data (no pydantic import on a query's path); ledger.events proves it matches.
_SPEC = REPLAY_FIELDS
_LINE_DEC, _LINE_OPT = BOM_LINE_DECIMALS, BOM_LINE_OPTIONAL
_OP_DEC, _RULE_OPT = OPERATION_DECIMALS, RULE_OPTIONAL


def _fill(d: dict[str, Any], decimals: tuple[str, ...], optional: tuple[str, ...]) -> None:
    for n in decimals:
        v = d.get(n)
        if v is not None:
            d[n] = Decimal(v)
    for n in optional:
        if n not in d:
            d[n] = None


def replay_dict(payload: dict[str, Any], seq: int) -> dict[str, Any]:
    """The engine's view of a stored payload (mutates and returns ``payload``)."""
    t = payload["type"]
    decimals, optional = _SPEC[t]
    _fill(payload, decimals, optional)
    payload["at"] = datetime.fromisoformat(payload["at"])
    payload["seq"] = seq
    if t == "BomDefined":
        for line in payload["lines"]:
            _fill(line, _LINE_DEC, _LINE_OPT)
    elif t == "RouteDefined":
        for op in payload["operations"]:
            _fill(op, _OP_DEC, ())
    elif t == "ProductionParametersSet" and payload["rules"] is not None:
        for rule in payload["rules"]:
            _fill(rule, (), _RULE_OPT)
    return payload


def replay_decoder() -> Callable[[bytes, int], dict[str, Any]]:
    """``replay_dict`` of a stored state's bytes, as one function for the replay's hot loop:
    the per-type field tables and the nested parts looked up once per event, no call per
    field group (the same dict as ``replay_dict(orjson.loads(state)["e"], seq)``)."""
    import orjson

    loads, fromiso, dec = orjson.loads, datetime.fromisoformat, Decimal
    nested = {"BomDefined", "RouteDefined", "ProductionParametersSet"}
    spec = {t: (d, o, t in nested) for t, (d, o) in _SPEC.items()}

    def decode(state: bytes, seq: int) -> dict[str, Any]:
        try:
            payload = loads(state)["e"]
            decimals, optional, deep = spec[payload["type"]]
            if deep:  # rare (master data with nested parts): the general path
                return replay_dict(payload, seq)
            for n in decimals:
                v = payload.get(n)
                if v is not None:
                    payload[n] = dec(v)
            for n in optional:
                if n not in payload:
                    payload[n] = None
            payload["at"] = fromiso(payload["at"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise unreadable(seq) from None
        payload["seq"] = seq
        return payload

    return decode


def payload_of(state: bytes | str, seq: int | None = None,
               loads: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """The event a stored state holds (``loads``: the JSON parser, default orjson's);
    ``StoredEventUnreadable`` naming ``seq`` when the state is not one."""
    if loads is None:
        import orjson

        loads = orjson.loads
    try:
        payload = loads(state)["e"]
    except (ValueError, KeyError, TypeError):
        raise unreadable(seq) from None
    if type(payload) is not dict or type(payload.get("type")) is not str:
        raise unreadable(seq)
    return payload


def unreadable(seq: int | None) -> Exception:
    """The error for a stored state that is not a ledger event (an edited database)."""
    from backflush.errors import StoredEventUnreadable

    return StoredEventUnreadable(seq)


def replay_policy(policy: dict[str, Any]) -> dict[str, Any]:
    """The engine's view of a ``--policy`` (ProductionParametersSet fields, no envelope)."""
    d = dict(policy)
    d["tolerance_pct"] = Decimal(d.get("tolerance_pct", "0"))
    d.setdefault("default_input_location", "BACKFLUSH")
    d.setdefault("rules", None)
    if d["rules"] is not None:
        d["rules"] = [dict(r) for r in d["rules"]]
        for rule in d["rules"]:
            _fill(rule, (), _RULE_OPT)
    return d
