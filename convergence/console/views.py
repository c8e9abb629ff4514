"""The console's pages as HTML strings. Every value from a request or the warehouse goes through `e()`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

from convergence.console.session import Session

STATIC = "/console/static"
CHART_JS = "chart-4.4.1.umd.min.js"
STATUSES = ("RUNNING", "SUCCESS", "FAILED", "TIMEOUT", "REJECTED")


def e(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = f"{value:%Y-%m-%d %H:%M:%S}"
    return escape(str(value), quote=True)


def link(path: str, **query: Any) -> str:
    params = {k: v for k, v in query.items() if v not in (None, "")}
    return e(path + ("?" + urlencode(params) if params else ""))


def json_script(element_id: str, data: Any) -> str:
    """Data for the page's script: JSON that cannot close the script element (<, >, & escaped)."""
    text = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e") \
        .replace("&", "\\u0026")
    return f'<script type="application/json" id="{e(element_id)}">{text}</script>'


def page(title: str, body: str, session: Session | None = None, csrf: str = "", scripts: Sequence[str] = ()) -> str:
    nav = ""
    if session is not None:
        who = "root (every org)" if session.is_root else f"org {session.org}"
        nav = (f'<nav><a href="/console/runs">Runs</a> <a href="/console/dlq">Dead letters</a> '
               f'<a href="/console/costs">Costs</a> <span class="who">signed in: {e(who)}</span> '
               f'<form method="post" action="/console/logout" class="inline">'
               f'<input type="hidden" name="csrf" value="{e(csrf)}"><button type="submit">Sign out</button>'
               f"</form></nav>")
    tags = "".join(f'<script src="{STATIC}/{e(name)}"></script>' for name in scripts)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(title)} - Convergence</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="stylesheet" href="{STATIC}/console.css"></head>'
            f"<body><header><strong>Convergence console</strong>{nav}</header><main><h1>{e(title)}</h1>"
            f"{body}</main>{tags}</body></html>")


def message(title: str, text: str, session: Session | None = None, csrf: str = "") -> str:
    return page(title, f'<p class="error" id="message">{e(text)}</p>', session, csrf)


def login(error: str | None = None) -> str:
    note = f'<p class="error" id="login-error">{e(error)}</p>' if error else ""
    body = (f"{note}<form method=\"post\" action=\"/console/login\" id=\"login\">"
            '<label>Key type <select name="kind"><option value="org">Org API key (X-API-Key)</option>'
            '<option value="root">Root key (X-CA-Root-Key)</option></select></label>'
            '<label>Key <input type="password" name="key" autocomplete="off" required></label>'
            '<button type="submit">Sign in</button></form>'
            "<p>The key is checked once; the session cookie holds a signed token, never the key.</p>")
    return page("Sign in", body)


def _org_field(session: Session, org: str | None) -> str:
    if session.is_root:
        return f'<label>Org <input name="org" value="{e(org)}" placeholder="all"></label>'
    return f'<input type="hidden" name="org" value="{e(session.org)}">'


def runs(session: Session, csrf: str, records: Iterable[Any], *, org: str | None, status: str | None,
         pipeline: str | None, since: str | None) -> str:
    options = "".join(f'<option value="{s}"{" selected" if s == status else ""}>{s}</option>' for s in STATUSES)
    filters = (f'<form method="get" action="/console/runs" class="filters">{_org_field(session, org)}'
               f'<label>Status <select name="status"><option value="">any</option>{options}</select></label>'
               f'<label>Pipeline <input name="pipeline" value="{e(pipeline)}" placeholder="provider/domain/name">'
               f'</label><label>Since <input name="since" value="{e(since)}" placeholder="24h, 7d or ISO"></label>'
               '<button type="submit">Filter</button></form>')
    rows = []
    for r in records:
        href = link(f"/console/runs/{r.run_id}", org=r.org_slug)
        rows.append(f'<tr class="run" data-run-id="{e(r.run_id)}" data-org="{e(r.org_slug)}">'
                    f'<td><a href="{href}">{e(r.run_id)}</a></td><td>{e(r.org_slug)}</td><td>{e(r.pipeline)}</td>'
                    f'<td class="status {e(r.status)}">{e(r.status)}</td><td>{e(r.trigger)}</td>'
                    f"<td>{e(r.start_time or r.event_time)}</td><td>{e(r.duration_ms)}</td>"
                    f"<td>{e(r.rows_processed)}</td><td>{e(r.error_code)}</td></tr>")
    table = ("<table id=\"runs\"><thead><tr><th>Run</th><th>Org</th><th>Pipeline</th><th>Status</th>"
             "<th>Trigger</th><th>Started</th><th>ms</th><th>Rows</th><th>Error</th></tr></thead><tbody>"
             + ("".join(rows) or '<tr><td colspan="9">No runs match.</td></tr>') + "</tbody></table>")
    return page("Runs", filters + table, session, csrf)


def _moment(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None


def run_detail(session: Session, csrf: str, record: Any, steps: Sequence[Any]) -> str:
    facts = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in (
        ("Org", record.org_slug), ("Pipeline", record.pipeline), ("Status", record.status),
        ("Trigger", record.trigger), ("Attempt", record.attempt), ("Started", record.start_time),
        ("Ended", record.end_time), ("Duration (ms)", record.duration_ms), ("Rows", record.rows_processed),
        ("Error", " ".join(x for x in (record.error_code, record.error_message) if x)), ("Trace", record.trace_id)))
    times = [t for s in steps for t in (_moment(s.start_time), _moment(s.end_time)) if t is not None]
    start, end = (min(times), max(times)) if times else (0.0, 0.0)
    span = max(end - start, 1e-3)
    bar_height, height = 22, 22 * max(len(steps), 1) + 4
    bars, rows = [], []
    for i, s in enumerate(steps):
        s0, s1 = _moment(s.start_time), _moment(s.end_time)
        y = 2 + i * bar_height
        if s0 is not None:
            left = (s0 - start) / span * 100
            width = max(((s1 if s1 is not None else end) - s0) / span * 100, 0.5)
            bars.append(f'<rect class="bar {e(s.status)}" data-step="{e(s.step_id)}" x="{left:.3f}%" y="{y}" '
                        f'width="{width:.3f}%" height="{bar_height - 6}"><title>{e(s.step_id)} {e(s.status)} '
                        f"{e(s.duration_ms)} ms</title></rect>")
        rows.append(f'<tr class="step" data-step="{e(s.step_id)}"><td>{e(s.attempt)}</td><td>{e(s.step_index)}</td>'
                    f"<td>{e(s.step_id)}</td><td>{e(s.ps_type)}</td><td class=\"status {e(s.status)}\">{e(s.status)}"
                    f"</td><td>{e(s.start_time)}</td><td>{e(s.duration_ms)}</td><td>{e(s.rows_processed)}</td>"
                    f"<td>{e(s.error_code)}</td><td class=\"message\">{e(s.error_message)}</td></tr>")
    labels = "".join(f'<div class="label">{e(s.step_id)}</div>' for s in steps)
    gantt = (f'<div class="gantt"><div class="labels">{labels}</div>'
             f'<svg id="gantt" width="100%" height="{height}" role="img" aria-label="step timeline">'
             f'{"".join(bars)}</svg></div><div class="axis"><span>0 ms</span>'
             f'<span id="gantt-span">{span * 1000:,.0f} ms</span></div>') if steps \
        else "<p>No step logs for this run.</p>"
    table = ('<table id="steps"><thead><tr><th>Attempt</th><th>#</th><th>Step</th><th>Type</th><th>Status</th>'
             "<th>Started</th><th>ms</th><th>Rows</th><th>Error</th><th>Message</th></tr></thead><tbody>"
             + "".join(rows) + "</tbody></table>")
    return page(f"Run {record.run_id}", f"<dl>{facts}</dl><h2>Steps</h2>{gantt}{table}", session, csrf)


def dead_letters(session: Session, csrf: str, items: Iterable[Any], *, org: str | None, since: str | None,
                 notice: str | None = None) -> str:
    filters = (f'<form method="get" action="/console/dlq" class="filters">{_org_field(session, org)}'
               f'<label>Since <input name="since" value="{e(since)}" placeholder="24h, 7d or ISO"></label>'
               '<button type="submit">Filter</button></form>')
    note = f'<p class="notice" id="notice">{e(notice)}</p>' if notice else ""
    rows = []
    for item in items:
        action = ""
        if session.is_root and item.request_json is not None:
            action = ('<form method="post" action="/console/dlq/replay" class="inline">'
                      f'<input type="hidden" name="csrf" value="{e(csrf)}">'
                      f'<input type="hidden" name="run_id" value="{e(item.run_id)}">'
                      f'<input type="hidden" name="org" value="{e(item.org_slug)}">'
                      '<button type="submit" class="replay">Replay</button></form>')
        elif item.request_json is None:
            action = "not replayable"
        rows.append(f'<tr class="dead" data-run-id="{e(item.run_id)}"><td>{e(item.dead_lettered_at)}</td>'
                    f"<td>{e(item.run_id)}</td><td>{e(item.org_slug)}</td><td>{e(item.pipeline)}</td>"
                    f"<td>{e(item.delivery_count)}</td><td class=\"message\">{e(item.message)}</td>"
                    f"<td>{action}</td></tr>")
    table = ('<table id="dlq"><thead><tr><th>Dead-lettered</th><th>Run</th><th>Org</th><th>Pipeline</th>'
             "<th>Deliveries</th><th>Message</th><th></th></tr></thead><tbody>"
             + ("".join(rows) or '<tr><td colspan="7">Nothing dead-lettered.</td></tr>') + "</tbody></table>")
    return page("Dead letters", note + filters + table, session, csrf)


def costs(session: Session, csrf: str, *, org: str | None, days: int, start: date, end: date,
          chart: dict[str, Any] | None, note: str | None = None) -> str:
    choices = "".join(f'<option value="{d}"{" selected" if d == days else ""}>last {d} days</option>'
                      for d in (30, 90))
    if session.is_root:
        org_input = f'<label>Org <input name="org" value="{e(org)}" required></label>'
    else:
        org_input = f'<input type="hidden" name="org" value="{e(session.org)}">'
    filters = (f'<form method="get" action="/console/costs" class="filters">{org_input}'
               f'<label>Period <select name="days">{choices}</select></label><button type="submit">Show</button>'
               "</form>")
    body = filters
    if note:
        body += f'<p class="notice" id="notice">{e(note)}</p>'
    if chart is not None:
        totals = "".join(f"<tr><td>{e(s['provider'])}</td><td>{e(s['service'])}</td><td>{e(s['currency'])}</td>"
                         f"<td>{sum(s['values']):,.2f}</td></tr>" for s in chart["series"])
        body += (f"<p>{e(org)}: EffectiveCost per day from {e(start)} to {e(end)}, stacked by provider and "
                 f"service.</p><div class=\"chart\"><canvas id=\"cost-chart\"></canvas></div>"
                 f"{json_script('cost-data', chart)}"
                 '<table id="cost-totals"><thead><tr><th>Provider</th><th>Service</th><th>Currency</th>'
                 f"<th>Total</th></tr></thead><tbody>{totals}</tbody></table>")
        return page("Cost per day", body, session, csrf, scripts=(CHART_JS, "console.js"))
    return page("Cost per day", body, session, csrf)
