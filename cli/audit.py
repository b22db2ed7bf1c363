"""Audit commands: findings, audit ORDER (table, JSON, HTML), policy check, demo."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import orjson
from backflush.cli.app import EXIT_FINDINGS, Fail, cli, open_ledger
from backflush.cli.output import _plain, output_options, render
from backflush.cli.queries import asof_options, load_policy
from backflush.projections.findings import CODES, SEVERITIES, SEVERITY_RANK, Finding

FINDING_COLUMNS = ["code", "severity", "order", "line", "item", "qty", "events", "message"]
import backflush.examples as _examples  # noqa: E402

EXAMPLES = Path(_examples.__path__[0])


def _fail_on_option(f):
    return click.option(
        "--fail-on",
        type=click.Choice(SEVERITIES),
        default=None,
        help="Exit 1 when a finding at or above this severity exists.",
    )(f)


def _exit_for(ctx: click.Context, found: list[Finding], fail_on: str | None) -> None:
    if fail_on is not None and any(f.rank >= SEVERITY_RANK[fail_on] for f in found):
        ctx.exit(EXIT_FINDINGS)


def compute_findings(ledger, at, known_at, policy, order=None, code=None) -> list[Finding]:
    """Findings of the whole ledger as of ``at``/``known_at`` under ``policy``, filtered.

    Always a global replay: negative on-hand and batch resolution depend on other orders.
    """
    from backflush.projections import asof

    codes = [code] if code else None
    if order is not None and policy is None and known_at is None:
        return asof.order_findings(ledger, order, at, codes)  # the order's own path
    found = asof.findings_replay(ledger, at, known_at, policy, codes)
    return found if order is None else [f for f in found if f.order == order]


def _show_findings(found: list[Finding], fmt: str) -> str:
    return render([f.as_dict() for f in found], FINDING_COLUMNS, fmt)


@cli.command("findings")
@click.option("--code", default=None, help="Only this finding code.")
@click.option("--order", default=None, help="Only this production order.")
@asof_options()
@_fail_on_option
@output_options
@click.pass_context
def findings_cmd(ctx: click.Context, code: str | None, order: str | None, at: datetime | None,
                 known_at: datetime | None, policy: dict | None, fail_on: str | None,
                 fmt: str) -> None:
    """Findings (double flush, scrap shortfall, variances, negative stock...) by replay."""
    if code is not None:
        code = code.upper()
        if code not in CODES:
            raise Fail(f"--code: unknown finding code {code!r} (known: {', '.join(CODES)})")
        if code == "POLICY_OVERLAP":
            raise Fail("--code: POLICY_OVERLAP is reported by `backflush policy check`")
    found = compute_findings(open_ledger(ctx), at, known_at, policy, order, code)
    click.echo(_show_findings(found, fmt))
    _exit_for(ctx, found, fail_on)


# --- audit ---------------------------------------------------------------------------------


def compute_audit(ledger, order: str, at=None, known_at=None, policy=None) -> dict[str, Any]:
    """The audit of one order; fast order-local path unless a policy or known-at is given."""
    from backflush.ledger.events import MASTER_TYPES
    from backflush.ledger.store import to_us
    from backflush.projections import asof
    from backflush.projections import audit as A
    from backflush.projections import materialise as mat

    if policy is None and known_at is None:
        mat.catch_up(ledger)
        rows = mat.flushes_of(ledger, order, to_us(at) if at is not None else None)
        events = list(asof.order_events(ledger, order, at, None))
        tracked = {e["item"] for e in events
                   if e["type"] == "ItemDefined" and e.get("tracking") in ("batch", "serial")}
        seqs = {e["seq"]: e["id"] for e in events if e["type"] not in MASTER_TYPES}

        def global_findings(o):
            glob = A.unresolved_from_rows(order, rows, tracked)
            glob += A.negative_findings(order, A.negative_takes(ledger, seqs), o.all_lines())
            return glob

        pos = {e["id"]: (to_us(e["at"]), e["seq"]) for e in events}

        def onhand_at(item, location, event_id):
            return A.onhand_after(ledger, item, location, *pos[event_id])

        result = A.audit_order(events, order, None, rows, global_findings, onhand_at)
        if result is None:
            raise Fail(f"unknown order {order!r}")
        return result
    engine_events = mat.events_for_replay(
        ledger,
        at_lte=to_us(at) if at is not None else None,
        rec_lte=to_us(known_at) if known_at is not None else None,
    )
    result = A.audit_order(engine_events, order, policy)
    if result is None:
        raise Fail(f"unknown order {order!r}")
    return result


def _q(v: Any) -> str:
    p = _plain(v)
    return "" if p is None else str(p)


def audit_text(a: dict[str, Any]) -> str:
    """A terminal-readable audit: header, findings, lines, then the timeline."""
    out = [f"Order {a['order']}: {_q(a['qty'])} x {a['item']}  (status {a['status']}, "
           f"BOM {a['bom'] or '-'}, route {a['route'] or '-'})", ""]
    if a["findings"]:
        out.append("Findings:")
        for f in a["findings"]:
            line = f"line {f['line']}" if f["line"] is not None else "order"
            out.append(f"  {f['severity'].upper():7} {f['code']:18} {line:9} qty {_q(f['qty']):>8}"
                       f"  {f['message']}  [arises at {f['arises_at']}]")
    else:
        out.append("Findings: none")
    out.append("")
    out.append(render(a["lines"], ["line", "item", "principle", "op", "location", "expected",
                                   "posted", "variance", "by_trigger"], "table"))
    out.append("")
    out.append("Timeline:")
    for t in a["timeline"]:
        det = " ".join(f"{k}={_q(t[k])}" for k in
                       ("op", "good", "error", "qty", "item", "line", "location",
                        "from_location", "to_location", "batch", "reverses") if k in t)
        dev = f" [{t['device']}]" if t.get("device") else ""
        out.append(f"{t['seq']:>3}. {_q(t['at'])}  {t['type']}{dev}  {det}  ({t['id']})")
        for fl in t["flushed"]:
            where = fl["location"] + (f" batch {fl['batch']}" if fl["batch"] else "")
            out.append(f"       flushed line {fl['line']} {fl['item']} {_q(fl['qty'])} from {where}"
                       f" ({fl['trigger']}{'/' + fl['device'] if fl['device'] else ''})")
        if t["flushed"]:
            run = ", ".join(f"{r['line']}: {_q(r['posted'])}/{_q(r['expected'])}"
                            for r in t["running"])
            out.append(f"       posted/expected  {run}")
        for f in t["findings"]:
            out.append(f"       >> {f['severity'].upper()} {f['code']}: {f['message']}")
    return "\n".join(out)


@cli.command("audit")
@click.argument("order")
@asof_options()
@click.option("--json", "as_json", is_flag=True, help="Output a JSON object.")
@click.option("--html", "html_file", type=click.Path(dir_okay=False), default=None,
              help="Also write a self-contained HTML report to this file.")
@click.pass_context
def audit_cmd(ctx: click.Context, order: str, at: datetime | None, known_at: datetime | None,
              policy: dict | None, as_json: bool, html_file: str | None) -> None:
    """An order's history replayed step by step: what each event flushed, running totals,
    and the findings at the event where they arise."""
    a = compute_audit(open_ledger(ctx), order, at, known_at, policy)
    if html_file is not None:
        from backflush.cli.report import audit_html

        try:
            Path(html_file).write_text(audit_html(a), encoding="utf-8")
        except OSError as exc:
            raise Fail(f"--html: {html_file}: {exc.strerror}") from None
    if as_json:
        click.echo(orjson.dumps(_plain(a), option=orjson.OPT_INDENT_2).decode())
    elif html_file is None:
        click.echo(audit_text(a))
    else:
        click.echo(f"audit of {order} written to {html_file}")


# --- policy check --------------------------------------------------------------------------


@cli.group("policy")
def policy_group() -> None:
    """Flushing policies: check for overlapping rules."""


def recorded_params(ledger, at=None, known_at=None):
    """The ProductionParametersSet in force (None: none recorded → D365 defaults)."""
    from backflush.ledger.store import to_us
    from backflush.projections import materialise as mat

    last = None
    for ev in mat.events_for_replay(
        ledger,
        types=["ProductionParametersSet"],
        at_lte=to_us(at) if at is not None else None,
        rec_lte=to_us(known_at) if known_at is not None else None,
    ):
        last = ev
    return last


@policy_group.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--at", "at", default=None, help="Parameters in force at this time.")
@click.option("--known-at", default=None, help="As recorded by the ledger by then.")
@_fail_on_option
@output_options
@click.pass_context
def policy_check_cmd(ctx: click.Context, file: str | None, at: str | None,
                     known_at: str | None, fail_on: str | None, fmt: str) -> None:
    """POLICY_OVERLAP: rules of two trigger kinds that can flush the same line twice.

    Checks FILE (a --policy file), else the parameters recorded in the ledger.
    """
    from backflush.cli.app import parse_when
    from backflush.projections.findings import policy_overlaps

    if file is not None:
        policy = load_policy(file)
    else:
        policy = recorded_params(open_ledger(ctx), parse_when(at, "--at"),
                                 parse_when(known_at, "--known-at"))
    found = policy_overlaps(policy)
    if fmt == "table" and not found:
        click.echo("no overlapping rules")
    else:
        click.echo(_show_findings(found, fmt))
    _exit_for(ctx, found, fail_on)


# --- demo ----------------------------------------------------------------------------------

DEMO_ORDER = "P001T-2"
DEMO_EXAMPLE = "001-terminals-and-scanner"


def _is_sqlite_file(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


@cli.command("demo")
@click.pass_context
def demo_cmd(ctx: click.Context) -> None:
    """Import the seed examples into a fresh ledger, show findings, one audit and a what-if."""
    from backflush.ledger.importer import run_import
    from backflush.projections import materialise as mat

    db = ctx.find_root().obj["db"]
    if "://" not in db:
        p = Path(db)
        if p.exists():
            if not _is_sqlite_file(p):
                raise Fail(f"--db: {db} exists and is not a SQLite ledger; not touching it")
            try:  # make sure it is not open elsewhere in this process
                sqlite3.connect(p).close()
            except sqlite3.Error:
                pass
            for suffix in ("", "-wal", "-shm"):
                Path(str(p) + suffix).unlink(missing_ok=True)
            click.echo(f"demo: removed the existing ledger {db} to start fresh")
    ledger = open_ledger(ctx)
    files = sorted(EXAMPLES.glob("*/events.jsonl"))
    if not files:
        raise Fail(f"no examples found under {EXAMPLES}")
    for f in files:
        res = run_import(ledger, [str(f)])
        if res.errors:
            raise Fail(f"{f}: {res.errors[0]}")
        click.echo(f"imported {f.parent.name}: {res.appended} events")
    mat.catch_up(ledger)
    found = compute_findings(ledger, None, None, None)
    click.echo(f"\n== backflush findings ({len(found)})\n")
    click.echo(_show_findings(found, "table"))
    click.echo(f"\n== backflush audit {DEMO_ORDER}\n")
    click.echo(audit_text(compute_audit(ledger, DEMO_ORDER)))
    fix = EXAMPLES / DEMO_EXAMPLE / "fix-policy.json"
    if fix.exists():
        policy = load_policy(str(fix))
        orders = sorted({f["order"] for f in _example_orders(DEMO_EXAMPLE)})
        what_if = [f for f in compute_findings(ledger, None, None, policy)
                   if f.order in orders]
        now = [f for f in found if f.order in orders]
        click.echo(f"\n== what if: backflush findings --policy {fix.relative_to(EXAMPLES.parent)}")
        click.echo(f"orders {', '.join(orders)}: {len(now)} findings as recorded, "
                   f"{len(what_if)} under the fix policy")
        for f in what_if:
            click.echo(f"  {f.code} {f.order} line {f.line}: {f.message}")


def _example_orders(name: str) -> list[dict[str, Any]]:
    out = []
    with (EXAMPLES / name / "events.jsonl").open("rb") as fh:
        for raw in fh:
            if raw.strip():
                ev = orjson.loads(raw)
                if ev.get("type") == "OrderCreated":
                    out.append(ev)
    return out
