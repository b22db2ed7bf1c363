"""Audit commands: findings, audit ORDER (table, JSON, HTML), policy check, demo."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click
import orjson
from backflush.cli.app import (
    EXIT_FINDINGS,
    Fail,
    api_ledger,
    check_output_path,
    cli,
    output_file,
)
from backflush.cli.output import (
    FINDING_COLUMNS,
    _plain,
    output_options,
    render,
    render_stream,
)
from backflush.cli.queries import asof_options, load_policy
from backflush.projections.findings import SEVERITIES, SEVERITY_RANK

if TYPE_CHECKING:
    from pathlib import Path


def examples_dir() -> Path:
    """Where the seed examples are installed (the ``backflush.examples`` package); pathlib
    loads for the demo, not for every command of this module."""
    from pathlib import Path

    import backflush.examples as examples

    return Path(examples.__path__[0])


def _fail_on_option(f):
    return click.option(
        "--fail-on",
        type=click.Choice(SEVERITIES),
        default=None,
        help="Exit 1 when a finding at or above this severity exists.",
    )(f)


def _exit_for(ctx: click.Context, found: list[dict[str, Any]], fail_on: str | None) -> None:
    if fail_on is not None and any(
        SEVERITY_RANK[f["severity"]] >= SEVERITY_RANK[fail_on] for f in found
    ):
        ctx.exit(EXIT_FINDINGS)


class _SeverityTally:
    """Passes findings through, keeping one of each severity (what ``--fail-on`` needs)."""

    def __init__(self, rows: Any):
        self.rows = iter(rows)
        self.found: list[dict[str, Any]] = []
        self._seen: set[str] = set()

    def __iter__(self) -> Any:
        for f in self.rows:
            if f["severity"] not in self._seen:
                self._seen.add(f["severity"])
                self.found.append(f)
            yield f


def _show_findings(found: list[dict[str, Any]], fmt: str) -> str:
    return render(found, FINDING_COLUMNS, fmt)


@cli.command("findings")
@click.option("--code", default=None, help="Only this finding code.")
@click.option("--order", default=None, help="Only this production order.")
@click.option("--summary", is_flag=True, help="Counts by code and severity instead of rows.")
@asof_options()
@_fail_on_option
@output_options
@click.pass_context
def findings_cmd(ctx: click.Context, code: str | None, order: str | None, at: datetime | None,
                 known_at: datetime | None, policy: Any, fail_on: str | None,
                 fmt: str, summary: bool = False) -> None:
    """Findings (double flush, scrap shortfall, variances, negative stock...) by replay."""
    if order is None and not summary:
        # The whole ledger: printed while the replay runs (`render_stream`).
        rows = _SeverityTally(api_ledger(ctx).iter_findings(code=code, at=at, known_at=known_at,
                                                         policy=policy))
        for piece in render_stream(rows, FINDING_COLUMNS, fmt):
            click.echo(piece, nl=False)
        _exit_for(ctx, rows.found, fail_on)
        return
    found = api_ledger(ctx).findings(order=order, code=code, at=at, known_at=known_at,
                                     policy=policy)
    if summary:
        from backflush.cli.output import SUMMARY_COLUMNS, summarize

        click.echo(render(summarize(found), SUMMARY_COLUMNS, fmt))
    else:
        click.echo(_show_findings(found, fmt))
    _exit_for(ctx, found, fail_on)


# --- audit ---------------------------------------------------------------------------------


def _q(v: Any) -> str:
    p = _plain(v)
    return "" if p is None else str(p)


def audit_text(a: dict[str, Any]) -> str:
    """A terminal-readable audit: header, findings, lines, then the timeline."""
    return "\n".join(audit_text_lines(a, a["timeline"]))


def audit_text_lines(a: dict[str, Any], timeline: Iterable[dict[str, Any]]) -> Iterator[str]:
    """``audit_text`` piece by piece (a piece may hold line breaks: the lines table), the
    timeline's entries taken from ``timeline`` as they come."""
    yield from _audit_head(a)
    yield "Timeline:"
    for t in timeline:
        yield from _timeline_entry(t)


def _audit_head(a: dict[str, Any]) -> list[str]:
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
    return out


def _timeline_entry(t: dict[str, Any]) -> list[str]:
    det = " ".join(f"{k}={_q(t[k])}" for k in
                   ("op", "good", "error", "qty", "item", "line", "location",
                    "from_location", "to_location", "batch", "reverses") if k in t)
    dev = f" [{t['device']}]" if t.get("device") else ""
    out = [f"{t['seq']:>3}. {_q(t['at'])}  {t['type']}{dev}  {det}  ({t['id']})"]
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
    return out


@cli.command("audit")
@click.argument("order")
@asof_options()
@click.option("--json", "as_json", is_flag=True, help="Output a JSON object.")
@click.option("--html", "html_file", type=click.Path(dir_okay=False), default=None,
              help="Also write a self-contained HTML report to this file.")
@click.pass_context
def audit_cmd(ctx: click.Context, order: str, at: datetime | None, known_at: datetime | None,
              policy: Any, as_json: bool, html_file: str | None) -> None:
    """An order's history replayed step by step: what each event flushed, running totals,
    and the findings at the event where they arise."""
    if html_file is not None:  # refuse a bad path before any work
        check_output_path(ctx, html_file, "--html")
    _audit_streamed(ctx, order, at, known_at, policy, as_json, html_file)


def _audit_streamed(ctx: click.Context, order: str, at: datetime | None,
                    known_at: datetime | None, policy: Any, as_json: bool,
                    html_file: str | None = None) -> None:
    """``audit`` as text, JSON or HTML, its timeline kept on disk while the replay makes it
    and written out from there: an order of 300 BOM lines and 2,200 events has 94 MB of
    timeline (every line's running totals after every event), which took 775 MB held whole."""
    import tempfile

    from backflush.cli.provenance import collect

    with tempfile.TemporaryFile() as spill:
        def keep(entry: dict[str, Any]) -> None:
            # ``_plain`` only where orjson cannot go itself (a copy of each entry's hundreds
            # of running totals cost a third of a long audit's time).
            spill.write(orjson.dumps(entry, default=_plain,
                                     option=orjson.OPT_PASSTHROUGH_DATETIME))
            spill.write(b"\n")

        a = api_ledger(ctx).audit(order, at=at, known_at=known_at, policy=policy,
                                  timeline=keep)

        def entries() -> Iterator[dict[str, Any]]:
            spill.seek(0)
            return (orjson.loads(line) for line in spill)

        meta = collect()
        if html_file is not None:
            from backflush.cli.report import audit_html_parts

            def dated() -> Iterator[dict[str, Any]]:
                # The page shows "at" as the replay gave it (a datetime, not its text).
                for e in entries():
                    e["at"] = datetime.fromisoformat(e["at"])
                    yield e

            with output_file(ctx, html_file, "--html") as fh:
                first = True
                for part in audit_html_parts(a, meta, dated):
                    fh.write(part.encode("utf-8") if first else ("\n" + part).encode("utf-8"))
                    first = False
        if as_json:
            _audit_json(a, entries(), meta)
        elif html_file is None:
            _audit_text_out(a, entries(), meta)
        else:
            click.echo(f"audit of {order} written to {html_file}")


def _audit_json(a: dict[str, Any], entries: Iterator[dict[str, Any]],
                meta: dict[str, Any]) -> None:
    # The very text of ``orjson.dumps({...a, "meta": meta}, OPT_INDENT_2)``: the document
    # with an empty timeline, the entries spliced in at their place, indented as there.
    doc = orjson.dumps(_plain({**a, "timeline": [], "meta": meta}), option=orjson.OPT_INDENT_2)
    mark = b'\n  "timeline": [],\n'
    at = doc.index(mark)
    first = next(entries, None)
    if first is None:
        click.echo(doc)
        return
    out = _Chunks(binary=True)
    out.add(doc[:at] + b'\n  "timeline": [')
    for i, e in enumerate(itertools.chain([first], entries)):
        body = orjson.dumps(e, option=orjson.OPT_INDENT_2).replace(b"\n", b"\n    ")
        out.add((b",\n    " if i else b"\n    ") + body)
    out.add(b"\n  ],\n" + doc[at + len(mark):] + b"\n")
    out.flush()


class _Chunks:
    """Pieces of output written ~64 kB at a time: a small audit is one write, as it was
    when it was printed whole (``| head`` then reads it all), a large one streams."""

    def __init__(self, binary: bool = False):
        self.pieces: list = []
        self.size = 0
        self.empty = b"" if binary else ""

    def add(self, piece: Any) -> None:
        self.pieces.append(piece)
        self.size += len(piece)
        if self.size >= 65536:
            self.flush()

    def flush(self) -> None:
        if self.pieces:
            click.echo(self.empty.join(self.pieces), nl=False)
            self.pieces, self.size = [], 0


def _audit_text_out(a: dict[str, Any], entries: Iterator[dict[str, Any]],
                    meta: dict[str, Any]) -> None:
    from backflush.cli.output import escape_lines, provenance_lines

    before, after = provenance_lines(meta)
    out = _Chunks()
    for line in before:
        out.add(line + "\n")
    for piece in audit_text_lines(a, entries):
        out.add(escape_lines(piece) + "\n")
    for line in after:
        out.add(line + "\n")
    out.flush()


# --- policy check --------------------------------------------------------------------------


@cli.group("policy")
def policy_group() -> None:
    """Flushing policies: show the one in force, check for overlapping rules."""


@policy_group.command("show")
@click.option("--at", "at", default=None, help="Parameters in force at this time.")
@click.option("--known-at", default=None, help="As recorded by the ledger by then.")
@click.pass_context
def policy_show_cmd(ctx: click.Context, at: str | None, known_at: str | None) -> None:
    """The production parameters in force, as a --policy file (JSON).

    The start of a what-if: save it, change a rule, replay with --policy FILE. Without any
    ProductionParametersSet recorded it shows the defaults (and says so on stderr).
    """
    import orjson
    from backflush.cli.app import parse_when

    from backflush.policy import policy_of

    recorded = api_ledger(ctx).recorded_policy(at=parse_when(at, "--at"),
                                               known_at=parse_when(known_at, "--known-at"))
    if recorded is None:
        click.echo("no production parameters recorded by then: the defaults", err=True)
    click.echo(orjson.dumps(policy_of(recorded), option=orjson.OPT_INDENT_2).decode())


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

    from backflush.api import policy_overlaps

    if file is not None:  # a policy file alone needs no ledger
        found = policy_overlaps(load_policy(file))
    else:
        found = api_ledger(ctx).policy_overlaps(at=parse_when(at, "--at"),
                                                known_at=parse_when(known_at, "--known-at"))
    if fmt == "table" and not found:
        click.echo("no overlapping rules")
    else:
        click.echo(_show_findings(found, fmt))
    _exit_for(ctx, found, fail_on)


# --- demo ----------------------------------------------------------------------------------

DEMO_ORDER = "P001T-2"
DEMO_EXAMPLE = "001-terminals-and-scanner"


DEMO_DB = "./backflush-demo.db"
DEMO_MARK = "bf_demo"  # a table the demo creates: only a ledger carrying it may be replaced


def _is_demo_ledger(path: Path) -> bool:
    import sqlite3

    try:
        with path.open("rb") as fh:
            if fh.read(16) != b"SQLite format 3\x00":
                return False
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (DEMO_MARK,)
            ).fetchone() is not None
        finally:
            conn.close()
    except (OSError, sqlite3.Error):
        return False


@cli.command("demo")
@click.option("--force", is_flag=True,
              help="Replace an existing ledger at --db that the demo did not create.")
@click.pass_context
def demo_cmd(ctx: click.Context, force: bool) -> None:
    """Import the seed examples into a demo ledger, show findings, one audit and a what-if.

    The demo writes its own ledger, ./backflush-demo.db (BACKFLUSH_DB is ignored), unless
    --db names one. It only ever replaces a ledger the demo itself created; any other
    existing ledger is left alone unless --force is given.
    """
    from backflush.api import Ledger

    root = ctx.find_root().obj
    db = root["db"] if root.get("db_given") else DEMO_DB
    ledger = Ledger(db)
    ctx.call_on_close(ledger.close)
    p = ledger.path
    if p is not None and p.exists():
        if not (_is_demo_ledger(p) or force):
            raise Fail(f"--db: {db} is an existing ledger the demo did not create; "
                       "not touching it (pass --force to replace it)")
        for f in ledger.files():
            f.unlink(missing_ok=True)
        click.echo(f"demo: replaced the previous demo ledger {db}")
    elif p is None and ledger.store(create=True).count() > 0 and not force:
        raise Fail(f"--db: {ledger!r} already holds events; the demo imports only into an "
                   "empty ledger (pass --force to import into it anyway)")
    click.echo(f"demo: ledger {db}")
    examples = examples_dir()
    files = sorted(examples.glob("*/events.jsonl"))
    if not files:
        raise Fail(f"no examples found under {examples}")
    if p is not None:  # mark it first: an interrupted demo is still the demo's to replace
        with ledger.store(create=True).transaction(commit=True) as cur:
            cur.execute(f"CREATE TABLE IF NOT EXISTS {DEMO_MARK} (k INTEGER)")
    for f in files:
        res = ledger.import_files([str(f)])
        click.echo(f"imported {f.parent.name}: {res.appended} events")
    found = ledger.findings()
    click.echo(f"\n== backflush findings ({len(found)})\n")
    click.echo(_show_findings(found, "table"))
    click.echo(f"\n== backflush audit {DEMO_ORDER}\n")
    click.echo(audit_text(ledger.audit(DEMO_ORDER)))
    fix = examples / DEMO_EXAMPLE / "fix-policy.json"
    if fix.exists():
        orders = sorted({f["order"] for f in _example_orders(DEMO_EXAMPLE)})
        what_if = [f for f in ledger.findings(policy=load_policy(str(fix)))
                   if f["order"] in orders]
        now = [f for f in found if f["order"] in orders]
        click.echo(f"\n== what if: backflush findings --policy {fix.relative_to(examples.parent)}")
        click.echo(f"orders {', '.join(orders)}: {len(now)} findings as recorded, "
                   f"{len(what_if)} under the fix policy")
        for f in what_if:
            click.echo(f"  {f['code']} {f['order']} line {f['line']}: {f['message']}")
    click.echo(f"\ndemo ledger: {db}  (try: backflush --db {db} onhand)")


def _example_orders(name: str) -> list[dict[str, Any]]:
    out = []
    with (examples_dir() / name / "events.jsonl").open("rb") as fh:
        for raw in fh:
            if raw.strip():
                ev = orjson.loads(raw)
                if ev.get("type") == "OrderCreated":
                    out.append(ev)
    return out
