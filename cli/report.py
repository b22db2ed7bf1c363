"""The audit of one order as one self-contained HTML page (inline CSS and SVG, no scripts,
no external URL). Every text goes through ``html.escape``."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from html import escape
from typing import Any

from backflush.cli.output import _plain

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
)

def _t(v: Any) -> str:
    p = _plain(v)
    return "" if p is None else escape(str(p))


def _when(v: Any) -> str:
    """A timestamp for a table cell: '2026-11-03 12:00:00Z' (offset kept when not UTC)."""
    if isinstance(v, datetime):
        text = v.isoformat(sep=" ")
        return escape(text[:-6] + "Z" if text.endswith("+00:00") else text)
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


def _details(t: dict[str, Any]) -> str:
    keys = ("op", "good", "error", "qty", "item", "line", "location", "from_location",
            "to_location", "batch", "lp", "reverses")
    return "<br>".join(f"{escape(k)} {_t(t[k])}" for k in keys if k in t)


def audit_html(a: dict[str, Any]) -> str:
    """The audit ``a`` (from ``compute_audit``) as a complete HTML document."""
    h = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Audit {escape(a['order'])}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Production order {escape(a['order'])}</h1>",
        f'<div class="meta">{_t(a["qty"])} × {escape(a["item"])} · BOM {_t(a["bom"])} · '
        f'route {_t(a["route"])} · <span class="status">{escape(a["status"])}</span></div>',
        f"<h2>Findings ({len(a['findings'])})</h2>",
    ]
    if a["findings"]:
        order = {"error": 0, "warning": 1, "info": 2}
        for f in sorted(a["findings"], key=lambda f: order[f["severity"]]):
            h.append(_finding_block(f))
    else:
        h.append('<div class="ok">No findings: every line posted what its units required.</div>')
    h.append("<h2>Expected vs posted per line</h2>")
    h.append(_chart(a["lines"]))
    h.append("<h2>Lines</h2><table><tr><th>line</th><th>item</th><th>principle</th><th>op</th>"
             "<th>location</th><th>expected</th><th>posted</th><th>variance</th>"
             "<th>by trigger</th></tr>")
    for ln in a["lines"]:
        bt = ", ".join(f"{k} {_t(v)}" for k, v in ln["by_trigger"].items())
        h.append(f"<tr><td>{_t(ln['line'])}</td><td>{_t(ln['item'])}</td>"
                 f"<td>{_t(ln['principle'])}</td><td>{_t(ln['op'])}</td>"
                 f"<td>{_t(ln['location'])}</td><td class='num'>{_t(ln['expected'])}</td>"
                 f"<td class='num'>{_t(ln['posted'])}</td>"
                 f"<td class='num'>{_t(ln['variance'])}</td><td>{escape(bt)}</td></tr>")
    h.append("</table>")
    h.append("<h2>Timeline</h2><table><tr><th>#</th><th>at</th><th>event</th><th>details</th>"
             "<th>flushed</th><th>posted / expected after</th><th>findings arising</th></tr>")
    for t in a["timeline"]:
        flushed = "<br>".join(
            f'<span class="flush">line {_t(fl["line"])} {_t(fl["item"])} '
            f'<b>{_t(fl["qty"])}</b> from {_t(fl["location"])}'
            + (f' batch {_t(fl["batch"])}' if fl["batch"] else "")
            + f' <i>({_t(fl["trigger"])})</i></span>'
            for fl in t["flushed"]
        )
        running = "<br>".join(
            f'<span class="run">line {_t(r["line"])}: {_t(r["posted"])} / {_t(r["expected"])}'
            f"</span>" for r in t["running"]
        ) if t["flushed"] else ""
        fnd = "<br>".join(
            f'<span class="badge" style="background:{COLOURS[f["severity"]]}">'
            f'{escape(f["code"])}</span> {escape(f["message"])}' for f in t["findings"]
        )
        cls = ' class="hit"' if t["findings"] else ""
        dev = f"<br><small>{escape(t['device'])}</small>" if t.get("device") else ""
        h.append(f"<tr{cls}><td class='num'>{t['seq']}</td>"
                 f"<td style='white-space:nowrap'>{_when(t['at'])}</td>"
                 f"<td><b>{escape(t['type'])}</b>{dev}<br><small>{escape(t['id'])}</small></td>"
                 f"<td>{_details(t)}</td><td>{flushed}</td><td>{running}</td>"
                 f"<td>{fnd}</td></tr>")
    h.append("</table></body></html>")
    return "\n".join(h)
