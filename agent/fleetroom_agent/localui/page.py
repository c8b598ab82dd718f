"""HTML for the status page: the facts of ``status --json``, escaped, no scripts.

The page refreshes itself every 15 seconds with a meta tag (the Content Security
Policy allows no script at all).  Agent-side text is English like the rest of the
agent's command line; the server's UI is the translated one.
"""

from __future__ import annotations

from html import escape
from typing import Any, Final

REFRESH_S: Final = 15
STYLE: Final = """
body{font:15px/1.4 system-ui,sans-serif;margin:2em;max-width:60em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border-bottom:1px solid #ddd;padding:.25em .8em;text-align:left;vertical-align:top}
th{background:#f4f4f4}.bad{color:#b00}.ok{color:#070}
"""


def _v(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, list | tuple):
        return ", ".join(str(x) for x in value) or "—"
    return str(value)


def _rows(pairs: list[tuple[str, Any]]) -> str:
    return "".join(f"<tr><th>{escape(k)}</th><td>{escape(_v(v))}</td></tr>" for k, v in pairs)


def _doc(title: str, body: str, refresh: bool = False) -> bytes:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if refresh else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
            f"<body>{body}</body></html>").encode()


def render_message(title: str, message: str) -> bytes:
    """A page with one message (no status facts)."""
    return _doc(title, f"<h1>{escape(title)}</h1><p>{escape(message)}</p>")


def render_page(s: dict[str, Any]) -> bytes:
    """The status page for the facts ``s`` (as returned by ``read_status``)."""
    running = s.get("running")
    state = ('<span class="ok">running</span>' if running
             else '<span class="bad">not running</span>')
    outbox = s.get("outbox") or {}
    schedule = s.get("schedule") or {}
    overview = _rows([
        ("Agent id", s.get("agent_id")), ("Version", s.get("version")),
        ("Started", s.get("started_at")), ("Queue (items)", s.get("queue_items")),
        ("Queue (bytes)", s.get("queue_bytes")), ("Oldest unsent item", s.get("oldest_unsent_at")),
        ("Last acknowledgement", s.get("last_ack_at")), ("Last error", s.get("last_error")),
        ("Transport in use", s.get("transport")), ("Devices", s.get("devices")),
        ("Weak SNMP crypto", s.get("weak_crypto_devices")),
        ("State written", s.get("state_written_at")),
        *([("Outbox problem", s["outbox_error"])] if s.get("outbox_error") else []),
    ])
    streams = "".join(
        f"<tr><td>{escape(name)}</td><td>{escape(_v(st.get('items')))}</td>"
        f"<td>{escape(_v(st.get('bytes')))}</td><td>{escape(_v(st.get('oldest_unsent_at')))}"
        "</td></tr>" for name, st in sorted((outbox.get("streams") or {}).items()))
    transports = "".join(
        f"<tr><td>{escape(_v(t.get('name') if isinstance(t, dict) else t))}</td>"
        f"<td>{escape(_v(t.get('state') if isinstance(t, dict) else ''))}</td>"
        f"<td>{escape(_v(t.get('last_error') if isinstance(t, dict) else ''))}</td></tr>"
        for t in s.get("transports") or [])
    jobs = "".join(
        f"<tr><td>{escape(name)}</td><td>{escape(_v(j.get('finished_at') or j.get('started_at')))}"
        f"</td><td>{escape(_v(j.get('outcome')))}</td><td>{escape(_v(j.get('detail')))}</td></tr>"
        for name, j in sorted((s.get("jobs") or {}).items()) if isinstance(j, dict))
    errors = "".join(
        f"<tr><td>{escape(_v(e.get('at')))}</td><td>{escape(_v(e.get('where')))}</td>"
        f"<td>{escape(_v(e.get('message')))}</td></tr>"
        for e in reversed(s.get("errors") or []) if isinstance(e, dict))
    body = (
        f"<h1>Fleetroom agent — {state}</h1><table>{overview}</table>"
        "<h2>Outbox</h2><table><tr><th>Stream</th><th>Items</th><th>Bytes</th>"
        f"<th>Oldest unsent</th></tr>{streams}</table>"
        "<h2>Schedule</h2><table>"
        + _rows([(k, v) for k, v in sorted(schedule.items())]) + "</table>"
        "<h2>Transports</h2><table><tr><th>Name</th><th>State</th><th>Last error</th></tr>"
        f"{transports}</table>"
        "<h2>Jobs</h2><table><tr><th>Job</th><th>Last run</th><th>Outcome</th><th>Detail</th>"
        f"</tr>{jobs}</table>"
        "<h2>Recent errors</h2><table><tr><th>When</th><th>Where</th><th>What</th></tr>"
        f"{errors}</table>")
    return _doc("Fleetroom agent status", body, refresh=True)
