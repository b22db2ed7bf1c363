"""Provenance of a report: which ledger, which backflush, when, as of what, under which
policy, and whether the hash chains verified.

Everything is read from click's current context (the root ``--db``, the command's
``--at``/``--known-at``/``--policy`` parameters and the ledger the command opened), so the
commands themselves need not pass anything: `backflush.cli.output.render` and the HTML audit
ask for it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from backflush import __version__

# Not typing's, and hashlib and urllib loaded where used: the click-free query path
# (``cli.quick``) prints a table's footer with this module and never needs them.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    import click

_SECRET_PARAMS = {"password", "passfile", "sslpassword", "sslkey"}
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~/@:")


def _nothing_to_redact(db: str) -> bool:
    """Whether ``redact_url`` would give ``db`` back unchanged, told without
    ``urllib.parse`` (with ``ipaddress``, ~2.5 ms of a query process): a plain
    ``postgresql://[user@]host[:port][/db]`` with no password, parameters or escapes.
    ``tests/test_provenance.py`` holds it to the general path."""
    scheme, _, rest = db.partition("://")
    if scheme not in ("postgresql", "postgres") or not set(rest) <= _PLAIN:
        return False
    netloc = rest.split("/", 1)[0]
    if not netloc or netloc.count("@") > 1:
        return False
    user, at, host = netloc.rpartition("@")
    return (not at or (user != "" and ":" not in user)) and host != "" and host[0] != ":"


def redact_url(db: str) -> str:
    """The ledger location fit to print: a URL's password (and password parameters) removed."""
    if "://" not in db or _nothing_to_redact(db):
        return db
    return _redacted(db)


def _redacted(db: str) -> str:
    """``redact_url`` of a URL, by ``urllib.parse`` (the general path)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(db)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{host}" if user else host
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k not in _SECRET_PARAMS])
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def chain_head(ledger: Any) -> tuple[int, int, str]:
    """(events, last chained seq, its ledger-wide link): the recorded history named in three
    values, each read off a primary key.

    The link at a seq commits to every event recorded up to it (``ledger.anchor``), and
    ``backflush anchor`` records the same seq and link: a report and an anchor (or two
    reports) with the same pair were made from the same recorded history. (Reports used to
    name the Merkle root over the streams' heads instead, a read of every stream's head:
    0.25 s on every table of a 1M-event ledger.) Positions are 1..n (the importer gives
    max+1 under the write lock), so the highest is the count.
    """
    from backflush.ledger.codec import GENESIS  # (anchor's is the same; it loads orjson)

    with ledger.transaction(commit=False) as cur:
        # One statement, one snapshot (on PostgreSQL each statement reads its own).
        row = cur.execute("SELECT " + _HEAD_COLUMNS).fetchone()
    return int(row["n"] or 0), int(row["last_seq"] or 0), row["link"] or GENESIS


# The chain's head: the event count and the last chained seq and link, off primary keys.
_HEAD_COLUMNS = (
    "(SELECT MAX(seq) FROM bf_events) AS n,"
    " (SELECT seq FROM bf_chain ORDER BY seq DESC LIMIT 1) AS last_seq,"
    " (SELECT link FROM bf_chain ORDER BY seq DESC LIMIT 1) AS link"
)


def _table_exists(ledger: Any, name: str) -> bool:
    with ledger.transaction(commit=False) as cur:
        if ledger.dialect == "postgres":
            row = cur.execute("SELECT to_regclass(?) AS t", (name,)).fetchone()
            return row["t"] is not None
        row = cur.execute(
            "SELECT 1 AS x FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return row is not None


# ``chain_head`` and the latest ``bf_verify`` row in one statement: the footer of every
# table reads them, and on PostgreSQL each statement of a fresh connection is a round trip
# and a first look at its tables (three statements cost a table query 3-4 ms).
_STATE_SQL = (
    "SELECT " + _HEAD_COLUMNS + ","
    " v.verified_at, v.events, v.ok, v.heads FROM (SELECT 1 AS one) o LEFT JOIN"
    " (SELECT verified_at, events, ok, heads FROM bf_verify"
    " ORDER BY verified_at DESC LIMIT 1) v ON 1 = 1"
)


def ledger_status(ledger: Any) -> tuple[tuple[int, int, str], dict[str, Any]]:
    """(``chain_head``, ``verify_status``) of one snapshot, read in one statement."""
    from backflush.ledger.codec import GENESIS

    try:
        with ledger.transaction(commit=False) as cur:
            row = cur.execute(_STATE_SQL).fetchone()
    except Exception:  # noqa: BLE001  a ledger older than bf_verify: one thing at a time
        head = chain_head(ledger)
        return head, verify_status(ledger, head[0])
    head = (int(row["n"] or 0), int(row["last_seq"] or 0), row["link"] or GENESIS)
    return head, _verify_of(row if row["ok"] is not None else None, head[0])


def verify_status(ledger: Any, events_now: int) -> dict[str, Any]:
    """The latest ``bf_verify`` row (written by every ``backflush verify``), if any."""
    if not _table_exists(ledger, "bf_verify"):
        return {"status": "not verified"}
    with ledger.transaction(commit=False) as cur:
        row = cur.execute(
            "SELECT verified_at, events, ok, heads FROM bf_verify"
            " ORDER BY verified_at DESC LIMIT 1"
        ).fetchone()
    return _verify_of(row, events_now)


def _verify_of(row: Any, events_now: int) -> dict[str, Any]:
    if row is None:
        return {"status": "not verified"}
    when = row["verified_at"]
    if isinstance(when, int):  # microseconds since the epoch
        when = datetime.fromtimestamp(when / 1_000_000, tz=UTC)
    if isinstance(when, datetime):
        when = when.isoformat()
    ok = bool(row["ok"])
    out: dict[str, Any] = {
        "status": "ok" if ok else "FAILED",
        "verified_at": when,
        "events": int(row["events"]),
        "heads": row["heads"],
    }
    if ok and int(row["events"]) != events_now:
        out["status"] = "ok, but the ledger changed since"
    return out


def _when(v: Any, option: str) -> str | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        return v.isoformat()
    import click
    from backflush.cli.app import parse_when

    try:
        d = parse_when(str(v), option)
    except click.ClickException:
        return str(v)
    return d.isoformat() if d is not None else None


def _sha_of(path: str) -> str:
    import hashlib

    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return "unreadable"


def _policy(params: dict[str, Any], command: str | None) -> dict[str, Any]:
    if command == "check" and params.get("file"):  # `policy check FILE`: no replay at all
        return {"mode": "file checked", "file": str(params["file"]),
                "sha256": _sha_of(str(params["file"]))}
    pol = params.get("policy_file")
    if pol is None:
        pol = params.get("policy")
    if pol is None:
        return {"mode": "as recorded"}
    if isinstance(pol, dict):  # already parsed by the command: name what we can
        import hashlib

        import orjson

        loaded = _loaded_policy()
        if loaded is not None:
            return loaded
        digest = hashlib.sha256(orjson.dumps(pol, default=str,
                                             option=orjson.OPT_SORT_KEYS)).hexdigest()
        return {"mode": "what-if", "file": "(parsed parameters)", "sha256": digest}
    source = getattr(pol, "source", None)
    sha = getattr(pol, "sha256", None)
    if source is None:
        source = str(pol)
        sha = _sha_of(source)
    return {"mode": "what-if", "file": source, "sha256": sha}


def _loaded_policy() -> dict[str, Any] | None:
    import click

    ctx = click.get_current_context(silent=True)
    pol = None if ctx is None else ctx.meta.get("backflush.policy")
    if pol is None:
        return None
    return {"mode": "what-if", "file": pol.source, "sha256": pol.sha256}


def note_policy(policy: Any) -> None:
    """Remember the `Policy` the current command replays under (for its provenance)."""
    import click

    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta["backflush.policy"] = policy


def collect(ctx: click.Context | None = None, *, chain: bool = True) -> dict[str, Any]:
    """Provenance of the current command's output, as a JSON-ready dict.

    ``chain=False`` leaves out the chain's head and the verify status (reads of the ledger),
    for what only needs the policy (the what-if banner).
    """
    import click

    ctx = ctx or click.get_current_context(silent=True)
    if ctx is None:
        return {"backflush": __version__, "generated_at": datetime.now(UTC).isoformat()}
    root = ctx.find_root().obj or {}
    # the store the command opened (provenance never opens one itself: a read-only open
    # decided by the command must stay read-only)
    ledger = root.get("ledger") or getattr(root.get("api"), "_store", None)
    return provenance_of(str(root.get("db", "")), ctx.info_name, ctx.params, ledger,
                         chain=chain)


def provenance_of(db: str, command: str | None, params: dict[str, Any], ledger: Any, *,
                  chain: bool = True) -> dict[str, Any]:
    """``collect`` from what it reads off click's context: the ``--db`` given (or its
    default), the command's name and parameters, and the store it opened (None: not
    opened). The click-free query path (``cli.quick``) calls it directly."""
    generated = datetime.now(UTC).isoformat()
    out: dict[str, Any] = {
        "ledger": redact_url(db),
        "backflush": __version__,
        "generated_at": generated,
    }
    # as-of and policy only for the commands that take them (moves has --from/--to instead)
    if "at" in params or "known_at" in params:
        # no --at means now (the API's default); no --known-at means everything recorded
        out["at"] = _when(params.get("at"), "--at") or f"now ({generated})"
        out["known_at"] = _when(params.get("known_at"), "--known-at")
    out["policy"] = _policy(params, command)
    for opt in ("from_", "to"):
        if params.get(opt) is not None:
            out[opt.rstrip("_")] = _when(params[opt], "--" + opt.rstrip("_"))
    if not chain:
        return out
    if ledger is None:
        out["verify"] = {"status": "ledger not opened"}
        return out
    try:
        (events, last_seq, link), out["verify"] = ledger_status(ledger)
        out["events"], out["last_seq"], out["link"] = events, last_seq, link
    except Exception as exc:  # provenance must never hide the answer it describes
        out["verify"] = {"status": f"unknown ({type(exc).__name__})"}
    return out


def what_if_banner(meta: dict[str, Any]) -> str | None:
    """The one-line what-if warning, or None when the recorded policy is in force."""
    pol = meta.get("policy") or {}
    if pol.get("mode") != "what-if":
        return None
    return (f"WHAT-IF: replayed under policy {pol['file']} sha256 {pol['sha256']}"
            " - NOT the recorded policy")


def verify_text(meta: dict[str, Any]) -> str:
    """``verified ok 2026-11-03T…, 120 events`` or ``not verified``."""
    v = meta.get("verify") or {}
    if "verified_at" not in v:
        return v.get("status", "not verified")
    return f"verify {v['status']} at {v['verified_at']} ({v['events']} events)"


def footer_lines(meta: dict[str, Any]) -> list[str]:
    """Provenance as short human lines (the table footer and the HTML header use them)."""
    asof = []
    if "at" in meta or "known_at" in meta:
        asof = [f"at {meta.get('at') or 'now'}", f"known-at {meta.get('known_at') or 'now'}"]
    if meta.get("from"):
        asof.append(f"from {meta['from']}")
    if meta.get("to"):
        asof.append(f"to {meta['to']}")
    pol = meta.get("policy") or {}
    mode = pol.get("mode", "as recorded")
    policy = mode if "file" not in pol else f"{mode} {pol['file']} sha256 {pol['sha256']}"
    if mode == "what-if":
        policy = f"WHAT-IF {pol['file']} sha256 {pol['sha256']}"
    lines = [
        f"ledger {meta.get('ledger', '?')} · backflush {meta['backflush']} · "
        f"generated {meta['generated_at']}",
        " · ".join([*asof, f"policy {policy}"]),
    ]
    chain = verify_text(meta)
    if meta.get("link"):
        chain += f" · chain link {meta['link']} at seq {meta['last_seq']} ({meta['events']} events)"
    lines.append(chain)
    return lines
