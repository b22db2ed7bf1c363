"""The ledger-wide chain and anchors: tamper evidence across streams and outside the database.

Each stream is hash-chained by itself (``ledger.codec``), which cannot show a stream's tail
removed, a whole stream removed, or an event appended with a recomputed hash. So every
event is also linked to the event recorded before it, whatever its stream, in
``bf_chain(seq, link, stream, version, id)``, written in the same transaction as the event::

    link(n) = sha256(json([link(n-1), seq, stream, version, event hash, rec_us]))

(the JSON array makes the fields unambiguous; ``link(0)`` is ``GENESIS``). Removing,
altering or inserting any event then breaks the links of every later event. ``stream``,
``version`` and ``id`` are labels, not links: the ledger keeps each event in one row, so
when that row is removed they are what lets ``verify`` name the event that is gone.

Someone with write access can still recompute every link. An *anchor* is the answer: a
checkpoint (event count, last seq, its link, a Merkle root over the streams' heads) kept
outside the database, optionally signed with an Ed25519 key the database never sees.
``verify --anchor`` recomputes the link at the anchored seq from the events themselves;
a rewritten or re-chained history cannot reproduce it.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # store imports this module: no import of the store at run time
    from backflush.ledger.store import Cursor

GENESIS = "0" * 64
ANCHOR_FORMAT = 1

def chain_ddl(dialect: str) -> str:
    """``bf_chain``'s DDL. On SQLite ``INTEGER PRIMARY KEY`` makes seq the rowid: no second
    b-tree to write per event (``BIGINT PRIMARY KEY`` would be one)."""
    seq = "seq BIGINT PRIMARY KEY" if dialect == "postgres" else "seq INTEGER PRIMARY KEY"
    return (
        f"CREATE TABLE IF NOT EXISTS bf_chain ({seq}, link TEXT NOT NULL, stream TEXT,"
        " version INTEGER, id TEXT)"
    )


CHAIN_DDL = chain_ddl("postgres")  # portable form (SQLite accepts it too)


def link_of(prev: str, seq: int, stream: str, version: int, hash_: str, rec_us: int) -> str:
    """The ledger-wide link of one event (see the module docstring)."""
    return hashlib.sha256(orjson.dumps([prev, seq, stream, version, hash_, rec_us])).hexdigest()


def last_link(cur: Cursor) -> tuple[int, str]:
    """(seq, link) of the last chained event; (0, GENESIS) when none is."""
    row = cur.execute("SELECT seq, link FROM bf_chain ORDER BY seq DESC LIMIT 1").fetchone()
    return (0, GENESIS) if row is None else (row["seq"], row["link"])


# --- Merkle root over stream heads --------------------------------------------------------


def _leaf(stream: str, version: int, hash_: str) -> bytes:
    # Leaves and inner nodes are hashed with different prefixes (as in RFC 6962), so a
    # node can never pass for a leaf.
    return hashlib.sha256(b"\x00" + orjson.dumps([stream, version, hash_])).digest()


def merkle_root(heads: Mapping[str, tuple[int, str]] | Iterable[tuple[str, int, str]]) -> str:
    """Merkle root (hex) over stream heads: stream -> (last version, last hash).

    Leaves in stream name order; an odd node is carried up unchanged. The root of no
    streams is sha256 of nothing.
    """
    items = (
        sorted((s, v, h) for s, (v, h) in heads.items())
        if isinstance(heads, Mapping)
        else sorted(heads)
    )
    level = [_leaf(s, v, h) for s, v, h in items]
    if not level:
        return hashlib.sha256(b"").hexdigest()
    while len(level) > 1:
        nxt = [
            hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest()
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].hex()


# --- anchors ------------------------------------------------------------------------------


class AnchorError(ValueError):
    """An anchor line or key file that cannot be read or used."""


def make_anchor(
    events: int, last_seq: int, link: str, heads_root: str, streams: int, version: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The checkpoint fields of an anchor (unsigned)."""
    return {
        "anchor": ANCHOR_FORMAT,
        "events": events,
        "last_seq": last_seq,
        "link": link,
        "heads_root": heads_root,
        "streams": streams,
        "generated_at": (now or datetime.now(UTC)).isoformat(),
        "backflush": version,
    }


def _signed_bytes(anchor: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in anchor.items() if k not in ("sig", "pubkey")}
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:  # the [anchor] extra
        raise AnchorError(
            "signing needs the 'cryptography' package: pip install 'backflush[anchor]'"
        ) from None
    return serialization, ed25519


def generate_key(path: str) -> str:
    """Write a new Ed25519 private key (PEM, mode 0600) to ``path`` and its public key to
    ``path + '.pub'``; returns the public key's path."""
    import os

    serialization, ed25519 = _crypto()
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with open(path + ".pub", "xb") as fh:
        fh.write(pub)
    return path + ".pub"


def _load_private(path: str) -> Any:
    serialization, ed25519 = _crypto()
    try:
        with open(path, "rb") as fh:
            key = serialization.load_pem_private_key(fh.read(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise AnchorError(f"{path}: not a readable unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise AnchorError(f"{path}: not an Ed25519 private key")
    return key


def load_public(path: str) -> Any:
    """An Ed25519 public key from a PEM file."""
    serialization, ed25519 = _crypto()
    try:
        with open(path, "rb") as fh:
            key = serialization.load_pem_public_key(fh.read())
    except (OSError, ValueError, TypeError) as exc:
        raise AnchorError(f"{path}: not a readable PEM public key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise AnchorError(f"{path}: not an Ed25519 public key")
    return key


def _raw_public(key: Any) -> bytes:
    serialization, _ = _crypto()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign(anchor: dict[str, Any], key_path: str) -> dict[str, Any]:
    """``anchor`` with ``sig`` (Ed25519 over its canonical JSON) and ``pubkey`` (raw, base64)."""
    key = _load_private(key_path)
    out = dict(anchor)
    out["sig"] = base64.b64encode(key.sign(_signed_bytes(anchor))).decode()
    out["pubkey"] = base64.b64encode(_raw_public(key.public_key())).decode()
    return out


def check_signature(anchor: Mapping[str, Any], pubkey: Any) -> str | None:
    """None when ``anchor`` is signed by ``pubkey``; else why not."""
    from cryptography.exceptions import InvalidSignature

    sig = anchor.get("sig")
    if not sig:
        return "anchor is not signed"
    try:
        pubkey.verify(base64.b64decode(sig, validate=True), _signed_bytes(anchor))
    except (InvalidSignature, ValueError):
        return "signature does not match (anchor altered or signed by another key)"
    return None


_FIELDS = {
    "events": int, "last_seq": int, "link": str, "heads_root": str, "streams": int,
}


def parse_anchors(path: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, anchor) of every anchor line of a file; bad lines raise AnchorError."""
    out = []
    try:
        with open(path, "rb") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise AnchorError(f"{path}: {exc.strerror or exc}") from None
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            d = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise AnchorError(f"{path}:{n}: not a JSON anchor line") from None
        if not isinstance(d, dict) or d.get("anchor") != ANCHOR_FORMAT:
            raise AnchorError(f"{path}:{n}: anchor: not a backflush anchor (format 1)")
        for k, t in _FIELDS.items():
            if not isinstance(d.get(k), t) or isinstance(d.get(k), bool):
                raise AnchorError(f"{path}:{n}: {k}: missing or not a {t.__name__}")
        out.append((n, d))
    if not out:
        raise AnchorError(f"{path}: no anchor in the file")
    return out


def heads_digest(ledger: Any) -> str:
    """Merkle root over the streams' heads as the index records them (one query).

    Here, not in ``ledger.integrity``, so that report provenance can name it without loading
    the importer and the event models."""
    return merkle_root(ledger_state(ledger)[3])


def ledger_state(ledger: Any) -> tuple[int, int, str, list[tuple[str, int, str]]]:
    """(events, last chained seq, its link, each stream's head as (stream, version, hash)).

    One statement, so one snapshot: on PostgreSQL each statement of a read is its own
    (READ COMMITTED), and an import committed between two reads gave a count of one state
    and heads of another (an anchor the ledger never matched; verify then said TAMPERED).
    """
    with ledger.transaction(commit=False) as cur:
        rows = cur.execute(
            "SELECT (SELECT COUNT(*) FROM bf_events) AS n,"
            " (SELECT seq FROM bf_chain ORDER BY seq DESC LIMIT 1) AS last_seq,"
            " (SELECT link FROM bf_chain ORDER BY seq DESC LIMIT 1) AS link,"
            " x.stream, x.version, x.hash FROM (SELECT 1 AS one) o LEFT JOIN"
            " (SELECT e.stream, e.version, e.hash FROM bf_events e JOIN (SELECT stream,"
            " MAX(version) AS v FROM bf_events GROUP BY stream) h"
            " ON e.stream = h.stream AND e.version = h.v) x ON 1 = 1"
        ).fetchall()
    first = rows[0]
    heads = [(r["stream"], r["version"], r["hash"]) for r in rows if r["stream"] is not None]
    return int(first["n"]), first["last_seq"] or 0, first["link"] or GENESIS, heads

