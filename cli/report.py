"""The audit of one order as one self-contained HTML page (inline CSS and SVG, no scripts,
no external URL). Every text goes through ``html.escape``.

The page says where it comes from (ledger, backflush version, generated at, ``--at``,
``--known-at``, the policy in force, the verify status and the chain's head); a what-if
policy is a red banner at the top and in the title. The timeline shows when each event was
recorded beside when it happened, so late syncs are visible; quantities carry their unit of
measure. A print stylesheet lays it out on A4 without splitting a row across pages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from html import escape as _html_escape
from typing import Any

from backflush.cli.output import _plain, escape_text
from backflush.cli.provenance import footer_lines, what_if_banner


def escape(s: str) -> str:
    """HTML-escape ``s`` after showing its control and bidi characters as visible escapes, so
    a name cannot reverse the text around it (U+202E) or hide in the page."""
    return _html_escape(escape_text(s))


COLOURS = {"error": "#c62828", "warning": "#ef6c00", "info": "#1565c0"}
BACKGROUNDS = {"error": "#fdecea", "warning": "#fff4e5", "info": "#e8f1fb"}

CSS = (
    'body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1'
    'd2733;background:#fff;font-size:14px}h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;ma'
    'rgin:26px 0 8px;border-bottom:1px solid #d5dbe3;padding-bottom:4px}.meta{color:#52606d;mar'
    'gin-bottom:12px}.status{display:inline-block;padding:2px 8px;border-radius:10px;background'
    ':#e6ebf1;font-weight:600;font-size:12px}.finding{border-left:6px solid;padding:8px 12px;ma'
    'rgin:6px 0;border-radius:3px}.finding .code{font-weight:700;margin-right:8px}.finding .sev'
    '{font-size:11px;text-transform:uppercase;font-weight:700;margin-right:8px}.finding .where{'
    'color:#52606d;font-size:12px}.ok{background:#e8f5e9;border-left:6px solid #2e7d32;padding:'
    '8px 12px}table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #e3e8ee;p'
    'adding:4px 6px;text-align:left;vertical-align:top}th{background:#f3f5f8;font-weight:600}td'
    '.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}.flush{font-siz'
    'e:12px;white-space:nowrap}.run{font-size:12px;color:#52606d;white-space:nowrap}.badge{display:inline-block;bo'
    'rder-radius:3px;color:#fff;font-size:11px;padding:1px 5px;margin:1px 0;font-weight:600}tr.'
    'hit td{background:#fffaf2}.legend span{display:inline-block;width:12px;height:12px;margin:'
    '0 4px 0 12px;vertical-align:middle}'
    '.whatif{background:#b71c1c;color:#fff;font-size:18px;font-weight:700;padding:12px 16px;'
    'margin:0 0 14px;border:4px solid #7f0000;border-radius:4px;-webkit-print-color-adjust:exa'
    'ct;print-color-adjust:exact}.whatif small{display:block;font-size:12px;font-weight:400;'
    'word-break:break-all}.prov{font-size:12px;color:#52606d;border:1px solid #d5dbe3;padding:'
    '6px 10px;margin:0 0 12px;border-radius:3px}.prov div{overflow-wrap:anywhere}.late{color:'
    '#ad1457;font-weight:600}.unit{color:#52606d;font-size:11px;margin-left:2px}'
    '.neutral{background:#fff4e5;border-left:6px solid #ef6c00;padding:8px 12px}'
    'small.id{overflow-wrap:anywhere}td.when{white-space:nowrap}.nw{white-space:nowrap}'
)

# Print: A4 portrait; a row never splits across pages; headers repeat on each page; cells
# may wrap (ids, long names) rather than squeeze a neighbouring column to nothing.
PRINT_CSS = (
    "@page{size:A4;margin:12mm 10mm}"
    "@media print{body{margin:0;font-size:10px}h1{font-size:17px}h2{font-size:13px;"
    "break-after:avoid;page-break-after:avoid}table{width:100%}thead{display:table-header-gro"
    "up}tr,.finding,.whatif,.prov{break-inside:avoid;page-break-inside:avoid}th,td{padding:2p"
    "x 4px}.flush,.run{white-space:normal}td{overflow-wrap:break-word}td.when{white-space:norm"
    "al}td.num{white-space:nowrap}svg{max-width:100%;height:auto}"
    "*{-webkit-print-color-adjust:exact;print-color-adjust:exact}}"
)

def _t(v: Any) -> str:
    p = _plain(v)
    return "" if p is None else escape(str(p))


def _when(v: Any) -> str:
    """A timestamp for a table cell: '2026-11-03 12:00:00Z' (offset kept when not UTC)."""
    if isinstance(v, datetime):
        text = v.isoformat(sep=" ")
        text = text[:-6] + "Z" if text.endswith("+00:00") else text
        day, _, clock = text.partition(" ")
        # date and time may go on two lines in print, never break inside either
        return f'<span class="nw">{escape(day)}</span> <span class="nw">{escape(clock)}</span>'
    return _t(v)


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (Decimal, int, float)) else 0.0


def _chart(lines: list[dict[str, Any]]) -> str:
    """Per line: expected (grey) vs posted (blue, red when over, orange when under) bars."""
    if not lines:
        return "<p>No BOM lines.</p>"
    width, label_w, bar_h, gap = 1000, 210, 14, 12
    row_h = 2 * bar_h + gap
    top = 8
    height = top + row_h * len(lines) + 4
    vmax = max([_num(ln["expected"]) for ln in lines] + [_num(ln["posted"]) for ln in lines]
               + [1.0])
    scale = (width - label_w - 90) / vmax
    parts = [f'<svg role="img" width="100%" '
             f'viewBox="0 0 {width} {height}" aria-label="expected versus posted per line">']
    for i, ln in enumerate(lines):
        y = top + i * row_h
        exp, post = _num(ln["expected"]), _num(ln["posted"])
        colour = "#1565c0"
        if post > exp:
            colour = "#c62828"
        elif post < exp:
            colour = "#ef6c00"
        name = f"line {ln['line']} {ln['item']}" if ln["line"] is not None else f"{ln['item']}"
        parts.append(f'<text x="0" y="{y + bar_h + 4}" font-size="13" fill="#1d2733">'
                     f'{escape(name)}</text>')
        we, wp = max(exp * scale, 0.5), max(post * scale, 0.5)
        parts.append(f'<rect x="{label_w}" y="{y}" width="{we:.1f}" height="{bar_h}" '
                     f'fill="#b0bac5"><title>expected {_t(ln["expected"])}</title></rect>')
        parts.append(f'<text x="{label_w + we + 6:.1f}" y="{y + bar_h - 3}" font-size="11" '
                     f'fill="#52606d">expected {_t(ln["expected"])}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + bar_h + 2}" width="{wp:.1f}" '
                     f'height="{bar_h}" fill="{colour}"><title>posted {_t(ln["posted"])}'
                     f'</title></rect>')
        parts.append(f'<text x="{label_w + wp + 6:.1f}" y="{y + 2 * bar_h - 1}" font-size="11" '
                     f'fill="{colour}">posted {_t(ln["posted"])}</text>')
    parts.append("</svg>")
    legend = ('<div class="legend" style="font-size:12px;color:#52606d">'
              '<span style="background:#b0bac5"></span>expected'
              '<span style="background:#1565c0"></span>posted = expected'
              '<span style="background:#c62828"></span>posted over'
              '<span style="background:#ef6c00"></span>posted under</div>')
    return "".join(parts) + legend


def _finding_block(f: dict[str, Any]) -> str:
    sev = f["severity"]
    where = f"order {f['order']}" if f["order"] else ""
    if f["line"] is not None:
        where += f", line {f['line']}"
    if f["item"]:
        where += f", {f['item']}"
    return (f'<div class="finding" style="border-color:{COLOURS[sev]};'
            f'background:{BACKGROUNDS[sev]}">'
            f'<span class="sev" style="color:{COLOURS[sev]}">{escape(sev)}</span>'
            f'<span class="code">{escape(f["code"])}</span>'
            f'<span class="qty">qty {_t(f["qty"])}</span><br>{escape(f["message"])}<br>'
            f'<span class="where">{escape(where)} · arises at {escape(str(f.get("arises_at")))}'
            f' · events {escape(", ".join(f["events"]))}</span></div>')


def _details(t: dict[str, Any], units: dict[str, str]) -> str:
    keys = ("op", "good", "error", "qty", "item", "line", "location", "from_location",
            "to_location", "batch", "lp", "reverses")
    unit = units.get(t.get("item") or "", "") if "qty" in t else ""
    out = []
    for k in keys:
        if k in t:
            extra = _u(unit) if k == "qty" else ""
            out.append(f"{escape(k)} {_t(t[k])}{extra}")
    return "<br>".join(out)


def _u(unit: str | None) -> str:
    return f'<span class="unit">{escape(unit)}</span>' if unit else ""


def _lookup(ledger: Any, ids: list[str], at: datetime | None) -> dict[str, Any]:
    """Recorded time of each of the events ``ids`` and the items' units, from the ledger."""
    from backflush.ledger.store import from_us, to_us
    from backflush.projections import materialise as mat

    recorded: dict[str, datetime] = {}
    with ledger.transaction(commit=False) as cur:
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for r in cur.execute(
                f"SELECT id, rec_us FROM bf_events WHERE id IN ({marks})", chunk
            ).fetchall():
                recorded[r["id"]] = from_us(r["rec_us"])
    units: dict[str, str] = {}
    # The unit in force at the as-of time (a later definition replaces an earlier one).
    for ev in mat.events_for_replay(ledger, types=["ItemDefined"],
                                    at_lte=to_us(at) if at is not None else None):
        if ev.get("unit"):
            units[ev["item"]] = ev["unit"]
    return {"recorded": recorded, "units": units}


def enrich(a: dict[str, Any], ledger: Any = None, at: datetime | None = None) -> dict[str, Any]:
    """``a`` with ``recorded`` on every timeline event and ``units`` (item → unit).

    Values already in the audit dict win; the rest are read from ``ledger`` (the one the
    current command opened when not given).
    """
    timeline = a.get("timeline") or ()
    found = _extras(a, [(t["id"], "recorded" in t) for t in timeline], ledger, at)
    if found is None:
        return a
    out = dict(a)
    out.setdefault("units", found["units"])
    out["timeline"] = [
        t if "recorded" in t else {**t, "recorded": found["recorded"].get(t["id"])}
        for t in timeline
    ]
    return out


def _extras(a: dict[str, Any], events: list[tuple[str, bool]], ledger: Any,
            at: datetime | None) -> dict[str, Any] | None:
    """``_lookup`` of the timeline ``events`` ((id, whether it has ``recorded``)) when
    anything is missing and a ledger is at hand (by default the current command's)."""
    if ledger is None:
        import click

        ctx = click.get_current_context(silent=True)
        root = {} if ctx is None else (ctx.find_root().obj or {})
        ledger = root.get("ledger") or getattr(root.get("api"), "_store", None)
        raw = None if ctx is None or at is not None else ctx.params.get("at")
        if isinstance(raw, datetime):
            at = raw
        elif isinstance(raw, str):
            from backflush.cli.app import parse_when

            try:
                at = parse_when(raw, "--at")
            except click.ClickException:
                at = None
    need_rec = any(not has for _, has in events)
    if ledger is None or not (need_rec or "units" not in a):
        return None
    try:
        return _lookup(ledger, [eid for eid, _ in events], at)
    except Exception:  # the page still renders, without the extras
        return None


def _as_dt(v: Any) -> datetime | None:
    if isinstance(v, str):
        try:
            v = datetime.fromisoformat(v)
        except ValueError:
            return None
    return v if isinstance(v, datetime) else None


def late_events(timeline: list[dict[str, Any]]) -> set[str]:
    """Ids of events recorded after an event that happened later (a late sync).

    Relative to the order's own history, so a whole history imported at once is not "late".
    """
    pts = [(_as_dt(t.get("at")), _as_dt(t.get("recorded")), t["id"]) for t in timeline]
    pts = [p for p in pts if p[0] is not None and p[1] is not None]
    pts.sort(key=lambda p: p[0])
    late: set[str] = set()
    later_min: datetime | None = None  # earliest recording among events that happened later
    i = len(pts) - 1
    while i >= 0:
        j = i
        while j >= 0 and pts[j][0] == pts[i][0]:  # events at the same instant: not "later"
            j -= 1
        for _at, rec, eid in pts[j + 1 : i + 1]:
            if later_min is not None and rec > later_min:
                late.add(eid)
        for _at, rec, _eid in pts[j + 1 : i + 1]:
            later_min = rec if later_min is None else min(later_min, rec)
        i = j
    return late


def _provenance_html(meta: dict[str, Any]) -> str:
    banner = what_if_banner(meta)
    out = []
    if banner:
        pol = meta["policy"]
        out.append(
            '<div class="whatif" role="alert">WHAT-IF: this page replays the history under '
            f'a policy that was never recorded<small>policy file {escape(pol["file"])} · '
            f'sha256 {escape(pol["sha256"])} — what the floor did is unchanged; only the '
            "flushing is recomputed</small></div>"
        )
    out.append('<div class="prov">' + "".join(
        f"<div>{escape(line)}</div>" for line in footer_lines(meta)) + "</div>")
    return "".join(out)


def audit_html(a: dict[str, Any], meta: dict[str, Any] | None = None) -> str:
    """The audit ``a`` (from ``backflush.api.audit_of``) as a complete HTML document.

    ``meta`` is the provenance (`backflush.cli.provenance.collect`); by default it is
    collected from the current command.
    """
    return "\n".join(audit_html_parts(a, meta))


def audit_html_parts(a: dict[str, Any], meta: dict[str, Any] | None = None,
                     timeline: Callable[[], Iterable[dict[str, Any]]] | None = None
                     ) -> Iterator[str]:
    """``audit_html`` in parts (joined by line breaks, they are the document), for a
    timeline too long to hold: with ``timeline``, the entries come from calling it (twice:
    which events were recorded late needs them all before the first row), not from
    ``a["timeline"]``.
    """
    if meta is None:
        from backflush.cli.provenance import collect

        meta = collect()
    entries = timeline if timeline is not None else lambda: a.get("timeline") or ()
    # One pass for what the rows need of the whole timeline: the ids, and at/recorded.
    pts = [(t["id"], t.get("at"), t["recorded"] if "recorded" in t else ...)
           for t in entries()]
    found = _extras(a, [(eid, rec is not ...) for eid, _, rec in pts], None, None)
    recorded = found["recorded"] if found is not None else {}
    # as ``enrich`` does: the audit's own units win
    units: dict[str, str] = (a["units"] if "units" in a else
                             found["units"] if found is not None else None) or {}

    def rec_of(eid: str, rec: Any) -> Any:
        if rec is not ...:
            return rec
        return recorded.get(eid) if found is not None else None

    late = late_events([{"id": eid, "at": at, "recorded": rec_of(eid, rec)}
                        for eid, at, rec in pts])
    what_if = what_if_banner(meta) is not None
    title = ("WHAT-IF " if what_if else "") + f"Audit {a['order']}"
    h = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        f"<style>{CSS}{PRINT_CSS}</style></head><body>",
        _provenance_html(meta),
        f"<h1>{'WHAT-IF · ' if what_if else ''}Production order {escape(a['order'])}</h1>",
        f'<div class="meta">{_t(a["qty"])}{_u(units.get(a["item"]))} × {escape(a["item"])}'
        f' · BOM {_t(a["bom"])} · '
        f'route {_t(a["route"])} · <span class="status">{escape(a["status"])}</span></div>',
        f"<h2>Findings ({len(a['findings'])})</h2>",
    ]
    if a["findings"]:
        order = {"error": 0, "warning": 1, "info": 2}
        for f in sorted(a["findings"], key=lambda f: order[f["severity"]]):
            h.append(_finding_block(f))
    elif what_if:
        h.append('<div class="neutral">No findings <b>under the what-if policy</b> named '
                 "above; the recorded history may still have findings.</div>")
    else:
        h.append('<div class="ok">No findings: every line posted what its units required.</div>')
    h.append("<h2>Expected vs posted per line</h2>")
    h.append(_chart(a["lines"]))
    h.append("<h2>Lines</h2><table><thead><tr><th>line</th><th>item</th><th>principle</th>"
             "<th>op</th><th>location</th><th>expected</th><th>posted</th><th>variance</th>"
             "<th>by trigger</th></tr></thead><tbody>")
    for ln in a["lines"]:
        u = _u(units.get(ln["item"]))
        bt = ", ".join(f"{escape(str(k))} {_t(v)}" for k, v in ln["by_trigger"].items())
        h.append(f"<tr><td>{_t(ln['line'])}</td><td>{_t(ln['item'])}</td>"
                 f"<td>{_t(ln['principle'])}</td><td>{_t(ln['op'])}</td>"
                 f"<td>{_t(ln['location'])}</td><td class='num'>{_t(ln['expected'])}{u}</td>"
                 f"<td class='num'>{_t(ln['posted'])}{u}</td>"
                 f"<td class='num'>{_t(ln['variance'])}{u}</td><td>{bt}</td></tr>")
    h.append("</tbody></table>")
    h.append("<h2>Timeline</h2><table><thead><tr><th>#</th><th>at</th><th>recorded</th>"
             "<th>event</th><th>details</th><th>flushed</th><th>posted / expected after</th>"
             "<th>findings arising</th></tr></thead><tbody>")
    line_units = {ln["line"]: units.get(ln["item"]) for ln in a["lines"]}
    yield "\n".join(h)
    for t in entries():
        flushed = "<br>".join(
            f'<span class="flush">line {_t(fl["line"])} {_t(fl["item"])} '
            f'<b>{_t(fl["qty"])}</b>{_u(units.get(fl["item"]))} from {_t(fl["location"])}'
            + (f' batch {_t(fl["batch"])}' if fl["batch"] else "")
            + f' <i>({_t(fl["trigger"])})</i></span>'
            for fl in t["flushed"]
        )
        running = "<br>".join(
            f'<span class="run">line {_t(r["line"])}: {_t(r["posted"])} / {_t(r["expected"])}'
            f'{_u(line_units.get(r["line"]))}</span>' for r in t["running"]
        ) if t["flushed"] else ""
        fnd = "<br>".join(
            f'<span class="badge" style="background:{COLOURS[f["severity"]]}">'
            f'{escape(f["code"])}</span> {escape(f["message"])}' for f in t["findings"]
        )
        cls = ' class="hit"' if t["findings"] else ""
        dev = f"<br><small>{escape(t['device'])}</small>" if t.get("device") else ""
        rec = _when(rec_of(t["id"], t["recorded"] if "recorded" in t else ...))
        if rec and t["id"] in late:
            rec = (f'<span class="late" title="recorded after events that happened later">'
                   f"{rec} (late)</span>")
        yield (f"<tr{cls}><td class='num'>{t['seq']}</td>"
               f"<td class='when'>{_when(t['at'])}</td><td class='when'>{rec}</td>"
               f"<td><b>{escape(t['type'])}</b>{dev}<br><small class='id'>{escape(t['id'])}"
               f"</small></td>"
               f"<td>{_details(t, units)}</td><td>{flushed}</td><td>{running}</td>"
               f"<td>{fnd}</td></tr>")
    yield "</tbody></table></body></html>"
